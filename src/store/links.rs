//! What the public link routes and the inbound opt-out read and write: the recipient behind a
//! link code, redemptions (answered once), the phone's last campaign, and server secrets.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::domain::{RecipientId, TenantId};

/// The recipient a link code names, with its campaign's offer and what it did already.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkTarget {
    pub recipient_id: i64,
    pub campaign_id: i64,
    pub tenant_id: i64,
    pub phone: String,
    pub link_secret: Option<Vec<u8>>,
    pub provider_message_id: Option<String>,
    pub shop_name: String,
    pub offer_title: Option<String>,
    pub offer_text: Option<String>,
    pub offer_expires_at: Option<DateTime<Utc>>,
    pub offer_self_redeem: bool,
    /// When the offer was redeemed (through the API or the offer page).
    pub redeemed_at: Option<DateTime<Utc>>,
    /// When the phone opted out of the tenant's marketing, if it has.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// Skipped, cancelled or refused before Mitto accepted it: no SMS carried its links.
    pub never_sent: bool,
}

impl LinkTarget {
    pub fn tenant(&self) -> Result<TenantId, StoreError> {
        TenantId::new(self.tenant_id).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// The recipient with this id, by primary key (the caller checks the code's secret).
pub async fn target(
    pool: &PgPool,
    recipient: RecipientId,
) -> Result<Option<LinkTarget>, StoreError> {
    let found = sqlx::query_as(
        "SELECT r.id AS recipient_id, r.campaign_id, r.tenant_id, r.phone_e164 AS phone,
                r.link_secret, r.provider_message_id, t.name AS shop_name, c.offer_title,
                c.offer_text, c.offer_expires_at, c.offer_self_redeem,
                d.redeemed_at, k.unsubscribed_at,
                r.status IN ('skipped', 'cancelled') OR (r.status = 'failed' AND r.sent_at IS NULL)
                    AS never_sent
         FROM campaign_recipients r
         JOIN campaigns c ON c.id = r.campaign_id
         JOIN tenants t ON t.id = r.tenant_id
         LEFT JOIN redemptions d ON d.recipient_id = r.id
         LEFT JOIN contacts k ON k.tenant_id = r.tenant_id AND k.phone_e164 = r.phone_e164
         WHERE r.id = $1",
    )
    .bind(recipient.get())
    .fetch_optional(pool)
    .await?;
    Ok(found)
}

/// Inserts the redemption row in the caller's transaction (which holds the row's key until
/// it ends); `Some(first)` when the code was redeemed already, at `first`.
pub async fn insert_redemption(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    target: &LinkTarget,
    by: &str,
    at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO redemptions (recipient_id, campaign_id, tenant_id, by, redeemed_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (recipient_id) DO NOTHING RETURNING recipient_id",
    )
    .bind(target.recipient_id)
    .bind(target.campaign_id)
    .bind(target.tenant_id)
    .bind(by)
    .bind(at)
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    let first = sqlx::query_scalar("SELECT redeemed_at FROM redemptions WHERE recipient_id = $1")
        .bind(target.recipient_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(first))
}

/// The latest message of `tenant` a phone got within `days`: the campaign an inbound opt-out
/// is attributed to. Found through the tenant's campaigns active in the window, each probed on
/// its (campaign, phone) index — no index on the phone alone, which would cost every enqueue
/// and send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastMessage {
    pub recipient_id: i64,
    pub campaign_id: i64,
    pub provider_message_id: Option<String>,
}

pub async fn last_message_to(
    pool: &PgPool,
    phone: &str,
    tenant: TenantId,
    days: u32,
) -> Result<Option<LastMessage>, StoreError> {
    let found = sqlx::query_as(
        "SELECT r.id AS recipient_id, r.campaign_id, r.provider_message_id
         FROM campaigns c
         JOIN campaign_recipients r ON r.campaign_id = c.id AND r.phone_e164 = $1
         WHERE c.tenant_id = $2 AND c.started_at IS NOT NULL
           AND COALESCE(c.finished_at, now()) >= now() - make_interval(days => $3)
           AND r.sent_at >= now() - make_interval(days => $3)
         ORDER BY r.sent_at DESC LIMIT 1",
    )
    .bind(phone)
    .bind(tenant.get())
    .bind(days as i32)
    .fetch_optional(pool)
    .await?;
    Ok(found)
}

/// The tenant that last messaged a phone (at any time) from `sender` — a name compared without
/// case, or a number compared by its digits — or from any sender when `sender` is `None`:
/// whose contact an inbound STOP opts out.
pub async fn tenant_of_sender(
    pool: &PgPool,
    phone: &str,
    sender: Option<&str>,
) -> Result<Option<TenantId>, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT c.tenant_id FROM campaigns c
         JOIN campaign_recipients r ON r.campaign_id = c.id AND r.phone_e164 = $1
         WHERE c.started_at IS NOT NULL AND r.sent_at IS NOT NULL
           AND ($2::text IS NULL OR lower(c.sender) = lower($2)
                OR (c.sender ~ '^[0-9]+$' AND c.sender = regexp_replace($2, '[^0-9]', '', 'g')))
         ORDER BY r.sent_at DESC LIMIT 1",
    )
    .bind(phone)
    .bind(sender)
    .fetch_optional(pool)
    .await?;
    found
        .map(|t| TenantId::new(t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// A server secret shared by every instance: generated once, then read.
pub async fn app_secret(pool: &PgPool, name: &str) -> Result<Vec<u8>, StoreError> {
    let fresh = crate::domain::secrets(3); // 36 bytes from the CSPRNG
    sqlx::query("INSERT INTO app_secrets (name, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(&fresh)
        .execute(pool)
        .await?;
    let secret = sqlx::query_scalar("SELECT secret FROM app_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(secret)
}

/// The link codes of a campaign's recipients, in recipient order (the demo's recipients use
/// them; a real recipient finds its own in its SMS).
pub async fn codes_of(pool: &PgPool, campaign: i64) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, link_secret FROM campaign_recipients
         WHERE campaign_id = $1 AND link_secret IS NOT NULL AND sent_at IS NOT NULL ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, secret)| {
            let recipient = RecipientId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let secret = secret
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("recipient {id}: link secret length")))?;
            Ok(crate::domain::LinkCode::new(recipient, secret).to_string())
        })
        .collect()
}
