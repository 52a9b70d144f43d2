//! Checkpointer: every `checkpoint_interval` (or after N records) it sends a barrier through
//! every DlrActor, collects their dirty rows, dead letters, offsets and what the epoch's
//! transitions add to each campaign's snapshot, and commits all of it with the epoch in ONE
//! Postgres transaction. Campaign actors are never asked: a busy campaign cannot hold back
//! the checkpoints (and offsets) of every partition. Only then are offsets committed to Kafka
//! (for lag monitoring; Postgres holds the truth). The message rows go to the message log and
//! the fold (src/actors/fold.rs) moves them into `campaign_recipients` after the commit (while
//! the fold is far behind, the consumer takes no records; checkpoints go on).
//!
//! A failed write is kept and retried with the next one, so nothing handed over is lost; each
//! is applied only if its epoch is newer than the one stored, so a write that did commit
//! although its answer was lost is never applied twice (campaign deltas and credits add up).
//!
//! Every write is fenced by the generation each partition was taken over with: when another
//! member has taken one over since, the store refuses the write, and this member drops what
//! it held for those partitions (their actors stop; the new owner replays from the offsets
//! last committed) and writes the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use sqlx::PgPool;

use super::dlr::{Barrier, DlrActor};
use super::fold::Fold;
use super::registry::CampaignRegistry;
use crate::store::checkpoints::{self, CheckpointWrite, OffsetScope};
use crate::store::cluster::{self, MemberId};
use crate::store::StoreError;

/// The DlrActors of the assigned partitions and the epoch the next barrier closes; also who
/// owns a campaign: the member holding partition `campaign id mod partitions` of the topic
/// (README, "Several instances").
///
/// Registration and the start of a barrier take the same lock, so an actor registered while a
/// checkpoint is collecting starts in the following epoch — a transition's epoch is always
/// the checkpoint that commits it.
#[derive(Clone)]
pub struct Partitions {
    set: Arc<Mutex<PartitionSet>>,
    /// The topic's partitions, assigned to this member or not.
    total: i32,
    /// Set once the first assignment (of any size) has been received.
    assigned_once: Arc<tokio::sync::watch::Sender<bool>>,
}

struct PartitionSet {
    open_epoch: u64,
    /// Each assigned partition's actor and the generation it was taken over with.
    actors: BTreeMap<i32, (Addr<DlrActor>, u64)>,
    /// Partitions being revoked: still applied and checkpointed, but their campaigns start
    /// no new work here.
    retiring: std::collections::BTreeSet<i32>,
}

impl Partitions {
    pub fn new(committed_epoch: u64, total: i32) -> Self {
        Self {
            set: Arc::new(Mutex::new(PartitionSet {
                open_epoch: committed_epoch + 1,
                actors: BTreeMap::new(),
                retiring: Default::default(),
            })),
            total: total.max(1),
            assigned_once: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionSet> {
        self.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition whose owner owns the campaign.
    pub fn of_campaign(&self, id: crate::domain::CampaignId) -> i32 {
        (id.get().rem_euclid(i64::from(self.total))) as i32
    }

    /// Whether this member owns the campaign now (holds its partition, not being revoked).
    pub fn owns_campaign(&self, id: crate::domain::CampaignId) -> bool {
        let p = self.of_campaign(id);
        let set = self.lock();
        set.actors.contains_key(&p) && !set.retiring.contains(&p)
    }

    /// The generation this member holds the partition with, if it holds it.
    pub fn held(&self, partition: i32) -> Option<(i32, u64)> {
        self.lock()
            .actors
            .get(&partition)
            .map(|(_, g)| (partition, *g))
    }

    /// Whether this member holds every partition (it is alone, or the others hold none).
    pub fn owns_all(&self) -> bool {
        let set = self.lock();
        set.actors.len() >= self.total as usize && set.retiring.is_empty()
    }

    /// Partitions about to be revoked: their campaigns stop taking new work here.
    pub fn retire(&self, partitions: &[i32]) {
        self.lock().retiring.extend(partitions);
    }

    /// Records that an assignment was received.
    pub fn mark_assigned(&self) {
        self.assigned_once.send_replace(true);
    }

    /// Waits (at most `limit`) for the first assignment; `false` if none came.
    pub async fn until_assigned(&self, limit: std::time::Duration) -> bool {
        let mut seen = self.assigned_once.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|assigned| *assigned))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts a partition's actor with the epoch its first changes belong to.
    pub fn register(
        &self,
        (partition, generation): (i32, u64),
        start: impl FnOnce(u64) -> Addr<DlrActor>,
    ) -> Addr<DlrActor> {
        let mut set = self.lock();
        let addr = start(set.open_epoch);
        set.actors.insert(partition, (addr.clone(), generation));
        set.retiring.remove(&partition);
        addr
    }

    /// Forgets the partitions held with these generations (a later generation of the same
    /// partition stays) and returns their actors.
    pub fn remove_lost(&self, lost: &[(i32, u64)]) -> Vec<Addr<DlrActor>> {
        let mut set = self.lock();
        let stale: Vec<i32> = set
            .actors
            .iter()
            .filter(|(p, (_, g))| lost.contains(&(**p, *g)))
            .map(|(p, _)| *p)
            .collect();
        stale
            .iter()
            .filter_map(|p| set.actors.remove(p).map(|(a, _)| a))
            .collect()
    }

    /// Forgets partitions (after their final checkpoint) and returns their actors.
    pub fn remove(&self, partitions: &[i32]) -> Vec<Addr<DlrActor>> {
        let mut set = self.lock();
        for p in partitions {
            set.retiring.remove(p);
        }
        partitions
            .iter()
            .filter_map(|p| set.actors.remove(p).map(|(a, _)| a))
            .collect()
    }

    pub fn get(&self, partition: i32) -> Option<Addr<DlrActor>> {
        self.lock().actors.get(&partition).map(|(a, _)| a.clone())
    }

    /// The epoch the next barrier closes: everything applied until now is committed once it
    /// is.
    pub fn open_epoch(&self) -> u64 {
        self.lock().open_epoch
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.lock().actors.keys().copied().collect()
    }

    fn begin_barrier(&self) -> (u64, Vec<Addr<DlrActor>>) {
        let mut set = self.lock();
        let epoch = set.open_epoch;
        set.open_epoch += 1;
        (epoch, set.actors.values().map(|(a, _)| a.clone()).collect())
    }
}

/// Called with the committed offsets after each successful checkpoint.
pub type OnCommit = Arc<dyn Fn(HashMap<i32, i64>) + Send + Sync>;

/// Records applied but not committed yet: those since the running checkpoint began
/// (`pending`, counted by the DlrActors) and those in the running checkpoint and in earlier
/// ones whose write failed (`carried`). Past a bound the consumer takes no more records
/// (see `kafka::consumer::Backlog`): while the database is slow or away, events wait in the
/// broker, not in memory.
#[derive(Clone, Default)]
pub struct Uncommitted {
    pub pending: Arc<AtomicU64>,
    carried: Arc<AtomicU64>,
}

impl Uncommitted {
    pub fn records(&self) -> u64 {
        self.pending.load(Ordering::Relaxed) + self.carried.load(Ordering::Relaxed)
    }
}

/// What the checkpointer needs to run.
pub struct CheckpointConfig {
    pub pool: PgPool,
    pub scope: OffsetScope,
    pub member: MemberId,
    pub interval: Duration,
    /// Records applied since the last checkpoint that trigger one early.
    pub max_pending_records: u64,
    pub idle_passivation: Duration,
}

pub struct Checkpointer {
    config: CheckpointConfig,
    partitions: Partitions,
    registry: CampaignRegistry,
    fold: Fold,
    uncommitted: Uncommitted,
    /// Checkpoints whose write failed, oldest first; retried with the next one.
    unwritten: Vec<CheckpointWrite>,
    last_started: Instant,
    running: bool,
    on_commit: Option<OnCommit>,
    /// Positions of the last committed checkpoint, to recognise one that changes nothing.
    committed_positions: HashMap<i32, (i64, Option<i64>)>,
}

impl Checkpointer {
    pub fn new(
        config: CheckpointConfig,
        partitions: Partitions,
        registry: CampaignRegistry,
        fold: Fold,
        uncommitted: Uncommitted,
    ) -> Self {
        Self {
            config,
            partitions,
            registry,
            fold,
            uncommitted,
            unwritten: Vec::new(),
            last_started: Instant::now(),
            running: false,
            on_commit: None,
            committed_positions: HashMap::new(),
        }
    }

    fn due(&self) -> bool {
        !self.running
            && (self.last_started.elapsed() >= self.config.interval
                || self.uncommitted.pending.load(Ordering::Relaxed)
                    >= self.config.max_pending_records)
    }
}

impl Actor for Checkpointer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(10), |act, ctx| {
            if act.due() {
                ctx.notify(CheckpointNow);
            }
        });
        let idle = self.config.idle_passivation;
        ctx.run_interval(idle.min(Duration::from_secs(30)), move |act, ctx| {
            let registry = act.registry.clone();
            ctx.spawn(
                async move {
                    registry.passivate_idle(idle).await;
                }
                .into_actor(act),
            );
        });
    }
}

/// Runs a checkpoint now; answers the committed epoch.
#[derive(Message)]
#[rtype(result = "Result<u64, String>")]
pub struct CheckpointNow;

/// Sets what happens after each commit (the consumer commits offsets to Kafka).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetOnCommit(pub OnCommit);

/// Takes partitions over (raising their generations) and answers where to resume them, once
/// every row in the message log is folded (their DlrActors look rows up in
/// `campaign_recipients`, and the previous owner's last rows may still be in the log).
#[derive(Message)]
#[rtype(result = "Result<TakenOver, String>")]
pub struct LoadOffsets(pub Vec<i32>);

/// Partitions this member now owns: the stored next offset (absent: never checkpointed) and
/// the generation of each.
#[derive(Debug, Default)]
pub struct TakenOver {
    pub offsets: HashMap<i32, i64>,
    pub generations: HashMap<i32, u64>,
}

impl Handler<CheckpointNow> for Checkpointer {
    type Result = AtomicResponse<Self, Result<u64, String>>;

    fn handle(&mut self, _: CheckpointNow, _: &mut Self::Context) -> Self::Result {
        self.running = true;
        self.last_started = Instant::now();
        let covered = self.uncommitted.pending.swap(0, Ordering::Relaxed);
        self.uncommitted
            .carried
            .fetch_add(covered, Ordering::Relaxed);
        let (epoch, actors) = self.partitions.begin_barrier();
        let committed = self.registry.committed_epoch().load(Ordering::Acquire);
        let folded = self.fold.folded_epoch();
        let barrier = Barrier {
            epoch,
            committed,
            folded,
        };
        let collect =
            async move { futures::future::join_all(actors.iter().map(|a| a.send(barrier))).await };
        AtomicResponse::new(Box::pin(
            collect
                .into_actor(self)
                .then(move |parts, act, _| {
                    let write = CheckpointWrite {
                        epoch,
                        parts: parts.into_iter().flatten().collect(),
                    };
                    // earlier epochs whose write failed go first; the store skips any that
                    // did commit after all (an answer lost with the connection)
                    let mut writes = std::mem::take(&mut act.unwritten);
                    let unchanged = writes.is_empty() && act.changes_nothing(&write);
                    writes.push(write);
                    let (pool, scope) = (act.config.pool.clone(), act.config.scope.clone());
                    let member = act.config.member;
                    async move {
                        let started = Instant::now();
                        let result = match unchanged {
                            true => Ok(()),
                            false => checkpoints::commit(&pool, &scope, member, &writes).await,
                        };
                        if !unchanged && result.is_ok() {
                            let rows = writes.iter().map(CheckpointWrite::rows).sum();
                            crate::metrics::checkpoint(started.elapsed(), rows);
                        }
                        (writes, result)
                    }
                    .into_actor(act)
                })
                .map(move |(writes, result), act, _| {
                    act.running = false;
                    match result {
                        Ok(()) => Ok(act.committed(epoch, writes)),
                        Err(StoreError::Fenced(lost)) => {
                            act.unwritten = act.drop_lost(&lost, writes);
                            Err(format!("partitions {lost:?} were taken over by another member"))
                        }
                        Err(e) => {
                            crate::metrics::checkpoint_failed();
                            tracing::error!(error = %e, epoch, "checkpoint failed; its data is kept for the next one");
                            act.unwritten = writes;
                            Err(e.to_string())
                        }
                    }
                }),
        ))
    }
}

impl Checkpointer {
    /// Nothing changed, so no transition carries this epoch: the write can be skipped.
    fn changes_nothing(&self, write: &CheckpointWrite) -> bool {
        write.only_offsets()
            && write
                .positions()
                .iter()
                .all(|(p, o)| self.committed_positions.get(p) == Some(o))
    }

    /// Another member took these partitions over: what this member held for them is dropped
    /// (their actors stop, so nothing more is applied or handed over for them), and so are the
    /// campaign actors, whose figures may count transitions that will now never commit here.
    /// The rest of the writes is kept for the next checkpoint.
    fn drop_lost(
        &mut self,
        lost: &[(i32, u64)],
        mut writes: Vec<CheckpointWrite>,
    ) -> Vec<CheckpointWrite> {
        tracing::warn!(
            ?lost,
            "partitions were taken over by another member; dropping this member's state for them"
        );
        crate::metrics::partitions_fenced(lost.len());
        for write in &mut writes {
            write.drop_partitions(lost);
        }
        for actor in self.partitions.remove_lost(lost) {
            actor.do_send(super::dlr::Stop);
        }
        self.registry.drop_all();
        writes
    }

    /// Records a committed checkpoint and hands its offsets on (newest per partition).
    fn committed(&mut self, epoch: u64, writes: Vec<CheckpointWrite>) -> u64 {
        // one checkpoint runs at a time, and it carried every earlier unwritten one
        self.uncommitted.carried.store(0, Ordering::Relaxed);
        self.registry
            .committed_epoch()
            .store(epoch, Ordering::Release);
        let rows = writes.iter().map(CheckpointWrite::rows).sum();
        self.fold.committed(epoch, rows);
        let mut offsets = HashMap::new();
        for write in writes {
            offsets.extend(write.offsets());
            self.committed_positions.extend(write.positions());
        }
        if let Some(on_commit) = &self.on_commit {
            on_commit(offsets);
        }
        epoch
    }
}

impl Handler<SetOnCommit> for Checkpointer {
    type Result = ();

    fn handle(&mut self, msg: SetOnCommit, _: &mut Self::Context) {
        self.on_commit = Some(msg.0);
    }
}

impl Handler<LoadOffsets> for Checkpointer {
    type Result = ResponseFuture<Result<TakenOver, String>>;

    fn handle(&mut self, msg: LoadOffsets, _: &mut Self::Context) -> Self::Result {
        let (pool, scope) = (self.config.pool.clone(), self.config.scope.clone());
        let member = self.config.member;
        let (fold, committed) = (self.fold.clone(), self.registry.committed_epoch().clone());
        Box::pin(async move {
            let error = |e: crate::store::StoreError| e.to_string();
            let generations = cluster::take_over(&pool, &scope, member, &msg.0)
                .await
                .map_err(error)?;
            // the previous owner can no longer commit for these partitions: whatever it
            // committed is in the log, and goes into place before their rows are looked up
            crate::store::messages::fold(&pool).await.map_err(error)?;
            let committed = committed.load(Ordering::Acquire);
            if !fold.until_folded(committed, Duration::from_secs(60)).await {
                return Err(format!("epoch {committed} was not folded within 60 s"));
            }
            let offsets = checkpoints::load_offsets(&pool, &scope, &msg.0)
                .await
                .map_err(error)?;
            Ok(TakenOver {
                offsets,
                generations,
            })
        })
    }
}
