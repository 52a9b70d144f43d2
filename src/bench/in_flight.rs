//! `campaignd bench in-flight`: the memory a message costs while it waits for its report.
//!
//! 1. A fresh database and broker; C campaigns with N claimed recipients in all.
//! 2. N `sent` events (each with its bulk id, as Mitto's answers carry) and no report are
//!    produced, so every message stays in flight.
//! 3. The service starts and applies them. This process's resident memory is read before the
//!    service starts and once every event is committed (after a second to settle). Every
//!    campaign's counters must then show exactly its messages pending, or the bench fails.
//! 4. Steps 1–3 run twice, each in a process of its own (so that neither inherits the
//!    other's allocations): with N/2 and with N messages. Bytes per message is the difference
//!    between the two growths over the N/2 messages between them: the service's start-up,
//!    its buffers (consumer prefetch, mailboxes, pooled connections) and the broker are the
//!    same in both and cancel out. The growth of the N run over N is printed too, as an upper
//!    bound that charges all of those to the messages. Both processes return freed memory to
//!    the system at once (mimalloc's purge delay 0), so that what stays resident is what is
//!    live rather than what the allocator keeps for later.
//!
//! The replaced design kept no message in memory: its figure is the bytes a message's row
//! takes in Postgres (table and indexes), which campaignd keeps as well, measured here.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use super::workload::{generate, Reports, WorkloadSpec};
use crate::app::Application;
use crate::config::Settings;
use crate::store::{self, fixtures::claimed_campaign};

#[derive(Debug, Clone, clap::Args)]
pub struct InFlightArgs {
    /// Messages sent and left awaiting their report.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub messages: u64,
    /// Campaigns the messages are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub campaigns: u64,
    /// Partitions of the bench topic (the embedded broker keeps about 5 MiB per partition).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Keep the bench databases afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Measure one run in this process and print its figures as one line (how the bench
    /// runs each of its two measurements).
    #[arg(long, hide = true)]
    pub alone: bool,
}

/// One run: its messages, the memory the process gained applying them (MiB), how long that
/// took, and the size of a recipient row in Postgres.
#[derive(Debug, Clone, Copy)]
struct Run {
    messages: u64,
    grown_mb: f64,
    /// What the process gave back once the service stopped (its actors, ledgers, pools).
    released_mb: f64,
    /// What the partitions' message state takes by its own count (`campaignd_ledger_bytes`).
    ledger_bytes: f64,
    took_s: f64,
    row_bytes: f64,
}

impl Run {
    const LINE: &'static str = "IN_FLIGHT_RUN";

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            Self::LINE,
            self.messages,
            self.grown_mb,
            self.released_mb,
            self.ledger_bytes,
            self.took_s,
            self.row_bytes
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix(Self::LINE)?.split_whitespace();
        Some(Self {
            messages: f.next()?.parse().ok()?,
            grown_mb: f.next()?.parse().ok()?,
            released_mb: f.next()?.parse().ok()?,
            ledger_bytes: f.next()?.parse().ok()?,
            took_s: f.next()?.parse().ok()?,
            row_bytes: f.next()?.parse().ok()?,
        })
    }
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(mut settings: Settings, args: InFlightArgs) -> anyhow::Result<()> {
    if !args.alone {
        let half = alone(&args, args.messages / 2).await?;
        let full = alone(&args, args.messages).await?;
        print_table(&half, &full);
        return Ok(());
    }
    let url = super::scratch_database(&mut settings, "campaignd_bench_in_flight")?;
    let result = measure(settings, &args).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    println!("{}", result?.line());
    Ok(())
}

/// Runs one measurement of `messages` in a process of its own.
async fn alone(args: &InFlightArgs, messages: u64) -> anyhow::Result<Run> {
    eprintln!("measuring {messages} messages in flight in a process of their own");
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    // freed memory leaves the resident set at once (mimalloc otherwise keeps it a while), so
    // that what stays resident is what is live
    command.env("MIMALLOC_PURGE_DELAY", "0");
    command.env("MIMALLOC_PURGE_DECOMMITS", "1");
    command.args(["bench", "in-flight", "--alone"]);
    command.args(["--messages", &messages.to_string()]);
    command.args(["--campaigns", &args.campaigns.to_string()]);
    command.args(["--partitions", &args.partitions.to_string()]);
    if args.keep {
        command.arg("--keep");
    }
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "the run of {messages} messages failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(Run::parse)
        .ok_or_else(|| anyhow::anyhow!("the run of {messages} messages printed no figures"))
}

async fn measure(settings: Settings, args: &InFlightArgs) -> anyhow::Result<Run> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let per_campaign = (args.messages / args.campaigns).max(1) as i64;
    eprintln!(
        "setting up {} campaigns x {per_campaign} recipients",
        args.campaigns
    );
    let mut campaigns = Vec::new();
    for _ in 0..args.campaigns {
        campaigns.push(claimed_campaign(&pool, tenant, per_campaign).await?);
    }
    let spec = WorkloadSpec {
        dup_ratio: 0.0,
        send_failed_ratio: 0.0,
        reports: Reports::None,
        ..WorkloadSpec::default()
    };
    let workload = generate(&campaigns, spec);
    let messages = workload.events.len() as u64;
    let (embedded, settings, ends) =
        super::ingest::on_the_topic(&settings, args.partitions, &workload.events).await?;
    let before = super::rss_mb();
    let started = Instant::now();
    let app = Application::build(settings.clone()).await?.spawn();
    let scope = crate::pipeline::offset_scope(&app.pipeline.broker, &settings);
    super::ingest::wait_until_committed(&pool, &scope, &ends).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = super::rss_mb();
    let ledgers = ledger_bytes();
    let exact = super::ingest::counters_match(&app, &campaigns, &workload.expected).await;
    app.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = super::rss_mb();
    anyhow::ensure!(exact, "the counters do not show every message in flight");
    let row_bytes = row_bytes(&pool).await?;
    pool.close().await;
    drop(embedded);
    Ok(Run {
        messages,
        grown_mb: end - before,
        released_mb: end - stopped,
        ledger_bytes: ledgers,
        took_s: took.as_secs_f64(),
        row_bytes,
    })
}

/// The partitions' message state by their own count: the sum of `campaignd_ledger_bytes`.
fn ledger_bytes() -> f64 {
    crate::metrics::render()
        .lines()
        .filter(|l| l.starts_with(crate::metrics::LEDGER_BYTES))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bytes per recipient row in Postgres, table and indexes together.
async fn row_bytes(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('campaign_recipients'),
                (SELECT count(*) FROM campaign_recipients)",
    )
    .fetch_one(pool)
    .await?;
    Ok(bytes as f64 / rows.max(1) as f64)
}

fn print_table(half: &Run, full: &Run) {
    let between = (full.messages - half.messages) as f64;
    let per_message = (full.grown_mb - half.grown_mb) * MIB / between;
    let upper_bound = full.grown_mb * MIB / full.messages as f64;
    let held = (full.released_mb - half.released_mb) * MIB / between;
    println!();
    println!("campaignd bench in-flight — messages sent, none reported");
    println!("| run | messages | applied and committed in | memory grown | given back when the service stopped |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in [("half", half), ("full", full)] {
        println!(
            "| {name} | {} | {:.1} s | {:.0} MiB | {:.0} MiB |",
            run.messages, run.took_s, run.grown_mb, run.released_mb
        );
    }
    println!();
    println!("| measure | bytes per message |");
    println!("|---|---:|");
    println!("| memory per message in flight (full − half, over the messages between) | {per_message:.0} |");
    println!("| upper bound: all growth of the full run (start-up and buffers included) | {upper_bound:.0} |");
    println!("| held by the service itself (given back at its stop, full − half) | {held:.0} |");
    let state = full.ledger_bytes / full.messages as f64;
    println!("| message state in the ledgers by their own count (`campaignd_ledger_bytes`), full run | {state:.0} |");
    println!(
        "| replaced design: nothing in memory; a recipient row in Postgres (campaignd keeps it too) | {:.0} |",
        full.row_bytes
    );
    println!();
    println!(
        "RESULT in_flight_messages={} bytes_per_message={per_message:.0} upper_bound_bytes={upper_bound:.0} held_by_service_bytes={held:.0} ledger_state_bytes={state:.0} row_bytes={:.0}",
        full.messages, full.row_bytes
    );
}
