//! Campaign rows as CampaignActors load them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::enqueue::{lock_campaign, StartError};
use super::StoreError;
use crate::actors::campaign::{Campaign, Counters, SendPlan, SeriesKind};
use crate::domain::{CampaignId, CampaignStatus, MessageStatus, TenantId, TrafficAccountId};

/// tenant, name, status, redemptions, unsubscribes, body, sender, traffic account.
type ActivationRow = (
    i64,
    String,
    String,
    i64,
    i64,
    String,
    String,
    Option<uuid::Uuid>,
);

/// Loads a campaign with counters recomputed from its recipients, and the epoch those rows
/// reflect, all from one snapshot (REPEATABLE READ). `None` when the campaign does not exist.
#[tracing::instrument(skip(pool))]
pub async fn load_for_activation(
    pool: &PgPool,
    id: CampaignId,
) -> Result<Option<Campaign>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let row: Option<ActivationRow> =
        sqlx::query_as(
            "SELECT tenant_id, name, status, redemptions, unsubscribes, body, sender, traffic_account_id
             FROM campaigns WHERE id = $1",
        )
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?;
    let Some((tenant, name, status, redemptions, unsubscribes, body, sender, account)) = row else {
        return Ok(None);
    };
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM checkpoint_state")
        .fetch_one(&mut *tx)
        .await?;
    let groups: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT status, sent_at IS NOT NULL, count(*) FROM campaign_recipients
         WHERE campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(id.get())
    .fetch_all(&mut *tx)
    .await?;
    let series: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT 'sent', date_trunc('minute', sent_at), count(*) FROM campaign_recipients
           WHERE campaign_id = $1 AND sent_at IS NOT NULL GROUP BY 2
         UNION ALL
         SELECT 'delivered', date_trunc('minute', delivered_at), count(*) FROM campaign_recipients
           WHERE campaign_id = $1 AND status = 'delivered' GROUP BY 2
         UNION ALL
         SELECT 'failed', date_trunc('minute', failed_at), count(*) FROM campaign_recipients
           WHERE campaign_id = $1 AND status = 'failed' GROUP BY 2",
    )
    .bind(id.get())
    .fetch_all(&mut *tx)
    .await?;
    let (first_sent_at, last_event_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT min(sent_at), max(GREATEST(sent_at, delivered_at, failed_at))
         FROM campaign_recipients WHERE campaign_id = $1",
        )
        .bind(id.get())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;

    let corrupt = |e: String| StoreError::Corrupt(format!("campaign {id}: {e}"));
    let mut counters = Counters::default();
    for (status, was_sent, n) in groups {
        let status =
            MessageStatus::from_db(&status, was_sent).map_err(|e| corrupt(e.to_string()))?;
        counters.add(status, n);
    }
    let mut campaign = Campaign {
        id,
        tenant: TenantId::new(tenant).map_err(|e| corrupt(e.to_string()))?,
        name,
        status: CampaignStatus::parse(&status).map_err(|e| corrupt(e.to_string()))?,
        counters,
        redemptions,
        unsubscribes,
        first_sent_at,
        last_event_at,
        series: BTreeMap::new(),
        plan: SendPlan {
            body,
            sender,
            traffic_account: account.map(TrafficAccountId::from_uuid),
        },
        loaded_epoch: epoch as u64,
        applied_epoch: 0,
        dirty: false,
    };
    for (kind, minute, n) in series {
        let kind = match kind.as_str() {
            "sent" => SeriesKind::Sent,
            "delivered" => SeriesKind::Delivered,
            _ => SeriesKind::Failed,
        };
        campaign.add_series(kind, minute, n);
    }
    Ok(Some(campaign))
}

/// A campaign's definition and lifecycle fields, as the API shows them.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct CampaignRecord {
    pub id: i64,
    pub name: String,
    pub body: String,
    pub sender: String,
    pub traffic_account_id: Option<uuid::Uuid>,
    pub status: String,
    pub audience: serde_json::Value,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub credits_reserved: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RECORD: &str = "id, name, body, sender, traffic_account_id, status, audience, scheduled_at, \
                      started_at, finished_at, credits_reserved, created_at, updated_at";

/// What creating or editing a campaign sets.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub body: String,
    pub sender: String,
    pub traffic_account_id: Option<uuid::Uuid>,
    pub audience: serde_json::Value,
    pub scheduled_at: Option<DateTime<Utc>>,
}

type PgQueryAs<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

/// Binds a definition as `$2`..`$7`: name, body, sender, traffic account, audience,
/// scheduled_at (after the one parameter the statement starts with).
fn bind_definition<'q, O>(query: PgQueryAs<'q, O>, def: &'q Definition) -> PgQueryAs<'q, O> {
    query
        .bind(&def.name)
        .bind(&def.body)
        .bind(&def.sender)
        .bind(def.traffic_account_id)
        .bind(&def.audience)
        .bind(def.scheduled_at)
}

/// Creates a campaign: `scheduled` when it has a start time, else `draft`.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    def: &Definition,
) -> Result<CampaignRecord, StoreError> {
    let sql = format!(
        "INSERT INTO campaigns (tenant_id, name, body, sender, traffic_account_id, audience,
                                scheduled_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7 IS NULL THEN 'draft' ELSE 'scheduled' END)
         RETURNING {RECORD}"
    );
    let record = bind_definition(sqlx::query_as(&sql).bind(tenant.get()), def)
        .fetch_one(pool)
        .await?;
    Ok(record)
}

/// The tenant's campaign, or `None` (absent or another tenant's).
pub async fn find(
    pool: &PgPool,
    tenant: TenantId,
    id: i64,
) -> Result<Option<CampaignRecord>, StoreError> {
    let sql = format!("SELECT {RECORD} FROM campaigns WHERE id = $1 AND tenant_id = $2");
    let record = sqlx::query_as(&sql)
        .bind(id)
        .bind(tenant.get())
        .fetch_optional(pool)
        .await?;
    Ok(record)
}

/// A page of the tenant's campaigns, newest first, with the total that match.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    status: Option<CampaignStatus>,
    search: Option<&str>,
    page: i64,
    page_size: i64,
) -> Result<(Vec<CampaignRecord>, i64), StoreError> {
    let filter = "tenant_id = $1 AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR lower(name) LIKE '%' || lower($3) || '%')";
    let sql = format!(
        "SELECT {RECORD} FROM campaigns WHERE {filter}
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    );
    let search = search.map(|s| {
        s.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    });
    let records = sqlx::query_as(&sql)
        .bind(tenant.get())
        .bind(status.map(CampaignStatus::as_str))
        .bind(&search)
        .bind(page_size)
        .bind((page - 1) * page_size)
        .fetch_all(pool)
        .await?;
    let total = sqlx::query_scalar(&format!("SELECT count(*) FROM campaigns WHERE {filter}"))
        .bind(tenant.get())
        .bind(status.map(CampaignStatus::as_str))
        .bind(&search)
        .fetch_one(pool)
        .await?;
    Ok((records, total))
}

/// Replaces a draft or scheduled campaign's definition (the status follows `scheduled_at`).
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: CampaignId,
    def: &Definition,
) -> Result<CampaignRecord, StartError> {
    let mut tx = pool.begin().await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, id).await?;
    if !matches!(status, CampaignStatus::Draft | CampaignStatus::Scheduled) {
        return Err(StartError::Refused(status));
    }
    let sql = format!(
        "UPDATE campaigns SET name = $2, body = $3, sender = $4, traffic_account_id = $5,
                audience = $6, scheduled_at = $7,
                status = CASE WHEN $7 IS NULL THEN 'draft' ELSE 'scheduled' END, updated_at = now()
         WHERE id = $1 RETURNING {RECORD}"
    );
    let record = bind_definition(sqlx::query_as(&sql).bind(id.get()), def)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(record)
}

/// Deletes a draft.
pub async fn delete(pool: &PgPool, tenant: TenantId, id: CampaignId) -> Result<(), StartError> {
    let mut tx = pool.begin().await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, id).await?;
    if status != CampaignStatus::Draft {
        return Err(StartError::Refused(status));
    }
    sqlx::query("DELETE FROM campaigns WHERE id = $1")
        .bind(id.get())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets a campaign's status (its actor decided the transition), stamping start and finish.
pub async fn set_status(
    pool: &PgPool,
    id: CampaignId,
    status: CampaignStatus,
    scheduled_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE campaigns SET status = $2, updated_at = now(),
                scheduled_at = CASE WHEN $2 IN ('scheduled', 'draft') THEN $3 ELSE scheduled_at END,
                started_at = CASE WHEN $2 = 'sending' THEN COALESCE(started_at, now()) ELSE started_at END,
                finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now()
                                   WHEN $2 = 'sending' THEN NULL ELSE finished_at END
         WHERE id = $1",
    )
    .bind(id.get())
    .bind(status.as_str())
    .bind(scheduled_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Campaigns whose senders must run: those in `sending`.
pub async fn sending(pool: &PgPool) -> Result<Vec<CampaignId>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM campaigns WHERE status = 'sending'")
        .fetch_all(pool)
        .await?;
    ids.into_iter()
        .map(|id| CampaignId::new(id).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}
