//! API keys: only the SHA-256 of a token is ever stored.

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::domain::{ApiToken, TenantId};

use super::StoreError;

/// A key as stored; the token itself is not recoverable from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyId(pub i64);

/// Issues a fresh token for a tenant and stores its digest. The caller shows the token once.
pub async fn issue(
    pool: &PgPool,
    tenant: TenantId,
    label: &str,
) -> Result<(ApiKeyId, ApiToken), StoreError> {
    let token = ApiToken::generate();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant_id, token_sha256, label) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(tenant.get())
    .bind(token.sha256().as_slice())
    .bind(label)
    .fetch_one(pool)
    .await?;
    Ok((ApiKeyId(id), token))
}

/// The tenant a presented token belongs to, unless the key is unknown or revoked.
pub async fn authenticate(pool: &PgPool, token: &ApiToken) -> Result<Option<TenantId>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT tenant_id FROM api_keys WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(token.sha256().as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(id.and_then(|id| TenantId::new(id).ok()))
}

/// The channel on which Postgres announces a revoked (or deleted) key, with the hex SHA-256
/// of its token as the payload. A trigger on `api_keys` sends it in the transaction that
/// changes the key, so no way of revoking a key can skip it.
pub const REVOKED_CHANNEL: &str = "api_keys_revoked";

/// Revoked keys as Postgres announces them, on a connection of its own (not one of the
/// pool's).
pub struct Revocations(Option<PgListener>);

/// Starts listening on [`REVOKED_CHANNEL`]; announcements made before this returns are not
/// heard.
pub async fn listen_for_revocations(database_url: &str) -> Result<Revocations, StoreError> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(REVOKED_CHANNEL).await?;
    Ok(Revocations(Some(listener)))
}

impl Revocations {
    /// The next announcement's payload (the hex SHA-256 of the revoked key's token), or `None`
    /// once the connection is lost: announcements made from then on are missed, and a new
    /// listener is needed.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        let listener = self.0.as_mut().expect("present until dropped");
        let notice = listener.try_recv().await?;
        Ok(notice.map(|n| n.payload().to_owned()))
    }
}

impl Drop for Revocations {
    /// sqlx hands a listener's connection back through a spawned task, which panics without a
    /// Tokio runtime — as when a runtime is torn down while a panic unwinds (a failing test),
    /// where that second panic aborts the whole process. Without a runtime the connection is
    /// forgotten instead: whatever drops it is going away.
    fn drop(&mut self) {
        if let Some(listener) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                std::mem::forget(listener);
            }
        }
    }
}

/// Revokes a key; `false` when no active key has that id. Every instance's cache of verified
/// keys hears of it through [`REVOKED_CHANNEL`].
pub async fn revoke(pool: &PgPool, key: ApiKeyId) -> Result<bool, StoreError> {
    revoke_where(pool, key, None).await
}

/// A key as its tenant sees it (never the token).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: i64,
    pub label: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The tenant's keys, newest first.
pub async fn list(pool: &PgPool, tenant: TenantId) -> Result<Vec<KeyInfo>, StoreError> {
    let keys = sqlx::query_as(
        "SELECT id, label, created_at, revoked_at FROM api_keys WHERE tenant_id = $1
         ORDER BY id DESC",
    )
    .bind(tenant.get())
    .fetch_all(pool)
    .await?;
    Ok(keys)
}

/// Revokes one of the tenant's keys; `false` when it has no active key with that id (another
/// tenant's key is never touched).
pub async fn revoke_own(
    pool: &PgPool,
    tenant: TenantId,
    key: ApiKeyId,
) -> Result<bool, StoreError> {
    revoke_where(pool, key, Some(tenant)).await
}

async fn revoke_where(
    pool: &PgPool,
    key: ApiKeyId,
    tenant: Option<TenantId>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND revoked_at IS NULL AND ($2::bigint IS NULL OR tenant_id = $2)",
    )
    .bind(key.0)
    .bind(tenant.map(TenantId::get))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
