//! Tracing subscriber set-up: pretty output for people, JSON lines for log pipelines.

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber once; `RUST_LOG` overrides the default `info` filter.
/// Logs go to stderr so that commands printing results on stdout stay machine-readable.
/// `default_level` applies when RUST_LOG is unset (the demo keeps its screen for progress bars).
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second call (tests start several apps in one process) keeps the first subscriber.
    drop(result);
}
