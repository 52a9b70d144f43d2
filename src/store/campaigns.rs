//! Campaign rows: definitions, the status its actor decides, and the snapshot it is activated
//! from (counters, first/last event time, the per-minute series in `campaign_minutes`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::enqueue::{expect_status, lock_campaign, refused_now, StartError};
use super::StoreError;
use crate::domain::{
    CampaignId, CampaignStatus, Carried, MessageStatus, MessageType, TenantId, TrafficAccountId,
};
use crate::engine::campaign::{
    Campaign, Counters, EngagementCounts, Figures, MinuteCounts, SendPlan,
};

#[derive(sqlx::FromRow)]
struct ActivationRow {
    tenant_id: i64,
    name: String,
    status: String,
    redemptions: i64,
    unsubscribes: i64,
    visits: i64,
    clicks: i64,
    skipped: i64,
    message_type: String,
    has_offer: bool,
    body: String,
    sender: String,
    traffic_account_id: Option<uuid::Uuid>,
    queued: i64,
    processing: i64,
    pending: i64,
    delivered: i64,
    send_failed: i64,
    delivery_failed: i64,
    cancelled: i64,
    unknown: i64,
    first_sent_at: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
}

/// Loads a campaign from its snapshot, with the checkpoint epoch the snapshot reflects, both
/// from one database snapshot (REPEATABLE READ): one row and the campaign's minutes, whatever
/// the number of recipients. `None` when the campaign does not exist.
#[tracing::instrument(skip(pool))]
pub async fn load_for_activation(
    pool: &PgPool,
    id: CampaignId,
    member: super::cluster::MemberId,
) -> Result<Option<Campaign>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some((row, figures)) = snapshot(&mut tx, id).await? else {
        return Ok(None);
    };
    let epoch = super::cluster::committed_epoch(&mut tx, member).await? as i64;
    tx.commit().await?;
    let corrupt = |e: String| StoreError::Corrupt(format!("campaign {id}: {e}"));
    Ok(Some(Campaign {
        id,
        tenant: TenantId::new(row.tenant_id).map_err(|e| corrupt(e.to_string()))?,
        status: CampaignStatus::parse(&row.status).map_err(|e| corrupt(e.to_string()))?,
        figures,
        name: row.name,
        plan: SendPlan {
            body: row.body,
            sender: row.sender,
            traffic_account: row.traffic_account_id.map(TrafficAccountId::from_uuid),
            carried: Carried::of(
                MessageType::parse(&row.message_type).unwrap_or_default(),
                row.has_offer,
            ),
        },
        loaded_epoch: epoch as u64,
        uncommitted: None,
        applied_epoch: 0,
        adjustments: 0,
    }))
}

/// A campaign's row and the figures of its snapshot.
async fn snapshot(
    conn: &mut sqlx::PgConnection,
    id: CampaignId,
) -> Result<Option<(ActivationRow, Figures)>, StoreError> {
    let row: Option<ActivationRow> = sqlx::query_as(
        "SELECT tenant_id, name, status, redemptions, unsubscribes, visits, clicks, skipped,
                message_type, offer_title IS NOT NULL AS has_offer, body, sender,
                traffic_account_id, queued, processing, pending, delivered, send_failed,
                delivery_failed, cancelled, unknown, first_sent_at, last_event_at
         FROM campaigns WHERE id = $1",
    )
    .bind(id.get())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let figures = Figures {
        counters: Counters {
            queued: row.queued,
            processing: row.processing,
            pending: row.pending,
            delivered: row.delivered,
            send_failed: row.send_failed,
            delivery_failed: row.delivery_failed,
            cancelled: row.cancelled,
            unknown: row.unknown,
            skipped: row.skipped,
        },
        engaged: EngagementCounts {
            visits: row.visits,
            clicks: row.clicks,
            redemptions: row.redemptions,
            unsubscribes: row.unsubscribes,
        },
        series: minutes(conn, id).await?,
        first_sent_at: row.first_sent_at,
        last_event_at: row.last_event_at,
    };
    Ok(Some((row, figures)))
}

type Series = BTreeMap<DateTime<Utc>, MinuteCounts>;

async fn minutes(conn: &mut sqlx::PgConnection, id: CampaignId) -> Result<Series, StoreError> {
    let rows: Vec<MinuteRow> = sqlx::query_as(
        "SELECT minute, sent, delivered, failed, visits, redemptions, unsubscribes
         FROM campaign_minutes
         WHERE campaign_id = $1
           AND (sent, delivered, failed, visits, redemptions, unsubscribes) <> (0, 0, 0, 0, 0, 0)",
    )
    .bind(id.get())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(MinuteRow::into_entry).collect())
}

/// One minute of a series as SQL returns it.
#[derive(sqlx::FromRow)]
struct MinuteRow {
    minute: DateTime<Utc>,
    sent: i64,
    delivered: i64,
    failed: i64,
    visits: i64,
    redemptions: i64,
    unsubscribes: i64,
}

impl MinuteRow {
    fn into_entry(self) -> (DateTime<Utc>, MinuteCounts) {
        let m = MinuteCounts {
            sent: self.sent,
            delivered: self.delivered,
            failed: self.failed,
            visits: self.visits,
            redemptions: self.redemptions,
            unsubscribes: self.unsubscribes,
        };
        (self.minute, m)
    }
}

/// A campaign's snapshot and its figures counted from the recipient rows, read in one
/// database snapshot; they agree unless something wrote rows without their counters.
pub struct Recount {
    pub campaign: CampaignId,
    pub snapshot: Figures,
    pub rows: Figures,
}

/// Counts campaigns' figures from their rows next to their snapshots (`campaignd verify`):
/// the replaced design's stats query, kept as an operator's check, never on a request path.
///
/// Snapshots and the message log commit together; rows reach `campaign_recipients` when the
/// log is folded. So the count reads, in one read-only snapshot, each row with the newest
/// state the log holds for its attempt laid over it ([`AS_OF_THE_LOG`]): the figures the
/// rows will show once folded. It writes nothing and takes no lock, so a live service folds
/// and checkpoints on meanwhile.
pub async fn recount(pool: &PgPool, only: Option<CampaignId>) -> Result<Vec<Recount>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM campaigns WHERE $1::bigint IS NULL OR id = $1 ORDER BY id",
    )
    .bind(only.map(|c| c.get()))
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = CampaignId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let Some((_, snapshot)) = snapshot(&mut tx, id).await? else {
            continue;
        };
        let rows = count_rows(&mut tx, id).await?;
        out.push(Recount {
            campaign: id,
            snapshot,
            rows,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// A campaign's (`$1`) recipient rows as `rows`, each with the newest state the message log
/// holds for its attempt laid over it, as the fold (src/store/messages.rs) would write it.
const AS_OF_THE_LOG: &str = "WITH logged AS (
         SELECT DISTINCT ON (m.recipient_id) m.recipient_id, m.attempt, m.status, m.sent_at,
                m.delivered_at, m.failed_at
         FROM message_log m JOIN campaign_recipients c ON c.id = m.recipient_id
         WHERE c.campaign_id = $1
         ORDER BY m.recipient_id, m.attempt DESC, m.epoch DESC
     ), rows AS (
         SELECT CASE WHEN o THEN l.status ELSE r.status END AS status,
                CASE WHEN o THEN l.sent_at ELSE r.sent_at END AS sent_at,
                CASE WHEN o THEN l.delivered_at ELSE r.delivered_at END AS delivered_at,
                CASE WHEN o THEN l.failed_at ELSE r.failed_at END AS failed_at,
                r.visited_at, r.clicks, r.redeemed_at, r.unsubscribed_at
         FROM campaign_recipients r
         LEFT JOIN logged l ON l.recipient_id = r.id,
         LATERAL (SELECT l.recipient_id IS NOT NULL AND r.retry_count <= l.attempt AS o) laid
         WHERE r.campaign_id = $1
     ) ";

async fn count_rows(conn: &mut sqlx::PgConnection, id: CampaignId) -> Result<Figures, StoreError> {
    let groups: Vec<(String, bool, i64)> = sqlx::query_as(&format!(
        "{AS_OF_THE_LOG} SELECT status, sent_at IS NOT NULL, count(*) FROM rows GROUP BY 1, 2"
    ))
    .bind(id.get())
    .fetch_all(&mut *conn)
    .await?;
    let series: Vec<MinuteRow> = sqlx::query_as(&format!(
        "{AS_OF_THE_LOG} SELECT minute, sum(s)::bigint AS sent, sum(d)::bigint AS delivered,
                sum(f)::bigint AS failed, sum(v)::bigint AS visits,
                sum(r)::bigint AS redemptions, sum(u)::bigint AS unsubscribes
         FROM (
             SELECT date_trunc('minute', sent_at) AS minute, 1 AS s, 0 AS d, 0 AS f,
                    0 AS v, 0 AS r, 0 AS u
             FROM rows WHERE sent_at IS NOT NULL
             UNION ALL
             SELECT date_trunc('minute', delivered_at), 0, 1, 0, 0, 0, 0
             FROM rows WHERE status = 'delivered'
             UNION ALL
             SELECT date_trunc('minute', failed_at), 0, 0, 1, 0, 0, 0
             FROM rows WHERE status = 'failed'
             UNION ALL
             SELECT date_trunc('minute', visited_at), 0, 0, 0, 1, 0, 0
             FROM rows WHERE visited_at IS NOT NULL
             UNION ALL
             SELECT date_trunc('minute', redeemed_at), 0, 0, 0, 0, 1, 0
             FROM rows WHERE redeemed_at IS NOT NULL
             UNION ALL
             SELECT date_trunc('minute', unsubscribed_at), 0, 0, 0, 0, 0, 1
             FROM rows WHERE unsubscribed_at IS NOT NULL
         ) m GROUP BY minute"
    ))
    .bind(id.get())
    .fetch_all(&mut *conn)
    .await?;
    let (first_sent_at, last_event_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(&format!(
            "{AS_OF_THE_LOG} SELECT min(sent_at), max(GREATEST(sent_at, delivered_at, failed_at))
             FROM rows"
        ))
        .bind(id.get())
        .fetch_one(&mut *conn)
        .await?;
    let (visits, clicks, redemptions, unsubscribes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(visited_at), COALESCE(sum(clicks), 0)::bigint, count(redeemed_at),
                count(unsubscribed_at)
         FROM campaign_recipients WHERE campaign_id = $1",
    )
    .bind(id.get())
    .fetch_one(&mut *conn)
    .await?;
    let mut figures = Figures {
        first_sent_at,
        last_event_at,
        engaged: EngagementCounts {
            visits,
            clicks,
            redemptions,
            unsubscribes,
        },
        ..Figures::default()
    };
    for (status, was_sent, n) in groups {
        let status = MessageStatus::from_db(&status, was_sent)
            .map_err(|e| StoreError::Corrupt(format!("campaign {id}: {e}")))?;
        figures.counters.add(status, n);
    }
    for row in series {
        let (at, m) = row.into_entry();
        if !m.is_zero() {
            figures.series.insert(at, m);
        }
    }
    Ok(figures)
}

/// Adds a lifecycle write's counter change to one campaign's snapshot, inside the
/// transaction that changes the rows it counts.
pub async fn add_counters(
    conn: &mut sqlx::PgConnection,
    id: CampaignId,
    delta: &Counters,
) -> Result<(), StoreError> {
    super::checkpoints::add_counters(conn, &[id.get()], &[*delta], &[None], &[None]).await
}

/// A campaign's definition and lifecycle fields, as the API shows them.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignRecord {
    pub id: i64,
    pub name: String,
    pub body: String,
    pub sender: String,
    pub traffic_account_id: Option<uuid::Uuid>,
    /// `marketing` or `service`.
    #[schema(value_type = crate::domain::MessageType)]
    pub message_type: String,
    /// The offer its links open (marketing only); no title, no offer.
    pub offer_title: Option<String>,
    pub offer_text: Option<String>,
    pub offer_expires_at: Option<DateTime<Utc>>,
    /// Whether the offer page shows recipients a button to redeem it themselves.
    pub offer_self_redeem: bool,
    #[schema(value_type = crate::domain::CampaignStatus)]
    pub status: String,
    #[schema(value_type = super::enqueue::Audience)]
    pub audience: serde_json::Value,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub credits_reserved: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RECORD: &str =
    "id, name, body, sender, traffic_account_id, message_type, offer_title, offer_text, \
     offer_expires_at, offer_self_redeem, status, audience, scheduled_at, \
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
    pub message_type: crate::domain::MessageType,
    pub offer: Option<Offer>,
}

/// What a marketing campaign offers: shown on the offer page its links open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub title: String,
    pub text: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub self_redeem: bool,
}

type PgQueryAs<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

/// Binds a definition as `$2`..`$12`: name, body, sender, traffic account, audience,
/// scheduled_at, message type, offer title, text, expiry, self-redeem (after the one parameter
/// the statement starts with).
fn bind_definition<'q, O>(query: PgQueryAs<'q, O>, def: &'q Definition) -> PgQueryAs<'q, O> {
    let offer = def.offer.as_ref();
    query
        .bind(&def.name)
        .bind(&def.body)
        .bind(&def.sender)
        .bind(def.traffic_account_id)
        .bind(&def.audience)
        .bind(def.scheduled_at)
        .bind(def.message_type.as_str())
        .bind(offer.map(|o| o.title.as_str()))
        .bind(offer.and_then(|o| o.text.as_deref()))
        .bind(offer.and_then(|o| o.expires_at))
        .bind(offer.is_some_and(|o| o.self_redeem))
}

/// Creates a campaign: `scheduled` when it has a start time, else `draft`.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    def: &Definition,
) -> Result<CampaignRecord, StoreError> {
    let sql = format!(
        "INSERT INTO campaigns (tenant_id, name, body, sender, traffic_account_id, audience,
                                scheduled_at, message_type, offer_title, offer_text,
                                offer_expires_at, offer_self_redeem, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 CASE WHEN $7 IS NULL THEN 'draft' ELSE 'scheduled' END)
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
        .bind((page - 1).saturating_mul(page_size))
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

/// Replaces a campaign's definition; its actor decided the change of status `from → to`.
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: CampaignId,
    (from, to): (CampaignStatus, CampaignStatus),
    def: &Definition,
) -> Result<CampaignRecord, StartError> {
    let mut tx = pool.begin().await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, id).await?;
    expect_status(status, from)?;
    let sql = format!(
        "UPDATE campaigns SET name = $2, body = $3, sender = $4, traffic_account_id = $5,
                audience = $6, scheduled_at = $7, message_type = $8, offer_title = $9,
                offer_text = $10, offer_expires_at = $11, offer_self_redeem = $12, status = $13,
                updated_at = now()
         WHERE id = $1 AND status = $14 RETURNING {RECORD}"
    );
    let record = bind_definition(sqlx::query_as(&sql).bind(id.get()), def)
        .bind(to.as_str())
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(record) = record else {
        return Err(refused_now(&mut tx, id).await);
    };
    tx.commit().await?;
    Ok(record)
}

/// Deletes a campaign its actor found deletable in status `from`.
pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    id: CampaignId,
    from: CampaignStatus,
) -> Result<(), StartError> {
    let mut tx = pool.begin().await?;
    let (status, _, _) = lock_campaign(&mut tx, tenant, id).await?;
    expect_status(status, from)?;
    let done = sqlx::query("DELETE FROM campaigns WHERE id = $1 AND status = $2")
        .bind(id.get())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(refused_now(&mut tx, id).await);
    }
    tx.commit().await?;
    Ok(())
}

/// Sets a campaign's status `from → to` (its actor decided the transition), stamping start
/// and finish. Refused with the stored status if it is not `from` (nothing else writes it).
pub async fn set_status(
    pool: &PgPool,
    id: CampaignId,
    (from, to): (CampaignStatus, CampaignStatus),
    scheduled_at: Option<DateTime<Utc>>,
) -> Result<(), StartError> {
    let done = sqlx::query(
        "UPDATE campaigns SET status = $2, updated_at = now(),
                scheduled_at = CASE WHEN $2 IN ('scheduled', 'draft') THEN $3 ELSE scheduled_at END,
                started_at = CASE WHEN $2 = 'sending' THEN COALESCE(started_at, now()) ELSE started_at END,
                finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now()
                                   WHEN $2 = 'sending' THEN NULL ELSE finished_at END
         WHERE id = $1 AND status = $4",
    )
    .bind(id.get())
    .bind(to.as_str())
    .bind(scheduled_at)
    .bind(from.as_str())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        let mut conn = pool.acquire().await?;
        return Err(refused_now(&mut conn, id).await);
    }
    Ok(())
}

/// Which of `ids` exist and belong to the tenant.
pub async fn owned(
    pool: &PgPool,
    tenant: TenantId,
    ids: &[CampaignId],
) -> Result<std::collections::HashSet<CampaignId>, StoreError> {
    let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let found: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM campaigns WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant.get())
            .bind(&raw)
            .fetch_all(pool)
            .await?;
    Ok(found
        .into_iter()
        .filter_map(|id| CampaignId::new(id).ok())
        .collect())
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

impl CampaignRecord {
    /// The links its messages carry.
    pub fn carried(&self) -> Carried {
        let message_type = MessageType::parse(&self.message_type).unwrap_or_default();
        Carried::of(message_type, self.offer_title.is_some())
    }
}
