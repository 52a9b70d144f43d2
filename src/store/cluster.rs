//! The cluster's shared state: its members (each process, with its checkpoint epoch and the
//! address other members forward to) and the owner and generation of each partition.

use std::collections::HashMap;

use sqlx::PgPool;

use super::checkpoints::OffsetScope;
use super::StoreError;

/// One process of the cluster, from its start to its end; a restart is a new member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId(uuid::Uuid);

impl MemberId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    pub fn get(self) -> uuid::Uuid {
        self.0
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Members not heard of for this long (a live one is heard every few seconds, see
/// [`heartbeat`]) and holding no partition are forgotten when another one starts.
const FORGET_AFTER: &str = "7 days";

/// Registers a starting member (epoch 0), forgetting members long gone.
pub async fn join(pool: &PgPool, member: MemberId) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM cluster_members m WHERE updated_at < now() - $1::interval
         AND NOT EXISTS (SELECT 1 FROM partition_owners o WHERE o.member = m.member)",
    )
    .bind(FORGET_AFTER)
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO cluster_members (member) VALUES ($1)")
        .bind(member.get())
        .execute(pool)
        .await?;
    Ok(())
}

/// The member is alive.
pub async fn heartbeat(pool: &PgPool, member: MemberId) -> Result<(), StoreError> {
    sqlx::query("UPDATE cluster_members SET updated_at = now() WHERE member = $1")
        .bind(member.get())
        .execute(pool)
        .await?;
    Ok(())
}

/// Where other members reach this one's HTTP server.
pub async fn advertise(pool: &PgPool, member: MemberId, address: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE cluster_members SET address = $2, updated_at = now() WHERE member = $1")
        .bind(member.get())
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes partitions over for `member`: each one's generation goes up by one (the first is 1).
/// Waits for a checkpoint of the previous owner that is still writing (it holds its member
/// row), after which that owner can no longer write for them. Answers the new generations.
pub async fn take_over(
    pool: &PgPool,
    scope: &OffsetScope,
    member: MemberId,
    partitions: &[i32],
) -> Result<HashMap<i32, u64>, StoreError> {
    // in partition order, as checkpoints name them
    let mut partitions = partitions.to_vec();
    partitions.sort_unstable();
    let mut tx = pool.begin().await?;
    // the previous owners' rows, which each of their checkpoints holds while it writes: a
    // checkpoint in flight ends first, and every later one reads the raised generation
    sqlx::query(
        "SELECT 1 FROM cluster_members WHERE member IN (
             SELECT o.member FROM partition_owners o
             WHERE o.cluster_id = $1 AND o.consumer_group = $2 AND o.topic = $3
               AND o.partition = ANY($4))
         ORDER BY member FOR UPDATE",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(&partitions)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "INSERT INTO partition_owners (cluster_id, consumer_group, topic, partition, generation, member)
         SELECT $1, $2, $3, p, 1, $5 FROM UNNEST($4::int[]) AS u(p)
         ON CONFLICT (cluster_id, consumer_group, topic, partition) DO UPDATE
         SET generation = partition_owners.generation + 1, member = EXCLUDED.member,
             assigned_at = now()
         RETURNING partition, generation",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(&partitions)
    .bind(member.get())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(p, g)| (p, g as u64)).collect())
}

/// Of the given (partition, generation) pairs, those `member` no longer holds. Call it in a
/// transaction that already holds the member's row lock (taken by an earlier statement, so
/// that this one reads after any take-over that held it): a take-over of this member's
/// partitions takes that lock first, so none can commit until the transaction ends.
/// (A partition taken back by the same member has a stale generation and a current one.)
pub async fn lost_partitions(
    tx: &mut sqlx::PgConnection,
    scope: &OffsetScope,
    member: MemberId,
    held: &[(i32, u64)],
) -> Result<Vec<(i32, u64)>, StoreError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let (partitions, generations): (Vec<i32>, Vec<i64>) =
        held.iter().map(|(p, g)| (*p, *g as i64)).unzip();
    let lost: Vec<(i32, i64)> = sqlx::query_as(
        "WITH held AS (SELECT * FROM UNNEST($4::int[], $5::bigint[]) AS u(partition, generation)),
         current AS (
             SELECT o.partition, o.generation, o.member FROM partition_owners o
             WHERE o.cluster_id = $1 AND o.consumer_group = $2 AND o.topic = $3
               AND o.partition = ANY($4)
         )
         SELECT h.partition, h.generation FROM held h LEFT JOIN current c USING (partition)
         WHERE c.member IS DISTINCT FROM $6 OR c.generation IS DISTINCT FROM h.generation
         ORDER BY h.partition, h.generation",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(&partitions)
    .bind(&generations)
    .bind(member.get())
    .fetch_all(tx)
    .await?;
    Ok(lost.into_iter().map(|(p, g)| (p, g as u64)).collect())
}

/// Whether `member` still holds the partition with this generation.
pub async fn holds(
    pool: &PgPool,
    scope: &OffsetScope,
    member: MemberId,
    (partition, generation): (i32, u64),
) -> Result<bool, StoreError> {
    let held: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM partition_owners
         WHERE cluster_id = $1 AND consumer_group = $2 AND topic = $3 AND partition = $4
           AND member = $5 AND generation = $6)",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(partition)
    .bind(member.get())
    .bind(generation as i64)
    .fetch_one(pool)
    .await?;
    Ok(held)
}

/// The member owning a partition now and the address it advertised, if any.
pub async fn owner_of(
    pool: &PgPool,
    scope: &OffsetScope,
    partition: i32,
) -> Result<Option<(MemberId, Option<String>)>, StoreError> {
    let row: Option<(uuid::Uuid, Option<String>)> = sqlx::query_as(
        "SELECT o.member, m.address FROM partition_owners o
         LEFT JOIN cluster_members m ON m.member = o.member
         WHERE o.cluster_id = $1 AND o.consumer_group = $2 AND o.topic = $3 AND o.partition = $4",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .bind(partition)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(m, a)| (MemberId(m), a)))
}

/// How many members hold partitions now (each may send the campaigns it owns).
pub async fn sending_members(pool: &PgPool, scope: &OffsetScope) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT member) FROM partition_owners
         WHERE cluster_id = $1 AND consumer_group = $2 AND topic = $3",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .fetch_one(pool)
    .await?;
    Ok(n.clamp(1, i64::from(u32::MAX)) as u32)
}

/// The next offset applied per partition, as the members' last checkpoints stored it.
pub async fn applied_offsets(
    pool: &PgPool,
    scope: &OffsetScope,
) -> Result<HashMap<i32, i64>, StoreError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, COALESCE(applied_offset, next_offset) FROM kafka_offsets
         WHERE cluster_id = $1 AND consumer_group = $2 AND topic = $3",
    )
    .bind(&scope.cluster_id)
    .bind(&scope.consumer_group)
    .bind(&scope.topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The member's last committed checkpoint epoch (0 before its first).
pub async fn committed_epoch(
    conn: &mut sqlx::PgConnection,
    member: MemberId,
) -> Result<u64, StoreError> {
    let epoch: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM cluster_members WHERE member = $1")
            .bind(member.get())
            .fetch_optional(conn)
            .await?;
    Ok(epoch.unwrap_or(0) as u64)
}
