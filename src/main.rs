use std::process::ExitCode;

use clap::Parser;

/// The hot path allocates per event on several threads; mimalloc handles that churn with far
/// less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = campaignd::cli::Cli::parse();
    let level = match cli.command {
        // the demo keeps the screen for its progress bars; the embedded broker going away at
        // the end is expected there
        campaignd::cli::Command::Demo(_) => "warn,rdkafka=off,librdkafka=off",
        _ => "info",
    };
    campaignd::telemetry::init(cli.log_format, level);
    match actix_web::rt::System::new().block_on(campaignd::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
