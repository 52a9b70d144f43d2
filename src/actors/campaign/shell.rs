//! The actor shell around [`Campaign`]: activation from Postgres, the messages it answers,
//! lifecycle commands, and the send loop.
//!
//! Send loop: while the campaign is `sending`, claim a batch (`queued → processing`, committed
//! before anything leaves), hand it to a sender, keep at most `max_in_flight` batches out, and
//! finish when nothing is queued, claimed or out. Pause and cancel take effect between
//! batches. Before its first claim the actor settles claims left by an earlier run (a crash):
//! it waits until every event already on the topic is applied and committed, then asks Mitto
//! about each remaining claim by its reference instead of resending it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Campaign, Stats, Transition};
use crate::actors::sender::{events_for, Batch, BatchDone, BatchItem, SenderPool};
use crate::domain::{CampaignId, CampaignStatus, RecipientId, TenantId, TrafficAccountId};
use crate::pipeline::Replay;
use crate::store::enqueue::{self, Claimed, EnqueueOutcome, StartError};
use crate::store::{self, checkpoints::CampaignSnapshot};

/// What campaign actors share for sending.
pub struct SendingContext {
    pub senders: SenderPool,
    pub replay: Replay,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub max_retries: u32,
    /// For campaigns created without one.
    pub default_traffic_account: Option<TrafficAccountId>,
}

/// Until its load from Postgres completes the actor holds its mailbox (`ctx.wait`), so nothing
/// is applied to counters that are not loaded yet.
pub struct CampaignActor {
    id: CampaignId,
    pool: sqlx::PgPool,
    state: Load,
    last_touched: Instant,
    sending: Option<Arc<SendingContext>>,
    run: SendRun,
}

enum Load {
    Loading,
    Ready(Box<Campaign>),
    Missing,
}

/// The send loop's bookkeeping for this activation.
#[derive(Default)]
struct SendRun {
    batches_out: usize,
    claiming: bool,
    settled: Settling,
    /// Every claim token this activation issued: claims outside it belong to an earlier run.
    claims: HashSet<Uuid>,
    /// The last phone claimed: the next claim continues after it. Reset whenever recipients
    /// return to the queue (released claims, retry-failed, another enqueue).
    claim_after: String,
    /// A campaign without a traffic account waits; the error is logged once.
    told_no_account: bool,
}

#[derive(Default, PartialEq, Eq)]
enum Settling {
    #[default]
    NotYet,
    Running,
    Done,
}

impl CampaignActor {
    pub fn new(id: CampaignId, pool: sqlx::PgPool, sending: Option<Arc<SendingContext>>) -> Self {
        Self {
            id,
            pool,
            state: Load::Loading,
            last_touched: Instant::now(),
            sending,
            run: SendRun::default(),
        }
    }

    fn campaign(&mut self) -> Option<&mut Campaign> {
        self.last_touched = Instant::now();
        match &mut self.state {
            Load::Ready(c) => Some(c),
            _ => None,
        }
    }

    /// The campaign, if it exists and belongs to `tenant`.
    fn owned(&mut self, tenant: TenantId) -> Option<&mut Campaign> {
        self.campaign().filter(|c| c.tenant == tenant)
    }

    /// Takes the next step of the send loop, if there is one to take.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(sending) = self.sending.clone() else {
            return;
        };
        let Load::Ready(c) = &self.state else {
            return;
        };
        if c.status != CampaignStatus::Sending {
            return;
        }
        if c.plan
            .traffic_account
            .or(sending.default_traffic_account)
            .is_none()
        {
            // pump runs on every transition: say it once per activation
            if !self.run.told_no_account {
                tracing::error!(campaign_id = %c.id, "no traffic account for this campaign and none configured (mitto.traffic_account_id); it waits");
                self.run.told_no_account = true;
            }
            return;
        }
        match self.run.settled {
            Settling::NotYet => return self.settle_earlier_claims(ctx, sending),
            Settling::Running => return,
            Settling::Done => {}
        }
        if self.run.claiming {
            return;
        }
        if let Some(end) = c.finished(self.run.batches_out) {
            return self.finish(ctx, end);
        }
        if self.run.batches_out < sending.max_in_flight && c.counters.queued > 0 {
            self.claim(ctx, sending);
        }
    }

    fn claim(&mut self, ctx: &mut Context<Self>, sending: Arc<SendingContext>) {
        self.run.claiming = true;
        let size = sending
            .senders
            .config
            .limits
            .batch_cap()
            .map_or(sending.batch_size, |cap| cap.min(sending.batch_size))
            .max(1) as i64;
        let (pool, id, after) = (self.pool.clone(), self.id, self.run.claim_after.clone());
        let claim = async move {
            store::until_ok("claiming a batch", || {
                enqueue::claim_batch(&pool, id, &after, size)
            })
            .await
        };
        ctx.spawn(claim.into_actor(self).map(move |(token, rows), act, ctx| {
            act.run.claiming = false;
            if rows.is_empty() {
                // counted as queued but none found after the cursor: start over from the first
                // phone (rows may have been locked by a cancel, or re-queued behind the cursor)
                act.run.claim_after.clear();
                ctx.run_later(Duration::from_millis(200), |act, ctx| act.pump(ctx));
                return;
            }
            act.run.claims.insert(token);
            if let Some(last) = rows.iter().map(|r| &r.phone).max() {
                act.run.claim_after = last.clone();
            }
            let Some(batch) = act.batch_of(&sending, rows) else {
                return;
            };
            if let Some(c) = act.campaign() {
                c.claimed(batch.items.len() as i64);
            }
            act.run.batches_out += 1;
            let senders = sending.senders.clone();
            ctx.spawn(
                async move { senders.send(batch).await }
                    .into_actor(act)
                    .map(|done, act, ctx| act.batch_done(done, ctx)),
            );
            act.pump(ctx);
        }));
    }

    fn batch_of(&self, sending: &SendingContext, rows: Vec<Claimed>) -> Option<Batch> {
        let Load::Ready(c) = &self.state else {
            return None;
        };
        let traffic_account = c.plan.traffic_account.or(sending.default_traffic_account)?;
        Some(Batch {
            campaign: c.id,
            tenant: c.tenant,
            traffic_account,
            sender: c.plan.sender.clone(),
            items: rows
                .into_iter()
                .filter_map(|r| item(r, &c.plan.body))
                .collect(),
        })
    }

    fn batch_done(&mut self, done: Option<BatchDone>, ctx: &mut Context<Self>) {
        self.run.batches_out -= 1;
        let requeue = done.map(|d| d.requeue).unwrap_or_default();
        if requeue.is_empty() {
            return self.pump(ctx);
        }
        self.release(ctx, requeue);
    }

    /// Puts claims that provably never reached Mitto back in the queue (held in the mailbox
    /// so the counters and the rows agree before anything else happens).
    fn release(&mut self, ctx: &mut Context<Self>, ids: Vec<RecipientId>) {
        let pool = self.pool.clone();
        let release = async move {
            store::until_ok("re-queueing unsent claims", || {
                enqueue::release_claims(&pool, &ids)
            })
            .await
        };
        ctx.wait(release.into_actor(self).map(|released, act, ctx| {
            act.run.claim_after.clear();
            if let Some(c) = act.campaign() {
                c.released(released as i64);
            }
            act.pump(ctx);
        }));
    }

    fn finish(&mut self, ctx: &mut Context<Self>, end: CampaignStatus) {
        let (pool, id) = (self.pool.clone(), self.id);
        let write = async move {
            store::until_ok("finishing a campaign", || {
                store::campaigns::set_status(&pool, id, end, None)
            })
            .await
        };
        ctx.wait(write.into_actor(self).map(move |(), act, _| {
            if let Some(c) = act.campaign() {
                c.status = end;
                tracing::info!(campaign_id = %c.id, status = %end, sent = c.counters.sent(), "campaign finished");
            }
        }));
    }

    /// Claims of an earlier run: once the topic is replayed, each is looked up at Mitto (or
    /// failed as `outcome_unknown`, by configuration) — never resent blindly.
    fn settle_earlier_claims(&mut self, ctx: &mut Context<Self>, sending: Arc<SendingContext>) {
        let processing = match &self.state {
            Load::Ready(c) => c.counters.processing,
            _ => 0,
        };
        if processing == 0 && self.run.claims.is_empty() {
            self.run.settled = Settling::Done;
            return self.pump(ctx);
        }
        self.run.settled = Settling::Running;
        let (pool, id) = (self.pool.clone(), self.id);
        let own: Vec<Uuid> = self.run.claims.iter().copied().collect();
        let Some(template) = self.batch_of(&sending, Vec::new()) else {
            return;
        };
        let settle = async move {
            sending.replay.caught_up().await;
            let orphans = store::until_ok("reading earlier claims", || {
                enqueue::orphaned_claims(&pool, id, &own)
            })
            .await;
            if orphans.is_empty() {
                return Vec::new();
            }
            tracing::warn!(campaign_id = %id, claims = orphans.len(), "settling claims left by an earlier run");
            let batch = Batch {
                items: orphans.into_iter().filter_map(|r| item(r, "")).collect(),
                ..template
            };
            let config = &sending.senders.config;
            let resolution = config.resolve_unanswered(&batch.items).await;
            let (events, done) = events_for(&batch, resolution);
            config.publish(&events).await;
            done.requeue
        };
        ctx.spawn(settle.into_actor(self).map(|requeue, act, ctx| {
            act.run.settled = Settling::Done;
            if requeue.is_empty() {
                act.pump(ctx);
            } else {
                act.release(ctx, requeue);
            }
        }));
    }

    fn lifecycle(
        &mut self,
        msg: Lifecycle,
    ) -> Result<ResponseActFuture<Self, LifecycleResult>, StartError> {
        let batch_size = self.sending.as_ref().map_or(500, |s| s.batch_size);
        let max_retries = self.sending.as_ref().map_or(1, |s| s.max_retries) as i32;
        let (pool, id, tenant) = (self.pool.clone(), self.id, msg.tenant);
        let current = self.owned(tenant).ok_or(StartError::NotFound)?.status;
        use CampaignStatus::*;
        let refuse = |allowed: bool| {
            if allowed {
                Ok(())
            } else {
                Err(StartError::Refused(current))
            }
        };
        Ok(match msg.command {
            Command::Enqueue { idempotency_key } => Box::pin(
                async move {
                    let key = idempotency_key.as_deref();
                    enqueue::enqueue(&pool, tenant, id, key, batch_size).await
                }
                .into_actor(self)
                .map(|result, act, ctx| {
                    let outcome = result?;
                    act.run.claim_after.clear();
                    if let (EnqueueOutcome::Done(e), Some(c)) = (&outcome, act.campaign()) {
                        c.enqueued(e.added);
                        if e.added >= enqueue::STATISTICS_REFRESH_ROWS {
                            actix::spawn(enqueue::refresh_statistics(act.pool.clone()));
                        }
                    }
                    act.pump(ctx);
                    Ok(LifecycleReply::Enqueued(outcome))
                }),
            ),
            Command::Schedule(at) => {
                refuse(matches!(current, Draft | Scheduled))?;
                self.set_status(Scheduled, Some(at))
            }
            Command::Unschedule => {
                refuse(current == Scheduled)?;
                self.set_status(Draft, None)
            }
            Command::Pause => {
                refuse(current.can_become(Paused))?;
                self.set_status(Paused, None)
            }
            Command::Resume => {
                refuse(current == Paused)?;
                self.set_status(Sending, None)
            }
            Command::Cancel => {
                refuse(current.can_become(Cancelled))?;
                Box::pin(
                    async move { enqueue::cancel(&pool, id).await.map_err(StartError::from) }
                        .into_actor(self)
                        .map(|result, act, _| {
                            let n = result?;
                            if let Some(c) = act.campaign() {
                                c.cancelled(n);
                            }
                            Ok(LifecycleReply::Changed {
                                status: Cancelled,
                                affected: n,
                            })
                        }),
                )
            }
            Command::RetryFailed => Box::pin(
                async move { enqueue::retry_failed(&pool, tenant, id, max_retries).await }
                    .into_actor(self)
                    .map(|result, act, ctx| {
                        let n = result?;
                        act.run.claim_after.clear();
                        if let Some(c) = act.campaign() {
                            c.retried(n);
                        }
                        act.pump(ctx);
                        Ok(LifecycleReply::Changed {
                            status: Sending,
                            affected: n,
                        })
                    }),
            ),
        })
    }

    fn set_status(
        &mut self,
        to: CampaignStatus,
        scheduled_at: Option<DateTime<Utc>>,
    ) -> ResponseActFuture<Self, LifecycleResult> {
        let (pool, id) = (self.pool.clone(), self.id);
        Box::pin(
            async move { store::campaigns::set_status(&pool, id, to, scheduled_at).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    result?;
                    if let Some(c) = act.campaign() {
                        c.status = to;
                    }
                    act.pump(ctx);
                    Ok(LifecycleReply::Changed {
                        status: to,
                        affected: 0,
                    })
                }),
        )
    }
}

/// A claimed row as a sender's item; the text is the rendered one or the campaign body.
fn item(row: Claimed, body: &str) -> Option<BatchItem> {
    Some(BatchItem {
        recipient: RecipientId::new(row.id).ok()?,
        phone: row.phone,
        text: row.body.unwrap_or_else(|| body.to_owned()),
        attempt: u32::try_from(row.attempt).ok()?,
        segments: u32::try_from(row.segments).ok()?,
    })
}

/// Loads with retries: an actor never answers from counters it could not load.
async fn load_campaign(pool: sqlx::PgPool, id: CampaignId) -> Option<Campaign> {
    store::until_ok("activating a campaign", || {
        store::campaigns::load_for_activation(&pool, id)
    })
    .await
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    #[tracing::instrument(skip_all, fields(campaign_id = %self.id))]
    fn started(&mut self, ctx: &mut Self::Context) {
        let load = load_campaign(self.pool.clone(), self.id);
        ctx.wait(load.into_actor(self).map(|found, act, ctx| {
            act.state = match found {
                Some(c) => Load::Ready(Box::new(c)),
                None => Load::Missing,
            };
            act.pump(ctx);
        }));
    }
}

/// Applies transitions in the order given.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ApplyTransitions(pub Vec<Transition>);

/// The campaign's tenant and stats, or `None` when the campaign does not exist.
#[derive(Message, Clone)]
#[rtype(result = "Option<(TenantId, Stats)>")]
pub struct GetStats;

/// Counters changed since the last snapshot, for the checkpoint.
#[derive(Message)]
#[rtype(result = "Option<CampaignSnapshot>")]
pub struct TakeSnapshot;

/// Stops the actor if it has been idle this long, is not sending, and everything it applied
/// is committed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Passivate {
    pub idle_for: Duration,
    pub committed_epoch: u64,
}

/// Stops the actor so the next message reloads the campaign (its definition was edited);
/// refused (`false`) while batches are out.
#[derive(Message, Clone)]
#[rtype(result = "bool")]
pub struct Reload;

/// The newest checkpoint epoch whose transitions this campaign applied.
#[derive(Message, Clone)]
#[rtype(result = "u64")]
pub struct GetAppliedEpoch;

/// A lifecycle command on behalf of a tenant; another tenant's campaign is `NotFound`.
#[derive(Message, Clone, Debug)]
#[rtype(result = "LifecycleResult")]
pub struct Lifecycle {
    pub tenant: TenantId,
    pub command: Command,
}

#[derive(Clone, Debug)]
pub enum Command {
    Enqueue { idempotency_key: Option<String> },
    Schedule(DateTime<Utc>),
    Unschedule,
    Pause,
    Resume,
    Cancel,
    RetryFailed,
}

#[derive(Debug, Clone)]
pub enum LifecycleReply {
    Enqueued(EnqueueOutcome),
    /// The campaign's new status and how many recipients the change touched.
    Changed {
        status: CampaignStatus,
        affected: i64,
    },
}

pub type LifecycleResult = Result<LifecycleReply, StartError>;

impl Handler<ApplyTransitions> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyTransitions, ctx: &mut Self::Context) {
        let id = self.id;
        match self.campaign() {
            Some(c) => msg.0.iter().for_each(|t| {
                c.apply(t);
            }),
            None => {
                tracing::error!(campaign_id = %id, "transitions for a campaign that does not exist")
            }
        }
        self.pump(ctx);
    }
}

impl Handler<GetStats> for CampaignActor {
    type Result = Option<(TenantId, Stats)>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        self.campaign().map(|c| (c.tenant, c.stats()))
    }
}

impl Handler<TakeSnapshot> for CampaignActor {
    type Result = Option<CampaignSnapshot>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        let Load::Ready(c) = &mut self.state else {
            return None;
        };
        if !c.dirty {
            return None;
        }
        c.dirty = false;
        Some(CampaignSnapshot {
            campaign: c.id,
            counters: c.counters,
            first_sent_at: c.first_sent_at,
            last_event_at: c.last_event_at,
        })
    }
}

impl Handler<Passivate> for CampaignActor {
    type Result = bool;

    fn handle(&mut self, msg: Passivate, ctx: &mut Self::Context) -> bool {
        let idle = self.last_touched.elapsed() >= msg.idle_for
            && self.run.batches_out == 0
            && !self.run.claiming;
        let settled = match &self.state {
            Load::Ready(c) => {
                c.applied_epoch <= msg.committed_epoch
                    && !c.dirty
                    && c.status != CampaignStatus::Sending
            }
            Load::Missing => true,
            Load::Loading => false,
        };
        if idle && settled {
            ctx.stop();
        }
        idle && settled
    }
}

impl Handler<Reload> for CampaignActor {
    type Result = bool;

    fn handle(&mut self, _: Reload, ctx: &mut Self::Context) -> bool {
        let quiet = self.run.batches_out == 0 && !self.run.claiming;
        if quiet {
            ctx.stop();
        }
        quiet
    }
}

impl Handler<GetAppliedEpoch> for CampaignActor {
    type Result = u64;

    fn handle(&mut self, _: GetAppliedEpoch, _: &mut Self::Context) -> u64 {
        match &self.state {
            Load::Ready(c) => c.applied_epoch,
            _ => 0,
        }
    }
}

impl Handler<Lifecycle> for CampaignActor {
    type Result = AtomicResponse<Self, LifecycleResult>;

    fn handle(&mut self, msg: Lifecycle, _: &mut Self::Context) -> Self::Result {
        match self.lifecycle(msg) {
            Ok(work) => AtomicResponse::new(work),
            Err(refused) => AtomicResponse::new(Box::pin(fut::ready(Err(refused)))),
        }
    }
}
