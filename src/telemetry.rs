//! Tracing subscriber set-up: pretty output for people, JSON lines for log pipelines.

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The filter when RUST_LOG is unset: `default_level`, except actix-web's HTTP/1 dispatcher.
/// It logs every request it cannot parse at ERROR ("stream error: request parse error") after
/// answering it 400, so any client could fill the log with errors that are not the service's;
/// `RUST_LOG=info,actix_http=debug` shows them again.
fn default_filter(default_level: &str) -> String {
    format!("{default_level},actix_http::h1::dispatcher=off")
}

/// Installs the global subscriber once; `RUST_LOG` overrides the default `info` filter.
/// Logs go to stderr so that commands printing results on stdout stay machine-readable.
/// `default_level` applies when RUST_LOG is unset (the demo keeps its screen for progress bars).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second call (tests start several apps in one process) keeps the first subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_keeps_the_level_and_silences_only_the_http1_dispatcher() {
        let filter = default_filter("warn");
        assert_eq!(filter, "warn,actix_http::h1::dispatcher=off");
        assert!(EnvFilter::try_new(&filter).is_ok());
    }
}
