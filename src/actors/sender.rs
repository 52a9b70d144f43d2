//! SenderActor pool: each actor takes one claimed batch at a time through the rate limits,
//! one Mitto bulk call, and onto `message-events` as `sent` / `send_failed` events (acks=all)
//! before it reports the batch done.
//!
//! Rate limits count SMS segments, per Mitto traffic account and per tenant (governor token
//! buckets with a small burst, so the achieved rate stays at the configured one). Provider
//! unavailability is retried by the client (backoff, Retry-After) and then for a few more
//! rounds here; only then are the messages failed, as retryable. A send whose answer was lost
//! is never resent blindly: either Mitto is asked by our per-attempt reference (found → `sent`,
//! absent → handed back for re-queueing) or the messages are failed with `outcome_unknown`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::AmbiguousOutcome;
use crate::domain::{Event, MessageId, TenantId, TrafficAccountId};
pub use crate::engine::batch::{
    events_for, Batch, BatchDone, BatchItem, Resolution, OUTCOME_UNKNOWN,
};
use crate::kafka::producer::EventProducer;
use crate::mitto::client::{MittoClient, Outcome};
use crate::mitto::wire::{SendMessage, Sms};

/// Segment budgets per traffic account and per tenant; absent rates are unlimited. The rates
/// are the cluster's: with several members sending, each takes an equal share.
pub struct Limits {
    account_rate: Option<NonZeroU32>,
    tenant_rate: Option<NonZeroU32>,
    accounts: DashMap<TrafficAccountId, Arc<Bucket>>,
    tenants: DashMap<TenantId, Arc<Bucket>>,
    /// Members holding partitions (each may send the campaigns they own).
    members: std::sync::atomic::AtomicU32,
}

struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Bucket {
    /// At most `rate` segments leave in any one-second window: a burst of 1/40 s of the
    /// rate (whole pieces go at once, see [`Limits::piece_cells`]) plus a steady flow lowered
    /// by that burst and by 1/100 s more for the spread of request latencies, so that burst
    /// plus one second of flow, as the provider counts them, stays within the rate. The
    /// sustained rate is about 96 % of the configured one.
    fn new(rate: NonZeroU32) -> Self {
        let burst = Self::burst(rate);
        let steady = rate.get().saturating_sub(burst + rate.get() / 100).max(1);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let steady = NonZeroU32::new(steady).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(steady).allow_burst(burst)),
            burst,
        }
    }

    /// 1/40 s of the rate, at least one segment.
    fn burst(rate: NonZeroU32) -> u32 {
        (rate.get() / 40).max(1)
    }

    async fn take(&self, mut cells: u32) {
        while cells > 0 {
            let chunk = cells.min(self.burst.get());
            let n = NonZeroU32::new(chunk).unwrap_or(NonZeroU32::MIN);
            // a chunk never exceeds the burst, so capacity is always sufficient
            let _ = self.limiter.until_n_ready(n).await;
            cells -= chunk;
        }
    }
}

impl Limits {
    pub fn new(account_rate: Option<NonZeroU32>, tenant_rate: Option<NonZeroU32>) -> Self {
        Self {
            account_rate,
            tenant_rate,
            accounts: DashMap::new(),
            tenants: DashMap::new(),
            members: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// How many members send: from now on this one takes `1 / members` of each rate (a
    /// batch already waiting finishes under the old share).
    pub fn set_members(&self, members: u32) {
        let members = members.max(1);
        if self
            .members
            .swap(members, std::sync::atomic::Ordering::Relaxed)
            != members
        {
            tracing::info!(members, "sending rates shared between members");
            self.accounts.clear();
            self.tenants.clear();
        }
    }

    /// This member's share of a rate.
    fn share(&self, rate: NonZeroU32) -> NonZeroU32 {
        let members = self
            .members
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        NonZeroU32::new(rate.get() / members).unwrap_or(NonZeroU32::MIN)
    }

    /// The most segments one bulk call carries: the tighter bucket's burst, so a call's
    /// segments are taken from the budget at once and leave together.
    pub fn piece_cells(&self) -> Option<u32> {
        [self.account_rate, self.tenant_rate]
            .into_iter()
            .flatten()
            .map(|r| Bucket::burst(self.share(r)))
            .min()
    }

    /// The largest batch (in messages) that keeps sends smooth under the limits: a quarter
    /// second of the tighter rate (sent in pieces, see [`Limits::piece_cells`]).
    pub fn batch_cap(&self) -> Option<usize> {
        [self.account_rate, self.tenant_rate]
            .into_iter()
            .flatten()
            .map(|r| (self.share(r).get() as usize / 4).max(1))
            .min()
    }

    /// Waits until both budgets allow `segments` more; the account's (the provider's limit)
    /// is taken last, right before the call.
    pub async fn acquire(&self, account: TrafficAccountId, tenant: TenantId, segments: u32) {
        if let Some(rate) = self.tenant_rate {
            let bucket = self
                .tenants
                .entry(tenant)
                .or_insert_with(|| Arc::new(Bucket::new(self.share(rate))))
                .clone();
            bucket.take(segments).await;
        }
        if let Some(rate) = self.account_rate {
            let bucket = self
                .accounts
                .entry(account)
                .or_insert_with(|| Arc::new(Bucket::new(self.share(rate))))
                .clone();
            bucket.take(segments).await;
        }
    }
}

/// Where a sender checks that its member still owns a batch's campaign.
pub struct SendFence {
    pub pool: sqlx::PgPool,
    pub scope: crate::store::checkpoints::OffsetScope,
    pub member: crate::store::cluster::MemberId,
}

/// What every sender shares.
pub struct SenderConfig {
    /// Checked right before each bulk call: a member paused past its session (its campaigns
    /// moved meanwhile) does not send the batches it had claimed.
    pub fence: Option<SendFence>,
    pub client: MittoClient,
    pub producer: EventProducer,
    pub limits: Arc<Limits>,
    pub unavailable_rounds: u32,
    pub ambiguous: AmbiguousOutcome,
    pub ambiguous_grace: Duration,
}

impl SenderConfig {
    /// Sends one batch, in pieces that fit the rate limits' bursts, and publishes its
    /// events; returns once they are acknowledged.
    #[tracing::instrument(skip_all, fields(campaign_id = %batch.campaign, messages = batch.items.len()))]
    pub async fn deliver(&self, batch: Batch) -> BatchDone {
        let mut done = BatchDone::default();
        for piece in batch.pieces(self.limits.piece_cells()) {
            done.merge(self.deliver_piece(piece).await);
        }
        done
    }

    async fn deliver_piece(&self, piece: Batch) -> BatchDone {
        self.pace(&piece).await;
        let resolution = match self.still_owner(&piece).await {
            true => self.send(&piece).await,
            false => piece.never_left(),
        };
        let (events, done) = events_for(&piece, resolution);
        self.publish(&events).await;
        count_sends(&events);
        done
    }

    /// Takes a piece's segments from the rate limits.
    async fn pace(&self, piece: &Batch) {
        let segments = piece.items.iter().map(|i| i.segments).sum();
        let waiting = std::time::Instant::now();
        self.limits
            .acquire(piece.traffic_account, piece.tenant, segments)
            .await;
        crate::metrics::limiter_wait(waiting.elapsed());
    }

    /// Whether this member still owns the batch's campaign (a failed check counts as no: the
    /// batch goes back to the queue, never out).
    async fn still_owner(&self, batch: &Batch) -> bool {
        let (Some(fence), Some(owner)) = (&self.fence, batch.owner) else {
            return true;
        };
        match crate::store::cluster::holds(&fence.pool, &fence.scope, fence.member, owner).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(campaign_id = %batch.campaign, ?owner, "the campaign moved to another member; its batch goes back to the queue unsent");
                false
            }
            Err(e) => {
                tracing::warn!(campaign_id = %batch.campaign, error = %e, "checking the campaign's owner failed; its batch goes back to the queue unsent");
                false
            }
        }
    }

    async fn send(&self, batch: &Batch) -> Resolution {
        let messages: Vec<SendMessage> = batch
            .items
            .iter()
            .map(|i| SendMessage {
                traffic_account_id: batch.traffic_account,
                destination: i.phone.clone(),
                sms: Sms {
                    text: i.text.clone(),
                    sender: batch.sender.clone(),
                },
                reference: Some(i.reference()),
            })
            .collect();
        let mut round = 1;
        loop {
            // every retry, and every later round, goes out under the rate limits again
            let again = || self.pace(batch);
            if round > 1 {
                again().await;
            }
            let error = match self.client.send_bulk_paced(&messages, again).await {
                Ok(outcome) => {
                    return Resolution::Answered {
                        bulk_id: outcome.bulk_id,
                        items: outcome.items,
                    }
                }
                Err(e) => e,
            };
            match error.outcome() {
                Outcome::Retryable if round < self.unavailable_rounds => {
                    tracing::warn!(error = %error, round, "Mitto unavailable; the batch waits");
                    tokio::time::sleep(Duration::from_secs(round as u64)).await;
                    round += 1;
                }
                Outcome::Retryable => {
                    return Resolution::AllFailed {
                        error: error.to_string(),
                        retryable: true,
                    }
                }
                Outcome::Failed => {
                    return Resolution::AllFailed {
                        error: error.to_string(),
                        retryable: false,
                    }
                }
                Outcome::Ambiguous => {
                    tracing::warn!(error = %error, "send answer lost; resolving without resending");
                    return self.resolve_unanswered(&batch.items).await;
                }
            }
        }
    }

    /// Decides, without resending, what became of messages whose send was never answered.
    pub async fn resolve_unanswered(&self, items: &[BatchItem]) -> Resolution {
        if self.ambiguous == AmbiguousOutcome::Fail {
            return Resolution::LookedUp(
                items
                    .iter()
                    .map(|_| Err("the send was not answered".to_owned()))
                    .collect(),
            );
        }
        tokio::time::sleep(self.ambiguous_grace).await;
        let lookups = items.iter().map(|item| async move {
            match self.client.message_by_reference(&item.reference()).await {
                Ok(Some(m)) => MessageId::parse(&m.message_id)
                    .map(Some)
                    .map_err(|e| format!("Mitto reported {e}")),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        let found = futures::stream::iter(lookups).buffered(16).collect().await;
        Resolution::LookedUp(found)
    }

    /// Publishes events, waiting out a broker outage: a batch is done only once its events
    /// are acknowledged.
    pub async fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        crate::store::until_ok("publishing send events", || self.producer.send(events)).await
    }
}

/// Counts a batch's published outcomes for the metrics.
fn count_sends(events: &[Event]) {
    let (mut accepted, mut retryable, mut failed) = (0, 0, 0);
    for event in events {
        match event {
            Event::Sent { .. } => accepted += 1,
            Event::SendFailed {
                retryable: true, ..
            } => retryable += 1,
            Event::SendFailed { .. } => failed += 1,
            _ => {}
        }
    }
    crate::metrics::sends(accepted, retryable, failed);
}

/// Sends one batch; the reply comes once its events are on the topic.
#[derive(Message)]
#[rtype(result = "BatchDone")]
pub struct SendBatch(pub Batch);

/// One sender: one batch at a time (the pool gives concurrency, the mailbox back-pressure).
pub struct SenderActor {
    config: Arc<SenderConfig>,
}

impl Actor for SenderActor {
    type Context = Context<Self>;
}

impl Handler<SendBatch> for SenderActor {
    type Result = AtomicResponse<Self, BatchDone>;

    fn handle(&mut self, msg: SendBatch, _: &mut Self::Context) -> Self::Result {
        let config = self.config.clone();
        AtomicResponse::new(Box::pin(
            async move { config.deliver(msg.0).await }.into_actor(self),
        ))
    }
}

/// The pool: each batch goes to the sender with the fewest batches (ties in turn), so a
/// batch never queues behind one waiting out a provider's `Retry-After` while another sender
/// is idle.
#[derive(Clone)]
pub struct SenderPool {
    senders: Arc<[Addr<SenderActor>]>,
    /// Batches given to each sender and not answered yet.
    loads: Arc<[std::sync::atomic::AtomicUsize]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    pub config: Arc<SenderConfig>,
}

impl SenderPool {
    /// Starts `size` senders on their own arbiter (thread), apart from the event actors.
    pub fn start(config: SenderConfig, size: usize, arbiter: &ArbiterHandle) -> Self {
        let config = Arc::new(config);
        let senders: Vec<_> = (0..size.max(1))
            .map(|_| {
                let config = config.clone();
                SenderActor::start_in_arbiter(arbiter, move |_| SenderActor { config })
            })
            .collect();
        let loads = senders.iter().map(|_| Default::default()).collect();
        Self {
            senders: senders.into(),
            loads,
            next: Arc::default(),
            config,
        }
    }

    /// Sends a batch through the least busy sender; `None` only if the senders were stopped.
    pub async fn send(&self, batch: Batch) -> Option<BatchDone> {
        use std::sync::atomic::Ordering;
        let n = self.senders.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let i = (first..first + n)
            .map(|k| k % n)
            .min_by_key(|i| self.loads[*i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.loads[i].fetch_add(1, Ordering::Relaxed);
        let done = self.senders[i].send(SendBatch(batch)).await.ok();
        self.loads[i].fetch_sub(1, Ordering::Relaxed);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_a_quarter_second_and_pieces_a_fortieth_of_the_tighter_limit() {
        let limits = Limits::new(NonZeroU32::new(1000), NonZeroU32::new(200));
        assert_eq!(limits.batch_cap(), Some(50));
        assert_eq!(limits.piece_cells(), Some(5));
        assert_eq!(Limits::new(None, None).batch_cap(), None);
        assert_eq!(Limits::new(None, None).piece_cells(), None);
    }

    #[actix_web::test]
    async fn a_bucket_never_lets_more_than_its_rate_through_in_a_second() {
        // a fresh bucket of 1000/s: its burst (25) and one second of its steady flow (965)
        let bucket = Bucket::new(NonZeroU32::new(1000).unwrap());
        let started = tokio::time::Instant::now();
        bucket.take(25 + 965).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(990), "{took:?}");
    }

    #[actix_web::test]
    async fn members_that_send_share_the_rates_equally() {
        let limits = Limits::new(NonZeroU32::new(1000), None);
        limits.set_members(4);
        assert_eq!(limits.batch_cap(), Some(62), "a quarter second of 250/s");
        assert_eq!(limits.piece_cells(), Some(6), "1/40 s of 250/s");
        // a fresh bucket of 250/s holds a burst of 6 and flows at 242/s
        let (account, tenant) = (
            TrafficAccountId::from_uuid(uuid::Uuid::nil()),
            TenantId::new(1).unwrap(),
        );
        let started = tokio::time::Instant::now();
        limits.acquire(account, tenant, 242 + 6).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(990),
            "{took:?}: at most 250 segments a second"
        );
        limits.set_members(1);
        assert_eq!(limits.batch_cap(), Some(250));
    }
}
