use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = campaignd::cli::Cli::parse();
    campaignd::telemetry::init(cli.log_format);
    actix_web::rt::System::new().block_on(campaignd::cli::run(cli))
}
