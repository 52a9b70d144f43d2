//! Reconciliation: fetching from Mitto the statuses whose reports never came, and keeping no
//! campaign stuck in `sending`.
//!
//! - [`Reconciler::refresh_one`] and [`Reconciler::refresh_bulk`] serve the refresh API;
//! - a periodic pass ([`Reconciler::pass`]) looks up messages sent long ago without a final
//!   report, oldest first with cursors that move on, and gives up on them (`unknown`) after
//!   the configured time;
//! - a sweep makes sure every campaign whose row says `sending` has a live actor on it.
//!
//! One writer of message state stays true: every answer becomes an event on
//! `message-events` ([`engine::reconcile::event_for`]) applied by the message's DlrActor under
//! the forward-only rule. A refresh that must answer what changed waits until its events are
//! applied and committed, then reads the rows.

mod jobs;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use futures::StreamExt;
use sqlx::PgPool;

pub use self::jobs::{BulkReport, BulkResult, BulkStart, BulkTarget};
use crate::actors::registry::CampaignRegistry;
use crate::config::ReconcileSettings;
use crate::domain::{CampaignId, DeliveryStatus, Event, TenantId};
use crate::engine::reconcile::{event_for, Cursors, Lookup, Tally};
use crate::kafka::producer::EventProducer;
use crate::mitto::client::{MittoClient, MittoError};
use crate::mitto::wire::parse_timestamp;
use crate::pipeline::{Applied, Replay};
use crate::store::reconcile::{self as store, Scope, Waiting};
use crate::store::StoreError;

/// Why a refresh could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("{0}")]
    NotFound(String),
    /// A refresh of the same campaign is running.
    #[error("a refresh of campaign {campaign} is already running (job {job})")]
    Running {
        campaign: CampaignId,
        job: uuid::Uuid,
    },
    #[error("Mitto could not be asked: {0}")]
    Provider(MittoError),
    /// Mitto did not answer within the time a request may wait.
    #[error("Mitto did not answer within {0:?}")]
    ProviderTimeout(Duration),
    #[error("the answer could not be published: {0}")]
    Broker(String),
    /// Published, but not applied in time; it will be.
    #[error("the answer was published but not applied within {0:?}; it will be applied shortly")]
    NotApplied(Duration),
    /// Reports already applied were not committed in time; nothing was asked yet.
    #[error("reports already received are not yet committed (waited {0:?}); try again shortly")]
    Behind(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the refresh stopped unexpectedly: {0}")]
    Internal(String),
}

/// What `POST /api/mitto/refresh-status` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    pub provider_message_id: String,
    pub campaign_id: CampaignId,
    /// Our status after the refresh (`sent` while in flight).
    pub status: String,
    /// Mitto's raw status as stored.
    pub delivery_status: Option<String>,
    /// Whether the refresh moved the message's status.
    pub updated: bool,
}

/// One message's lookup: the answer (or why there is none) and the event it became.
struct Looked {
    waiting: Waiting,
    lookup: Lookup,
    event: Option<Event>,
}

/// Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    client: MittoClient,
    producer: EventProducer,
    applied: Applied,
    replay: Replay,
    settings: ReconcileSettings,
    /// Lookups per second, for the periodic pass's budget.
    lookups_per_second: u32,
    last_refresh: DashMap<CampaignId, DateTime<Utc>>,
}

/// Messages read and looked up together: about two seconds of lookups, within bounds.
fn chunk_size(lookups_per_second: u32) -> usize {
    (lookups_per_second as usize * 2).clamp(100, 1_000)
}

impl Reconciler {
    /// Ends jobs a stopped process left running and loads the last refresh times.
    pub async fn new(
        pool: PgPool,
        client: MittoClient,
        producer: EventProducer,
        (applied, replay): (Applied, Replay),
        settings: ReconcileSettings,
        lookups_per_second: u32,
    ) -> Result<Self, StoreError> {
        let interrupted = store::interrupt_dead_jobs(&pool).await?;
        if interrupted > 0 {
            tracing::warn!(
                jobs = interrupted,
                "refresh jobs of a stopped process ended as interrupted"
            );
        }
        let last_refresh = store::last_refreshes(&pool).await?.into_iter().collect();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                client,
                producer,
                applied,
                replay,
                settings,
                lookups_per_second,
                last_refresh,
            }),
        })
    }

    /// Starts the periodic pass and the stuck-campaign sweep on the current runtime.
    pub fn spawn_background(
        &self,
        registry: CampaignRegistry,
        stopping: &crate::stopping::Stopping,
    ) {
        let this = self.clone();
        actix_web::rt::spawn(stopping.until_stopped(async move { this.run_passes().await }));
        let (pool, every) = (
            self.inner.pool.clone(),
            Duration::from_secs(self.inner.settings.stuck_sweep_secs),
        );
        actix_web::rt::spawn(stopping.until_stopped(sweep_stuck(pool, registry, every)));
    }

    /// When the campaign's messages were last looked up at Mitto.
    pub fn last_refresh_at(&self, campaign: CampaignId) -> Option<DateTime<Utc>> {
        self.inner.last_refresh.get(&campaign).map(|at| *at)
    }

    /// Looks one message up, publishes the answer, waits until it is applied and committed,
    /// and says what it changed.
    #[tracing::instrument(skip(self))]
    pub async fn refresh_one(
        &self,
        tenant: TenantId,
        provider_message_id: &str,
    ) -> Result<Refreshed, RefreshError> {
        let not_found =
            || RefreshError::NotFound(format!("message {provider_message_id} not found"));
        self.settle().await?;
        let before = store::message(&self.inner.pool, tenant, provider_message_id)
            .await?
            .ok_or_else(not_found)?;
        let now = Utc::now();
        let within = self.answer_within();
        let lookup = match tokio::time::timeout(within, self.look_up(&before)).await {
            Ok(Ok(lookup)) => lookup,
            Ok(Err(e)) => return Err(RefreshError::Provider(e)),
            Err(_) => return Err(RefreshError::ProviderTimeout(within)),
        };
        if lookup == Lookup::NotFound {
            return Err(RefreshError::NotFound(format!(
                "message {provider_message_id} is unknown to Mitto"
            )));
        }
        let events: Vec<Event> = event_for(&before.message_id, &lookup, false, now)
            .into_iter()
            .collect();
        self.publish_and_wait(&events).await?;
        self.touched(&[before.campaign], now).await;
        let after = store::states(&self.inner.pool, &[before.recipient])
            .await?
            .pop()
            .ok_or_else(not_found)?;
        Ok(Refreshed {
            provider_message_id: provider_message_id.to_owned(),
            campaign_id: after.campaign,
            status: after.status.as_db_str().to_owned(),
            delivery_status: after.delivery_status.clone(),
            updated: changed(&before, &after),
        })
    }

    /// How long a request may wait for Mitto before it is answered without it.
    fn answer_within(&self) -> Duration {
        Duration::from_millis(self.inner.settings.answer_within_ms)
    }

    fn chunk(&self) -> usize {
        chunk_size(self.inner.lookups_per_second)
    }

    /// Mitto's answer for one message; `NotFound` when Mitto does not know it.
    async fn look_up(&self, message: &Waiting) -> Result<Lookup, MittoError> {
        match self.inner.client.message_status(&message.message_id).await {
            Ok(answer) => Ok(Lookup::Found {
                // stored verbatim, and Postgres refuses NUL in text
                status: DeliveryStatus::from_raw(&answer.delivery_status.replace('\0', "")),
                description: answer.description.map(|d| d.replace('\0', "")),
                at: answer.updated_at.as_deref().and_then(parse_timestamp),
            }),
            Err(MittoError::NotFound(_)) => Ok(Lookup::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Looks messages up, `concurrency` at a time (the client keeps the rate); `overdue`
    /// says which are past the give-up time.
    async fn look_up_all(
        &self,
        rows: Vec<Waiting>,
        overdue: impl Fn(&Waiting) -> bool,
        now: DateTime<Utc>,
    ) -> Vec<Looked> {
        let lookups = rows.into_iter().map(|waiting| {
            let overdue = overdue(&waiting);
            async move {
                let lookup = self
                    .look_up(&waiting)
                    .await
                    .unwrap_or_else(|e| Lookup::Failed(e.to_string()));
                let event = event_for(&waiting.message_id, &lookup, overdue, now);
                Looked {
                    waiting,
                    lookup,
                    event,
                }
            }
        });
        futures::stream::iter(lookups)
            .buffered(self.inner.settings.concurrency)
            .collect()
            .await
    }

    /// Publishes events and returns where they landed.
    async fn publish(&self, events: &[Event]) -> Result<Vec<(i32, i64)>, RefreshError> {
        self.inner
            .producer
            .send_positioned(events)
            .await
            .map_err(|e| RefreshError::Broker(e.to_string()))
    }

    /// Waits until everything on the topic is applied and committed (answers an earlier
    /// process published before it stopped included), so the rows read next are the state a
    /// refresh compares against and nothing already answered is asked again.
    async fn settle(&self) -> Result<(), RefreshError> {
        let limit = Duration::from_millis(self.inner.settings.apply_timeout_ms);
        let settled = async {
            self.inner.replay.applied_to_end().await;
            self.inner.applied.settled(limit).await
        };
        match tokio::time::timeout(limit, settled).await {
            Ok(true) => Ok(()),
            _ => Err(RefreshError::Behind(limit)),
        }
    }

    async fn publish_and_wait(&self, events: &[Event]) -> Result<(), RefreshError> {
        let positions = self.publish(events).await?;
        self.wait_committed(&positions).await
    }

    /// Waits until the events at these positions are applied and committed.
    async fn wait_committed(&self, positions: &[(i32, i64)]) -> Result<(), RefreshError> {
        let limit = Duration::from_millis(self.inner.settings.apply_timeout_ms);
        match self.inner.applied.committed(positions, limit).await {
            true => Ok(()),
            false => Err(RefreshError::NotApplied(limit)),
        }
    }

    /// Remembers (and records) that these campaigns' messages were looked up.
    async fn touched(&self, campaigns: &[CampaignId], at: DateTime<Utc>) {
        for c in campaigns {
            self.inner.last_refresh.insert(*c, at);
        }
        if let Err(e) = store::refreshed(&self.inner.pool, campaigns, at).await {
            tracing::warn!(error = %e, "could not record the last refresh time");
        }
    }

    /// Runs the periodic pass every `interval_secs`, one after the other.
    async fn run_passes(self) {
        let every = Duration::from_secs(self.inner.settings.interval_secs);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursors = Cursors::default();
        loop {
            ticks.tick().await;
            match self.pass(&mut cursors).await {
                Ok(t) if t.looked_up == 0 => {}
                Ok(t) => tracing::info!(
                    looked_up = t.looked_up,
                    final_answers = t.final_answers,
                    in_flight = t.in_flight,
                    not_found = t.not_found,
                    gave_up = t.gave_up,
                    errors = t.errors,
                    "refresh pass"
                ),
                Err(e) => tracing::warn!(error = %e, "refresh pass failed; the next one retries"),
            }
        }
    }

    /// One periodic pass: messages sent more than `after_secs` ago without a final report,
    /// campaign by campaign (oldest first), each from where the last pass stopped, as many
    /// as the lookup rate allows in one interval.
    pub async fn pass(&self, cursors: &mut Cursors) -> Result<Tally, RefreshError> {
        let s = &self.inner.settings;
        let now = Utc::now();
        let waited = chrono::Duration::seconds(i64::try_from(s.after_secs).unwrap_or(i64::MAX));
        let give_up =
            chrono::Duration::from_std(s.give_up_after()).unwrap_or(chrono::Duration::MAX);
        let give_up_before = now - give_up;
        let campaigns = store::campaigns_awaiting(&self.inner.pool).await?;
        cursors.retain(&campaigns.iter().map(|c| c.0).collect::<Vec<_>>());
        // a campaign with a refresh job running is left to it (no message asked twice)
        let busy = store::campaigns_with_jobs(&self.inner.pool).await?;
        let mut budget = self.budget();
        let (mut tally, mut touched) = (Tally::default(), Vec::new());
        for (campaign, ids) in campaigns.into_iter().filter(|c| !busy.contains(&c.0)) {
            let scope = Scope {
                campaign,
                bulk: None,
                sent_before: now - waited,
                ids,
                include_unknown: false,
            };
            while budget > 0 {
                let limit = budget.min(self.chunk());
                let rows = store::awaiting(&self.inner.pool, scope, cursors.start(campaign), limit)
                    .await?;
                cursors.advance(
                    campaign,
                    rows.last().map(|r| r.recipient),
                    rows.len(),
                    limit,
                );
                let (read, more) = (rows.len(), rows.len() >= limit);
                if read == 0 {
                    break;
                }
                budget -= read;
                let overdue = |w: &Waiting| w.sent_at.is_some_and(|at| at < give_up_before);
                let looked = self.look_up_all(rows, overdue, now).await;
                if answered(&looked) {
                    touched.push(campaign);
                }
                tally.add(self.publish_answers(&looked).await?);
                if !more {
                    break;
                }
            }
        }
        touched.dedup();
        if !touched.is_empty() {
            self.touched(&touched, now).await;
        }
        Ok(tally)
    }

    /// Lookups one pass may make: the rate times the interval.
    fn budget(&self) -> usize {
        let per_pass = u64::from(self.inner.lookups_per_second) * self.inner.settings.interval_secs;
        usize::try_from(per_pass).unwrap_or(usize::MAX).max(1)
    }

    /// Publishes the events of a pass's lookups (without waiting for them) and counts them.
    async fn publish_answers(&self, looked: &[Looked]) -> Result<Tally, RefreshError> {
        let mut tally = Tally::default();
        for l in looked {
            tally.count(&l.lookup, l.event.as_ref());
            if let Lookup::Failed(e) = &l.lookup {
                tracing::debug!(message_id = %l.waiting.message_id, error = %e, "lookup failed");
            }
        }
        self.publish(&events_of(looked)).await?;
        Ok(tally)
    }
}

/// The events a set of lookups became.
fn events_of(looked: &[Looked]) -> Vec<Event> {
    looked.iter().filter_map(|l| l.event.clone()).collect()
}

/// Whether Mitto answered any of these lookups (only then was the campaign refreshed).
fn answered(looked: &[Looked]) -> bool {
    looked
        .iter()
        .any(|l| !matches!(l.lookup, Lookup::Failed(_)))
}

/// Whether a refresh moved the message's status (a new raw in-flight status alone, such as
/// `Sent` → `Pending`, is stored but is not an update).
fn changed(before: &Waiting, after: &Waiting) -> bool {
    before.status != after.status
}

/// Every `every`, makes sure each campaign whose row says `sending` has a live actor working
/// on it (a campaign with nothing queued or out then completes).
async fn sweep_stuck(pool: PgPool, registry: CampaignRegistry, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // start-up already activated them
    loop {
        ticks.tick().await;
        match crate::store::campaigns::sending(&pool).await {
            Ok(ids) => {
                let started = registry.keep_sending(&ids).await;
                if started > 0 {
                    tracing::warn!(
                        campaigns = started,
                        "campaigns marked sending had no live actor; activated"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "stuck-campaign sweep could not read campaigns"),
        }
    }
}
