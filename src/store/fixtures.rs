//! Data set-up for benches and tests: campaigns whose recipients are already claimed, as the
//! send loop leaves them just before a batch goes to Mitto (paused, so no sender picks them up).

use sqlx::PgPool;

use super::StoreError;
use crate::domain::{CampaignId, RecipientId, TenantId};

/// A campaign in `paused` (its claimed batch out with Mitto) with `n` recipients in
/// `processing`, its snapshot counting them; returns its id and recipients.
pub async fn claimed_campaign(
    pool: &PgPool,
    tenant: TenantId,
    n: i64,
) -> Result<(CampaignId, Vec<RecipientId>), StoreError> {
    let campaign: i64 = sqlx::query_scalar(
        "INSERT INTO campaigns (tenant_id, name, body, sender, status, started_at, processing)
         VALUES ($1, 'load campaign', 'Hi', 'Shop', 'paused', now(), $2) RETURNING id",
    )
    .bind(tenant.get())
    .bind(n)
    .fetch_one(pool)
    .await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164, status, claim_token)
         SELECT $1, $2, '+1' || lpad(($1 * 100000000 + g)::text, 14, '0'), 'processing', gen_random_uuid()
         FROM generate_series(1, $3) AS g
         ORDER BY g
         RETURNING id",
    )
    .bind(campaign)
    .bind(tenant.get())
    .bind(n)
    .fetch_all(pool)
    .await?;
    sqlx::query("UPDATE campaigns SET recipients_from = $2, recipients_to = $3 WHERE id = $1")
        .bind(campaign)
        .bind(ids.iter().min())
        .bind(ids.iter().max())
        .execute(pool)
        .await?;
    let corrupt = |e: crate::domain::IdError| StoreError::Corrupt(e.to_string());
    let campaign = CampaignId::new(campaign).map_err(corrupt)?;
    let ids = ids
        .into_iter()
        .map(|id| RecipientId::new(id).map_err(corrupt))
        .collect::<Result<_, _>>()?;
    Ok((campaign, ids))
}
