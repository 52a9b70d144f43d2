//! The partition-aware consumer of `message-events`.
//!
//! It runs on its own thread (librdkafka's poll loop is blocking) and never auto-commits. On
//! assignment it reads each partition's next offset from Postgres (through the checkpointer)
//! and assigns exactly there, starting one DlrActor per partition. On revocation it runs a
//! checkpoint, so everything applied so far is committed, before letting the partitions go.
//! Records are parsed on this thread and handed to DlrActors in per-partition batches with
//! `try_send`, which respects their bounded mailboxes: when a partition falls behind, the
//! loop waits instead of buffering without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::actors::checkpoint::{
    CheckpointNow, Checkpointer, LoadOffsets, OnCommit, Partitions, SetOnCommit, TakenOver,
    Uncommitted,
};
use crate::actors::dlr::{DlrActor, Incoming, Poison, Records, Stop};
use crate::actors::fold::Fold;
use crate::domain::Event;

/// Lets the campaigns of partitions about to be revoked finish what they sent (blocks, for at
/// most the given time): their next owner must not judge claims whose batches are still out.
pub type RetirePartitions = Arc<dyn Fn(&[i32], Duration) + Send + Sync>;

/// How long a revocation waits for its campaigns' batches in a rebalance...
const RETIRE_LIMIT: Duration = Duration::from_secs(60);
/// ...and when the service stops (a batch waiting for the rate limiter may wait long; one
/// not sent by then goes back to the queue: its sender finds the partition taken over).
const RETIRE_LIMIT_STOPPING: Duration = Duration::from_secs(5);

/// Starts a partition's DlrActor: (partition, stored next offset, first epoch, generation).
pub type SpawnPartition = Arc<dyn Fn(i32, Option<i64>, u64, u64) -> Addr<DlrActor> + Send + Sync>;

pub struct ConsumerConfig {
    pub brokers: super::Brokers,
    pub group: String,
    pub topic: String,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Records per DlrActor batch.
    pub batch_records: usize,
    /// The fold's backlog, past which no records are taken.
    pub backlog: Backlog,
    pub health: ConsumerHealth,
}

/// What the consumer thread is doing, for readiness: it beats on every turn of its loop,
/// saying whether back-pressure (the fold's backlog, a full DlrActor mailbox) held it.
#[derive(Clone)]
pub struct ConsumerHealth(Arc<HealthBeat>);

struct HealthBeat {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat.
    last: std::sync::atomic::AtomicU64,
    held: AtomicBool,
}

/// No beat for this long: the consumer is stalled (a rebalance that cannot reach the
/// database, a revocation waiting for batches, a thread that ended).
const STALLED_AFTER: Duration = Duration::from_secs(10);

/// The consumer as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    Consuming,
    /// Alive, taking no records until the database catches up.
    HeldBack,
    Stalled(Duration),
}

impl Default for ConsumerHealth {
    fn default() -> Self {
        Self(Arc::new(HealthBeat {
            origin: Instant::now(),
            last: Default::default(),
            held: AtomicBool::new(false),
        }))
    }
}

impl ConsumerHealth {
    fn beat(&self, held: bool) {
        let since = self.0.origin.elapsed().as_millis() as u64;
        self.0.last.store(since, Ordering::Relaxed);
        if self.0.held.swap(held, Ordering::Relaxed) != held {
            crate::metrics::consumer_held_back(held);
        }
    }

    pub fn state(&self) -> ConsumerState {
        let last = Duration::from_millis(self.0.last.load(Ordering::Relaxed));
        let quiet = self.0.origin.elapsed().saturating_sub(last);
        match (quiet > STALLED_AFTER, self.0.held.load(Ordering::Relaxed)) {
            (true, _) => ConsumerState::Stalled(quiet),
            (false, true) => ConsumerState::HeldBack,
            (false, false) => ConsumerState::Consuming,
        }
    }
}

/// Back-pressure from the fold (src/actors/fold.rs): while more than `max_rows` checkpointed
/// rows wait to be folded, the consumer takes no records. Checkpoints go on meanwhile, so what
/// was applied is committed and the ledgers keep compacting: memory stays bounded, and a
/// reader that waits for the fold waits for at most this many rows.
#[derive(Clone)]
pub struct Backlog {
    pub fold: Fold,
    pub max_rows: u64,
    /// Records applied but not committed, past which no records are taken either (a slow or
    /// absent database stalls checkpoints).
    pub uncommitted: Uncommitted,
    pub max_records: u64,
}

impl Backlog {
    fn full(&self) -> bool {
        self.fold.unfolded_rows() >= self.max_rows || self.uncommitted.records() >= self.max_records
    }
}

/// The rebalance hooks; they run on the consumer thread, inside `poll`.
struct Rebalancer {
    topic: String,
    partitions: Partitions,
    checkpointer: Addr<Checkpointer>,
    spawn: SpawnPartition,
    retire: RetirePartitions,
    /// Records polled but not yet handed to a DlrActor, per partition. A revocation drops its
    /// partitions' records here, in the hook itself (the next owner reads them again from the
    /// committed offset); records of a later assignment, even within the same poll burst,
    /// are therefore never mixed up with them.
    pending: Mutex<HashMap<i32, Vec<Incoming>>>,
    /// The stored offset each partition was assigned at (absent: from the beginning), for
    /// the lag until this member commits one.
    assigned_at: Mutex<HashMap<i32, i64>>,
    stop: Arc<AtomicBool>,
}

impl ClientContext for Rebalancer {}

impl ConsumerContext for Rebalancer {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl, &partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, &partitions)
            }
            other => {
                tracing::error!(?other, "rebalance error; giving up the assignment");
                self.revoke(consumer, &self.partitions.assigned())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, ?partitions, "rebalance failed");
        }
    }
}

impl Rebalancer {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Incoming>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        partitions: &[i32],
    ) -> Result<(), KafkaError> {
        let Some(taken) = self.take_over(partitions) else {
            tracing::warn!(
                ?partitions,
                "stopping before offsets could be loaded; not assigning"
            );
            return Ok(());
        };
        let stored = &taken.offsets;
        let mut assigned_at = self.assigned_at.lock().unwrap_or_else(|p| p.into_inner());
        for &p in partitions {
            match stored.get(&p) {
                Some(offset) => assigned_at.insert(p, *offset),
                None => assigned_at.remove(&p),
            };
        }
        drop(assigned_at);
        for &p in partitions {
            let offset = stored
                .get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.set_partition_offset(&self.topic, p, offset)?;
            let generation = taken.generations.get(&p).copied().unwrap_or_default();
            self.partitions.register((p, generation), |epoch| {
                (self.spawn)(p, stored.get(&p).copied(), epoch, generation)
            });
        }
        tracing::info!(?partitions, ?stored, generations = ?taken.generations, "partitions assigned");
        self.partitions.mark_assigned();
        consumer.assign(tpl)
    }

    /// Takes the partitions over in Postgres and reads their offsets; retried, because
    /// assigning without them would re-read or skip. `None` when the consumer is told to stop
    /// meanwhile.
    fn take_over(&self, partitions: &[i32]) -> Option<TakenOver> {
        use backon::BackoffBuilder;
        let mut delays = crate::store::until_available().build();
        while !self.stop.load(Ordering::Acquire) {
            match block_on(self.checkpointer.send(LoadOffsets(partitions.to_vec()))) {
                Ok(Ok(taken)) => return Some(taken),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "loading stored offsets failed; retrying")
                }
                Err(e) => tracing::error!(error = %e, "checkpointer unavailable; retrying"),
            }
            std::thread::sleep(delays.next().unwrap_or(Duration::from_secs(5)));
        }
        None
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) -> Result<(), KafkaError> {
        // their campaigns take no new work, and what they sent is answered, before the
        // checkpoint that hands the partitions over
        self.partitions.retire(partitions);
        let limit = match self.stop.load(Ordering::Acquire) {
            true => RETIRE_LIMIT_STOPPING,
            false => RETIRE_LIMIT,
        };
        (self.retire)(partitions, limit);
        match block_on(self.checkpointer.send(CheckpointNow)) {
            Ok(Ok(epoch)) => tracing::info!(?partitions, epoch, "checkpointed before revocation"),
            other => tracing::error!(?other, ?partitions, "checkpoint before revocation failed"),
        }
        for actor in self.partitions.remove(partitions) {
            // a stopped actor simply has nothing left to do
            let _ = block_on(actor.send(Stop));
        }
        let mut pending = self.pending();
        for p in partitions {
            pending.remove(p);
        }
        drop(pending);
        consumer.unassign()
    }
}

/// The running consumer thread.
pub struct ConsumerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The thread mirroring offsets to Kafka; it holds the consumer until the checkpointer
    /// drops its hook.
    committer: Option<JoinHandle<()>>,
}

impl ConsumerHandle {
    /// Stops polling and leaves the group (revoking, hence checkpointing, its partitions).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Waits until the consumer is gone: call once the checkpointer has stopped.
    pub fn close(mut self) {
        self.stop();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

pub fn start(
    config: ConsumerConfig,
    partitions: Partitions,
    checkpointer: Addr<Checkpointer>,
    (spawn, retire): (SpawnPartition, RetirePartitions),
) -> Result<ConsumerHandle, KafkaError> {
    let stop = Arc::new(AtomicBool::new(false));
    let context = Rebalancer {
        topic: config.topic.clone(),
        partitions: partitions.clone(),
        checkpointer: checkpointer.clone(),
        spawn,
        retire,
        pending: Mutex::new(HashMap::new()),
        assigned_at: Mutex::new(HashMap::new()),
        stop: stop.clone(),
    };
    let consumer: BaseConsumer<Rebalancer> = config
        .brokers
        .client_config()
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            config.heartbeat_interval_ms.to_string(),
        )
        .create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let consumer = Arc::new(consumer);
    let (on_commit, committer) = spawn_kafka_committer(consumer.clone(), config.topic.clone())?;
    block_on(checkpointer.send(SetOnCommit(on_commit)))
        .map_err(|_| KafkaError::Subscription("checkpointer is not running".into()))?;
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            poll_loop(
                consumer,
                partitions,
                (config.batch_records, config.backlog),
                (flag, config.health),
            )
        })
        .map_err(|e| KafkaError::Subscription(e.to_string()))?;
    Ok(ConsumerHandle {
        stop,
        thread: Some(thread),
        committer: Some(committer),
    })
}

/// How often the consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Mirrors committed offsets to Kafka (for tools that read lag there) on one thread of its
/// own, and measures the lag itself every [`LAG_EVERY`]: each assigned partition's high
/// watermark, asked of the broker, minus the offset committed with the state in Postgres. It
/// keeps growing while back-pressure holds the consumer (librdkafka's own statistics stop
/// there: paused partitions are not fetched). Only the newest offsets matter, so while a
/// commit is still running newer ones wait in a one-slot queue and anything older is
/// skipped. The thread ends when the checkpointer drops its hook.
fn spawn_kafka_committer(
    consumer: Arc<BaseConsumer<Rebalancer>>,
    topic: String,
) -> Result<(OnCommit, JoinHandle<()>), KafkaError> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::sync_channel::<HashMap<i32, i64>>(1);
    let thread = std::thread::Builder::new()
        .name("kafka-committer".into())
        .spawn(move || {
            let mut committed = HashMap::new();
            let mut measured = Instant::now();
            loop {
                match rx.recv_timeout(LAG_EVERY) {
                    Ok(offsets) => {
                        commit_to_kafka(&consumer, &topic, &offsets);
                        committed.extend(offsets);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if measured.elapsed() >= LAG_EVERY {
                    measure_lag(&consumer, &topic, &committed);
                    measured = Instant::now();
                }
            }
        })
        .map_err(|e| KafkaError::Subscription(e.to_string()))?;
    let hook: OnCommit = Arc::new(move |offsets: HashMap<i32, i64>| {
        if !offsets.is_empty() {
            let _ = tx.try_send(offsets); // full: a newer commit follows soon
        }
    });
    Ok((hook, thread))
}

fn commit_to_kafka(consumer: &BaseConsumer<Rebalancer>, topic: &str, offsets: &HashMap<i32, i64>) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::debug!(error = %e, "offset commit to Kafka failed (lag monitoring only)");
    }
}

/// Lag per assigned partition: from the offset this member last committed for it, else the
/// one it was assigned at, else the log's beginning.
fn measure_lag(consumer: &BaseConsumer<Rebalancer>, topic: &str, committed: &HashMap<i32, i64>) {
    let context = consumer.context();
    let assigned_at = context
        .assigned_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for p in context.partitions.assigned() {
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(1)) {
            Ok((low, high)) => {
                let done = committed.get(&p).or(assigned_at.get(&p)).unwrap_or(&low);
                crate::metrics::consumer_lag(p, high - done)
            }
            Err(e) => {
                tracing::debug!(error = %e, partition = p, "reading the high watermark failed")
            }
        }
    }
}

/// Polls, groups records per partition and hands the batches over.
fn poll_loop(
    consumer: Arc<BaseConsumer<Rebalancer>>,
    partitions: Partitions,
    (batch_records, backlog): (usize, Backlog),
    (stop, health): (Arc<AtomicBool>, ConsumerHealth),
) {
    let (mut held_since, mut paused) = (None::<Instant>, false);
    while !stop.load(Ordering::Acquire) {
        let full = backlog.full();
        let since = *held_since.get_or_insert_with(Instant::now);
        if !full {
            held_since = None;
        }
        // a short hold only waits; a long one pauses the partitions (see `hold`)
        if full && since.elapsed() < PAUSE_AFTER {
            health.beat(true);
            std::thread::sleep(BACKLOG_RECHECK);
            continue;
        }
        hold(&consumer, full, &mut paused);
        let deadline = Instant::now() + Duration::from_millis(5);
        let mut wait = Duration::from_millis(100);
        let mut taken = 0;
        while let Some(result) = consumer.poll(wait) {
            wait = Duration::ZERO;
            match result {
                Ok(message) => {
                    let record = incoming(&message);
                    consumer
                        .context()
                        .pending()
                        .entry(message.partition())
                        .or_default()
                        .push(record);
                    taken += 1;
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
            if taken >= batch_records * 4 || Instant::now() >= deadline {
                break;
            }
        }
        // rebalance hooks run only inside poll, so between polls these records stay current
        let batches = std::mem::take(&mut *consumer.context().pending());
        health.beat(full);
        hand_over(&partitions, batches, batch_records, (&stop, &health));
    }
    tracing::info!("consumer stopping; leaving the group");
    // leaving revokes the assignment, which checkpoints through the rebalance hook
    leave_group(&consumer);
}

/// How often a consumer held back looks again...
const BACKLOG_RECHECK: Duration = Duration::from_millis(5);
/// ...and after how long it pauses its partitions (fetching stops; polls go on).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Pauses fetching while back-pressure holds and resumes after. Polls go on meanwhile (they
/// return no records of paused partitions), so rebalances and statistics are served, and
/// what waits stays in the broker.
fn hold(consumer: &BaseConsumer<Rebalancer>, full: bool, paused: &mut bool) {
    if !full && !*paused {
        return;
    }
    // while held, every turn pauses again: a rebalance may have assigned new partitions
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(e) => return tracing::warn!(error = %e, "reading the assignment failed"),
    };
    let done = match full {
        true => consumer.pause(&assignment),
        false => consumer.resume(&assignment),
    };
    match done {
        Ok(()) => *paused = full,
        Err(e) => tracing::warn!(error = %e, full, "pausing or resuming the partitions failed"),
    }
}

/// Unsubscribes and serves the resulting revocation (callbacks run inside `poll`), for at most
/// ten seconds.
fn leave_group(consumer: &BaseConsumer<Rebalancer>) {
    consumer.unsubscribe();
    let until = Instant::now() + Duration::from_secs(10);
    while !consumer.context().partitions.assigned().is_empty() && Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

fn incoming(message: &rdkafka::message::BorrowedMessage<'_>) -> Incoming {
    let poison = |payload: &[u8], error: String| Poison {
        key: message.key().map(<[u8]>::to_vec),
        payload: payload.to_vec(),
        error,
    };
    let event = match message.payload() {
        Some(payload) => Event::parse(payload).map_err(|e| poison(payload, e.to_string())),
        None => Err(poison(&[], "record has no payload".to_owned())),
    };
    Incoming {
        offset: message.offset(),
        event,
    }
}

fn hand_over(
    partitions: &Partitions,
    batches: HashMap<i32, Vec<Incoming>>,
    batch_records: usize,
    waiting: (&AtomicBool, &ConsumerHealth),
) {
    for (p, mut records) in batches {
        let Some(actor) = partitions.get(p) else {
            continue; // no longer ours
        };
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(batch_records));
            let batch = std::mem::replace(&mut records, rest);
            if !send_waiting(&actor, batch, waiting) {
                break;
            }
        }
    }
}

/// Sends with back-pressure: waits while the actor's mailbox is full. `false` if the actor
/// stopped (its partition was revoked) or the consumer is stopping.
fn send_waiting(
    actor: &Addr<DlrActor>,
    batch: Vec<Incoming>,
    (stop, health): (&AtomicBool, &ConsumerHealth),
) -> bool {
    let mut msg = Records(batch);
    loop {
        match actor.try_send(msg) {
            Ok(()) => return true,
            Err(SendError::Closed(_)) => return false,
            Err(SendError::Full(back)) => {
                if stop.load(Ordering::Acquire) {
                    return false;
                }
                health.beat(true);
                msg = back;
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
}
