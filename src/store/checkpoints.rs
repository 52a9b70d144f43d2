//! Checkpoints: message rows (appended to the message log, folded into `campaign_recipients`
//! afterwards), campaign snapshots, dead letters and partition offsets, written in ONE
//! transaction together with the epoch they complete.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::cluster::{self, MemberId};
use super::messages::{append_log, write_engagement};
use super::StoreError;
use crate::domain::CampaignId;
use crate::engine::campaign::EngagementCounts;
use crate::engine::campaign::{Counters, Figures};
use crate::engine::ledger::{CreditMoves, DeadLetter, MessageRow, PartitionCheckpoint};

/// Where offsets are kept: the broker cluster, consumer group and topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetScope {
    pub cluster_id: String,
    pub consumer_group: String,
    pub topic: String,
}

/// Everything one checkpoint commits: what each partition handed over at its barrier, kept
/// apart so that the parts of a partition this member lost can be dropped alone.
#[derive(Debug, Default)]
pub struct CheckpointWrite {
    pub epoch: u64,
    pub parts: Vec<PartitionCheckpoint>,
}

impl CheckpointWrite {
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows.len()).sum()
    }

    /// Next offset to consume, per partition.
    pub fn offsets(&self) -> HashMap<i32, i64> {
        self.parts
            .iter()
            .filter_map(|p| Some((p.partition, p.commit_offset?)))
            .collect()
    }

    /// Where each partition stands: the offset to resume from and the next offset applied.
    pub fn positions(&self) -> HashMap<i32, (i64, Option<i64>)> {
        self.parts
            .iter()
            .filter_map(|p| Some((p.partition, (p.commit_offset?, p.applied_offset))))
            .collect()
    }

    /// Whether committing it would change nothing but offsets.
    pub fn only_offsets(&self) -> bool {
        self.parts.iter().all(|p| {
            p.rows.is_empty()
                && p.engaged.is_empty()
                && p.dead_letters.is_empty()
                && p.figures.is_empty()
                && p.credits.is_empty()
        })
    }

    /// Drops the parts of (partition, generation) pairs this member lost.
    pub fn drop_partitions(&mut self, lost: &[(i32, u64)]) {
        self.parts
            .retain(|p| !lost.contains(&(p.partition, p.generation)));
    }

    /// What these rows' transitions add to each campaign's snapshot.
    fn campaigns(&self) -> HashMap<CampaignId, Figures> {
        let mut campaigns: HashMap<CampaignId, Figures> = HashMap::new();
        for (campaign, delta) in self.parts.iter().flat_map(|p| &p.figures) {
            campaigns.entry(*campaign).or_default().merge(delta);
        }
        campaigns
    }

    /// Credits charged and refunded by these rows' changes, per campaign.
    fn credits(&self) -> HashMap<CampaignId, CreditMoves> {
        let mut credits: HashMap<CampaignId, CreditMoves> = HashMap::new();
        for (campaign, moves) in self.parts.iter().flat_map(|p| &p.credits) {
            credits.entry(*campaign).or_default().add(*moves);
        }
        credits
    }

    fn held(&self) -> Vec<(i32, u64)> {
        self.parts
            .iter()
            .map(|p| (p.partition, p.generation))
            .collect()
    }
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

/// Commits a member's checkpoints (oldest first) in one transaction.
///
/// - The member's stored epoch is read under its row lock first, and every write at or below
///   it is skipped: it committed already (its answer was lost), and its campaign deltas and
///   credits must not be added twice.
/// - The partitions written are checked next, while that lock is held (a take-over of this
///   member's partitions takes it first): if another member took one over (or took it over
///   and lost it again), nothing is written and the answer is [`StoreError::Fenced`] with
///   those (partition, generation) pairs.
#[tracing::instrument(skip_all, fields(epochs = writes.len()))]
pub async fn commit(
    pool: &PgPool,
    scope: &OffsetScope,
    member: MemberId,
    writes: &[CheckpointWrite],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM cluster_members WHERE member = $1 FOR UPDATE")
            .bind(member.get())
            .fetch_optional(&mut *tx)
            .await?;
    let stored =
        stored.ok_or_else(|| StoreError::Corrupt(format!("member {member} is not registered")))?;
    let due: Vec<&CheckpointWrite> = writes.iter().filter(|w| w.epoch > stored as u64).collect();
    let mut held: Vec<(i32, u64)> = due.iter().flat_map(|w| w.held()).collect();
    held.sort_unstable();
    held.dedup();
    let lost = cluster::lost_partitions(&mut tx, scope, member, &held).await?;
    if !lost.is_empty() {
        return Err(StoreError::Fenced(lost));
    }
    for write in due {
        // the log's order across members: a number from one sequence (a partition's next
        // owner takes it over only after its previous owner's last commit, so the rows of a
        // partition keep their order whoever wrote them)
        let order: i64 = sqlx::query_scalar("SELECT nextval('message_log_order')")
            .fetch_one(&mut *tx)
            .await?;
        apply(&mut tx, scope, (order, write)).await?;
    }
    let newest = writes.iter().map(|w| w.epoch).max().unwrap_or(0);
    sqlx::query(
        "UPDATE cluster_members SET epoch = GREATEST(epoch, $2), updated_at = now()
         WHERE member = $1",
    )
    .bind(member.get())
    .bind(newest as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One checkpoint's writes, inside the caller's transaction.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: &OffsetScope,
    (order, write): (i64, &CheckpointWrite),
) -> Result<(), StoreError> {
    // every partition's rows in as few statements as one partition's
    let rows: Vec<&MessageRow> = write.parts.iter().flat_map(|p| &p.rows).collect();
    append_log(tx, order as u64, &rows).await?;
    for part in write.parts.iter().filter(|p| !p.engaged.is_empty()) {
        write_engagement(tx, &part.engaged).await?;
    }
    // campaign rows before tenant rows: the order the campaign's own writes lock them in
    add_to_snapshots(tx, &write.campaigns()).await?;
    book_credits(tx, &write.credits()).await?;
    for part in &write.parts {
        insert_dead_letters(tx, &scope.topic, &part.dead_letters).await?;
    }
    write_offsets(tx, scope, &write.parts).await?;
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

/// The offset to resume from and the next offset applied, per partition.
async fn write_offsets(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: &OffsetScope,
    parts: &[PartitionCheckpoint],
) -> Result<(), StoreError> {
    let offsets: Vec<(i32, i64, Option<i64>)> = parts
        .iter()
        .filter_map(|p| Some((p.partition, p.commit_offset?, p.applied_offset)))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = offsets.iter().map(|o| o.0).collect();
    let next: Vec<i64> = offsets.iter().map(|o| o.1).collect();
    let applied: Vec<Option<i64>> = offsets.iter().map(|o| o.2).collect();
    sqlx::query(
        "INSERT INTO kafka_offsets (cluster_id, consumer_group, topic, partition, next_offset,
                                    applied_offset)
         SELECT $1, $2, $3, p, o, a FROM UNNEST($4::int[], $5::bigint[], $6::bigint[]) AS u(p, o, a)
         ON CONFLICT (cluster_id, consumer_group, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset,
                       applied_offset = EXCLUDED.applied_offset, updated_at = now()",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(&partitions)
    .bind(&next)
    .bind(&applied)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
