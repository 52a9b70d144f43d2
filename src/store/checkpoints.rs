//! Checkpoints: message rows (appended to the message log, folded into `campaign_recipients`
//! afterwards), campaign snapshots, dead letters and partition offsets, written in ONE
//! transaction together with the epoch they complete.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::messages::{append_log, write_engagement};
use super::StoreError;
use crate::domain::CampaignId;
use crate::engine::campaign::EngagementCounts;
use crate::engine::campaign::{Counters, Figures};
use crate::engine::engagement::EngagementRow;
use crate::engine::ledger::{CreditMoves, DeadLetter, MessageRow, PartitionCheckpoint};

/// Where offsets are kept: the broker cluster, consumer group and topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetScope {
    pub cluster_id: String,
    pub consumer_group: String,
    pub topic: String,
}

/// Everything one checkpoint commits.
#[derive(Debug, Default)]
pub struct CheckpointWrite {
    pub epoch: u64,
    pub rows: Vec<MessageRow>,
    pub engaged: Vec<EngagementRow>,
    pub dead_letters: Vec<DeadLetter>,
    /// Next offset to consume, per partition.
    pub offsets: HashMap<i32, i64>,
    /// What these rows' transitions add to each campaign's snapshot.
    pub campaigns: HashMap<CampaignId, Figures>,
    /// Credits charged and refunded by these rows' changes, per campaign.
    pub credits: HashMap<CampaignId, CreditMoves>,
}

impl CheckpointWrite {
    /// Gathers what the partitions handed over at the barrier of `epoch`.
    pub fn collect(epoch: u64, parts: impl Iterator<Item = PartitionCheckpoint>) -> Self {
        let mut write = CheckpointWrite {
            epoch,
            ..Default::default()
        };
        for part in parts {
            write.rows.extend(part.rows);
            write.engaged.extend(part.engaged);
            write.dead_letters.extend(part.dead_letters);
            for (campaign, moves) in part.credits {
                write.credits.entry(campaign).or_default().add(moves);
            }
            for (campaign, delta) in part.figures {
                write.campaigns.entry(campaign).or_default().merge(&delta);
            }
            if let Some(offset) = part.commit_offset {
                write.offsets.insert(part.partition, offset);
            }
        }
        write
    }
}

/// The last committed epoch.
pub async fn committed_epoch(pool: &PgPool) -> Result<u64, StoreError> {
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM checkpoint_state")
        .fetch_one(pool)
        .await?;
    Ok(epoch as u64)
}

/// Stored next offsets for the given partitions (absent: never checkpointed).
pub async fn load_offsets(
    pool: &PgPool,
    scope: &OffsetScope,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, StoreError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM kafka_offsets
         WHERE cluster_id = $1 AND consumer_group = $2 AND topic = $3 AND partition = ANY($4)",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(partitions)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Commits checkpoints (oldest first) in one transaction. The stored epoch is read under its
/// row lock first and every write at or below it is skipped: it committed already (its
/// answer was lost), and its campaign deltas and credits must not be added twice.
#[tracing::instrument(skip_all, fields(epochs = writes.len()))]
pub async fn commit(
    pool: &PgPool,
    scope: &OffsetScope,
    writes: &[CheckpointWrite],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let stored: i64 = sqlx::query_scalar("SELECT epoch FROM checkpoint_state FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    for write in writes.iter().filter(|w| w.epoch > stored as u64) {
        apply(&mut tx, scope, write).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One checkpoint's writes, inside the caller's transaction.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: &OffsetScope,
    write: &CheckpointWrite,
) -> Result<(), StoreError> {
    append_log(tx, write.epoch, &write.rows).await?;
    write_engagement(tx, &write.engaged).await?;
    // campaign rows before tenant rows: the order the campaign's own writes lock them in
    add_to_snapshots(tx, &write.campaigns).await?;
    book_credits(tx, &write.credits).await?;
    insert_dead_letters(tx, &scope.topic, &write.dead_letters).await?;
    write_offsets(tx, scope, &write.offsets).await?;
    sqlx::query("UPDATE checkpoint_state SET epoch = GREATEST(epoch, $1), updated_at = now()")
        .bind(write.epoch as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_dead_letters(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    topic: &str,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let source: Vec<&str> = letters.iter().map(|d| d.source.as_str()).collect();
    let partition: Vec<Option<i32>> = letters.iter().map(|d| d.partition).collect();
    let offset: Vec<Option<i64>> = letters.iter().map(|d| d.offset).collect();
    let key: Vec<Option<&[u8]>> = letters.iter().map(|d| d.key.as_deref()).collect();
    let payload: Vec<&[u8]> = letters.iter().map(|d| d.payload.as_slice()).collect();
    let error: Vec<&str> = letters.iter().map(|d| d.error.as_str()).collect();
    sqlx::query(
        "INSERT INTO dead_letters (source, topic, partition, \"offset\", key, payload, error)
         SELECT s, $7, p, o, k, b, e
         FROM UNNEST($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::bytea[], $6::text[])
              AS u(s, p, o, k, b, e)",
    )
    .bind(&source)
    .bind(&partition)
    .bind(&offset)
    .bind(&key)
    .bind(&payload)
    .bind(&error)
    .bind(topic)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds each campaign's delta to its snapshot: counters, first/last event time, minutes.
async fn add_to_snapshots(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    deltas: &HashMap<CampaignId, Figures>,
) -> Result<(), StoreError> {
    let deltas: Vec<(&CampaignId, &Figures)> =
        deltas.iter().filter(|(_, d)| !d.is_empty()).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = deltas.iter().map(|(id, _)| id.get()).collect();
    let counters: Vec<Counters> = deltas.iter().map(|(_, d)| d.counters).collect();
    let first: Vec<_> = deltas.iter().map(|(_, d)| d.first_sent_at).collect();
    let last: Vec<_> = deltas.iter().map(|(_, d)| d.last_event_at).collect();
    add_counters(tx, &ids, &counters, &first, &last).await?;
    let engaged: Vec<(i64, EngagementCounts)> = deltas
        .iter()
        .filter(|(_, d)| d.engaged != EngagementCounts::default())
        .map(|(id, d)| (id.get(), d.engaged))
        .collect();
    add_engagement(tx, &engaged).await?;
    add_minutes(tx, &deltas).await
}

/// Adds counter deltas to campaigns; first/last times only ever widen. The checkpoint is the
/// only writer that changes several campaign rows in one transaction, so the order they are
/// locked in cannot deadlock with a campaign's own writes (one row each).
pub(super) async fn add_counters(
    tx: &mut sqlx::PgConnection,
    ids: &[i64],
    counters: &[Counters],
    first_sent_at: &[Option<DateTime<Utc>>],
    last_event_at: &[Option<DateTime<Utc>>],
) -> Result<(), StoreError> {
    let col = |f: fn(&Counters) -> i64| -> Vec<i64> { counters.iter().map(f).collect() };
    sqlx::query(
        "UPDATE campaigns AS c SET
             queued = c.queued + u.queued, processing = c.processing + u.processing,
             pending = c.pending + u.pending, delivered = c.delivered + u.delivered,
             send_failed = c.send_failed + u.send_failed,
             delivery_failed = c.delivery_failed + u.delivery_failed,
             cancelled = c.cancelled + u.cancelled, unknown = c.unknown + u.unknown,
             skipped = c.skipped + u.skipped,
             first_sent_at = LEAST(c.first_sent_at, u.first_sent_at),
             last_event_at = GREATEST(c.last_event_at, u.last_event_at)
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::timestamptz[],
                     $11::timestamptz[], $12::bigint[])
              AS u(id, queued, processing, pending, delivered, send_failed, delivery_failed,
                   cancelled, unknown, first_sent_at, last_event_at, skipped)
         WHERE c.id = u.id",
    )
    .bind(ids)
    .bind(col(|c| c.queued))
    .bind(col(|c| c.processing))
    .bind(col(|c| c.pending))
    .bind(col(|c| c.delivered))
    .bind(col(|c| c.send_failed))
    .bind(col(|c| c.delivery_failed))
    .bind(col(|c| c.cancelled))
    .bind(col(|c| c.unknown))
    .bind(first_sent_at)
    .bind(last_event_at)
    .bind(col(|c| c.skipped))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Adds engagement deltas (visits, clicks, redemptions, unsubscribes) to campaigns.
async fn add_engagement(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    deltas: &[(i64, EngagementCounts)],
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&EngagementCounts) -> i64| -> Vec<i64> {
        deltas.iter().map(|(_, e)| f(e)).collect()
    };
    let ids: Vec<i64> = deltas.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "UPDATE campaigns AS c SET
             visits = c.visits + u.visits, clicks = c.clicks + u.clicks,
             redemptions = c.redemptions + u.redemptions,
             unsubscribes = c.unsubscribes + u.unsubscribes
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
              AS u(id, visits, clicks, redemptions, unsubscribes)
         WHERE c.id = u.id",
    )
    .bind(&ids)
    .bind(col(|e| e.visits))
    .bind(col(|e| e.clicks))
    .bind(col(|e| e.redemptions))
    .bind(col(|e| e.unsubscribes))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn add_minutes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    deltas: &[(&CampaignId, &Figures)],
) -> Result<(), StoreError> {
    let minutes: Vec<_> = deltas
        .iter()
        .flat_map(|(id, d)| d.series.iter().map(move |(at, m)| (id.get(), *at, *m)))
        .collect();
    if minutes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = minutes.iter().map(|m| m.0).collect();
    let at: Vec<DateTime<Utc>> = minutes.iter().map(|m| m.1).collect();
    let sent: Vec<i64> = minutes.iter().map(|m| m.2.sent).collect();
    let delivered: Vec<i64> = minutes.iter().map(|m| m.2.delivered).collect();
    let failed: Vec<i64> = minutes.iter().map(|m| m.2.failed).collect();
    let visits: Vec<i64> = minutes.iter().map(|m| m.2.visits).collect();
    let redemptions: Vec<i64> = minutes.iter().map(|m| m.2.redemptions).collect();
    let unsubscribes: Vec<i64> = minutes.iter().map(|m| m.2.unsubscribes).collect();
    sqlx::query(
        "INSERT INTO campaign_minutes
             (campaign_id, minute, sent, delivered, failed, visits, redemptions, unsubscribes)
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[],
                              $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
         ON CONFLICT (campaign_id, minute) DO UPDATE SET
             sent = campaign_minutes.sent + EXCLUDED.sent,
             delivered = campaign_minutes.delivered + EXCLUDED.delivered,
             failed = campaign_minutes.failed + EXCLUDED.failed,
             visits = campaign_minutes.visits + EXCLUDED.visits,
             redemptions = campaign_minutes.redemptions + EXCLUDED.redemptions,
             unsubscribes = campaign_minutes.unsubscribes + EXCLUDED.unsubscribes",
    )
    .bind(&ids)
    .bind(&at)
    .bind(&sent)
    .bind(&delivered)
    .bind(&failed)
    .bind(&visits)
    .bind(&redemptions)
    .bind(&unsubscribes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Books charges (consumption of reserved credits; the balance already paid for them) and
/// refunds (returned to the balance), one ledger row per campaign and kind.
async fn book_credits(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    credits: &HashMap<CampaignId, CreditMoves>,
) -> Result<(), StoreError> {
    let moves: Vec<(i64, i64, i64)> = credits
        .iter()
        .filter(|(_, m)| m.charged != 0 || m.refunded != 0)
        .map(|(c, m)| (c.get(), m.charged, m.refunded))
        .collect();
    if moves.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = moves.iter().map(|m| m.0).collect();
    let charged: Vec<i64> = moves.iter().map(|m| m.1).collect();
    let refunded: Vec<i64> = moves.iter().map(|m| m.2).collect();
    sqlx::query(
        "WITH m AS (
             SELECT c.tenant_id, u.id, u.charged, u.refunded
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, charged, refunded)
             JOIN campaigns c ON c.id = u.id
         ), booked AS (
             INSERT INTO credit_ledger (tenant_id, campaign_id, delta, reason)
             SELECT tenant_id, id, -charged, 'charge' FROM m WHERE charged <> 0
             UNION ALL
             SELECT tenant_id, id, refunded, 'refund' FROM m WHERE refunded <> 0
         )
         UPDATE tenants t SET credit_balance = t.credit_balance + r.refunded
         FROM (SELECT tenant_id, sum(refunded) AS refunded FROM m GROUP BY tenant_id) r
         WHERE t.id = r.tenant_id AND r.refunded <> 0",
    )
    .bind(&ids)
    .bind(&charged)
    .bind(&refunded)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_offsets(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: &OffsetScope,
    offsets: &HashMap<i32, i64>,
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let (partitions, next): (Vec<i32>, Vec<i64>) = offsets.iter().map(|(p, o)| (*p, *o)).unzip();
    sqlx::query(
        "INSERT INTO kafka_offsets (cluster_id, consumer_group, topic, partition, next_offset)
         SELECT $1, $2, $3, p, o FROM UNNEST($4::int[], $5::bigint[]) AS u(p, o)
         ON CONFLICT (cluster_id, consumer_group, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(&partitions)
    .bind(&next)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
