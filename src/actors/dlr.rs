//! DlrActor: one per assigned partition of `message-events`, the shell around its
//! [`Ledger`] (src/engine/ledger.rs): it loads what a batch needs from Postgres, applies the
//! batch, hands the transitions to campaign actors, and answers checkpoint barriers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use sqlx::PgPool;

use super::claimed::ClaimedRows;
use super::registry::CampaignRegistry;
use crate::engine::engagement::EngagementRow;
use crate::engine::ledger::MessageRow;
pub use crate::engine::ledger::{
    Incoming, Ledger, LedgerLimits, Lookups, PartitionCheckpoint, Poison,
};
use crate::store::messages;

/// Applies a batch of records (in order) and answers when their transitions were handed to
/// campaign actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Records(pub Vec<Incoming>);

/// Closes epoch `epoch`: the reply is what the checkpoint with that number commits.
#[derive(Message)]
#[rtype(result = "PartitionCheckpoint")]
#[derive(Clone, Copy)]
pub struct Barrier {
    pub epoch: u64,
    /// The last epoch committed to Postgres when this barrier was sent.
    pub committed: u64,
    /// The last epoch whose message rows were folded into `campaign_recipients` by then.
    pub folded: u64,
}

/// Stops the actor (its partition was revoked and checkpointed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Asks how far the partition is applied, and which checkpoint will commit what was applied
/// so far (at the latest).
#[derive(Message)]
#[rtype(result = "Applied")]
pub struct GetApplied;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The next offset to apply.
    pub next_offset: Option<i64>,
    /// Everything applied so far is committed once this epoch is.
    pub epoch: u64,
}

pub struct DlrActor {
    ledger: Ledger,
    pool: PgPool,
    registry: CampaignRegistry,
    /// Records applied since the last checkpoint, across partitions (the checkpointer's
    /// "N events" trigger).
    pending: Arc<AtomicU64>,
    /// Rows this process claimed: a `sent` of one needs no lookup.
    claimed: ClaimedRows,
    /// The partition's generation when this member took it over: its checkpoints are
    /// written only while it is still the current one.
    generation: u64,
}

/// Batches a partition may have queued before the consumer waits.
pub const MAILBOX_BATCHES: usize = 4;

impl DlrActor {
    pub fn new(
        ledger: Ledger,
        pool: PgPool,
        registry: CampaignRegistry,
        pending: Arc<AtomicU64>,
        claimed: ClaimedRows,
        generation: u64,
    ) -> Self {
        Self {
            ledger,
            pool,
            registry,
            pending,
            claimed,
            generation,
        }
    }
}

impl Actor for DlrActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_BATCHES);
    }
}

/// Loads what a batch needs, retrying while Postgres is unavailable: a batch is never applied
/// on guesses.
async fn load(pool: PgPool, lookups: Lookups) -> (Vec<MessageRow>, Vec<EngagementRow>) {
    crate::store::until_ok("loading message state", || async {
        let mut rows = Vec::new();
        if !lookups.recipients.is_empty() {
            rows.extend(messages::load_by_recipients(&pool, &lookups.recipients).await?);
        }
        if !lookups.messages.is_empty() {
            rows.extend(messages::load_by_message_ids(&pool, &lookups.messages).await?);
        }
        let engaged = match lookups.engaged.is_empty() {
            true => Vec::new(),
            false => messages::load_engagement(&pool, &lookups.engaged).await?,
        };
        Ok::<_, crate::store::StoreError>((rows, engaged))
    })
    .await
}

impl Handler<Records> for DlrActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Records, _: &mut Self::Context) -> Self::Result {
        let mut lookups = self.ledger.lookups(&msg.0);
        let handed = self.claimed.take_for(&msg.0, &mut lookups);
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if lookups == Lookups::default() {
                    Default::default()
                } else {
                    load(pool, lookups).await
                }
            }
            .into_actor(self)
            .then(move |(rows, engaged), act, _| {
                act.ledger.absorb(handed);
                act.ledger.absorb(rows);
                act.ledger.absorb_engaged(engaged);
                let n = msg.0.len() as u64;
                let transitions = act.ledger.apply_batch(msg.0, Utc::now());
                act.pending.fetch_add(n, Ordering::Relaxed);
                for (event_type, outcome, n) in std::mem::take(&mut act.ledger.counts).cells() {
                    crate::metrics::events(event_type, outcome.as_str(), n);
                }
                let registry = act.registry.clone();
                async move { registry.deliver(transitions).await }.into_actor(act)
            }),
        ))
    }
}

impl Handler<Barrier> for DlrActor {
    type Result = MessageResult<Barrier>;

    fn handle(&mut self, msg: Barrier, _: &mut Self::Context) -> Self::Result {
        let mut checkpoint = self
            .ledger
            .barrier(msg.epoch, msg.committed, msg.folded, Utc::now());
        checkpoint.generation = self.generation;
        crate::metrics::ledger(self.ledger.memory());
        MessageResult(checkpoint)
    }
}

impl Handler<Stop> for DlrActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        crate::metrics::ledger_gone(self.ledger.partition());
        self.registry.evict_partition(self.ledger.partition());
        ctx.stop();
    }
}

impl Handler<GetApplied> for DlrActor {
    type Result = MessageResult<GetApplied>;

    fn handle(&mut self, _: GetApplied, _: &mut Self::Context) -> Self::Result {
        MessageResult(Applied {
            next_offset: self.ledger.next_offset(),
            epoch: self.ledger.epoch(),
        })
    }
}
