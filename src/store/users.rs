//! Dashboard users: who may sign in to a tenant's dashboard. Passwords are stored only as
//! argon2id digests ([`PasswordDigest`]).

use sqlx::PgPool;

use crate::domain::{Email, PasswordDigest, TenantId};

use super::StoreError;

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("an account for {0} exists already")]
    EmailTaken(Email),
    #[error("tenant {0} does not exist")]
    UnknownTenant(TenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A dashboard user as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub tenant: TenantId,
    pub email: Email,
    pub password: PasswordDigest,
}

/// Adds a user to a tenant.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    email: &Email,
    password: &PasswordDigest,
) -> Result<i64, UserError> {
    let inserted = sqlx::query_scalar(
        "INSERT INTO dashboard_users (tenant_id, email, password_hash)
         SELECT id, $2, $3 FROM tenants WHERE id = $1
         RETURNING id",
    )
    .bind(tenant.get())
    .bind(email.as_str())
    .bind(password.as_str())
    .fetch_optional(pool)
    .await;
    match inserted {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(UserError::UnknownTenant(tenant)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(UserError::EmailTaken(email.clone()))
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// The user signing in with `email`, if there is one.
pub async fn find_by_email(pool: &PgPool, email: &Email) -> Result<Option<User>, StoreError> {
    let row: Option<(i64, i64, String)> =
        sqlx::query_as("SELECT id, tenant_id, password_hash FROM dashboard_users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?;
    row.map(|(id, tenant, hash)| {
        let tenant = TenantId::new(tenant).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(User {
            id,
            tenant,
            email: email.clone(),
            password: PasswordDigest::stored(hash),
        })
    })
    .transpose()
}

/// The lock in force for the address with this digest, if any.
pub async fn lock(
    pool: &PgPool,
    email_sha256: &[u8; 32],
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    let until = sqlx::query_scalar(
        "SELECT locked_until FROM sign_in_failures
         WHERE email_sha256 = $1 AND locked_until > now()",
    )
    .bind(&email_sha256[..])
    .fetch_optional(pool)
    .await?;
    Ok(until)
}

/// Counts a failed sign-in for an address (known or not); answers the lock it earned under
/// `policy`, now in force. Rows idle for a day are dropped on the way.
pub async fn failed_sign_in(
    pool: &PgPool,
    email_sha256: &[u8; 32],
    policy: &crate::domain::Lockout,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    sqlx::query("DELETE FROM sign_in_failures WHERE updated_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO sign_in_failures (email_sha256, failures) VALUES ($1, 1)
         ON CONFLICT (email_sha256) DO UPDATE
             SET failures = sign_in_failures.failures + 1, updated_at = now()
         RETURNING failures",
    )
    .bind(&email_sha256[..])
    .fetch_one(pool)
    .await?;
    let Some(lock) = policy.lock_for(failures.max(0) as u32) else {
        return Ok(None);
    };
    let until = sqlx::query_scalar(
        "UPDATE sign_in_failures SET locked_until = now() + make_interval(secs => $2)
         WHERE email_sha256 = $1 RETURNING locked_until",
    )
    .bind(&email_sha256[..])
    .bind(lock.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(Some(until))
}

/// A right password: the address's failures are forgotten.
pub async fn signed_in(pool: &PgPool, email_sha256: &[u8; 32]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sign_in_failures WHERE email_sha256 = $1")
        .bind(&email_sha256[..])
        .execute(pool)
        .await?;
    Ok(())
}

/// A signed-in browser, found by its cookie's digest.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: i64,
    pub tenant: TenantId,
    pub email: String,
    /// The form token every state-changing request of this session must carry.
    pub csrf: String,
    /// The tenant's IANA time zone, for the times its pages show.
    pub time_zone: String,
}

/// Opens a session for `user`; expired sessions of anyone are dropped on the way.
pub async fn open_session(
    pool: &PgPool,
    digest: &[u8; 32],
    user: &User,
    csrf: &str,
    hours: u32,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO dashboard_sessions (token_sha256, user_id, tenant_id, csrf, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5))",
    )
    .bind(&digest[..])
    .bind(user.id)
    .bind(user.tenant.get())
    .bind(csrf)
    .bind(hours as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The live session with this cookie digest, if any.
pub async fn session(pool: &PgPool, digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
    let row: Option<(i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT s.user_id, s.tenant_id, u.email, s.csrf, t.time_zone
         FROM dashboard_sessions s JOIN dashboard_users u ON u.id = s.user_id
              JOIN tenants t ON t.id = s.tenant_id
         WHERE s.token_sha256 = $1 AND s.expires_at > now()",
    )
    .bind(&digest[..])
    .fetch_optional(pool)
    .await?;
    row.map(|(user, tenant, email, csrf, time_zone)| {
        let tenant = TenantId::new(tenant).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Session {
            user,
            tenant,
            email,
            csrf,
            time_zone,
        })
    })
    .transpose()
}

/// Signs a browser out: its session is gone.
pub async fn close_session(pool: &PgPool, digest: &[u8; 32]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE token_sha256 = $1")
        .bind(&digest[..])
        .execute(pool)
        .await?;
    Ok(())
}
