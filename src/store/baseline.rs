//! The replaced system's statements, kept only as the ingest bench's baseline: one committed
//! UPDATE per event, and COUNT(*) … GROUP BY status for stats.

use sqlx::PgPool;

use super::StoreError;
use crate::domain::{CampaignId, DeliveryOutcome, Event};

/// Applies one event with one autocommitted UPDATE, as the replaced webhook handler did.
pub async fn apply_event(pool: &PgPool, event: &Event) -> Result<(), StoreError> {
    match event {
        Event::Sent {
            message_id,
            recipient_id,
            at,
            ..
        } => {
            sqlx::query(
                "UPDATE campaign_recipients SET status = 'sent', provider_message_id = $1, sent_at = $2,
                        claim_token = NULL
                 WHERE id = $3 AND status IN ('queued', 'processing')",
            )
            .bind(message_id.as_str())
            .bind(at)
            .bind(recipient_id.get())
            .execute(pool)
            .await?;
        }
        Event::SendFailed {
            recipient_id,
            error,
            at,
            ..
        } => {
            sqlx::query(
                "UPDATE campaign_recipients SET status = 'failed', error = $1, failed_at = $2, claim_token = NULL
                 WHERE id = $3",
            )
            .bind(error)
            .bind(at)
            .bind(recipient_id.get())
            .execute(pool)
            .await?;
        }
        Event::Dlr {
            message_id,
            status,
            at,
            ..
        } => {
            let new_status = match status.outcome() {
                DeliveryOutcome::Delivered => "delivered",
                DeliveryOutcome::Failed => "failed",
                DeliveryOutcome::InFlight => "sent",
            };
            sqlx::query(
                "UPDATE campaign_recipients SET status = $1, delivery_status = $2,
                        delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END,
                        failed_at = CASE WHEN $1 = 'failed' THEN $3 ELSE failed_at END
                 WHERE provider_message_id = $4",
            )
            .bind(new_status)
            .bind(status.raw())
            .bind(at)
            .bind(message_id.as_str())
            .execute(pool)
            .await?;
        }
        // the replaced system had no such outcome; the workload never produces one
        // the ingest workload carries no engagement and never gives up on a message
        Event::OutcomeUnknown { .. } | Event::Engaged { .. } => {}
    }
    Ok(())
}

/// The replaced stats query.
pub async fn count_by_status(
    pool: &PgPool,
    campaign: CampaignId,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT status, count(*) FROM campaign_recipients WHERE campaign_id = $1 GROUP BY status",
    )
    .bind(campaign.get())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Adds one recipient with its own autocommitted INSERT, as the replaced enqueue did.
pub async fn insert_recipient(
    pool: &PgPool,
    campaign: CampaignId,
    tenant: crate::domain::TenantId,
    phone: &str,
) -> Result<i64, StoreError> {
    let id = sqlx::query_scalar(
        "INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164) VALUES ($1, $2, $3)
         ON CONFLICT (campaign_id, phone_e164) DO NOTHING RETURNING id",
    )
    .bind(campaign.get())
    .bind(tenant.get())
    .bind(phone)
    .fetch_optional(pool)
    .await?;
    Ok(id.unwrap_or(0))
}

/// Records one send with its own autocommitted UPDATE, as the replaced send job did.
pub async fn mark_sent(pool: &PgPool, recipient: i64, message_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE campaign_recipients SET status = 'sent', provider_message_id = $2, sent_at = now(),
                claim_token = NULL
         WHERE id = $1",
    )
    .bind(recipient)
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}
