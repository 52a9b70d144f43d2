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

/// A client for a bench's own simulator: short retries, no lookup pace.
pub fn simulator_client(
    sim: &crate::mitto::simulator::SimHandle,
) -> anyhow::Result<crate::mitto::client::MittoClient> {
    use std::time::Duration;
    let config = crate::mitto::client::ClientConfig {
        base_url: sim.base_url.clone(),
        api_key: crate::mitto::simulator::SimConfig::default().api_key.into(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(15),
        retry: crate::mitto::retry::RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            max_retries: 3,
        },
        status_lookups_per_second: None,
    };
    Ok(crate::mitto::client::MittoClient::new(config)?)
}

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
