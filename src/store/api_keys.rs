//! API keys: only the SHA-256 of a token is ever stored.

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

/// Revokes a key; `false` when no active key has that id.
pub async fn revoke(pool: &PgPool, key: ApiKeyId) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(key.0)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}
