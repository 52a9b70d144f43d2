//! Per-message state in `campaign_recipients`, as DlrActors read and checkpoint it.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::StoreError;
use crate::domain::{BulkId, CampaignId, MessageId, MessageStatus, RecipientId};
pub use crate::engine::engagement::EngagementRow;
pub use crate::engine::ledger::MessageRow;

#[derive(sqlx::FromRow)]
struct Raw {
    id: i64,
    campaign_id: i64,
    status: String,
    provider_message_id: Option<String>,
    bulk_id: Option<uuid::Uuid>,
    delivery_status: Option<String>,
    error: Option<String>,
    error_retryable: Option<bool>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    retry_count: i32,
    segments: i16,
}

impl TryFrom<Raw> for MessageRow {
    type Error = StoreError;
    fn try_from(r: Raw) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("recipient {}: {e}", r.id));
        Ok(Self {
            recipient: RecipientId::new(r.id).map_err(|e| corrupt(e.to_string()))?,
            campaign: CampaignId::new(r.campaign_id).map_err(|e| corrupt(e.to_string()))?,
            status: MessageStatus::from_db(&r.status, r.sent_at.is_some())
                .map_err(|e| corrupt(e.to_string()))?,
            message_id: r
                .provider_message_id
                .as_deref()
                .map(MessageId::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            bulk_id: r
                .bulk_id
                .map(|u| BulkId::parse(&u.to_string()))
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            delivery_status: r.delivery_status,
            error: r.error,
            error_retryable: r.error_retryable,
            sent_at: r.sent_at,
            delivered_at: r.delivered_at,
            failed_at: r.failed_at,
            attempt: u32::try_from(r.retry_count).map_err(|e| corrupt(e.to_string()))?,
            segments: u32::try_from(r.segments).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

const COLUMNS: &str =
    "id, campaign_id, status, provider_message_id, bulk_id, delivery_status, error, \
                       error_retryable, sent_at, delivered_at, failed_at, retry_count, segments";

/// Rows by recipient id, in one round trip.
pub async fn load_by_recipients(
    pool: &PgPool,
    ids: &[RecipientId],
) -> Result<Vec<MessageRow>, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|i| i.get()).collect();
    let sql = format!("SELECT {COLUMNS} FROM campaign_recipients WHERE id = ANY($1)");
    let raws: Vec<Raw> = sqlx::query_as(&sql).bind(&ids).fetch_all(pool).await?;
    raws.into_iter().map(MessageRow::try_from).collect()
}

/// Rows by Mitto message id, in one round trip.
pub async fn load_by_message_ids(
    pool: &PgPool,
    ids: &[MessageId],
) -> Result<Vec<MessageRow>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
    let sql =
        format!("SELECT {COLUMNS} FROM campaign_recipients WHERE provider_message_id = ANY($1)");
    let raws: Vec<Raw> = sqlx::query_as(&sql).bind(&ids).fetch_all(pool).await?;
    raws.into_iter().map(MessageRow::try_from).collect()
}

/// Rows per statement of [`append_log`]. A connection keeps the buffer of the largest message
/// it ever sent; a checkpoint of 200,000 rows in one statement left about 40 MiB behind on
/// each pooled connection that wrote one. Chunks of this size keep it near 2 MiB and cost no
/// measurable speed.
const ROWS_PER_STATEMENT: usize = 10_000;

/// Appends message rows to `message_log` in position `epoch` (a checkpoint's number from the
/// `message_log_order` sequence: later commits of a partition have higher ones; arrays unnested
/// server-side, [`ROWS_PER_STATEMENT`] at a time). [`fold`] moves them into
/// `campaign_recipients` later; until then, nothing outside the log shows them.
pub async fn append_log(
    tx: &mut Transaction<'_, Postgres>,
    epoch: u64,
    rows: &[&MessageRow],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        append_chunk(tx, epoch, chunk).await?;
    }
    Ok(())
}

async fn append_chunk(
    tx: &mut Transaction<'_, Postgres>,
    epoch: u64,
    rows: &[&MessageRow],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.recipient.get()).collect();
    let status: Vec<&str> = rows.iter().map(|r| r.status.as_db_str()).collect();
    let message_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.message_id.as_ref().map(MessageId::as_str))
        .collect();
    let bulk_ids: Vec<Option<uuid::Uuid>> = rows
        .iter()
        .map(|r| r.bulk_id.map(|b| b.as_uuid()))
        .collect();
    let raw: Vec<Option<&str>> = rows.iter().map(|r| r.delivery_status.as_deref()).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let retryable: Vec<Option<bool>> = rows.iter().map(|r| r.error_retryable).collect();
    let sent: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.sent_at).collect();
    let delivered: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.delivered_at).collect();
    let failed: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.failed_at).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempt as i32).collect();
    sqlx::query(
        "INSERT INTO message_log (epoch, recipient_id, status, provider_message_id, bulk_id,
                                  delivery_status, error, error_retryable, sent_at, delivered_at,
                                  failed_at, attempt)
         SELECT $12, u.*
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                     $7::bool[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::int[])
              AS u",
    )
    .bind(&ids)
    .bind(&status)
    .bind(&message_ids)
    .bind(&bulk_ids)
    .bind(&raw)
    .bind(&errors)
    .bind(&retryable)
    .bind(&sent)
    .bind(&delivered)
    .bind(&failed)
    .bind(&attempts)
    .bind(epoch as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What one [`fold`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Log rows taken out of `message_log`.
    pub logged: u64,
    /// `campaign_recipients` rows written (one per recipient, however many states it logged).
    pub written: u64,
}

/// Moves every committed row of `message_log` into `campaign_recipients`, in one transaction:
/// per recipient, the newest attempt's newest epoch, which is what applying each checkpoint's
/// rows in epoch order would leave. The claim token is cleared as a row leaves `processing`;
/// billing follows the status (accepted → charged, refused before acceptance → refunded). A
/// row already reset for a newer attempt (retry-failed) is left alone.
///
/// Folds are serialised by a transaction-level advisory lock: two folds running side by side
/// could otherwise each take rows of one recipient and commit them out of order. Checkpoints
/// keep appending meanwhile; their rows wait for the next fold.
#[tracing::instrument(skip_all)]
pub async fn fold(pool: &PgPool) -> Result<Folded, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FOLD_LOCK)
        .execute(&mut *tx)
        .await?;
    // a backlog folds in one statement: a server or role `statement_timeout` (common on
    // managed Postgres) would refuse every attempt at a large one, and readers would wait
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    let folded = fold_in(&mut tx).await?;
    tx.commit().await?;
    Ok(folded)
}

/// [`fold`]'s statement, in the caller's transaction, which holds the fold lock.
async fn fold_in(conn: &mut sqlx::PgConnection) -> Result<Folded, StoreError> {
    let (logged, written): (i64, i64) = sqlx::query_as(
        "WITH moved AS (
             DELETE FROM message_log RETURNING *
         ), latest AS (
             SELECT DISTINCT ON (recipient_id) * FROM moved
             ORDER BY recipient_id, attempt DESC, epoch DESC
         ), written AS (
             UPDATE campaign_recipients AS r SET
                 status = u.status, provider_message_id = u.provider_message_id,
                 bulk_id = u.bulk_id, delivery_status = u.delivery_status, error = u.error,
                 error_retryable = u.error_retryable, sent_at = u.sent_at,
                 delivered_at = u.delivered_at, failed_at = u.failed_at,
                 claim_token = CASE WHEN u.status = 'processing' THEN r.claim_token END,
                 billing_status = CASE
                     WHEN u.sent_at IS NOT NULL THEN 'charged'
                     WHEN u.status = 'failed' THEN 'refunded'
                     ELSE r.billing_status END
             FROM latest AS u
             WHERE r.id = u.recipient_id AND r.retry_count <= u.attempt
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM written)",
    )
    .fetch_one(conn)
    .await?;
    Ok(Folded {
        logged: logged as u64,
        written: written as u64,
    })
}

/// The advisory lock key of [`fold`] ("fold" in ASCII).
pub const FOLD_LOCK: i64 = 0x666f_6c64;

/// Rows logged and not folded yet.
pub async fn unfolded(pool: &PgPool) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM message_log")
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

#[derive(sqlx::FromRow)]
struct RawEngagement {
    id: i64,
    campaign_id: i64,
    visited_at: Option<DateTime<Utc>>,
    clicks: i32,
    redeemed_at: Option<DateTime<Utc>>,
    redeemed_by: Option<String>,
    unsubscribed_at: Option<DateTime<Utc>>,
    unsubscribed_via: Option<String>,
}

/// Engagement columns by recipient id, in one round trip (absent ids: no such recipient).
pub async fn load_engagement(
    pool: &PgPool,
    ids: &[RecipientId],
) -> Result<Vec<EngagementRow>, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|i| i.get()).collect();
    let raws: Vec<RawEngagement> = sqlx::query_as(
        "SELECT id, campaign_id, visited_at, clicks, redeemed_at, redeemed_by, unsubscribed_at,
                unsubscribed_via
         FROM campaign_recipients WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    raws.into_iter()
        .map(|r| {
            let corrupt =
                |e: crate::domain::IdError| StoreError::Corrupt(format!("recipient {}: {e}", r.id));
            Ok(EngagementRow {
                recipient: RecipientId::new(r.id).map_err(corrupt)?,
                campaign: CampaignId::new(r.campaign_id).map_err(corrupt)?,
                visited_at: r.visited_at,
                clicks: r.clicks,
                redeemed_at: r.redeemed_at,
                redeemed_by: r.redeemed_by,
                unsubscribed_at: r.unsubscribed_at,
                unsubscribed_via: r.unsubscribed_via,
            })
        })
        .collect()
}

/// Writes engagement columns (and only those: the status columns have their own writer).
pub async fn write_engagement(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[EngagementRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.recipient.get()).collect();
    let visited: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.visited_at).collect();
    let clicks: Vec<i32> = rows.iter().map(|r| r.clicks).collect();
    let redeemed: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.redeemed_at).collect();
    let by: Vec<Option<&str>> = rows.iter().map(|r| r.redeemed_by.as_deref()).collect();
    let unsubscribed: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.unsubscribed_at).collect();
    let via: Vec<Option<&str>> = rows.iter().map(|r| r.unsubscribed_via.as_deref()).collect();
    sqlx::query(
        "UPDATE campaign_recipients AS r SET
             visited_at = u.visited_at, clicks = u.clicks, redeemed_at = u.redeemed_at,
             redeemed_by = u.redeemed_by, unsubscribed_at = u.unsubscribed_at,
             unsubscribed_via = u.unsubscribed_via
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::int[], $4::timestamptz[], $5::text[],
                     $6::timestamptz[], $7::text[])
              AS u(id, visited_at, clicks, redeemed_at, redeemed_by, unsubscribed_at,
                   unsubscribed_via)
         WHERE r.id = u.id",
    )
    .bind(&ids)
    .bind(&visited)
    .bind(&clicks)
    .bind(&redeemed)
    .bind(&by)
    .bind(&unsubscribed)
    .bind(&via)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
