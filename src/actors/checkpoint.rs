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

/// The DlrActors of the assigned partitions and the epoch the next barrier closes.
///
/// Registration and the start of a barrier take the same lock, so an actor registered while a
/// checkpoint is collecting starts in the following epoch — a transition's epoch is always
/// the checkpoint that commits it.
#[derive(Clone)]
pub struct Partitions(Arc<Mutex<PartitionSet>>);

struct PartitionSet {
    open_epoch: u64,
    actors: BTreeMap<i32, Addr<DlrActor>>,
}

impl Partitions {
    pub fn new(committed_epoch: u64) -> Self {
        Self(Arc::new(Mutex::new(PartitionSet {
            open_epoch: committed_epoch + 1,
            actors: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionSet> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a partition's actor with the epoch its first changes belong to.
    pub fn register(
        &self,
        partition: i32,
        start: impl FnOnce(u64) -> Addr<DlrActor>,
    ) -> Addr<DlrActor> {
        let mut set = self.lock();
        let addr = start(set.open_epoch);
        set.actors.insert(partition, addr.clone());
        addr
    }

    /// Forgets partitions (after their final checkpoint) and returns their actors.
    pub fn remove(&self, partitions: &[i32]) -> Vec<Addr<DlrActor>> {
        let mut set = self.lock();
        partitions
            .iter()
            .filter_map(|p| set.actors.remove(p))
            .collect()
    }

    pub fn get(&self, partition: i32) -> Option<Addr<DlrActor>> {
        self.lock().actors.get(&partition).cloned()
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
        (epoch, set.actors.values().cloned().collect())
    }
}

/// Called with the committed offsets after each successful checkpoint.
pub type OnCommit = Arc<dyn Fn(HashMap<i32, i64>) + Send + Sync>;

/// What the checkpointer needs to run.
pub struct CheckpointConfig {
    pub pool: PgPool,
    pub scope: OffsetScope,
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
    pending_records: Arc<AtomicU64>,
    /// Checkpoints whose write failed, oldest first; retried with the next one.
    unwritten: Vec<CheckpointWrite>,
    last_started: Instant,
    running: bool,
    on_commit: Option<OnCommit>,
    /// Offsets of the last committed checkpoint, to recognise one that changes nothing.
    committed_offsets: HashMap<i32, i64>,
}

impl Checkpointer {
    pub fn new(
        config: CheckpointConfig,
        partitions: Partitions,
        registry: CampaignRegistry,
        fold: Fold,
        pending_records: Arc<AtomicU64>,
    ) -> Self {
        Self {
            config,
            partitions,
            registry,
            fold,
            pending_records,
            unwritten: Vec::new(),
            last_started: Instant::now(),
            running: false,
            on_commit: None,
            committed_offsets: HashMap::new(),
        }
    }

    fn due(&self) -> bool {
        !self.running
            && (self.last_started.elapsed() >= self.config.interval
                || self.pending_records.load(Ordering::Relaxed) >= self.config.max_pending_records)
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

/// Stored offsets for partitions being assigned, answered once every committed row is folded
/// (their DlrActors look rows up in `campaign_recipients`).
#[derive(Message)]
#[rtype(result = "Result<HashMap<i32, i64>, String>")]
pub struct LoadOffsets(pub Vec<i32>);

impl Handler<CheckpointNow> for Checkpointer {
    type Result = AtomicResponse<Self, Result<u64, String>>;

    fn handle(&mut self, _: CheckpointNow, _: &mut Self::Context) -> Self::Result {
        self.running = true;
        self.last_started = Instant::now();
        self.pending_records.store(0, Ordering::Relaxed);
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
                    let write = CheckpointWrite::collect(epoch, parts.into_iter().flatten());
                    // earlier epochs whose write failed go first; the store skips any that
                    // did commit after all (an answer lost with the connection)
                    let mut writes = std::mem::take(&mut act.unwritten);
                    let unchanged = writes.is_empty() && act.changes_nothing(&write);
                    writes.push(write);
                    let (pool, scope) = (act.config.pool.clone(), act.config.scope.clone());
                    async move {
                        let started = Instant::now();
                        let result = match unchanged {
                            true => Ok(()),
                            false => checkpoints::commit(&pool, &scope, &writes).await,
                        };
                        if !unchanged && result.is_ok() {
                            let rows = writes.iter().map(|w| w.rows.len()).sum();
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
        write.rows.is_empty()
            && write.dead_letters.is_empty()
            && write.campaigns.is_empty()
            && write
                .offsets
                .iter()
                .all(|(p, o)| self.committed_offsets.get(p) == Some(o))
    }

    /// Records a committed checkpoint and hands its offsets on (newest per partition).
    fn committed(&mut self, epoch: u64, writes: Vec<CheckpointWrite>) -> u64 {
        self.registry
            .committed_epoch()
            .store(epoch, Ordering::Release);
        let rows = writes.iter().map(|w| w.rows.len()).sum();
        self.fold.committed(epoch, rows);
        let mut offsets = HashMap::new();
        for write in writes {
            offsets.extend(write.offsets);
        }
        self.committed_offsets
            .extend(offsets.iter().map(|(p, o)| (*p, *o)));
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
    type Result = ResponseFuture<Result<HashMap<i32, i64>, String>>;

    fn handle(&mut self, msg: LoadOffsets, _: &mut Self::Context) -> Self::Result {
        let (pool, scope) = (self.config.pool.clone(), self.config.scope.clone());
        let (fold, committed) = (self.fold.clone(), self.registry.committed_epoch().clone());
        Box::pin(async move {
            let committed = committed.load(Ordering::Acquire);
            if !fold.until_folded(committed, Duration::from_secs(60)).await {
                return Err(format!("epoch {committed} was not folded within 60 s"));
            }
            checkpoints::load_offsets(&pool, &scope, &msg.0)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
