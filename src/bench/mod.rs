//! Load generators and benchmarks (`campaignd bench …`). Figures are printed as a table, with
//! the baseline measured in the same run, never asserted on in tests.

pub mod export;
pub mod import;
pub mod in_flight;
pub mod ingest;
pub mod load;
pub mod reconcile;
pub mod send;
pub mod webhook;
pub mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Resident memory of this process now (which hosts the service and the embedded broker too),
/// in MiB.
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// CPU time (user and system) this process has used so far.
pub fn process_cpu() -> Duration {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks, after the `(comm)`
    // field, which may itself hold spaces
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space on every architecture
    Duration::from_millis(ticks * 10)
}

/// Peak resident memory of this process since it started, in MiB.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// A memory figure from `/proc/self/status` (reported in kB), in MiB; 0 where there is none.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How far this process's resident memory rises during a measurement: sampled every 50 ms
/// from [`RssGrowth::start`] to [`RssGrowth::stop`]. Peak RSS since start-up cannot tell one
/// measurement from another; this can. Sampled on a thread of its own, so that it goes on
/// sampling while a measurement keeps the runtime's thread busy.
pub struct RssGrowth {
    start: f64,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
}

impl RssGrowth {
    const EVERY: Duration = Duration::from_millis(50);

    pub fn start() -> Self {
        let start = rss_mb();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = start;
            while !stopping.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb());
                std::thread::sleep(Self::EVERY);
            }
            peak.max(rss_mb())
        });
        Self {
            start,
            stop,
            sampler,
        }
    }

    /// The highest sample above the first, in MiB.
    pub fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.join().unwrap_or(self.start);
        (peak - self.start).max(0.0)
    }
}
