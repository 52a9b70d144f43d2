//! The command line. `main` parses it and calls [`run`]; results go to stdout, logs to stderr.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::Application;
use crate::config::Settings;
use crate::domain::TenantId;
use crate::mitto::simulator::{self, SimConfig};
use crate::store;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "campaignd",
    version,
    about = "SMS campaign engine: sends through Mitto, follows every delivery report, serves exact stats from memory.",
    long_about = "SMS campaign engine: sends through Mitto, follows every delivery report, serves exact stats from memory.\n\n\
Configuration: embedded defaults < campaignd.toml (or --config) < CAMPAIGND_* environment variables \
(CAMPAIGND_HTTP__BIND, CAMPAIGND_BATCH_SIZE, …) and DATABASE_URL, KAFKA_BROKERS, MITTO_BASE_URL, MITTO_API_KEY."
)]
pub struct Cli {
    /// Settings file (default: ./campaignd.toml when it exists).
    #[arg(long, global = true, env = "CAMPAIGND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log output: pretty for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: REST API, webhook receiver, actors. Creates and migrates the database
    /// if needed; without MITTO_BASE_URL a built-in Mitto simulator is started.
    Serve,
    /// Send one campaign end to end on the embedded defaults (embedded broker, built-in
    /// simulator with realistic delays and failures) with progress bars and a final report.
    /// Needs only Postgres.
    Demo(crate::demo::DemoArgs),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Run a standalone Mitto simulator (bulk send, single send, status lookup, signed DLR
    /// callbacks, fault injection; per-destination send counts at GET /_sim/stats).
    MittoSim(Box<SimConfig>),
    /// Manage tenants and their API keys.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage the people who sign in to a tenant's dashboard.
    #[command(subcommand)]
    User(UserCommand),
    /// Run the embedded Kafka-protocol broker in its own process (in memory), with the
    /// `message-events` topic created; prints BOOTSTRAP=host:port. For crash tests, benches
    /// and upstream producers on a development machine — not for production.
    DevBroker,
    /// Compare every campaign's snapshot (what actors are activated from) with its figures
    /// counted from the recipient rows, in one database snapshot; prints each difference and
    /// exits with 1 if there is any. Safe while the service runs.
    Verify {
        /// Only this campaign.
        #[arg(long)]
        campaign: Option<crate::domain::CampaignId>,
    },
    /// Benchmarks that print a table of figures with the baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable ingest of sent + dlr events versus the replaced per-event UPDATE design, and
    /// stats latency from memory versus COUNT queries. Uses a fresh database on DATABASE_URL's
    /// server and the embedded broker (or KAFKA_BROKERS).
    Ingest(crate::bench::ingest::IngestArgs),
    /// Enqueue and send throughput against the built-in simulator with the limiter off, the
    /// limiter's achieved rate against its target, and the replaced design's per-recipient
    /// INSERT / per-message request + UPDATE on a sample. Fresh databases on DATABASE_URL's
    /// server.
    Send(crate::bench::send::SendArgs),
    /// Delivery reports over HTTP, one signed report per request from keep-alive connections
    /// (wrk, `apt-get install -y wrk`), until every report is durably applied, versus the
    /// replaced handler (verify, one committed UPDATE, 202) in the same run.
    Webhook(crate::bench::webhook::WebhookArgs),
    /// Lost delivery reports fetched back from the built-in simulator (which posts none):
    /// a bulk refresh job and the periodic refresher until every message is final, and the
    /// client's lookups per second, 32 in flight versus one at a time.
    Reconcile(crate::bench::reconcile::ReconcileArgs),
    /// The CSV exports (`recipients.csv`, `report.csv`) of one large completed campaign
    /// downloaded over HTTP as they stream: rows/s and the process's memory growth, versus
    /// building the whole CSV in memory from one fetch of every row. A fresh database on
    /// DATABASE_URL's server.
    Export(crate::bench::export::ExportArgs),
    /// A contacts CSV imported over HTTP into a list: rows/s and the process's memory growth,
    /// versus one INSERT per contact and per membership. A fresh database on DATABASE_URL's
    /// server.
    Import(crate::bench::import::ImportArgs),
    /// Messages sent and awaiting their report: the resident memory each adds to the service,
    /// next to the bytes its row takes in Postgres. A fresh database on DATABASE_URL's server
    /// and the embedded broker (or KAFKA_BROKERS).
    InFlight(crate::bench::in_flight::InFlightArgs),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first API token. The token is shown once; only its
    /// SHA-256 is stored.
    Create {
        #[arg(long)]
        name: String,
        /// Opening credit balance (one credit = one SMS segment).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        credits: i64,
    },
    /// Issue another API token for a tenant (printed once).
    IssueKey {
        #[arg(long)]
        tenant_id: TenantId,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an API key by its id; requests with its token are refused from then on.
    RevokeKey {
        #[arg(long)]
        key_id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a dashboard user. The password is read from CAMPAIGND_USER_PASSWORD when set,
    /// else from the first line of standard input (prompted for on a terminal); only its
    /// argon2id hash is stored.
    Create {
        #[arg(long, visible_alias = "tenant")]
        tenant_id: TenantId,
        #[arg(long)]
        email: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::MittoSim(config) = cli.command {
        return run_simulator(*config).await;
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => {
            store::connect_and_migrate(settings.database_url.expose_secret())
                .await
                .context("migrating the database")?;
            println!("migrations applied");
        }
        Command::Demo(args) => crate::demo::run(settings, args).await?,
        Command::Tenant(command) => run_tenant(&settings, command).await?,
        Command::User(command) => run_user(&settings, command).await?,
        Command::Verify { campaign } => verify(&settings, campaign).await?,
        Command::Bench(BenchCommand::Ingest(args)) => {
            crate::bench::ingest::run(settings, args).await?
        }
        Command::Bench(BenchCommand::Send(args)) => crate::bench::send::run(settings, args).await?,
        Command::Bench(BenchCommand::Reconcile(args)) => {
            crate::bench::reconcile::run(settings, args).await?
        }
        Command::Bench(BenchCommand::Webhook(args)) => {
            crate::bench::webhook::run(settings, args).await?
        }
        Command::Bench(BenchCommand::Export(args)) => {
            crate::bench::export::run(settings, args).await?
        }
        Command::Bench(BenchCommand::Import(args)) => {
            crate::bench::import::run(settings, args).await?
        }
        Command::Bench(BenchCommand::InFlight(args)) => {
            crate::bench::in_flight::run(settings, args).await?
        }
        Command::DevBroker => {
            let broker = crate::kafka::EmbeddedBroker::start(
                &settings.kafka.topic,
                settings.kafka.partitions,
            )
            .context("starting the broker")?;
            println!("BOOTSTRAP={}", broker.bootstrap());
            tokio::signal::ctrl_c().await?;
        }
        Command::MittoSim(_) => unreachable!("handled above"),
    }
    Ok(())
}

async fn verify(
    settings: &Settings,
    only: Option<crate::domain::CampaignId>,
) -> anyhow::Result<()> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret())
        .await
        .context("connecting to Postgres")?;
    let recounts = store::campaigns::recount(&pool, only)
        .await
        .context("counting campaigns' rows")?;
    let mut differing = 0;
    for r in &recounts {
        let found = crate::engine::campaign::differences(&r.snapshot, &r.rows);
        for line in &found {
            println!("campaign {}: {line}", r.campaign);
        }
        differing += usize::from(!found.is_empty());
    }
    println!(
        "verified {} campaigns: {differing} differ from their rows",
        recounts.len()
    );
    anyhow::ensure!(
        differing == 0,
        "{differing} campaigns differ from their rows"
    );
    Ok(())
}

async fn run_simulator(config: SimConfig) -> anyhow::Result<()> {
    let sim = simulator::start(config).context("starting the Mitto simulator")?;
    println!("MITTO_BASE_URL={}", sim.base_url);
    tokio::signal::ctrl_c().await?;
    sim.stop().await;
    Ok(())
}

async fn run_user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create { tenant_id, email } = command;
    let email = crate::domain::Email::parse(&email)?;
    let password = read_password()?;
    let digest = crate::domain::PasswordDigest::of(&password)?;
    let pool = store::connect_and_migrate(settings.database_url.expose_secret())
        .await
        .context("connecting to Postgres")?;
    let id = store::users::create(&pool, tenant_id, &email, &digest).await?;
    println!("user_id={id}\ntenant_id={tenant_id}\nemail={email}");
    Ok(())
}

/// The new user's password: from the environment, or one line of standard input.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if let Ok(password) = std::env::var("CAMPAIGND_USER_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        // typed without echo
        let prompt = format!(
            "password (at least {} characters): ",
            crate::domain::MIN_PASSWORD_CHARS
        );
        return Ok(rpassword::prompt_password(prompt)?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn run_tenant(settings: &Settings, command: TenantCommand) -> anyhow::Result<()> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret())
        .await
        .context("connecting to Postgres")?;
    match command {
        TenantCommand::Create { name, credits } => {
            let tenant = store::tenants::create(&pool, name.trim(), credits)
                .await
                .context("creating the tenant")?;
            let (key, token) = store::api_keys::issue(&pool, tenant, "initial").await?;
            println!(
                "tenant_id={tenant}\napi_key_id={}\ntoken={}",
                key.0,
                token.reveal()
            );
        }
        TenantCommand::IssueKey { tenant_id, label } => {
            let (key, token) = store::api_keys::issue(&pool, tenant_id, &label)
                .await
                .with_context(|| format!("issuing a key for tenant {tenant_id}"))?;
            println!("api_key_id={}\ntoken={}", key.0, token.reveal());
        }
        TenantCommand::RevokeKey { key_id } => {
            let revoked = store::api_keys::revoke(&pool, store::api_keys::ApiKeyId(key_id)).await?;
            anyhow::ensure!(revoked, "no active API key with id {key_id}");
            println!("revoked api_key_id={key_id}");
        }
    }
    Ok(())
}
