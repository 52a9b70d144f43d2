//! Load generators and benchmarks (`campaignd bench …`). Figures are printed as a table, with
//! the baseline measured in the same run, never asserted on in tests.

pub mod ingest;
pub mod load;
pub mod reconcile;
pub mod send;
pub mod webhook;
pub mod workload;

use secrecy::ExposeSecret;

use crate::config::Settings;

/// Points `settings` at a fresh, uniquely named database on the same Postgres server (created
/// at start-up) and an ephemeral HTTP port; returns the database URL, to drop it afterwards.
pub fn scratch_database(settings: &mut Settings, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(settings.database_url.expose_secret())?;
    url.set_path(&name);
    settings.database_url = url.to_string().into();
    settings.http.bind = "127.0.0.1:0".parse()?;
    Ok(url.to_string())
}
