//! What the reconciler reads and records: messages waiting for a report, refresh jobs, and
//! when a campaign was last refreshed. Message state itself is only ever written by the
//! DlrActors (a refresh becomes an event); nothing here changes a recipient row.
//!
//! The recipients table has no index on `status` (status changes stay HOT, DESIGN.md
//! section 9), so a campaign's waiting messages are read by primary-key range — within the
//! id range its enqueues produced (`campaigns.recipients_from..=recipients_to`), from a
//! cursor: each pass reads a slice, a whole cycle reads the campaign's rows once, and no read
//! wanders into other campaigns' rows.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};

use super::StoreError;
use crate::domain::{CampaignId, MessageId, MessageStatus, RecipientId, TenantId};

/// One message as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub recipient: RecipientId,
    pub campaign: CampaignId,
    pub message_id: MessageId,
    pub status: MessageStatus,
    pub delivery_status: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

type WaitingRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
);

fn waiting(row: WaitingRow) -> Result<Waiting, StoreError> {
    let (id, campaign, message, status, delivery_status, sent_at) = row;
    let corrupt = |e: String| StoreError::Corrupt(format!("recipient {id}: {e}"));
    Ok(Waiting {
        recipient: RecipientId::new(id).map_err(|e| corrupt(e.to_string()))?,
        campaign: CampaignId::new(campaign).map_err(|e| corrupt(e.to_string()))?,
        message_id: MessageId::parse(&message).map_err(|e| corrupt(e.to_string()))?,
        status: MessageStatus::from_db(&status, sent_at.is_some())
            .map_err(|e| corrupt(e.to_string()))?,
        delivery_status,
        sent_at,
    })
}

const WAITING: &str = "id, campaign_id, provider_message_id, status, delivery_status, sent_at";

/// The tenant's message with Mitto's id `message`, or `None` (unknown, or another tenant's).
pub async fn message(
    pool: &PgPool,
    tenant: TenantId,
    message: &str,
) -> Result<Option<Waiting>, StoreError> {
    let row: Option<WaitingRow> = sqlx::query_as(&format!(
        "SELECT {WAITING} FROM campaign_recipients
         WHERE provider_message_id = $1 AND tenant_id = $2"
    ))
    .bind(message)
    .bind(tenant.get())
    .fetch_optional(pool)
    .await?;
    row.map(waiting).transpose()
}

/// The current state of these recipients (after a refresh was committed).
pub async fn states(pool: &PgPool, recipients: &[RecipientId]) -> Result<Vec<Waiting>, StoreError> {
    let ids: Vec<i64> = recipients.iter().map(|r| r.get()).collect();
    let rows: Vec<WaitingRow> = sqlx::query_as(&format!(
        "SELECT {WAITING} FROM campaign_recipients WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(waiting).collect()
}

/// Which messages a read covers.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub campaign: CampaignId,
    /// Only this Mitto bulk's messages.
    pub bulk: Option<uuid::Uuid>,
    /// Only messages sent before this time.
    pub sent_before: DateTime<Utc>,
    /// The campaign's recipient ids lie in this range (inclusive).
    pub ids: (i64, i64),
    /// Also messages the refresher gave up on (`unknown`): a refresh asked for by a person
    /// tries them again.
    pub include_unknown: bool,
}

impl Scope {
    fn statuses(&self) -> Vec<&'static str> {
        match self.include_unknown {
            true => vec!["sent", "unknown"],
            false => vec!["sent"],
        }
    }
}

/// The id range of a campaign's recipients; `None` when it has none (never enqueued).
pub async fn recipient_range(
    pool: &PgPool,
    campaign: CampaignId,
) -> Result<Option<(i64, i64)>, StoreError> {
    let range: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT recipients_from, recipients_to FROM campaigns WHERE id = $1")
            .bind(campaign.get())
            .fetch_optional(pool)
            .await?;
    Ok(match range {
        Some((Some(from), Some(to))) => Some((from, to)),
        _ => None,
    })
}

/// Up to `limit` messages of the scope still waiting for a final report, after `cursor`, in
/// id order (about the order they were sent).
pub async fn awaiting(
    pool: &PgPool,
    scope: Scope,
    cursor: Option<RecipientId>,
    limit: usize,
) -> Result<Vec<Waiting>, StoreError> {
    let rows: Vec<WaitingRow> = sqlx::query_as(&format!(
        "SELECT {WAITING} FROM campaign_recipients
         WHERE id > $2 AND id <= $6 AND campaign_id = $1 AND status = ANY($7) AND sent_at < $3
           AND ($4::uuid IS NULL OR bulk_id = $4)
         ORDER BY id LIMIT $5"
    ))
    .bind(scope.campaign.get())
    .bind(cursor.map_or(scope.ids.0 - 1, |c| c.get().max(scope.ids.0 - 1)))
    .bind(scope.sent_before)
    .bind(scope.bulk)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(scope.ids.1)
    .bind(scope.statuses())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(waiting).collect()
}

/// How many messages of the scope wait for a final report.
pub async fn count_awaiting(pool: &PgPool, scope: Scope) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_recipients
         WHERE id BETWEEN $4 AND $5 AND campaign_id = $1 AND status = ANY($6) AND sent_at < $2
           AND ($3::uuid IS NULL OR bulk_id = $3)",
    )
    .bind(scope.campaign.get())
    .bind(scope.sent_before)
    .bind(scope.bulk)
    .bind(scope.ids.0)
    .bind(scope.ids.1)
    .bind(scope.statuses())
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Campaigns with messages waiting for a report (from their snapshots), oldest first, with
/// their recipient id ranges.
pub async fn campaigns_awaiting(
    pool: &PgPool,
) -> Result<Vec<(CampaignId, (i64, i64))>, StoreError> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT id, recipients_from, recipients_to FROM campaigns
         WHERE pending > 0 AND recipients_from IS NOT NULL
         ORDER BY first_sent_at NULLS LAST, id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, from, to)| {
            CampaignId::new(id)
                .map(|id| (id, (from, to)))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
}

/// The tenant's campaign a Mitto bulk id belongs to, or `None`.
pub async fn campaign_of_bulk(
    pool: &PgPool,
    tenant: TenantId,
    bulk: uuid::Uuid,
) -> Result<Option<CampaignId>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT campaign_id FROM campaign_recipients WHERE bulk_id = $1 AND tenant_id = $2 LIMIT 1",
    )
    .bind(bulk)
    .bind(tenant.get())
    .fetch_optional(pool)
    .await?;
    id.map(|id| CampaignId::new(id).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Records that a campaign's messages were looked up at `at`.
pub async fn refreshed(
    pool: &PgPool,
    campaigns: &[CampaignId],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ids: Vec<i64> = campaigns.iter().map(|c| c.get()).collect();
    sqlx::query(
        "INSERT INTO campaign_refreshes (campaign_id, last_refresh_at)
         SELECT id, $2 FROM UNNEST($1::bigint[]) AS u(id)
         WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = u.id)
         ON CONFLICT (campaign_id) DO UPDATE
         SET last_refresh_at = GREATEST(campaign_refreshes.last_refresh_at, EXCLUDED.last_refresh_at)",
    )
    .bind(&ids)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every campaign's last refresh time.
pub async fn last_refreshes(pool: &PgPool) -> Result<Vec<(CampaignId, DateTime<Utc>)>, StoreError> {
    let rows: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT campaign_id, last_refresh_at FROM campaign_refreshes")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(id, at)| {
            CampaignId::new(id)
                .map(|id| (id, at))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
}

/// A bulk refresh as `GET /api/mitto/refresh-jobs/{id}` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(rename = "jobId")]
    pub id: uuid::Uuid,
    pub campaign_id: i64,
    pub bulk_id: Option<uuid::Uuid>,
    pub state: String,
    pub total: i64,
    pub processed: i64,
    pub updated: i64,
    pub failed: i64,
    /// The first refreshes that failed, with their errors.
    #[schema(value_type = Vec<Object>)]
    pub failures: serde_json::Value,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB: &str = "id, campaign_id, bulk_id, state, total, processed, updated, failed, failures, \
                   error, started_at, finished_at";

/// A running job's claim on life: a session-level advisory lock on a connection of its own,
/// held while the job runs. When the process dies the connection closes and the lock goes
/// with it, so any instance can tell a job that is still running from one left behind.
pub struct JobLock(PgConnection);

impl JobLock {
    /// Releases the lock (closing the connection would too).
    pub async fn release(self) {
        let _ = self.0.close().await;
    }
}

fn lock_key(job: uuid::Uuid) -> i64 {
    let b = job.as_bytes();
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Whether a job's process still holds its lock.
async fn alive(pool: &PgPool, job: uuid::Uuid) -> Result<bool, StoreError> {
    let mut conn = pool.acquire().await?;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(job))
        .fetch_one(&mut *conn)
        .await?;
    if free {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock_key(job))
            .execute(&mut *conn)
            .await?;
    }
    Ok(!free)
}

/// Marks a running job whose process is gone `interrupted`; answers whether it did.
async fn interrupt_if_dead(pool: &PgPool, job: uuid::Uuid) -> Result<bool, StoreError> {
    if alive(pool, job).await? {
        return Ok(false);
    }
    let done = sqlx::query(
        "UPDATE refresh_jobs SET state = 'interrupted', finished_at = now(),
                error = 'the service running it stopped before the job finished'
         WHERE id = $1 AND state = 'running'",
    )
    .bind(job)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Starts a job holding its lock; `Err(running job id)` when the campaign already has one
/// running (a job whose process is gone does not count: it is marked `interrupted`).
pub async fn start_job(
    pool: &PgPool,
    tenant: TenantId,
    scope: Scope,
    total: u64,
) -> Result<Result<(Job, JobLock), uuid::Uuid>, StoreError> {
    let id = uuid::Uuid::new_v4();
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key(id))
        .execute(&mut conn)
        .await?;
    let mut running = None;
    for _ in 0..3 {
        let job: Option<Job> = sqlx::query_as(&format!(
            "INSERT INTO refresh_jobs (id, tenant_id, campaign_id, bulk_id, total, started_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (campaign_id) WHERE state = 'running' DO NOTHING
             RETURNING {JOB}"
        ))
        .bind(id)
        .bind(tenant.get())
        .bind(scope.campaign.get())
        .bind(scope.bulk)
        .bind(i64::try_from(total).unwrap_or(i64::MAX))
        .bind(scope.sent_before)
        .fetch_optional(&mut conn)
        .await?;
        if let Some(job) = job {
            return Ok(Ok((job, JobLock(conn))));
        }
        running = sqlx::query_scalar(
            "SELECT id FROM refresh_jobs WHERE campaign_id = $1 AND state = 'running'",
        )
        .bind(scope.campaign.get())
        .fetch_optional(pool)
        .await?;
        match running {
            Some(job) if !interrupt_if_dead(pool, job).await? => break,
            // gone, or ended in between: try again
            _ => continue,
        }
    }
    let _ = conn.close().await;
    Ok(Err(running.unwrap_or_default()))
}

/// Campaigns with a job running: the periodic refresher leaves them to it.
pub async fn campaigns_with_jobs(
    pool: &PgPool,
) -> Result<std::collections::HashSet<CampaignId>, StoreError> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT campaign_id FROM refresh_jobs WHERE state = 'running'")
            .fetch_all(pool)
            .await?;
    Ok(ids
        .into_iter()
        .filter_map(|id| CampaignId::new(id).ok())
        .collect())
}

/// Progress of a running job: adds the counts and keeps up to `keep` failures in all.
pub async fn job_progress(
    pool: &PgPool,
    id: uuid::Uuid,
    processed: u64,
    updated: u64,
    failed: u64,
    failures: &serde_json::Value,
    keep: usize,
) -> Result<(), StoreError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE refresh_jobs SET processed = processed + $2, updated = updated + $3,
                failed = failed + $4,
                failures = CASE WHEN jsonb_array_length(failures) >= $6 THEN failures
                                ELSE failures || $5 END
         WHERE id = $1",
    )
    .bind(id)
    .bind(n(processed))
    .bind(n(updated))
    .bind(n(failed))
    .bind(failures)
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a job: `completed`, or `failed` with the error that stopped it.
pub async fn finish_job(
    pool: &PgPool,
    id: uuid::Uuid,
    error: Option<&str>,
) -> Result<Option<Job>, StoreError> {
    let job = sqlx::query_as(&format!(
        "UPDATE refresh_jobs SET state = CASE WHEN $2::text IS NULL THEN 'completed' ELSE 'failed' END,
                error = $2, finished_at = now(), total = GREATEST(total, processed)
         WHERE id = $1 RETURNING {JOB}"
    ))
    .bind(id)
    .bind(error)
    .fetch_optional(pool)
    .await?;
    Ok(job)
}

/// The tenant's job, or `None` (unknown, or another tenant's). A job that says `running`
/// but whose process is gone is marked `interrupted` first.
pub async fn job(
    pool: &PgPool,
    tenant: TenantId,
    id: uuid::Uuid,
) -> Result<Option<Job>, StoreError> {
    let read = || async {
        sqlx::query_as::<_, Job>(&format!(
            "SELECT {JOB} FROM refresh_jobs WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(tenant.get())
        .fetch_optional(pool)
        .await
    };
    match read().await? {
        Some(job) if job.state == "running" && interrupt_if_dead(pool, id).await? => {
            Ok(read().await?)
        }
        job => Ok(job),
    }
}

/// Jobs left running by a process that stopped end `interrupted`, so a new one can start
/// (the messages they did not reach still wait for a report). Jobs of live processes (other
/// instances, an overlapping deploy) are left alone: their lock is held.
pub async fn interrupt_dead_jobs(pool: &PgPool) -> Result<u64, StoreError> {
    let running: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM refresh_jobs WHERE state = 'running'")
            .fetch_all(pool)
            .await?;
    let mut interrupted = 0;
    for job in running {
        if interrupt_if_dead(pool, job).await? {
            interrupted += 1;
        }
    }
    Ok(interrupted)
}
