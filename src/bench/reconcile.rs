//! `campaignd bench reconcile`: how fast lost delivery reports are fetched back from Mitto.
//!
//! 1. Bulk job: a campaign of N recipients is sent to a simulator that posts no report at all
//!    (`drop_dlr_ratio` 1); `refresh-status-bulk` runs as a job until every message is final.
//! 2. Periodic refresher: the same campaign on a fresh service whose refresher runs every
//!    second; timed from the campaign's completion until nothing awaits a report.
//! 3. Raw lookups against the simulator: the client with 32 lookups in flight, versus one at a
//!    time as the replaced system's periodic job looked messages up.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::StreamExt;

use crate::actors::campaign::Command;
use crate::app::{Application, RunningApplication};
use crate::config::Settings;
use crate::domain::{CampaignId, MessageId, TenantId};
use crate::mitto::client::{ItemResult, MittoClient};
use crate::mitto::simulator::{self, MsRange, SimConfig};
use crate::mitto::wire::{SendMessage, Sms};
use crate::reconcile::{BulkStart, BulkTarget};
use crate::store;

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Recipients whose reports are all lost.
    #[arg(long, default_value_t = 10_000)]
    pub recipients: u64,
    /// The service's lookup rate (mitto.status_lookups_per_second).
    #[arg(long, default_value_t = 5_000)]
    pub rate: u32,
    /// Lookups of the raw client measurement.
    #[arg(long, default_value_t = 10_000)]
    pub raw_lookups: u64,
    /// Keep the bench databases afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    BulkJob,
    Periodic,
}

/// One service run: how long until every lost report was fetched, and how many lookups.
struct Run {
    took: Duration,
    lookups: u64,
    max_per_second: u64,
}

pub async fn run(settings: Settings, args: ReconcileArgs) -> anyhow::Result<()> {
    let bulk = service_run(settings.clone(), &args, Mode::BulkJob).await?;
    let periodic = service_run(settings, &args, Mode::Periodic).await?;
    let (concurrent, sequential) = raw_lookups(args.raw_lookups).await?;
    print_table(&args, &bulk, &periodic, concurrent, sequential);
    Ok(())
}

fn lossy_simulator() -> SimConfig {
    SimConfig {
        drop_dlr_ratio: 1.0,
        dlr_delay_ms: MsRange { min: 5, max: 30 },
        ..SimConfig::default()
    }
}

async fn service_run(
    mut settings: Settings,
    args: &ReconcileArgs,
    mode: Mode,
) -> anyhow::Result<Run> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_reconcile")?;
    settings.mitto.base_url = None;
    settings.mitto.api_key = None;
    settings.rate_limits.traffic_account_per_second = None;
    settings.rate_limits.tenant_per_second = None;
    settings.mitto.status_lookups_per_second = args.rate.try_into().context("--rate above 0")?;
    let r = &mut settings.reconcile;
    (r.sync_limit, r.interval_secs, r.after_secs) = match mode {
        Mode::BulkJob => (0, 3_600, 86_400),
        Mode::Periodic => (0, 1, 1),
    };
    let app = Application::build_with_simulator(settings, lossy_simulator())
        .await?
        .spawn();
    let result = measure(&app, args.recipients, mode).await;
    app.stop().await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    result
}

async fn measure(app: &RunningApplication, n: u64, mode: Mode) -> anyhow::Result<Run> {
    let pool = &app.state.pool;
    let tenant = store::tenants::create(pool, "bench", n as i64 * 2).await?;
    store::tenants::set_marketing_rules(pool, tenant, &store::tenants::MarketingRules::none())
        .await?;
    let campaign =
        super::send::campaign_with_list(pool, tenant, n, crate::domain::MessageType::Service)
            .await?;
    let registry = &app.pipeline.handles.registry;
    let command = Command::Enqueue {
        idempotency_key: None,
    };
    registry
        .lifecycle(campaign, tenant, command)
        .await
        .context("the campaign actor did not answer")??;
    eprintln!("sending {n} messages whose reports are all lost");
    wait_for(app, campaign, |s| {
        s.status.as_str() == "completed" && s.pending as u64 == n
    })
    .await?;
    let sim = app.simulator.as_ref().context("the built-in simulator")?;
    let before = sim.stats().lookups;
    let started = Instant::now();
    if mode == Mode::BulkJob {
        bulk_job(app, tenant, campaign).await?;
    }
    wait_for(app, campaign, |s| s.pending == 0).await?;
    let took = started.elapsed();
    let stats = sim.stats();
    ensure!(
        stats.in_flight == 0,
        "the simulator still has messages in flight"
    );
    Ok(Run {
        took,
        lookups: stats.lookups - before,
        max_per_second: stats.max_lookups_per_second,
    })
}

async fn bulk_job(
    app: &RunningApplication,
    tenant: TenantId,
    campaign: CampaignId,
) -> anyhow::Result<()> {
    let reconciler = &app.state.reconciler;
    let started = reconciler
        .refresh_bulk(tenant, BulkTarget::Campaign(campaign))
        .await?;
    let BulkStart::Started { job_id, .. } = started else {
        return Ok(());
    };
    loop {
        let job = reconciler.job(tenant, job_id).await?.context("the job")?;
        if job.state != "running" {
            ensure!(
                job.state == "completed",
                "job ended {}: {:?}",
                job.state,
                job.error
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(
    app: &RunningApplication,
    campaign: CampaignId,
    done: impl Fn(&crate::engine::campaign::Stats) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, stats) = app
            .pipeline
            .handles
            .registry
            .stats(campaign)
            .await
            .context("stats")?;
        if done(&stats) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "gave up waiting: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lookups per second of the client against the simulator: 32 in flight, and one at a time.
async fn raw_lookups(n: u64) -> anyhow::Result<(f64, f64)> {
    let sim = simulator::start(SimConfig {
        port: 0,
        dlr_delay_ms: MsRange { min: 0, max: 0 },
        ..SimConfig::default()
    })?;
    let client = super::simulator_client(&sim)?;
    let ids = accepted_messages(&client, n).await?;
    let started = Instant::now();
    let lookups = ids.iter().map(|id| client.message_status(id));
    let results: Vec<_> = futures::stream::iter(lookups)
        .buffer_unordered(32)
        .collect()
        .await;
    let concurrent = n as f64 / started.elapsed().as_secs_f64();
    ensure!(results.iter().all(Result::is_ok), "a lookup failed");
    let sample = &ids[..ids.len().min(2_000)];
    let started = Instant::now();
    for id in sample {
        client.message_status(id).await?;
    }
    let sequential = sample.len() as f64 / started.elapsed().as_secs_f64();
    sim.stop().await;
    Ok((concurrent, sequential))
}

async fn accepted_messages(client: &MittoClient, n: u64) -> anyhow::Result<Vec<MessageId>> {
    let account = crate::app::SIMULATOR_TRAFFIC_ACCOUNT;
    let messages: Vec<SendMessage> = (0..n)
        .map(|i| SendMessage {
            traffic_account_id: crate::domain::TrafficAccountId::from_uuid(account),
            destination: format!("+3069{:08}", 10_000_000 + i),
            sms: Sms {
                text: "Spring sale".into(),
                sender: "Shop".into(),
            },
            reference: None,
        })
        .collect();
    let mut ids = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(crate::mitto::wire::MAX_BULK_MESSAGES) {
        let outcome = client.send_bulk(chunk).await?;
        ids.extend(outcome.items.into_iter().filter_map(|item| match item {
            ItemResult::Accepted { message_id } => Some(message_id),
            ItemResult::Rejected { .. } => None,
        }));
    }
    Ok(ids)
}

fn print_table(args: &ReconcileArgs, bulk: &Run, periodic: &Run, concurrent: f64, sequential: f64) {
    let n = args.recipients;
    let per_s = |run: &Run| run.lookups as f64 / run.took.as_secs_f64().max(1e-9);
    println!(
        "\ncampaignd bench reconcile — {n} messages whose reports were all lost, lookups limited to {}/s",
        args.rate
    );
    println!("| measure | campaignd | replaced design |");
    println!("|---|---:|---:|");
    println!(
        "| client lookups/s against the simulator | {concurrent:.0} (32 in flight) | {sequential:.0} (one at a time) |"
    );
    println!(
        "| bulk refresh job: every message final after | {:.2?} ({:.0} lookups/s, max {}/s) | first 100 only |",
        bulk.took,
        per_s(bulk),
        bulk.max_per_second
    );
    println!(
        "| periodic refresher: every message final after | {:.2?} ({:.0} lookups/s) | the same oldest 50 per run, forever |",
        periodic.took,
        per_s(periodic)
    );
    println!(
        "RESULT reconcile_messages={n} bulk_secs={:.2} periodic_secs={:.2} bulk_lookups_per_s={:.0} client_lookups_per_s={concurrent:.0} sequential_lookups_per_s={sequential:.0}",
        bulk.took.as_secs_f64(),
        periodic.took.as_secs_f64(),
        per_s(bulk)
    );
}
