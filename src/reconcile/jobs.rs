//! `refresh-status-bulk`: every message of a campaign (or of one Mitto bulk) still waiting for
//! a report is looked up, chunk by chunk from a cursor — not the first 100. Small refreshes
//! answer when done; larger ones answer 202 and run as a job whose progress is stored. One
//! refresh per campaign at a time.

use std::collections::HashMap;

use chrono::Utc;

use super::{changed, Looked, Reconciler, RefreshError, CHUNK};
use crate::domain::{CampaignId, Event, RecipientId, TenantId};
use crate::engine::reconcile::Lookup;
use crate::store::reconcile::{self as store, Scope, Waiting};

/// Failures a job keeps for `GET /api/mitto/refresh-jobs/{id}`.
const KEEP_FAILURES: usize = 100;

/// What to refresh.
#[derive(Debug, Clone, Copy)]
pub enum BulkTarget {
    Campaign(CampaignId),
    /// The messages of one Mitto bulk send.
    Bulk(uuid::Uuid),
}

/// One message's refresh, in the replaced system's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub provider_message_id: String,
    pub success: bool,
    pub updated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of a refresh that ran to its end: `{total, updated, failed, results}`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkReport {
    pub job_id: uuid::Uuid,
    pub total: u64,
    pub updated: u64,
    pub failed: u64,
    pub results: Vec<BulkResult>,
}

/// How a bulk refresh answers.
#[derive(Debug)]
pub enum BulkStart {
    /// Up to the sync limit: done.
    Done(BulkReport),
    /// Above it: running in the background.
    Started { job_id: uuid::Uuid, total: u64 },
}

impl Reconciler {
    /// Refreshes every message of the target still waiting for a report.
    #[tracing::instrument(skip(self))]
    pub async fn refresh_bulk(
        &self,
        tenant: TenantId,
        target: BulkTarget,
    ) -> Result<BulkStart, RefreshError> {
        let pool = &self.inner.pool;
        let scope = self.scope(tenant, target).await?;
        // the rows must show what was applied so far: messages whose `sent` is not committed
        // yet would be missed, reports not committed yet would look like this refresh's work
        self.settle().await?;
        let total = store::count_awaiting(pool, scope).await?;
        let job = match store::start_job(pool, tenant, scope, total).await? {
            Ok(job) => job,
            Err(running) => {
                return Err(RefreshError::Running {
                    campaign: scope.campaign,
                    job: running,
                })
            }
        };
        if total <= self.inner.settings.sync_limit {
            return self.run_job(job.id, scope, true).await.map(BulkStart::Done);
        }
        let this = self.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = this.run_job(job.id, scope, false).await {
                tracing::warn!(job_id = %job.id, error = %e, "refresh job failed");
            }
        });
        Ok(BulkStart::Started {
            job_id: job.id,
            total,
        })
    }

    /// The tenant's job, or `None` (unknown, or another tenant's).
    pub async fn job(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
    ) -> Result<Option<store::Job>, RefreshError> {
        Ok(store::job(&self.inner.pool, tenant, id).await?)
    }

    /// The messages a target covers: the tenant's own, sent before now.
    async fn scope(&self, tenant: TenantId, target: BulkTarget) -> Result<Scope, RefreshError> {
        let pool = &self.inner.pool;
        let (campaign, bulk) = match target {
            BulkTarget::Campaign(id) => {
                let owned = crate::store::campaigns::owned(pool, tenant, &[id]).await?;
                let found = owned.contains(&id);
                (found.then_some(id), None)
            }
            BulkTarget::Bulk(bulk) => (
                store::campaign_of_bulk(pool, tenant, bulk).await?,
                Some(bulk),
            ),
        };
        let campaign = campaign.ok_or_else(|| {
            RefreshError::NotFound(match target {
                BulkTarget::Campaign(id) => format!("campaign {id} not found"),
                BulkTarget::Bulk(bulk) => format!("bulk {bulk} not found"),
            })
        })?;
        let sent_before = Utc::now();
        // a campaign never enqueued has no recipients: an empty range
        let ids = store::recipient_range(pool, campaign)
            .await?
            .unwrap_or((1, 0));
        Ok(Scope {
            campaign,
            bulk,
            sent_before,
            ids,
        })
    }

    /// Runs a job to its end and records how it ended; `collect` keeps every result.
    async fn run_job(
        &self,
        id: uuid::Uuid,
        scope: Scope,
        collect: bool,
    ) -> Result<BulkReport, RefreshError> {
        let mut report = BulkReport {
            job_id: id,
            ..BulkReport::default()
        };
        let result = self.run_chunks(id, scope, collect, &mut report).await;
        let error = result.as_ref().err().map(ToString::to_string);
        let job = store::finish_job(&self.inner.pool, id, error.as_deref()).await?;
        result?;
        report.total = job.map_or(report.total, |j| u64::try_from(j.total).unwrap_or(0));
        tracing::info!(job_id = %id, campaign_id = %scope.campaign, total = report.total,
            updated = report.updated, failed = report.failed, "refresh job done");
        Ok(report)
    }

    /// Chunk after chunk: the next chunk is looked up while the previous one's answers are
    /// being committed, so a job is not paced by checkpoints.
    async fn run_chunks(
        &self,
        id: uuid::Uuid,
        scope: Scope,
        collect: bool,
        report: &mut BulkReport,
    ) -> Result<(), RefreshError> {
        let pool = &self.inner.pool;
        let mut cursor = None;
        let mut previous = None;
        loop {
            let rows = store::awaiting(pool, scope, cursor, CHUNK).await?;
            let more = rows.len() >= CHUNK;
            cursor = rows.last().map(|r| r.recipient);
            let published = match rows.is_empty() {
                true => None,
                false => Some(self.look_up_and_publish(rows).await?),
            };
            if let Some(chunk) = previous.take() {
                let results = self.settle_chunk(chunk).await?;
                self.record(id, scope, results, collect, report).await?;
            }
            previous = published;
            if !more {
                break;
            }
        }
        if let Some(chunk) = previous {
            let results = self.settle_chunk(chunk).await?;
            self.record(id, scope, results, collect, report).await?;
        }
        Ok(())
    }

    /// Stores a chunk's progress and adds it to the report.
    async fn record(
        &self,
        id: uuid::Uuid,
        scope: Scope,
        results: Vec<BulkResult>,
        collect: bool,
        report: &mut BulkReport,
    ) -> Result<(), RefreshError> {
        let updated = results.iter().filter(|r| r.updated).count() as u64;
        let failures: Vec<&BulkResult> = results.iter().filter(|r| !r.success).collect();
        let failed = failures.len() as u64;
        let kept = serde_json::to_value(&failures[..failures.len().min(KEEP_FAILURES)])
            .unwrap_or_default();
        let processed = results.len() as u64;
        let pool = &self.inner.pool;
        store::job_progress(pool, id, processed, updated, failed, &kept, KEEP_FAILURES).await?;
        self.touched(&[scope.campaign], Utc::now()).await;
        report.total += processed;
        report.updated += updated;
        report.failed += failed;
        if collect {
            report.results.extend(results);
        }
        Ok(())
    }

    /// Looks a chunk up and publishes the answers.
    async fn look_up_and_publish(&self, rows: Vec<Waiting>) -> Result<Published, RefreshError> {
        let looked = self.look_up_all(rows, |_| false, Utc::now()).await;
        let events: Vec<Event> = looked
            .iter()
            .filter_map(|l| l.answer.as_ref().ok().and_then(|(_, e)| e.clone()))
            .collect();
        let positions = self.publish(&events).await?;
        Ok(Published { looked, positions })
    }

    /// Waits until a chunk's answers are committed and compares each message with what was
    /// stored before.
    async fn settle_chunk(&self, chunk: Published) -> Result<Vec<BulkResult>, RefreshError> {
        self.wait_committed(&chunk.positions).await?;
        let ids: Vec<RecipientId> = chunk.looked.iter().map(|l| l.waiting.recipient).collect();
        let after: HashMap<RecipientId, Waiting> = store::states(&self.inner.pool, &ids)
            .await?
            .into_iter()
            .map(|w| (w.recipient, w))
            .collect();
        Ok(chunk
            .looked
            .into_iter()
            .map(|l| result_of(l, &after))
            .collect())
    }
}

/// A chunk whose answers are published, not yet known to be committed.
struct Published {
    looked: Vec<Looked>,
    positions: Vec<(i32, i64)>,
}

fn result_of(looked: Looked, after: &HashMap<RecipientId, Waiting>) -> BulkResult {
    let provider_message_id = looked.waiting.message_id.to_string();
    let failure = |error: String| BulkResult {
        provider_message_id: provider_message_id.clone(),
        success: false,
        updated: false,
        error: Some(error),
    };
    match looked.answer {
        Ok((Lookup::NotFound, _)) => failure("the message is unknown to Mitto".into()),
        Ok(_) => BulkResult {
            updated: after
                .get(&looked.waiting.recipient)
                .is_some_and(|a| changed(&looked.waiting, a)),
            provider_message_id,
            success: true,
            error: None,
        },
        Err(error) => failure(error),
    }
}
