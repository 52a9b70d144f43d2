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
