//! Replay protection for the DLR webhook.

use sqlx::{Postgres, Transaction};

use super::StoreError;

/// Records a receipt; `false` when the same request was seen before (a replay). Runs inside the
/// caller's transaction, which commits only once the reports are safely on the broker.
pub async fn record_receipt(
    tx: &mut Transaction<'_, Postgres>,
    dedup_key: &str,
) -> Result<bool, StoreError> {
    let inserted =
        sqlx::query("INSERT INTO webhook_receipts (dedup_key) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(dedup_key)
            .execute(&mut **tx)
            .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes receipts older than the window in which a replay could still be accepted.
pub async fn prune_receipts(pool: &sqlx::PgPool, older_than_secs: u64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM webhook_receipts WHERE received_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_secs as f64)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
