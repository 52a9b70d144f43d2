//! Every SQL statement lives here, behind functions named for what they do.
//!
//! Migrations (`migrations/`) are embedded in the binary and applied at start-up.

pub mod api_keys;
pub mod baseline;
pub mod campaigns;
pub mod checkpoints;
pub mod cluster;
pub mod contacts;
pub mod enqueue;
pub mod fixtures;
pub mod links;
pub mod messages;
pub mod preview;
pub mod reconcile;
pub mod reports;
pub mod tenants;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL is invalid: {0}")]
    InvalidUrl(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value that this build cannot read; never expected, always reported.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The member no longer holds these (partition, generation) pairs: another member took
    /// them over since, and the write was refused (its state for them must be dropped).
    #[error(
        "partitions {0:?} (partition, generation) were taken over since; the write was refused"
    )]
    Fenced(Vec<(i32, u64)>),
}

/// The migrations compiled into this binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database if it does not exist, connects a pool and applies migrations.
#[tracing::instrument(skip_all)]
pub async fn connect_and_migrate(url: &str) -> Result<PgPool, StoreError> {
    let options = parse_url(url)?;
    ensure_database_exists(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A pool of one connection for the message log's fold (src/actors/fold.rs), apart from the
/// pool requests and actors use: a fold moves a whole backlog in one statement, slow by
/// design, so it neither waits for a pooled connection nor reports itself as a slow statement
/// before a minute has passed.
pub fn fold_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(60));
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options)
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map(|o| o.log_statements(tracing::log::LevelFilter::Trace))
        .map_err(|e| StoreError::InvalidUrl(e.to_string()))
}

/// Connects to the server's maintenance database and creates the target database when absent.
/// Two processes racing here is fine: the loser sees `duplicate_database` and carries on.
async fn ensure_database_exists(options: &PgConnectOptions) -> Result<(), StoreError> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&statement).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // created meanwhile by another instance starting beside this one (42P04, or a
            // unique violation of the catalogue when both got that far)
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Backoff for work that must not give up while Postgres is away: jittered, 50 ms doubling
/// to 5 s, unbounded. Nothing is applied on guesses, so waiting is the only safe choice.
pub fn until_available() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
}

/// Runs `op` until it succeeds, waiting by [`until_available`] between attempts (Postgres or
/// the broker away: nothing may be skipped, so waiting is the only safe choice).
pub async fn until_ok<T, E, F, Fut>(what: &str, mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use backon::BackoffBuilder;
    let mut delays = until_available().build();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::error!(error = %e, ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Drops a database (used for throw-away bench and test databases), disconnecting its users.
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    let options = parse_url(url)?;
    let name = options.get_database().unwrap_or_default().to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres")).await?;
    let statement = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    sqlx::query(&statement).execute(&mut admin).await?;
    admin.close().await?;
    Ok(())
}

/// Readiness probe: one round trip.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
