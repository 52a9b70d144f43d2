use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = campaignd::cli::Cli::parse();
    campaignd::telemetry::init(cli.log_format);
    match actix_web::rt::System::new().block_on(campaignd::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
