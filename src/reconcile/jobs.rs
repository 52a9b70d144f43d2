//! `refresh-status-bulk`: every message of a campaign (or of one Mitto bulk) still waiting for
//! a report is looked up, chunk by chunk from a cursor — not the first 100. Small refreshes
//! answer when done; larger ones answer 202 and run as a job whose progress is stored. One
//! refresh per campaign at a time.

use std::collections::HashMap;

use chrono::Utc;

use super::{answered, changed, events_of, Looked, Reconciler, RefreshError};
use crate::domain::{CampaignId, RecipientId, TenantId};
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub provider_message_id: String,
    pub success: bool,
    pub updated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of a refresh that ran to its end: `{total, updated, failed, results}`.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
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
    /// Refreshes every message of the target still waiting for a report (and those given up
    /// on). Up to the sync limit it answers when done — or, if Mitto is slow, after
    /// `answer_within_ms` with 202 while the job goes on.
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
        let (job, lock) = match store::start_job(pool, tenant, scope, total).await? {
            Ok(started) => started,
            Err(running) => {
                return Err(RefreshError::Running {
                    campaign: scope.campaign,
                    job: running,
                })
            }
        };
        let collect = total <= self.inner.settings.sync_limit;
        let this = self.clone();
        let running = actix_web::rt::spawn(async move {
            let result = this.run_job(job.id, scope, collect).await;
            lock.release().await;
            if let Err(e) = &result {
                tracing::warn!(job_id = %job.id, error = %e, "refresh job failed");
            }
            result
        });
        let started = BulkStart::Started {
            job_id: job.id,
            total,
        };
        if !collect {
            return Ok(started);
        }
        match tokio::time::timeout(self.answer_within(), running).await {
            Ok(Ok(report)) => report.map(BulkStart::Done),
            Ok(Err(e)) => Err(RefreshError::Internal(e.to_string())),
            // Mitto is slow: the job goes on, its progress readable like any other
            Err(_) => Ok(started),
        }
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
            include_unknown: true,
        })
    }

    /// Runs a job to its end and records how it ended: `failed` when it stopped on an error
    /// or when Mitto answered none of its lookups. `collect` keeps every result.
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
        let error = match &result {
            Err(e) => Some(e.to_string()),
            Ok(()) if report.total > 0 && report.failed == report.total => Some(format!(
                "Mitto answered none of the {} lookups",
                report.total
            )),
            Ok(()) => None,
        };
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
        let size = self.chunk();
        let (mut cursor, mut previous) = (None, None);
        loop {
            let rows = store::awaiting(pool, scope, cursor, size).await?;
            let more = rows.len() >= size;
            cursor = rows.last().map(|r| r.recipient);
            let published = match rows.is_empty() {
                true => None,
                false => Some(self.look_up_and_publish(id, rows).await?),
            };
            if let Some(chunk) = previous.take() {
                self.record(id, scope, chunk, collect, report).await?;
            }
            previous = published;
            if !more {
                break;
            }
        }
        if let Some(chunk) = previous {
            self.record(id, scope, chunk, collect, report).await?;
        }
        Ok(())
    }

    /// Looks a chunk up, publishes the answers and counts it as processed.
    async fn look_up_and_publish(
        &self,
        id: uuid::Uuid,
        rows: Vec<Waiting>,
    ) -> Result<Published, RefreshError> {
        let looked = self.look_up_all(rows, |_| false, Utc::now()).await;
        let positions = self.publish(&events_of(&looked)).await?;
        let processed = looked.len() as u64;
        let pool = &self.inner.pool;
        store::job_progress(
            pool,
            id,
            processed,
            0,
            0,
            &serde_json::json!([]),
            KEEP_FAILURES,
        )
        .await?;
        Ok(Published { looked, positions })
    }

    /// Waits until a chunk's answers are committed, compares each message with what was
    /// stored before, stores the chunk's outcome and adds it to the report.
    async fn record(
        &self,
        id: uuid::Uuid,
        scope: Scope,
        chunk: Published,
        collect: bool,
        report: &mut BulkReport,
    ) -> Result<(), RefreshError> {
        self.wait_committed(&chunk.positions).await?;
        if answered(&chunk.looked) {
            self.touched(&[scope.campaign], Utc::now()).await;
        }
        let ids: Vec<RecipientId> = chunk.looked.iter().map(|l| l.waiting.recipient).collect();
        let after: HashMap<RecipientId, Waiting> = store::states(&self.inner.pool, &ids)
            .await?
            .into_iter()
            .map(|w| (w.recipient, w))
            .collect();
        let results: Vec<BulkResult> = chunk
            .looked
            .into_iter()
            .map(|l| result_of(l, &after))
            .collect();
        let updated = results.iter().filter(|r| r.updated).count() as u64;
        let failures: Vec<&BulkResult> = results.iter().filter(|r| !r.success).collect();
        let failed = failures.len() as u64;
        let kept = serde_json::to_value(&failures[..failures.len().min(KEEP_FAILURES)])
            .unwrap_or_default();
        let pool = &self.inner.pool;
        store::job_progress(pool, id, 0, updated, failed, &kept, KEEP_FAILURES).await?;
        report.total += results.len() as u64;
        report.updated += updated;
        report.failed += failed;
        if collect {
            report.results.extend(results);
        }
        Ok(())
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
    match looked.lookup {
        Lookup::NotFound => failure("the message is unknown to Mitto".into()),
        Lookup::Failed(error) => failure(error),
        Lookup::Found { .. } => BulkResult {
            updated: after
                .get(&looked.waiting.recipient)
                .is_some_and(|a| changed(&looked.waiting, a)),
            provider_message_id,
            success: true,
            error: None,
        },
    }
}
