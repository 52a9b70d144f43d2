//! Tenants and their credit balance.

use sqlx::PgPool;

use crate::domain::TenantId;

use super::StoreError;

/// What an authenticated request may show about its own tenant.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub subscription_active: bool,
    pub subscription_until: Option<chrono::DateTime<chrono::Utc>>,
    pub credit_balance: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Creates a tenant; opening credits are recorded in the ledger as a top-up so that the
/// balance always equals the sum of the ledger.
pub async fn create(pool: &PgPool, name: &str, credits: i64) -> Result<TenantId, StoreError> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tenants (name, credit_balance) VALUES ($1, $2) RETURNING id",
    )
    .bind(name)
    .bind(credits)
    .fetch_one(&mut *tx)
    .await?;
    if credits != 0 {
        sqlx::query(
            "INSERT INTO credit_ledger (tenant_id, delta, reason) VALUES ($1, $2, 'topup')",
        )
        .bind(id)
        .bind(credits)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    TenantId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub async fn find(pool: &PgPool, id: TenantId) -> Result<Option<Tenant>, StoreError> {
    let tenant = sqlx::query_as(
        "SELECT id, name, subscription_active, subscription_until, credit_balance, created_at
         FROM tenants WHERE id = $1",
    )
    .bind(id.get())
    .fetch_optional(pool)
    .await?;
    Ok(tenant)
}

/// A tenant's rules for marketing messages: quiet hours in its time zone (`None`: none) and
/// the most marketing messages one contact may get in any 24 hours (`None`: no cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketingRules {
    pub time_zone: String,
    pub quiet: Option<(chrono::NaiveTime, chrono::NaiveTime)>,
    pub cap_24h: Option<i32>,
}

impl MarketingRules {
    /// The quiet window in the tenant's zone (`None`: no quiet hours).
    pub fn quiet_hours(
        &self,
    ) -> Result<
        Option<crate::engine::quiet_hours::QuietHours>,
        crate::engine::quiet_hours::QuietHoursError,
    > {
        let Some((start, end)) = self.quiet else {
            return Ok(None);
        };
        crate::engine::quiet_hours::QuietHours::from_stored(&self.time_zone, start, end)
    }

    /// No quiet hours and no cap (tests, benches, the demo).
    pub fn none() -> Self {
        Self {
            time_zone: "UTC".into(),
            quiet: None,
            cap_24h: None,
        }
    }
}

/// Sets a tenant's marketing rules (campaigns activated afterwards follow them).
pub async fn set_marketing_rules(
    pool: &PgPool,
    tenant: TenantId,
    rules: &MarketingRules,
) -> Result<(), StoreError> {
    let midnight = chrono::NaiveTime::MIN;
    let (start, end) = rules.quiet.unwrap_or((midnight, midnight));
    sqlx::query(
        "UPDATE tenants SET time_zone = $2, quiet_start = $3, quiet_end = $4,
                            marketing_cap_24h = $5
         WHERE id = $1",
    )
    .bind(tenant.get())
    .bind(&rules.time_zone)
    .bind(start)
    .bind(end)
    .bind(rules.cap_24h)
    .execute(pool)
    .await?;
    Ok(())
}

/// A tenant's marketing rules (defaults for a tenant that does not exist: none apply).
pub async fn marketing_rules(
    db: impl sqlx::PgExecutor<'_>,
    tenant: TenantId,
) -> Result<MarketingRules, StoreError> {
    let row: Option<(String, chrono::NaiveTime, chrono::NaiveTime, Option<i32>)> = sqlx::query_as(
        "SELECT time_zone, quiet_start, quiet_end, marketing_cap_24h FROM tenants WHERE id = $1",
    )
    .bind(tenant.get())
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((time_zone, start, end, cap_24h)) => MarketingRules {
            time_zone,
            quiet: (start != end).then_some((start, end)),
            cap_24h,
        },
        None => MarketingRules::none(),
    })
}
