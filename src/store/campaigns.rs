//! Campaign rows as CampaignActors load them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::actors::campaign::{Campaign, Counters, SeriesKind};
use crate::domain::{CampaignId, CampaignStatus, MessageStatus, TenantId};

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
    let row: Option<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT tenant_id, name, status, redemptions, unsubscribes FROM campaigns WHERE id = $1",
    )
    .bind(id.get())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((tenant, name, status, redemptions, unsubscribes)) = row else {
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
