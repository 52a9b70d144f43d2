//! The sending side's writes to `campaign_recipients`, all owned by the campaign's actor:
//! enqueue (recipients + credit reservation, one transaction), claims (`queued → processing`
//! before any network call), cancel, retry-failed, and the release of orphaned claims.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::campaigns::add_counters;
use super::StoreError;
use crate::domain::{
    secrets, CampaignId, CampaignStatus, Carried, Fields, LinkPlan, LinkWording, MessageStatus,
    MessageType, PhoneE164, RecipientId, Segments, Template, TenantId, TooLong,
};
use crate::engine::campaign::{Counters, Refused};

/// Why an enqueue (or another start of sending) was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("campaign not found")]
    NotFound,
    #[error("campaign is {0}")]
    Refused(CampaignStatus),
    #[error("the tenant's subscription is not active")]
    SubscriptionRequired,
    #[error("{required} credits are needed, {available} are available")]
    InsufficientCredits { required: i64, available: i64 },
    #[error("the campaign has no recipients to send to")]
    NoRecipients,
    #[error("this Idempotency-Key was used for another request in the last 24 hours")]
    KeyReused,
    #[error("{}: {too_long}", .recipient.as_deref().map_or("the campaign body".to_owned(), |p| format!("the text for {p}")))]
    TextTooLong {
        /// The recipient whose rendered text is too long; `None` when the body itself is.
        recipient: Option<String>,
        too_long: TooLong,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refused> for StartError {
    fn from(r: Refused) -> Self {
        Self::Refused(r.current)
    }
}

impl From<sqlx::Error> for StartError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A successful enqueue, as the seed's endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enqueued {
    pub ok: bool,
    /// Recipients waiting to be sent after this enqueue.
    pub queued: i64,
    /// Mitto bulk requests those recipients make.
    pub enqueued_jobs: i64,
    /// Recipients added by this call (0 on a repeated enqueue of a paused campaign).
    pub added: i64,
    /// Credits reserved by this call.
    pub reserved: i64,
}

/// What an enqueue did, or the first answer of an earlier call with the same key.
#[derive(Debug, Clone)]
pub enum EnqueueOutcome {
    Done(Enqueued),
    Replayed(serde_json::Value),
}

#[derive(Debug, serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Audience {
    pub(super) list_ids: Vec<i64>,
    pub(super) phones: Vec<String>,
}

impl Audience {
    /// A stored (or just validated) audience; `campaign` names it in the error.
    pub(super) fn of(
        campaign: Option<CampaignId>,
        stored: serde_json::Value,
    ) -> Result<Self, StoreError> {
        serde_json::from_value(stored).map_err(|e| {
            let whose = campaign.map_or_else(String::new, |c| format!("campaign {c} "));
            StoreError::Corrupt(format!("{whose}audience: {e}"))
        })
    }

    /// The inline phones in E.164 (they were validated when saved).
    pub(super) fn inline_phones(&self) -> Vec<String> {
        self.phones
            .iter()
            .filter_map(|p| PhoneE164::parse(p).ok().map(|p| p.as_str().to_owned()))
            .collect()
    }
}

/// Sizes an enqueue works with.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Recipients per Mitto bulk request (for the answer's job count).
    pub batch_size: usize,
    /// SMS parts one recipient's text may take (`sending.max_segments`).
    pub max_segments: u32,
    /// Where marketing links point and how they are worded: texts are counted with them.
    pub links: LinkWording,
}

/// Enqueues a campaign in one transaction (DESIGN.md section 5): idempotency key (a repeated
/// key replays the first answer even when the status now refuses a start), subscription, the
/// status its actor admitted the start from (`admitted`), recipients deduplicated by phone
/// with unsubscribed contacts skipped, texts rendered and their segments counted, credits
/// reserved, the snapshot's queued count raised.
#[tracing::instrument(skip(pool), fields(campaign_id = %campaign))]
pub async fn enqueue(
    pool: &PgPool,
    tenant: TenantId,
    campaign: CampaignId,
    admitted: Result<CampaignStatus, Refused>,
    idempotency_key: Option<&str>,
    sizes: Sizes,
) -> Result<EnqueueOutcome, StartError> {
    let mut tx = pool.begin().await?;
    // the audience is deduplicated by a sort: keep it in memory for large campaigns
    sqlx::query("SET LOCAL work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    if let Some(key) = idempotency_key {
        if let Some(first) = claim_key(&mut tx, tenant, campaign, key).await? {
            return Ok(EnqueueOutcome::Replayed(first));
        }
    }
    let from = admitted?;
    require_subscription(&mut tx, tenant).await?;
    let (status, body, audience) = lock_campaign(&mut tx, tenant, campaign).await?;
    expect_status(status, from)?;
    let (message_type, has_offer): (String, bool) =
        sqlx::query_as("SELECT message_type, offer_title IS NOT NULL FROM campaigns WHERE id = $1")
            .bind(campaign.get())
            .fetch_one(&mut *tx)
            .await?;
    let message_type = MessageType::parse(&message_type).unwrap_or_default();
    let links = sizes.links.plan(Carried::of(message_type, has_offer));
    let codes = message_type.has_links();
    let (added, required, first, last) = insert_recipients(
        &mut tx,
        (tenant, campaign, codes),
        &links.compose(&body),
        audience,
        (sizes.max_segments, &links),
    )
    .await?;
    // a paused campaign may have queued recipients already; any other start has only the new
    let queued: i64 = match status {
        CampaignStatus::Paused => sqlx::query_scalar(
            "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND status = 'queued'",
        )
        .bind(campaign.get())
        .fetch_one(&mut *tx)
        .await?,
        _ => added,
    };
    if queued == 0 && status != CampaignStatus::Paused {
        return Err(StartError::NoRecipients);
    }
    reserve(&mut tx, tenant, campaign, from, required).await?;
    widen_recipient_range(&mut tx, campaign, (first, last)).await?;
    add_counters(
        &mut tx,
        campaign,
        &Counters::of(MessageStatus::Queued, added),
    )
    .await?;
    let answer = Enqueued {
        ok: true,
        queued,
        enqueued_jobs: (queued.max(0) as u64).div_ceil(sizes.batch_size.max(1) as u64) as i64,
        added,
        reserved: required,
    };
    if let Some(key) = idempotency_key {
        sqlx::query("UPDATE idempotency_keys SET status = 200, response = $3 WHERE tenant_id = $1 AND key = $2")
            .bind(tenant.get())
            .bind(key)
            .bind(serde_json::to_value(&answer).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(EnqueueOutcome::Done(answer))
}

/// Enqueues at least this large refresh the planner's statistics of the recipients table.
pub const STATISTICS_REFRESH_ROWS: i64 = 10_000;

/// Re-samples `campaign_recipients` for the planner after a bulk enqueue, so the lookups and
/// checkpoints that follow are planned for the table's real size rather than stale numbers
/// (autovacuum would get there, but only after the campaign has started sending).
pub async fn refresh_statistics(pool: PgPool) {
    if let Err(e) = sqlx::query("ANALYZE campaign_recipients")
        .execute(&pool)
        .await
    {
        tracing::warn!(error = %e, "refreshing the recipients' statistics failed");
    }
}

/// How long an Idempotency-Key is remembered.
const KEY_LIFETIME_HOURS: i32 = 24;

/// Takes the key for this call, or returns the answer stored under it; a key first used for
/// another campaign is refused (`KeyReused`). Keys are per tenant and expire after
/// [`KEY_LIFETIME_HOURS`]. A concurrent call with the same key waits here until the first one
/// commits (or rolls back, freeing the key).
async fn claim_key(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    campaign: CampaignId,
    key: &str,
) -> Result<Option<serde_json::Value>, StartError> {
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE tenant_id = $1 AND key = $2 AND created_at < now() - make_interval(hours => $3)",
    )
    .bind(tenant.get())
    .bind(key)
    .bind(KEY_LIFETIME_HOURS)
    .execute(&mut **tx)
    .await?;
    let taken = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, campaign_id, status, response)
         VALUES ($1, $2, $3, 0, '{}') ON CONFLICT DO NOTHING",
    )
    .bind(tenant.get())
    .bind(key)
    .bind(campaign.get())
    .execute(&mut **tx)
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(None);
    }
    let (first, used_for): (serde_json::Value, Option<i64>) = sqlx::query_as(
        "SELECT response, campaign_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant.get())
    .bind(key)
    .fetch_one(&mut **tx)
    .await?;
    if used_for != Some(campaign.get()) {
        return Err(StartError::KeyReused);
    }
    Ok(Some(first))
}

/// Refuses a tenant whose subscription is not active. No lock is taken on the tenant: the
/// reservation is one conditional update, so concurrent enqueues cannot overdraw, and
/// checkpoints booking refunds never wait for a long enqueue.
async fn require_subscription(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
) -> Result<(), StartError> {
    let active: bool = sqlx::query_scalar(
        "SELECT subscription_active AND (subscription_until IS NULL OR subscription_until > now())
         FROM tenants WHERE id = $1",
    )
    .bind(tenant.get())
    .fetch_one(&mut **tx)
    .await?;
    if !active {
        return Err(StartError::SubscriptionRequired);
    }
    Ok(())
}

/// Refuses a change whose actor expected the campaign in `expected` when it is in `stored`
/// (the actor is the only writer of the status, so this guards against a second writer).
pub(super) fn expect_status(
    stored: CampaignStatus,
    expected: CampaignStatus,
) -> Result<(), StartError> {
    if stored == expected {
        Ok(())
    } else {
        Err(StartError::Refused(stored))
    }
}

/// The campaign's status, body and audience if the tenant owns it (`NotFound` otherwise),
/// key-share locked so it cannot be deleted meanwhile. The lock does not block checkpoints
/// adding to its counters; status writes are conditional on the status read here instead.
pub(super) async fn lock_campaign(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    campaign: CampaignId,
) -> Result<(CampaignStatus, String, serde_json::Value), StartError> {
    let row: Option<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT status, body, audience FROM campaigns WHERE id = $1 AND tenant_id = $2 FOR KEY SHARE",
    )
    .bind(campaign.get())
    .bind(tenant.get())
    .fetch_optional(&mut **tx)
    .await?;
    let (status, body, audience) = row.ok_or(StartError::NotFound)?;
    let status = CampaignStatus::parse(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((status, body, audience))
}

/// Inserts the audience's recipients; returns (added, segments of the added). `body` is
/// composed with its link markers, and parts are counted with the links in place. Refused
/// when a text is longer than `max_segments` parts. With `codes`, each recipient gets the secret of
/// its link code: 12 bytes sliced from one block of CSPRNG output sent with the statement
/// (generating them in SQL, one `gen_random_uuid()` per row, cost 40 % of enqueue speed).
async fn insert_recipients(
    tx: &mut Transaction<'_, Postgres>,
    (tenant, campaign, codes): (TenantId, CampaignId, bool),
    body: &str,
    audience: serde_json::Value,
    (max_segments, links): (u32, &LinkPlan),
) -> Result<Inserted, StartError> {
    let audience = Audience::of(Some(campaign), audience)?;
    let phones = audience.inline_phones();
    let template = Template::parse(body);
    if template.is_static() {
        let segments = static_parts(body, links, max_segments)?;
        let secrets = match codes {
            true => Some(secrets(
                audience_bound(tx, tenant, &audience, phones.len()).await?,
            )),
            false => None,
        };
        let inserted: Inserted = sqlx::query_as(&format!(
            "WITH {AUDIENCE}, ins AS (
                 INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164, contact_id, segments,
                                                  link_secret)
                 SELECT $4, $1, phone, contact_id, $5,
                        substring($6 from (row_number() OVER (ORDER BY phone) - 1)::int * 12 + 1 for 12)
                 FROM audience ORDER BY phone
                 ON CONFLICT (campaign_id, phone_e164) DO NOTHING
                 RETURNING id, segments
             )
             SELECT count(*), COALESCE(sum(segments), 0)::bigint, min(id), max(id) FROM ins"
        ))
        .bind(tenant.get())
        .bind(&audience.list_ids)
        .bind(&phones)
        .bind(campaign.get())
        .bind(segments)
        .bind(secrets)
        .fetch_one(&mut **tx)
        .await?;
        return Ok(inserted);
    }
    let audience = (audience.list_ids.as_slice(), phones.as_slice());
    insert_rendered(
        tx,
        (tenant, campaign, codes),
        &template,
        audience,
        (max_segments, links),
    )
    .await
}

/// At least as many recipients as the audience holds (before deduplication): what the block
/// of link secrets must cover.
pub(super) async fn audience_bound(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    audience: &Audience,
    phones: usize,
) -> Result<usize, StoreError> {
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM list_members m JOIN lists l ON l.id = m.list_id AND l.tenant_id = $1
         WHERE m.list_id = ANY($2)",
    )
    .bind(tenant.get())
    .bind(&audience.list_ids)
    .fetch_one(&mut **tx)
    .await?;
    Ok(usize::try_from(members).unwrap_or(0) + phones)
}

/// The audience as (phone, contact_id, first_name, last_name, attributes): list members and
/// inline phones, each phone once, unsubscribed contacts left out. Binds: $1 tenant,
/// $2 list ids, $3 inline phones.
pub(super) const AUDIENCE: &str = "audience AS (
    SELECT DISTINCT ON (phone) phone, contact_id, first_name, last_name, attributes FROM (
        SELECT c.phone_e164 AS phone, c.id AS contact_id, c.first_name, c.last_name, c.attributes
        FROM list_members m
        JOIN lists l ON l.id = m.list_id AND l.tenant_id = $1
        JOIN contacts c ON c.id = m.contact_id
        WHERE m.list_id = ANY($2) AND c.unsubscribed_at IS NULL
        UNION ALL
        SELECT p, c.id, c.first_name, c.last_name, COALESCE(c.attributes, '{}'::jsonb)
        FROM UNNEST($3::text[]) AS p
        LEFT JOIN contacts c ON c.tenant_id = $1 AND c.phone_e164 = p
        WHERE c.unsubscribed_at IS NULL
    ) a ORDER BY phone, contact_id NULLS LAST
)";

pub(super) type AudienceRow = (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    serde_json::Value,
);

/// Audience rows an enqueue renders and inserts at a time: what it holds in memory, however
/// large the campaign (a million personalised texts at once took about 600 MiB).
const RENDER_CHUNK_ROWS: i64 = 10_000;

/// Renders each recipient's text and inserts the recipients, reading the audience through a
/// cursor of the enqueue's transaction one chunk at a time (the same snapshot throughout).
async fn insert_rendered(
    tx: &mut Transaction<'_, Postgres>,
    (tenant, campaign, codes): (TenantId, CampaignId, bool),
    template: &Template,
    (lists, phones): (&[i64], &[String]),
    (max_segments, links): (u32, &LinkPlan),
) -> Result<Inserted, StartError> {
    sqlx::query(&format!(
        "DECLARE enqueue_audience NO SCROLL CURSOR FOR
         WITH {AUDIENCE} SELECT phone, contact_id, first_name, last_name, attributes FROM audience"
    ))
    .bind(tenant.get())
    .bind(lists)
    .bind(phones)
    .execute(&mut **tx)
    .await?;
    let mut inserted: Inserted = (0, 0, None, None);
    loop {
        let rows: Vec<AudienceRow> =
            sqlx::query_as(&format!("FETCH {RENDER_CHUNK_ROWS} FROM enqueue_audience"))
                .fetch_all(&mut **tx)
                .await?;
        if rows.is_empty() {
            break;
        }
        let chunk = insert_rendered_chunk(
            tx,
            (tenant, campaign, codes),
            &rows,
            (template, max_segments, links),
        )
        .await?;
        inserted = (
            inserted.0 + chunk.0,
            inserted.1 + chunk.1,
            inserted.2.into_iter().chain(chunk.2).min(),
            inserted.3.into_iter().chain(chunk.3).max(),
        );
    }
    sqlx::query("CLOSE enqueue_audience")
        .execute(&mut **tx)
        .await?;
    Ok(inserted)
}

/// Inserts one chunk of the audience with its rendered texts.
async fn insert_rendered_chunk(
    tx: &mut Transaction<'_, Postgres>,
    (tenant, campaign, codes): (TenantId, CampaignId, bool),
    rows: &[AudienceRow],
    (template, max_segments, links): (&Template, u32, &LinkPlan),
) -> Result<Inserted, StartError> {
    let mut texts = Vec::with_capacity(rows.len());
    let mut segments = Vec::with_capacity(rows.len());
    for row in rows {
        let (text, parts) = recipient_text(template, links, row, max_segments)?;
        segments.push(parts);
        texts.push(text);
    }
    let phone: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let contact: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
    let secrets = codes.then(|| secrets(rows.len()));
    let inserted: Inserted = sqlx::query_as(
        "WITH ins AS (
             INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164, contact_id, body, segments,
                                              link_secret)
             SELECT $1, $2, p, c, b, s, substring($7 from (n - 1)::int * 12 + 1 for 12)
             FROM UNNEST($3::text[], $4::bigint[], $5::text[], $6::smallint[])
                  WITH ORDINALITY AS u(p, c, b, s, n)
             ON CONFLICT (campaign_id, phone_e164) DO NOTHING
             RETURNING id, segments
         )
         SELECT count(*), COALESCE(sum(segments), 0)::bigint, min(id), max(id) FROM ins",
    )
    .bind(campaign.get())
    .bind(tenant.get())
    .bind(&phone)
    .bind(&contact)
    .bind(&texts)
    .bind(&segments)
    .bind(secrets)
    .fetch_one(&mut **tx)
    .await?;
    Ok(inserted)
}

/// One recipient's text as enqueue stores it (rendered, link markers kept) and its SMS parts
/// counted with links of the real length; refused above `max_segments`. Enqueue and preview
/// both count through here.
pub(super) fn recipient_text(
    template: &Template,
    links: &LinkPlan,
    (phone, _, first, last, attributes): &AudienceRow,
    max_segments: u32,
) -> Result<(String, i16), StartError> {
    let attributes: HashMap<String, serde_json::Value> =
        serde_json::from_value(attributes.clone()).unwrap_or_default();
    let text = template.render(&Fields {
        first_name: first.as_deref(),
        last_name: last.as_deref(),
        attributes: Some(&attributes),
    });
    let parts = Segments::bounded(&links.sized(&text), max_segments).map_err(|too_long| {
        StartError::TextTooLong {
            recipient: Some(phone.clone()),
            too_long,
        }
    })?;
    Ok((text, parts))
}

/// The SMS parts of a template without placeholders: the same for every recipient.
pub(super) fn static_parts(
    composed: &str,
    links: &LinkPlan,
    max_segments: u32,
) -> Result<i16, StartError> {
    Segments::bounded(&links.sized(composed), max_segments).map_err(|too_long| {
        StartError::TextTooLong {
            recipient: None,
            too_long,
        }
    })
}

/// What an enqueue's insert added: recipients, the credits they need, and their id range.
type Inserted = (i64, i64, Option<i64>, Option<i64>);

/// Widens the campaign's recipient id range to cover rows just inserted.
async fn widen_recipient_range(
    tx: &mut Transaction<'_, Postgres>,
    campaign: CampaignId,
    range: (Option<i64>, Option<i64>),
) -> Result<(), StoreError> {
    let (Some(from), Some(to)) = range else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE campaigns SET recipients_from = LEAST(recipients_from, $2),
                recipients_to = GREATEST(recipients_to, $3)
         WHERE id = $1",
    )
    .bind(campaign.get())
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Starts sending (`from → sending`, refused if the status moved) and takes `required` credits
/// from the balance into the campaign's reservation, refused when the balance does not cover
/// it. Campaign row before tenant row: the order checkpoints lock them in.
async fn reserve(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    campaign: CampaignId,
    from: CampaignStatus,
    required: i64,
) -> Result<(), StartError> {
    let started = sqlx::query(
        "UPDATE campaigns SET status = 'sending', started_at = COALESCE(started_at, now()),
                finished_at = NULL, credits_reserved = credits_reserved + $2, updated_at = now()
         WHERE id = $1 AND status = $3",
    )
    .bind(campaign.get())
    .bind(required)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    if started.rows_affected() == 0 {
        return Err(refused_now(tx, campaign).await);
    }
    if required == 0 {
        return Ok(());
    }
    let taken = sqlx::query(
        "UPDATE tenants SET credit_balance = credit_balance - $2 WHERE id = $1 AND credit_balance >= $2",
    )
    .bind(tenant.get())
    .bind(required)
    .execute(&mut **tx)
    .await?;
    if taken.rows_affected() == 0 {
        let available = sqlx::query_scalar("SELECT credit_balance FROM tenants WHERE id = $1")
            .bind(tenant.get())
            .fetch_one(&mut **tx)
            .await?;
        return Err(StartError::InsufficientCredits {
            required,
            available,
        });
    }
    sqlx::query(
        "INSERT INTO credit_ledger (tenant_id, campaign_id, delta, reason) VALUES ($1, $2, $3, 'reserve')",
    )
    .bind(tenant.get())
    .bind(campaign.get())
    .bind(-required)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The refusal for a conditional status write that found the status changed.
pub(super) async fn refused_now(tx: &mut sqlx::PgConnection, campaign: CampaignId) -> StartError {
    let stored: Result<Option<String>, _> =
        sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
            .bind(campaign.get())
            .fetch_optional(&mut *tx)
            .await;
    match stored {
        Ok(Some(status)) => match CampaignStatus::parse(&status) {
            Ok(status) => StartError::Refused(status),
            Err(e) => StartError::Store(StoreError::Corrupt(e.to_string())),
        },
        Ok(None) => StartError::NotFound,
        Err(e) => e.into(),
    }
}

/// One recipient of a claimed batch, with what Mitto needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub phone: String,
    /// The rendered text, or `None` for the campaign body as is.
    pub body: Option<String>,
    pub attempt: i32,
    pub segments: i16,
    /// The secret of its link code (marketing messages).
    pub link_secret: Option<Vec<u8>>,
}

/// What a claim checks besides the queue: marketing recipients whose phone opted out of the
/// tenant's marketing since enqueue, or got `tenants.marketing_cap_24h` marketing messages in
/// the 24 hours before `now`, are skipped (never sent, refunded) instead of claimed.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules {
    pub tenant: TenantId,
    pub marketing: bool,
    pub now: DateTime<Utc>,
}

/// A claim: the batch (under `token`), how many were skipped, and the last phone looked at
/// (where the next claim goes on from) — or nothing, because the tenant's quiet hours hold
/// marketing messages until `held_until`.
#[derive(Debug)]
pub struct Claim {
    pub token: Uuid,
    pub rows: Vec<Claimed>,
    pub skipped: i64,
    pub last_phone: Option<String>,
    pub held_until: Option<DateTime<Utc>>,
}

/// Claims up to `limit` queued recipients (`queued → processing` with a fresh claim token),
/// committed before the batch leaves for Mitto. Claims walk the campaign's phones in order
/// from `after` (the last phone claimed; `""` from the start) along the (campaign, phone)
/// index, so a claim costs its batch, not the campaign's size.
///
/// A claim whose COMMIT got no answer (the connection or the server died after it was sent)
/// is not guessed at: Postgres is asked whether the transaction committed, once it answers
/// again. Committed, the claim is answered as made (its rows are processing under its token,
/// and only the batch's sender may send them); not committed, the error is returned and the
/// caller claims afresh. Guessing "failed" would strand a committed batch in `processing`
/// under a token nobody holds, and the campaign in `sending` for good.
pub async fn claim_batch(
    pool: &PgPool,
    campaign: CampaignId,
    after: &str,
    limit: i64,
    rules: ClaimRules,
) -> Result<Claim, StoreError> {
    let token = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *tx)
        .await?;
    let claim = match rules.marketing {
        false => claim_service(&mut tx, (campaign, token), after, limit).await?,
        true => claim_marketing(&mut tx, (campaign, token), after, limit, rules).await?,
    };
    let Err(lost) = tx.commit().await else {
        return Ok(claim);
    };
    tracing::warn!(campaign_id = %campaign, error = %lost, xid, "a claim's commit got no answer; asking Postgres whether it committed");
    match committed(pool, xid).await {
        true => Ok(claim),
        false => Err(lost.into()),
    }
}

/// Whether transaction `xid` committed, asked until Postgres answers with an outcome.
async fn committed(pool: &PgPool, xid: i64) -> bool {
    loop {
        let status: Option<String> = super::until_ok("asking whether a claim committed", || {
            sqlx::query_scalar("SELECT txid_status($1)")
                .bind(xid)
                .fetch_one(pool)
        })
        .await;
        match status.as_deref() {
            Some("committed") => return true,
            // its backend has not finished yet: the answer comes when it does
            Some("in progress") => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            // aborted (or, never right after, too old to know)
            _ => return false,
        }
    }
}

/// A service message claim: the next queued recipients, nothing checked but the queue.
async fn claim_service(
    tx: &mut sqlx::PgConnection,
    (campaign, token): (CampaignId, Uuid),
    after: &str,
    limit: i64,
) -> Result<Claim, StoreError> {
    let rows: Vec<Claimed> = sqlx::query_as(
        "WITH claimed AS (
             UPDATE campaign_recipients r SET status = 'processing', claim_token = $4
             FROM (SELECT id FROM campaign_recipients
                   WHERE campaign_id = $1 AND phone_e164 > $2 AND status = 'queued'
                   ORDER BY phone_e164 LIMIT $3 FOR UPDATE SKIP LOCKED) q
             WHERE r.id = q.id
             RETURNING r.id, r.phone_e164 AS phone, r.body, r.retry_count AS attempt,
                       r.segments, r.link_secret
         ), counted AS (
             UPDATE campaigns SET queued = queued - n, processing = processing + n
             FROM (SELECT count(*) AS n FROM claimed) c WHERE id = $1 AND n > 0
         )
         SELECT * FROM claimed",
    )
    .bind(campaign.get())
    .bind(after)
    .bind(limit)
    .bind(token)
    .fetch_all(&mut *tx)
    .await?;
    let last_phone = rows.iter().map(|r| r.phone.clone()).max();
    Ok(Claim {
        token,
        rows,
        skipped: 0,
        last_phone,
        held_until: None,
    })
}

/// One picked recipient of a marketing claim: claimed (its columns) or skipped (`reason`);
/// a single row of NULLs when nothing was picked, `quiet` saying whether quiet hours are why.
#[derive(sqlx::FromRow)]
struct Picked {
    id: Option<i64>,
    phone: Option<String>,
    body: Option<String>,
    attempt: Option<i32>,
    segments: Option<i16>,
    link_secret: Option<Vec<u8>>,
    reason: Option<String>,
    quiet: bool,
}

/// A marketing claim in one statement: inside the tenant's quiet hours nothing is picked;
/// otherwise each picked recipient is claimed, or skipped (opted out, or over the tenant's
/// cap in the 24 hours before `now`) and refunded, with the campaign's counters — one round
/// trip, like a service claim.
async fn claim_marketing(
    tx: &mut sqlx::PgConnection,
    (campaign, token): (CampaignId, Uuid),
    after: &str,
    limit: i64,
    rules: ClaimRules,
) -> Result<Claim, StoreError> {
    let picked: Vec<Picked> = sqlx::query_as(
        "WITH hold AS (
             SELECT quiet_start <> quiet_end AND CASE
                        WHEN quiet_start < quiet_end THEN local >= quiet_start AND local < quiet_end
                        ELSE local >= quiet_start OR local < quiet_end END AS quiet,
                    marketing_cap_24h AS cap
             FROM tenants, LATERAL (SELECT ($5::timestamptz AT TIME ZONE time_zone)::time AS local) l
             WHERE id = $4
         ), picked AS (
             SELECT q.id, q.phone_e164,
                    CASE
                        WHEN EXISTS (SELECT 1 FROM contacts k
                                     WHERE k.tenant_id = $4 AND k.phone_e164 = q.phone_e164
                                       AND k.unsubscribed_at IS NOT NULL) THEN 'unsubscribed'
                        WHEN (SELECT cap FROM hold) IS NOT NULL AND (
                            SELECT count(*) FROM campaigns oc
                            JOIN campaign_recipients o ON o.campaign_id = oc.id
                                                      AND o.phone_e164 = q.phone_e164
                            WHERE oc.tenant_id = $4 AND oc.message_type = 'marketing'
                              AND oc.started_at IS NOT NULL
                              AND COALESCE(oc.finished_at, $5) > $5 - interval '24 hours'
                              AND ((o.sent_at > $5 - interval '24 hours' AND o.sent_at <= $5)
                                   OR o.status = 'processing')
                        ) >= (SELECT cap FROM hold) THEN 'marketing cap reached'
                    END AS reason
             FROM (SELECT id, phone_e164 FROM campaign_recipients
                   WHERE campaign_id = $1 AND phone_e164 > $2 AND status = 'queued'
                     AND NOT (SELECT quiet FROM hold)
                   ORDER BY phone_e164 LIMIT $3 FOR UPDATE SKIP LOCKED) q
         ), claimed AS (
             UPDATE campaign_recipients r SET status = 'processing', claim_token = $6
             FROM picked p WHERE r.id = p.id AND p.reason IS NULL
             RETURNING r.id, r.body, r.retry_count, r.segments, r.link_secret
         ), skipped AS (
             UPDATE campaign_recipients r SET status = 'skipped', error = p.reason,
                    billing_status = 'refunded'
             FROM picked p WHERE r.id = p.id AND p.reason IS NOT NULL
             RETURNING r.segments
         ), counted AS (
             UPDATE campaigns SET queued = queued - (SELECT count(*) FROM picked),
                    processing = processing + (SELECT count(*) FROM claimed),
                    skipped = skipped + (SELECT count(*) FROM skipped)
             WHERE id = $1 AND EXISTS (SELECT 1 FROM picked)
         ), refunded AS (
             UPDATE tenants SET credit_balance = credit_balance + s.credits
             FROM (SELECT sum(segments) AS credits FROM skipped) s
             WHERE id = $4 AND s.credits > 0
         ), booked AS (
             INSERT INTO credit_ledger (tenant_id, campaign_id, delta, reason)
             SELECT $4, $1, sum(segments), 'refund' FROM skipped HAVING sum(segments) > 0
         )
         SELECT p.id, p.phone_e164 AS phone, c.body, c.retry_count AS attempt, c.segments,
                c.link_secret, p.reason, h.quiet
         FROM hold h LEFT JOIN picked p ON true LEFT JOIN claimed c ON c.id = p.id
         ORDER BY p.phone_e164",
    )
    .bind(campaign.get())
    .bind(after)
    .bind(limit)
    .bind(rules.tenant.get())
    .bind(rules.now)
    .bind(token)
    .fetch_all(&mut *tx)
    .await?;
    if picked.first().is_some_and(|p| p.quiet) {
        let held_until = quiet_until(tx, rules.tenant, rules.now).await?;
        return Ok(Claim {
            token,
            rows: Vec::new(),
            skipped: 0,
            last_phone: None,
            held_until: held_until.or(Some(rules.now)),
        });
    }
    Ok(split(token, picked))
}

/// The claimed rows, the skipped count and the last phone of a marketing claim's answer.
fn split(token: Uuid, picked: Vec<Picked>) -> Claim {
    let mut claim = Claim {
        token,
        rows: Vec::with_capacity(picked.len()),
        skipped: 0,
        last_phone: None,
        held_until: None,
    };
    for p in picked {
        let (Some(id), Some(phone)) = (p.id, p.phone) else {
            continue; // nothing was picked
        };
        claim.last_phone = Some(phone.clone());
        match (p.reason, p.attempt, p.segments) {
            (Some(_), _, _) => claim.skipped += 1,
            (None, Some(attempt), Some(segments)) => claim.rows.push(Claimed {
                id,
                phone,
                body: p.body,
                attempt,
                segments,
                link_secret: p.link_secret,
            }),
            (None, _, _) => {} // unreachable: a picked row without a reason was claimed
        }
    }
    claim
}

/// When the tenant's quiet hours end, if `now` is inside them (DST-correct, in Rust).
async fn quiet_until(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let rules = super::tenants::marketing_rules(tx, tenant).await?;
    let quiet = rules
        .quiet_hours()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(quiet.and_then(|q| q.quiet_until(now)))
}

/// Recipients left in `processing` under claims other than `own` (claimed by a run that
/// stopped before their outcome was recorded).
pub async fn orphaned_claims(
    pool: &PgPool,
    campaign: CampaignId,
    own: &[Uuid],
) -> Result<Vec<Claimed>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT id, phone_e164 AS phone, body, retry_count AS attempt, segments, link_secret
         FROM campaign_recipients
         WHERE campaign_id = $1 AND status = 'processing' AND claim_token <> ALL($2) ORDER BY id",
    )
    .bind(campaign.get())
    .bind(own)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Where released claims went, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub count: i64,
    /// `Queued`, or `Cancelled` (refunded) when the campaign was cancelled while they were out.
    pub to: MessageStatus,
}

/// Claimed recipients that provably never reached Mitto: back in the queue, or — when the
/// campaign was cancelled while they were out — cancelled with their credits refunded, like
/// the rest of its queue. The campaign's status cannot change meanwhile: its actor starts no
/// command while a release is being written.
pub async fn release_claims(
    pool: &PgPool,
    campaign: CampaignId,
    ids: &[RecipientId],
) -> Result<Released, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|r| r.get()).collect();
    let (status, tenant): (String, i64) =
        sqlx::query_as("SELECT status, tenant_id FROM campaigns WHERE id = $1")
            .bind(campaign.get())
            .fetch_one(pool)
            .await?;
    if status == CampaignStatus::Cancelled.as_str() {
        return cancel_claims(pool, (tenant, campaign), &ids).await;
    }
    let count = sqlx::query_scalar(
        "WITH released AS (
             UPDATE campaign_recipients SET status = 'queued', claim_token = NULL
             WHERE id = ANY($1) AND campaign_id = $2 AND status = 'processing'
             RETURNING id
         ), counted AS (
             UPDATE campaigns SET queued = queued + n, processing = processing - n
             FROM (SELECT count(*) AS n FROM released) r WHERE id = $2 AND n > 0
         )
         SELECT count(*) FROM released",
    )
    .bind(&ids)
    .bind(campaign.get())
    .fetch_one(pool)
    .await?;
    Ok(Released {
        count,
        to: MessageStatus::Queued,
    })
}

/// Released claims of a cancelled campaign: cancelled and refunded, in one transaction.
async fn cancel_claims(
    pool: &PgPool,
    (tenant, campaign): (i64, CampaignId),
    ids: &[i64],
) -> Result<Released, StoreError> {
    let mut tx = pool.begin().await?;
    let (count, refund): (i64, i64) = sqlx::query_as(
        "WITH c AS (
             UPDATE campaign_recipients SET status = 'cancelled', claim_token = NULL,
                    billing_status = 'refunded'
             WHERE id = ANY($1) AND campaign_id = $2 AND status = 'processing'
             RETURNING segments
         )
         SELECT count(*), COALESCE(sum(segments), 0)::bigint FROM c",
    )
    .bind(ids)
    .bind(campaign.get())
    .fetch_one(&mut *tx)
    .await?;
    let moved = Counters::moved(MessageStatus::Processing, MessageStatus::Cancelled, count);
    add_counters(&mut tx, campaign, &moved).await?;
    refund_credits(&mut tx, tenant, campaign, refund).await?;
    tx.commit().await?;
    Ok(Released {
        count,
        to: MessageStatus::Cancelled,
    })
}

/// Cancels the queued recipients, refunds their credits and marks the campaign cancelled
/// (from `from`, as its actor admitted); returns the counter change it committed.
pub async fn cancel(
    pool: &PgPool,
    tenant: TenantId,
    campaign: CampaignId,
    from: CampaignStatus,
) -> Result<Counters, StartError> {
    let mut tx = pool.begin().await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, campaign).await?;
    expect_status(status, from)?;
    let (cancelled, refund): (i64, i64) = sqlx::query_as(
        "WITH c AS (
             UPDATE campaign_recipients SET status = 'cancelled', billing_status = 'refunded'
             WHERE campaign_id = $1 AND status = 'queued'
             RETURNING segments
         )
         SELECT count(*), COALESCE(sum(segments), 0)::bigint FROM c",
    )
    .bind(campaign.get())
    .fetch_one(&mut *tx)
    .await?;
    let moved = Counters::moved(MessageStatus::Queued, MessageStatus::Cancelled, cancelled);
    add_counters(&mut tx, campaign, &moved).await?;
    let done = sqlx::query(
        "UPDATE campaigns SET status = 'cancelled', finished_at = now(), updated_at = now()
         WHERE id = $1 AND status = $2",
    )
    .bind(campaign.get())
    .bind(from.as_str())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(refused_now(&mut tx, campaign).await);
    }
    refund_credits(&mut tx, tenant.get(), campaign, refund).await?;
    tx.commit().await?;
    Ok(moved)
}

async fn refund_credits(
    tx: &mut Transaction<'_, Postgres>,
    tenant: i64,
    campaign: CampaignId,
    credits: i64,
) -> Result<(), StoreError> {
    if credits == 0 {
        return Ok(());
    }
    sqlx::query("UPDATE tenants SET credit_balance = credit_balance + $2 WHERE id = $1")
        .bind(tenant)
        .bind(credits)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO credit_ledger (tenant_id, campaign_id, delta, reason) VALUES ($1, $2, $3, 'refund')",
    )
    .bind(tenant)
    .bind(campaign.get())
    .bind(credits)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The recipients a retry queues again: refused before acceptance, for a reason that may pass
/// (an outage, not a bad number), and not retried `$2` times yet. `$1` is the campaign.
const RETRYABLE: &str = "campaign_id = $1 AND status = 'failed' AND sent_at IS NULL \
                         AND error_retryable AND retry_count < $2";

/// The campaign's rows refused before acceptance, and how many of them a retry would queue
/// again now.
pub async fn refusals(
    pool: &PgPool,
    campaign: CampaignId,
    max_retries: i32,
) -> Result<(i64, i64), StoreError> {
    let counts = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE status = 'failed' AND sent_at IS NULL),
                count(*) FILTER (WHERE {RETRYABLE})
         FROM campaign_recipients WHERE campaign_id = $1 AND status = 'failed'"
    ))
    .bind(campaign.get())
    .bind(max_retries)
    .fetch_one(pool)
    .await?;
    Ok(counts)
}

/// Re-queues the campaign's retryable send failures that have retries left (a new attempt
/// each), reserving their credits again, and sets the campaign sending (from `from`, as its
/// actor admitted); returns the counter change it committed.
pub async fn retry_failed(
    pool: &PgPool,
    tenant: TenantId,
    campaign: CampaignId,
    from: CampaignStatus,
    max_retries: i32,
) -> Result<Counters, StartError> {
    let mut tx = pool.begin().await?;
    require_subscription(&mut tx, tenant).await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, campaign).await?;
    expect_status(status, from)?;
    let (retried, required): (i64, i64) = sqlx::query_as(&format!(
        "WITH r AS (
             UPDATE campaign_recipients SET status = 'queued', retry_count = retry_count + 1,
                    error = NULL, error_retryable = NULL, failed_at = NULL, delivery_status = NULL,
                    billing_status = 'reserved'
             WHERE {RETRYABLE}
             RETURNING segments
         )
         SELECT count(*), COALESCE(sum(segments), 0)::bigint FROM r"
    ))
    .bind(campaign.get())
    .bind(max_retries)
    .fetch_one(&mut *tx)
    .await?;
    if retried == 0 {
        return Err(StartError::NoRecipients);
    }
    reserve(&mut tx, tenant, campaign, from, required).await?;
    let moved = Counters::moved(MessageStatus::SendFailed, MessageStatus::Queued, retried);
    add_counters(&mut tx, campaign, &moved).await?;
    tx.commit().await?;
    Ok(moved)
}

/// Scheduled campaigns whose time has come, claimed so that one instance starts each.
pub async fn due_scheduled(pool: &PgPool) -> Result<Vec<(CampaignId, TenantId)>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, tenant_id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= now()
         ORDER BY scheduled_at LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(c, t)| {
            let corrupt = |e: crate::domain::IdError| StoreError::Corrupt(e.to_string());
            Ok((
                CampaignId::new(c).map_err(corrupt)?,
                TenantId::new(t).map_err(corrupt)?,
            ))
        })
        .collect()
}
