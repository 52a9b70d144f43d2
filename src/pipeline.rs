//! The event pipeline, wired: broker (configured or embedded), producer, the actors' arbiter
//! with the campaign registry and checkpointer, and the consumer feeding DlrActors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use sqlx::PgPool;

use crate::actors::checkpoint::{
    CheckpointConfig, CheckpointNow, Checkpointer, Partitions, Uncommitted,
};
use crate::actors::claimed::ClaimedRows;
use crate::actors::dlr::{DlrActor, Ledger, LedgerLimits};
use crate::actors::fold::Fold;
use crate::actors::registry::CampaignRegistry;
use crate::config::Settings;
use crate::kafka::consumer::{self, ConsumerConfig, ConsumerHandle, SpawnPartition};
use crate::kafka::producer::EventProducer;
use crate::kafka::{self, BrokerConnection};
use crate::store::checkpoints::OffsetScope;
use crate::store::cluster::{self, MemberId};

/// Where the pipeline's offsets are stored: this cluster, the consumer group, the topic.
pub fn offset_scope(broker: &BrokerConnection, settings: &Settings) -> OffsetScope {
    OffsetScope {
        cluster_id: broker.cluster_id.clone(),
        consumer_group: settings.kafka.consumer_group.clone(),
        topic: settings.kafka.topic.clone(),
    }
}

/// Records per DlrActor batch.
const BATCH_RECORDS: usize = 2_000;

/// How long a stop waits for the last checkpoint's rows to be folded.
const STOP_FOLD_LIMIT: Duration = Duration::from_secs(60);

/// Waits until everything on the topic at the moment of asking is applied, committed and
/// folded, so that Postgres rows reflect every event produced before (used before judging
/// claims left by an earlier run). Partitions this member owns are asked directly; the others
/// are read where their owners' checkpoints store how far they applied.
#[derive(Clone)]
pub struct Replay {
    brokers: kafka::Brokers,
    topic: String,
    partitions: Partitions,
    checkpointer: Addr<Checkpointer>,
    fold: Fold,
    pool: PgPool,
    scope: OffsetScope,
}

impl Replay {
    /// Applied, committed and folded: everything on the topic at the moment of asking.
    pub async fn caught_up(&self) {
        self.applied_to_end().await;
        // a checkpoint begun now covers everything applied so far
        loop {
            match self.checkpointer.send(CheckpointNow).await {
                Ok(Ok(epoch)) => {
                    while !self.fold.until_folded(epoch, Duration::from_secs(60)).await {
                        tracing::warn!(epoch, "the message log is not folded yet; waiting");
                    }
                    // rows other members committed are folded too
                    crate::store::until_ok("folding the message log", || {
                        crate::store::messages::fold(&self.pool)
                    })
                    .await;
                    return;
                }
                Err(_) => return,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "checkpoint after replay failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Waits until every record on the topic at the moment of asking is applied (in memory;
    /// the next checkpoint commits it).
    pub async fn applied_to_end(&self) {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let ends = crate::store::until_ok("reading the topic's end offsets", || {
            let (brokers, topic) = (brokers.clone(), topic.clone());
            async move {
                tokio::task::spawn_blocking(move || kafka::end_offsets(&brokers, &topic))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        // a partition never read from has nothing to apply only if it is empty
        for (partition, end) in ends.into_iter().filter(|(_, end)| *end > 0) {
            loop {
                let here = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                if applied_through(&self.partitions, partition, end - 1, here)
                    .await
                    .is_some()
                    || self.applied_elsewhere(partition, end).await
                {
                    break;
                }
            }
        }
    }

    /// Whether another member's committed checkpoint applied the partition up to `end`.
    async fn applied_elsewhere(&self, partition: i32, end: i64) -> bool {
        if self.partitions.get(partition).is_some() {
            return false;
        }
        match crate::store::cluster::applied_offsets(&self.pool, &self.scope).await {
            Ok(applied) => applied.get(&partition).is_some_and(|a| *a >= end),
            Err(e) => {
                tracing::warn!(error = %e, "reading how far other members applied failed");
                false
            }
        }
    }
}

/// Waits until the partition's actor has applied `offset` (and all before it); answers the
/// epoch whose checkpoint commits it, or `None` once past `deadline`.
async fn applied_through(
    partitions: &Partitions,
    partition: i32,
    offset: i64,
    deadline: Option<tokio::time::Instant>,
) -> Option<u64> {
    loop {
        if let Some(actor) = partitions.get(partition) {
            if let Ok(a) = actor.send(crate::actors::dlr::GetApplied).await {
                if a.next_offset.is_some_and(|next| next > offset) {
                    return Some(a.epoch);
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until produced events are applied by their DlrActors and committed to Postgres, so
/// that rows read afterwards show them.
#[derive(Clone)]
pub struct Applied {
    partitions: Partitions,
    fold: Fold,
}

impl Applied {
    /// `true` once every position (partition, offset) is applied and the checkpoint covering
    /// it committed and folded; `false` if that took longer than `limit`.
    pub async fn committed(&self, positions: &[(i32, i64)], limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last: std::collections::BTreeMap<i32, i64> = Default::default();
        for (partition, offset) in positions {
            let o = last.entry(*partition).or_insert(*offset);
            *o = (*o).max(*offset);
        }
        let mut epoch = 0;
        for (partition, offset) in last {
            match applied_through(&self.partitions, partition, offset, Some(deadline)).await {
                Some(e) => epoch = epoch.max(e),
                None => return false,
            }
        }
        self.until_committed(epoch, deadline).await
    }

    /// `true` once everything applied until now is committed and folded (rows read afterwards
    /// are as current as the actors' memory was); `false` if that took longer than `limit`.
    pub async fn settled(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let epoch = self.partitions.open_epoch();
        self.until_committed(epoch, deadline).await
    }

    async fn until_committed(&self, epoch: u64, deadline: tokio::time::Instant) -> bool {
        let limit = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.fold.until_folded(epoch, limit).await
    }
}

/// What HTTP handlers use of the pipeline.
#[derive(Clone)]
pub struct EventHandles {
    pub registry: CampaignRegistry,
    pub producer: EventProducer,
    pub applied: Applied,
    /// How requests reach the members owning other campaigns.
    pub cluster: crate::http::forward::ClusterHandle,
    /// Whether the consumer is taking records, for readiness.
    pub consumer: consumer::ConsumerHealth,
}

pub struct Pipeline {
    pub handles: EventHandles,
    pub broker: BrokerConnection,
    pub checkpointer: Addr<Checkpointer>,
    pub partitions: Partitions,
    fold: Fold,
    consumer: Option<ConsumerHandle>,
    arbiter: Arbiter,
    senders: Option<Arbiter>,
    /// Rows the send loop claimed, for the partitions that receive their `sent`.
    claimed: ClaimedRows,
    pool: PgPool,
}

/// What the send loop needs besides the pipeline.
pub struct SendingSetup {
    /// Shared with the reconciler: one lookup pace for both.
    pub client: crate::mitto::client::MittoClient,
    pub ambiguous: crate::config::AmbiguousOutcome,
    pub default_traffic_account: Option<crate::domain::TrafficAccountId>,
    /// "Now" for quiet hours and caps (the system clock but in tests).
    pub clock: Arc<dyn crate::engine::clock::Clock>,
}

impl Pipeline {
    #[tracing::instrument(skip_all)]
    pub async fn start(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        let k = &settings.kafka;
        let broker = kafka::connect(k).await.context("connecting to Kafka")?;
        tracing::info!(bootstrap = %broker.brokers.bootstrap, cluster_id = %broker.cluster_id, "Kafka ready");
        let producer =
            EventProducer::new(&broker.brokers, &k.topic).context("creating the producer")?;
        // a new member: its epochs start over (the log left by any earlier one is folded next)
        let member = MemberId::generate();
        cluster::join(&pool, member)
            .await
            .context("joining the cluster")?;
        let committed = 0;
        // rows a crash left in the message log go into place before anything reads them
        let fold_pool = crate::store::fold_pool(&pool);
        let folded = crate::store::messages::fold(&fold_pool)
            .await
            .context("folding the message log")?;
        if folded.logged > 0 {
            tracing::info!(
                rows = folded.logged,
                "folded the message log left by the last run"
            );
        }
        let fold = Fold::start(fold_pool, committed);
        let arbiter = Arbiter::new();
        let partitions = Partitions::new(committed, topic_partitions(&broker, k).await?);
        let registry = CampaignRegistry::new(
            (pool.clone(), member),
            arbiter.handle(),
            (Arc::new(AtomicU64::new(committed)), partitions.clone()),
            fold.clone(),
        );
        let uncommitted = Uncommitted::default();
        let pending = uncommitted.pending.clone();
        let checkpointer = start_checkpointer(
            settings,
            &pool,
            &broker,
            &arbiter,
            (&partitions, &registry, &fold),
            &uncommitted,
        );
        let claimed = ClaimedRows::default();
        let spawn = spawn_partition(settings, &pool, &arbiter, &registry, (&pending, &claimed));
        let config = ConsumerConfig {
            brokers: broker.brokers.clone(),
            group: k.consumer_group.clone(),
            topic: k.topic.clone(),
            session_timeout_ms: k.session_timeout_ms,
            heartbeat_interval_ms: k.heartbeat_interval_ms,
            batch_records: BATCH_RECORDS,
            backlog: consumer::Backlog {
                fold: fold.clone(),
                max_rows: settings.checkpoint_max_unfolded_rows,
                uncommitted,
                max_records: settings.checkpoint_max_records.saturating_mul(2),
            },
            health: consumer::ConsumerHealth::default(),
        };
        let health = config.health.clone();
        let retire = retire_partitions(&registry);
        let consumer = consumer::start(
            config,
            partitions.clone(),
            checkpointer.clone(),
            (spawn, retire),
        )
        .context("starting the consumer")?;
        let applied = Applied {
            partitions: partitions.clone(),
            fold: fold.clone(),
        };
        Ok(Self {
            handles: EventHandles {
                registry,
                producer,
                applied,
                cluster: crate::http::forward::ClusterHandle::new(offset_scope(&broker, settings)),
                consumer: health,
            },
            broker,
            checkpointer,
            partitions,
            fold,
            consumer: Some(consumer),
            arbiter,
            senders: None,
            claimed,
            pool,
        })
    }

    /// Starts the sender pool (on its own thread) and lets campaign actors send.
    pub fn start_sending(
        &mut self,
        settings: &Settings,
        setup: SendingSetup,
    ) -> anyhow::Result<()> {
        use crate::actors::campaign::SendingContext;
        use crate::actors::sender::{Limits, SenderConfig, SenderPool};
        let s = &settings.sending;
        let client = setup.client;
        let limits = Limits::new(
            settings.rate_limits.traffic_account_per_second,
            settings.rate_limits.tenant_per_second,
        );
        let config = SenderConfig {
            fence: Some(crate::actors::sender::SendFence {
                pool: self.pool.clone(),
                scope: offset_scope(&self.broker, settings),
                member: self.handles.registry.member(),
            }),
            client,
            producer: self.handles.producer.clone(),
            limits: Arc::new(limits),
            unavailable_rounds: s.unavailable_rounds.max(1),
            ambiguous: setup.ambiguous,
            ambiguous_grace: Duration::from_millis(s.ambiguous_grace_ms),
        };
        let member = self.handles.registry.member();
        share_rates(
            &config.limits,
            (&self.pool, member),
            offset_scope(&self.broker, settings),
        );
        let arbiter = Arbiter::new();
        let senders = SenderPool::start(config, s.senders, &arbiter.handle());
        self.senders = Some(arbiter);
        let replay = self.replay(settings);
        self.handles
            .registry
            .enable_sending(Arc::new(SendingContext {
                senders,
                replay,
                batch_size: settings
                    .batch_size
                    .clamp(1, crate::mitto::wire::MAX_BULK_MESSAGES),
                max_in_flight: s.max_in_flight_batches.max(1),
                max_retries: s.max_retries,
                max_segments: s.max_segments,
                default_traffic_account: setup.default_traffic_account,
                links: settings.link_wording(),
                clock: setup.clock,
                claimed: self.claimed.clone(),
            }));
        Ok(())
    }

    /// Waits for the topic to be applied (see [`Replay`]).
    pub fn replay(&self, settings: &Settings) -> Replay {
        Replay {
            brokers: self.broker.brokers.clone(),
            topic: settings.kafka.topic.clone(),
            partitions: self.partitions.clone(),
            checkpointer: self.checkpointer.clone(),
            fold: self.fold.clone(),
            pool: self.pool.clone(),
            scope: offset_scope(&self.broker, settings),
        }
    }

    /// Stops consuming (checkpointing what was applied), stops the actors and waits for their
    /// threads, then lets go of the producer and the broker connection — the embedded broker
    /// last, so that no client is left talking to a broker that is gone.
    pub async fn stop(mut self) {
        let consumer = match self.consumer.take() {
            Some(mut consumer) => tokio::task::spawn_blocking(move || {
                consumer.stop();
                consumer
            })
            .await
            .ok(),
            None => None,
        };
        match self.checkpointer.send(CheckpointNow).await {
            Ok(Ok(epoch)) => {
                // a clean stop leaves the message log empty (a start folds it otherwise)
                if !self.fold.until_folded(epoch, STOP_FOLD_LIMIT).await {
                    tracing::warn!(
                        epoch,
                        "the message log was not folded before stopping; the next start folds it"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "final checkpoint failed"),
            Err(_) => {}
        }
        let mut arbiters = vec![self.arbiter];
        arbiters.extend(self.senders.take());
        for arbiter in &arbiters {
            arbiter.stop();
        }
        // the actors (and their producer and pool handles) are gone once their threads end
        let _ = tokio::task::spawn_blocking(move || {
            for arbiter in arbiters {
                let _ = arbiter.join();
            }
            // the checkpointer let go of the offset mirror's hook: the consumer goes with it
            if let Some(consumer) = consumer {
                consumer.close();
            }
        })
        .await;
        let Self {
            handles,
            broker,
            checkpointer,
            partitions,
            fold,
            ..
        } = self;
        drop((checkpointer, partitions, handles, fold));
        drop(broker);
    }
}

/// Runs on the consumer thread, inside the rebalance hook.
fn retire_partitions(registry: &CampaignRegistry) -> consumer::RetirePartitions {
    let registry = registry.clone();
    Arc::new(move |partitions: &[i32], limit: Duration| {
        if !registry.retire_partitions_blocking(partitions, limit) {
            tracing::warn!(
                ?partitions,
                ?limit,
                "campaigns of revoked partitions still had batches out"
            );
        }
    })
}

/// How often a member counts the members that send (to take its share of the rates).
const MEMBERS_RECOUNT: Duration = Duration::from_secs(2);

/// Keeps the senders' share of the rates current while the limits are in use (after a
/// rebalance, within [`MEMBERS_RECOUNT`]), and tells the cluster this member is alive.
fn share_rates(
    limits: &Arc<crate::actors::sender::Limits>,
    (pool, member): (&PgPool, MemberId),
    scope: OffsetScope,
) {
    let (limits, pool) = (Arc::downgrade(limits), pool.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMBERS_RECOUNT);
        loop {
            tick.tick().await;
            let Some(limits) = limits.upgrade() else {
                return;
            };
            match cluster::sending_members(&pool, &scope).await {
                Ok(members) => limits.set_members(members),
                Err(e) => tracing::debug!(error = %e, "counting the sending members failed"),
            }
            if let Err(e) = cluster::heartbeat(&pool, member).await {
                tracing::debug!(error = %e, "telling the cluster this member is alive failed");
            }
        }
    });
}

/// How many partitions the topic has (an existing topic may have more or fewer than
/// `kafka.partitions`): campaign ownership is spread over all of them.
async fn topic_partitions(
    broker: &BrokerConnection,
    settings: &crate::config::KafkaSettings,
) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (brokers, topic) = (broker.brokers.clone(), settings.topic.clone());
        let ends =
            tokio::task::spawn_blocking(move || kafka::end_offsets(&brokers, &topic)).await?;
        // a topic created a moment ago may not list its partitions yet
        match ends {
            Ok(ends) if !ends.is_empty() => return Ok(ends.len() as i32),
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => anyhow::bail!("topic {} has no partitions", settings.topic),
            Err(e) => return Err(e).context("reading the topic's partitions"),
        }
    }
}

fn start_checkpointer(
    settings: &Settings,
    pool: &PgPool,
    broker: &BrokerConnection,
    arbiter: &Arbiter,
    (partitions, registry, fold): (&Partitions, &CampaignRegistry, &Fold),
    uncommitted: &Uncommitted,
) -> Addr<Checkpointer> {
    let config = CheckpointConfig {
        pool: pool.clone(),
        scope: offset_scope(broker, settings),
        member: registry.member(),
        interval: Duration::from_millis(settings.checkpoint_interval_ms),
        max_pending_records: settings.checkpoint_max_records,
        idle_passivation: Duration::from_secs(settings.campaign_idle_secs),
    };
    let (partitions, registry, fold, uncommitted) = (
        partitions.clone(),
        registry.clone(),
        fold.clone(),
        uncommitted.clone(),
    );
    Checkpointer::start_in_arbiter(&arbiter.handle(), move |_| {
        Checkpointer::new(config, partitions, registry, fold, uncommitted)
    })
}

/// A partition's share of the process's `max_resident_rows` (or `max_waiting_messages`): split
/// over every partition of the topic, so that the process stays within it however many it is
/// assigned.
fn resident_share(budget: usize, partitions: i32) -> usize {
    (budget / usize::try_from(partitions).unwrap_or(1).max(1)).max(1)
}

fn spawn_partition(
    settings: &Settings,
    pool: &PgPool,
    arbiter: &Arbiter,
    registry: &CampaignRegistry,
    (pending, claimed): (&Arc<AtomicU64>, &ClaimedRows),
) -> SpawnPartition {
    let limits = LedgerLimits {
        park_ttl: Duration::from_secs(settings.park_ttl_secs),
        max_resident: resident_share(settings.max_resident_rows, settings.kafka.partitions),
        max_waiting: resident_share(settings.max_waiting_messages, settings.kafka.partitions),
        ..LedgerLimits::default()
    };
    let (pool, handle, registry, pending, claimed) = (
        pool.clone(),
        arbiter.handle(),
        registry.clone(),
        pending.clone(),
        claimed.clone(),
    );
    Arc::new(move |partition, next_offset, epoch, generation| {
        let ledger = Ledger::new(partition, next_offset, epoch, limits);
        let (pool, registry, pending, claimed) = (
            pool.clone(),
            registry.clone(),
            pending.clone(),
            claimed.clone(),
        );
        // a `sent` consumed elsewhere left its claimed row here; the partition's next one
        // must find the real row (see ClaimedRows)
        claimed.clear();
        registry.resume_partition(partition);
        DlrActor::start_in_arbiter(&handle, move |_| {
            DlrActor::new(ledger, pool, registry, pending, claimed, generation)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::resident_share;

    #[test]
    fn the_resident_budget_is_split_over_every_partition_of_the_topic_and_never_reaches_zero() {
        assert_eq!(resident_share(2_000_000, 8), 250_000);
        assert_eq!(resident_share(2_000_000, 64), 31_250);
        assert_eq!(resident_share(5, 8), 1);
        assert_eq!(resident_share(100, 0), 100);
    }
}
