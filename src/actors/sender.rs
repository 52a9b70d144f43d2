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
use chrono::Utc;
use dashmap::DashMap;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::AmbiguousOutcome;
use crate::domain::{
    BulkId, CampaignId, Event, MessageId, RecipientId, TenantId, TrafficAccountId,
};
use crate::kafka::producer::EventProducer;
use crate::mitto::client::{ItemResult, MittoClient, Outcome};
use crate::mitto::wire::{SendMessage, Sms};

/// Segment budgets per traffic account and per tenant; absent rates are unlimited.
pub struct Limits {
    account_rate: Option<NonZeroU32>,
    tenant_rate: Option<NonZeroU32>,
    accounts: DashMap<TrafficAccountId, Arc<Bucket>>,
    tenants: DashMap<TenantId, Arc<Bucket>>,
}

struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Bucket {
    /// A burst of 1/20 s of the rate: large enough for whole chunks, small enough that the
    /// rate measured over a few seconds is the configured one.
    fn new(rate: NonZeroU32) -> Self {
        let burst = NonZeroU32::new((rate.get() / 20).max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            burst,
        }
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
        }
    }

    /// The largest batch (in messages) that keeps sends smooth under the limits: a quarter
    /// second of the tighter rate.
    pub fn batch_cap(&self) -> Option<usize> {
        [self.account_rate, self.tenant_rate]
            .into_iter()
            .flatten()
            .map(|r| (r.get() as usize / 4).max(1))
            .min()
    }

    /// Waits until both budgets allow `segments` more.
    pub async fn acquire(&self, account: TrafficAccountId, tenant: TenantId, segments: u32) {
        if let Some(rate) = self.account_rate {
            let bucket = self
                .accounts
                .entry(account)
                .or_insert_with(|| Arc::new(Bucket::new(rate)))
                .clone();
            bucket.take(segments).await;
        }
        if let Some(rate) = self.tenant_rate {
            let bucket = self
                .tenants
                .entry(tenant)
                .or_insert_with(|| Arc::new(Bucket::new(rate)))
                .clone();
            bucket.take(segments).await;
        }
    }
}

/// One recipient of a claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub recipient: RecipientId,
    pub phone: String,
    pub text: String,
    pub attempt: u32,
    pub segments: u32,
}

impl BatchItem {
    /// Unique per recipient and attempt: what an unanswered send is looked up by.
    pub fn reference(&self) -> String {
        format!("r{}a{}", self.recipient, self.attempt)
    }
}

/// A claimed batch of one campaign.
#[derive(Debug, Clone)]
pub struct Batch {
    pub campaign: CampaignId,
    pub tenant: TenantId,
    pub traffic_account: TrafficAccountId,
    pub sender: String,
    pub items: Vec<BatchItem>,
}

/// What became of a batch once its events are on the topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchDone {
    pub accepted: usize,
    pub failed: usize,
    /// Provably never accepted (lost answer, absent at Mitto): to be queued again.
    pub requeue: Vec<RecipientId>,
}

/// How a batch's send ended, before it becomes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Mitto answered per message.
    Answered {
        bulk_id: Option<BulkId>,
        items: Vec<ItemResult>,
    },
    /// The whole batch failed before acceptance.
    AllFailed { error: String, retryable: bool },
    /// The answer was lost; per message: accepted as, or absent (`None`), or unknowable
    /// (`Err`).
    LookedUp(Vec<Result<Option<MessageId>, String>>),
}

/// The error recorded for a message whose send outcome cannot be known.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// Turns a resolution into the events to publish and the batch's report. Pure.
pub fn events_for(batch: &Batch, resolution: Resolution) -> (Vec<Event>, BatchDone) {
    let at = Utc::now();
    let mut done = BatchDone::default();
    let mut events = Vec::with_capacity(batch.items.len());
    let sent = |item: &BatchItem, message_id: MessageId, bulk_id| Event::Sent {
        message_id,
        campaign_id: batch.campaign,
        recipient_id: item.recipient,
        bulk_id,
        attempt: item.attempt,
        at,
    };
    // a provider's reason is stored as text, which cannot hold NUL: drop it rather than let
    // the event be dead-lettered and its recipient stay claimed
    let failed = |item: &BatchItem, error: String, retryable| Event::SendFailed {
        campaign_id: batch.campaign,
        recipient_id: item.recipient,
        error: error.replace('\0', ""),
        retryable,
        attempt: item.attempt,
        at,
    };
    match resolution {
        Resolution::Answered { bulk_id, items } => {
            for (item, result) in batch.items.iter().zip(items) {
                events.push(match result {
                    ItemResult::Accepted { message_id } => sent(item, message_id, bulk_id),
                    ItemResult::Rejected { code, message } => {
                        failed(item, format!("{code}: {message}"), false)
                    }
                });
            }
        }
        Resolution::AllFailed { error, retryable } => {
            events.extend(
                batch
                    .items
                    .iter()
                    .map(|i| failed(i, error.clone(), retryable)),
            );
        }
        Resolution::LookedUp(found) => {
            for (item, found) in batch.items.iter().zip(found) {
                match found {
                    Ok(Some(message_id)) => events.push(sent(item, message_id, None)),
                    Ok(None) => done.requeue.push(item.recipient),
                    Err(why) => {
                        events.push(failed(item, format!("{OUTCOME_UNKNOWN}: {why}"), false))
                    }
                }
            }
        }
    }
    done.accepted = events
        .iter()
        .filter(|e| matches!(e, Event::Sent { .. }))
        .count();
    done.failed = events.len() - done.accepted;
    (events, done)
}

/// What every sender shares.
pub struct SenderConfig {
    pub client: MittoClient,
    pub producer: EventProducer,
    pub limits: Arc<Limits>,
    pub unavailable_rounds: u32,
    pub ambiguous: AmbiguousOutcome,
    pub ambiguous_grace: Duration,
}

impl SenderConfig {
    /// Sends one batch and publishes its events; returns once they are acknowledged.
    #[tracing::instrument(skip_all, fields(campaign_id = %batch.campaign, messages = batch.items.len()))]
    pub async fn deliver(&self, batch: Batch) -> BatchDone {
        let segments = batch.items.iter().map(|i| i.segments).sum();
        self.limits
            .acquire(batch.traffic_account, batch.tenant, segments)
            .await;
        let resolution = self.send(&batch).await;
        let (events, done) = events_for(&batch, resolution);
        self.publish(&events).await;
        done
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
            let error = match self.client.send_bulk(&messages).await {
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

/// The pool: batches go to the senders in turn.
#[derive(Clone)]
pub struct SenderPool {
    senders: Arc<[Addr<SenderActor>]>,
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
        Self {
            senders: senders.into(),
            next: Arc::default(),
            config,
        }
    }

    /// Sends a batch through the next sender; `None` only if the senders were stopped.
    pub async fn send(&self, batch: Batch) -> Option<BatchDone> {
        use std::sync::atomic::Ordering;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        self.senders[i].send(SendBatch(batch)).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: i64) -> Batch {
        Batch {
            campaign: CampaignId::new(1).unwrap(),
            tenant: TenantId::new(1).unwrap(),
            traffic_account: TrafficAccountId::new_random(),
            sender: "Shop".into(),
            items: (1..=n)
                .map(|r| BatchItem {
                    recipient: RecipientId::new(r).unwrap(),
                    phone: format!("+3069000000{r:02}"),
                    text: "Hi".into(),
                    attempt: 1,
                    segments: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn answered_items_become_sent_or_failed_in_request_order() {
        let id = MessageId::generate();
        let (events, done) = events_for(
            &batch(2),
            Resolution::Answered {
                bulk_id: None,
                items: vec![
                    ItemResult::Accepted {
                        message_id: id.clone(),
                    },
                    ItemResult::Rejected {
                        code: "InvalidDestination".into(),
                        message: "bad".into(),
                    },
                ],
            },
        );
        assert!(
            matches!(&events[0], Event::Sent { message_id, attempt: 1, .. } if *message_id == id)
        );
        assert!(
            matches!(&events[1], Event::SendFailed { retryable: false, recipient_id, .. } if recipient_id.get() == 2)
        );
        assert_eq!((done.accepted, done.failed), (1, 1));
    }

    #[test]
    fn unanswered_sends_are_recorded_requeued_or_failed_never_resent() {
        let found = vec![
            Ok(Some(MessageId::generate())),
            Ok(None),
            Err("lookup failed".to_owned()),
        ];
        let (events, done) = events_for(&batch(3), Resolution::LookedUp(found));
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::Sent { .. }));
        assert!(
            matches!(&events[1], Event::SendFailed { error, retryable: false, .. } if error.starts_with(OUTCOME_UNKNOWN))
        );
        assert_eq!(done.requeue, vec![RecipientId::new(2).unwrap()]);
    }

    #[test]
    fn batches_are_capped_to_a_quarter_second_of_the_tighter_limit() {
        let limits = Limits::new(NonZeroU32::new(1000), NonZeroU32::new(200));
        assert_eq!(limits.batch_cap(), Some(50));
        assert_eq!(Limits::new(None, None).batch_cap(), None);
    }
}
