//! What reports read from recipient rows: the delivery-status and error breakdowns, pages of
//! recipients and the streamed exports. Every query reads one campaign's rows by primary-key
//! range (`recipients_from..=recipients_to`), so no index on the hot table is needed and no
//! other campaign's rows are scanned.

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use sqlx::PgPool;

use super::StoreError;
use crate::domain::{CampaignId, MessageStatus, TenantId};

/// A tenant's campaign as reports need it: where its rows are and the zone days are cut in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportScope {
    pub campaign_id: i64,
    pub time_zone: String,
    pub recipients_from: Option<i64>,
    pub recipients_to: Option<i64>,
}

impl ReportScope {
    fn range(&self) -> (i64, i64) {
        match (self.recipients_from, self.recipients_to) {
            (Some(lo), Some(hi)) => (lo, hi),
            // no recipients yet: an empty range
            _ => (1, 0),
        }
    }
}

/// The tenant's campaign, or `None` (missing, or another tenant's).
pub async fn scope(
    pool: &PgPool,
    tenant: TenantId,
    id: CampaignId,
) -> Result<Option<ReportScope>, StoreError> {
    let scope = sqlx::query_as(
        "SELECT c.id AS campaign_id, t.time_zone, c.recipients_from, c.recipients_to
         FROM campaigns c JOIN tenants t ON t.id = c.tenant_id
         WHERE c.id = $1 AND c.tenant_id = $2",
    )
    .bind(id.get())
    .bind(tenant.get())
    .fetch_optional(pool)
    .await?;
    Ok(scope)
}

/// How many messages carry each raw `deliveryStatus` Mitto reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatusCount {
    pub delivery_status: String,
    pub count: i64,
}

/// How many failures share an error text; `kind` tells refusals before acceptance (`send`)
/// from failed delivery reports (`delivery`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCount {
    pub kind: String,
    pub error: String,
    pub count: i64,
}

/// At most this many distinct error texts are listed, the most frequent first.
pub const MAX_ERRORS: i64 = 100;

/// The rows' breakdown by raw delivery status and by failure text, as of the last checkpoint.
pub async fn breakdown(
    pool: &PgPool,
    scope: &ReportScope,
) -> Result<(Vec<DeliveryStatusCount>, Vec<ErrorCount>), StoreError> {
    let (lo, hi) = scope.range();
    let statuses = sqlx::query_as(
        "SELECT delivery_status, count(*) AS count FROM campaign_recipients
         WHERE id BETWEEN $2 AND $3 AND campaign_id = $1 AND delivery_status IS NOT NULL
         GROUP BY delivery_status ORDER BY count DESC, delivery_status",
    )
    .bind(scope.campaign_id)
    .bind(lo)
    .bind(hi)
    .fetch_all(pool)
    .await?;
    let errors = sqlx::query_as(
        "SELECT CASE WHEN sent_at IS NULL THEN 'send' ELSE 'delivery' END AS kind,
                COALESCE(error, '') AS error, count(*) AS count
         FROM campaign_recipients
         WHERE id BETWEEN $2 AND $3 AND campaign_id = $1 AND status = 'failed'
         GROUP BY 1, 2 ORDER BY count DESC, kind, error LIMIT $4",
    )
    .bind(scope.campaign_id)
    .bind(lo)
    .bind(hi)
    .bind(MAX_ERRORS)
    .fetch_all(pool)
    .await?;
    Ok((statuses, errors))
}

/// One recipient as reports show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecipientRow {
    pub id: i64,
    pub phone_e164: String,
    pub status: String,
    pub delivery_status: Option<String>,
    pub provider_message_id: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub retry_count: i32,
}

impl RecipientRow {
    /// The status as the API names it (`send_failed` / `delivery_failed` for failures).
    pub fn message_status(&self) -> Result<MessageStatus, StoreError> {
        MessageStatus::from_db(&self.status, self.sent_at.is_some())
            .map_err(|e| StoreError::Corrupt(format!("recipient {}: {e}", self.id)))
    }
}

/// Which recipients a listing or export holds: all, or those in one status.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecipientFilter {
    pub status: Option<StatusFilter>,
}

/// A status as a row stores it: the column's value, and for failures whether it was sent.
#[derive(Debug, Clone, Copy)]
pub struct StatusFilter {
    pub db_status: &'static str,
    pub was_sent: Option<bool>,
}

impl StatusFilter {
    pub fn of(status: MessageStatus) -> Self {
        let was_sent = match status {
            MessageStatus::SendFailed => Some(false),
            MessageStatus::DeliveryFailed => Some(true),
            _ => None,
        };
        Self {
            db_status: status.as_db_str(),
            was_sent,
        }
    }

    /// Both kinds of failure.
    pub fn failed() -> Self {
        Self {
            db_status: "failed",
            was_sent: None,
        }
    }
}

const RECIPIENT_COLUMNS: &str = "id, phone_e164, status, delivery_status, provider_message_id,
     sent_at, delivered_at, failed_at, error, retry_count";

const RANGE_AND_FILTER: &str = "id BETWEEN $2 AND $3 AND campaign_id = $1
     AND ($4::text IS NULL OR status = $4)
     AND ($5::bool IS NULL OR (sent_at IS NOT NULL) = $5)";

/// Up to `limit` recipients after `after` (an id), in id order: keyset pagination, so a page
/// costs the same however deep it is.
pub async fn recipients_page(
    pool: &PgPool,
    scope: &ReportScope,
    filter: RecipientFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<RecipientRow>, StoreError> {
    let (lo, hi) = scope.range();
    let lo = after.map_or(lo, |a| lo.max(a.saturating_add(1)));
    let sql = format!(
        "SELECT {RECIPIENT_COLUMNS} FROM campaign_recipients
         WHERE {RANGE_AND_FILTER} ORDER BY id LIMIT $6"
    );
    let rows = sqlx::query_as(&sql)
        .bind(scope.campaign_id)
        .bind(lo)
        .bind(hi)
        .bind(filter.status.map(|s| s.db_status))
        .bind(filter.status.and_then(|s| s.was_sent))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// One recipient with what it did with its links and its contact's name (`report.csv`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    #[sqlx(flatten)]
    pub recipient: RecipientRow,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub visited_at: Option<DateTime<Utc>>,
    pub clicks: i32,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub redeemed_by: Option<String>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub unsubscribed_via: Option<String>,
}

/// Every recipient in the filter, in id order, streamed from Postgres as it reads them: the
/// caller holds one row at a time, whatever the campaign's size.
pub fn stream_recipients(
    pool: PgPool,
    scope: ReportScope,
    filter: RecipientFilter,
) -> BoxStream<'static, Result<RecipientRow, StoreError>> {
    let sql = format!(
        "SELECT {RECIPIENT_COLUMNS} FROM campaign_recipients WHERE {RANGE_AND_FILTER} ORDER BY id"
    );
    stream_rows(pool, scope, filter, sql)
}

/// Like [`stream_recipients`], with engagement and the contact's name.
pub fn stream_report(
    pool: PgPool,
    scope: ReportScope,
    filter: RecipientFilter,
) -> BoxStream<'static, Result<ReportRow, StoreError>> {
    let sql = format!(
        "SELECT r.id, r.phone_e164, r.status, r.delivery_status, r.provider_message_id,
                r.sent_at, r.delivered_at, r.failed_at, r.error, r.retry_count, c.first_name, c.last_name, r.visited_at, r.clicks, r.redeemed_at,
                r.redeemed_by, r.unsubscribed_at, r.unsubscribed_via
         FROM (SELECT * FROM campaign_recipients WHERE {RANGE_AND_FILTER}) r
         LEFT JOIN contacts c ON c.id = r.contact_id
         ORDER BY r.id"
    );
    stream_rows(pool, scope, filter, sql)
}

fn stream_rows<T>(
    pool: PgPool,
    scope: ReportScope,
    filter: RecipientFilter,
    sql: String,
) -> BoxStream<'static, Result<T, StoreError>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
{
    let (lo, hi) = scope.range();
    let rows = async_rows(pool, sql, move |q| {
        q.bind(scope.campaign_id)
            .bind(lo)
            .bind(hi)
            .bind(filter.status.map(|s| s.db_status))
            .bind(filter.status.and_then(|s| s.was_sent))
    });
    rows.map(|r| r.map_err(StoreError::from)).boxed()
}

type PgQueryAs<'q, T> = sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>;

/// Runs a query on a connection of its own and yields its rows as Postgres sends them.
fn async_rows<T, B>(
    pool: PgPool,
    sql: String,
    bind: B,
) -> BoxStream<'static, Result<T, sqlx::Error>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
    B: for<'q> FnOnce(PgQueryAs<'q, T>) -> PgQueryAs<'q, T> + Send + 'static,
{
    let (tx, rx) = futures::channel::mpsc::channel::<Result<T, sqlx::Error>>(256);
    tokio::spawn(async move {
        let mut tx = tx;
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = futures::SinkExt::send(&mut tx, Err(e)).await;
                return;
            }
        };
        let mut rows = bind(sqlx::query_as::<_, T>(&sql)).fetch(&mut *conn);
        while let Some(row) = rows.next().await {
            let failed = row.is_err();
            // the reader went away (client disconnected): stop reading
            if futures::SinkExt::send(&mut tx, row).await.is_err() || failed {
                return;
            }
        }
    });
    rx.boxed()
}
