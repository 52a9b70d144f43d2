//! `campaignd bench ingest`: durable ingest throughput of the event core against the replaced
//! design, measured in the same run on the same machine.
//!
//! 1. A fresh database and broker; C campaigns whose recipients are claimed.
//! 2. N events (`sent` + `dlr` pairs, duplicates, shuffled within windows) are produced first.
//! 3. The pipeline starts; the clock runs until a committed checkpoint covers the end of every
//!    partition. Counters are then checked against the ground truth.
//! 4. Baseline: a sample of the same kind of events applied as the replaced system did (one
//!    committed UPDATE per event on 4 connections), on separate campaigns.
//! 5. Stats latency: from memory over HTTP, versus the COUNT query on the same data.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;

use super::load::{Wrk, WrkFigures};
use super::workload::{generate, WorkloadSpec};
use crate::app::Application;
use crate::config::Settings;
use crate::domain::CampaignId;
use crate::store::checkpoints::OffsetScope;
use crate::store::{self, fixtures::claimed_campaign};

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Events to ingest (sent + dlr pairs; duplicates come on top).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Campaigns the messages are spread over.
    #[arg(long, default_value_t = 10)]
    pub campaigns: usize,
    /// Extra duplicate events, as a share of the stream.
    #[arg(long, default_value_t = 0.1)]
    pub dup_ratio: f64,
    /// Events applied the replaced way for the baseline.
    #[arg(long, default_value_t = 20_000)]
    pub baseline_events: usize,
    /// Stats requests per measurement.
    #[arg(long, default_value_t = 2_000)]
    pub stats_queries: usize,
    /// Partitions of the bench topic. The embedded broker keeps only about 5 MiB per
    /// partition, so 1M events need 32 (8 silently lose about 30 % of them).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Keep-alive connections (wrk) asking for a campaign's stats during a second ingest run,
    /// to show stats under load and what that load costs the ingest; 0 skips that run.
    #[arg(long, default_value_t = 64)]
    pub stats_clients: usize,
    /// Stats requests per second those connections aim at in all (each connection pauses
    /// between its requests); 0 asks as fast as answers come.
    #[arg(long, default_value_t = 20_000)]
    pub stats_rate: usize,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

struct Figures {
    events: usize,
    ingest: Duration,
    baseline_events: usize,
    baseline: Duration,
    stats_http: Vec<Duration>,
    stats_actor: Vec<Duration>,
    count_query: Vec<Duration>,
    /// Loading the first campaign from its snapshot, and recounting it from its rows.
    activation: Vec<Duration>,
    recount: Vec<Duration>,
    recipients: i64,
    exact: bool,
    /// The same ingest again while `--stats-clients` connections ask for stats.
    loaded: Option<Loaded>,
}

/// An ingest run under concurrent stats requests.
struct Loaded {
    events: usize,
    ingest: Duration,
    stats: WrkFigures,
    exact: bool,
}

pub async fn run(settings: Settings, args: IngestArgs) -> anyhow::Result<()> {
    let mut figures = measure_once(settings.clone(), &args, 0).await?;
    if args.stats_clients > 0 {
        eprintln!(
            "again, with {} connections asking for stats",
            args.stats_clients
        );
        let loaded = measure_once(settings, &args, args.stats_clients).await?;
        figures.loaded = Some(Loaded {
            events: loaded.events,
            ingest: loaded.ingest,
            stats: loaded.loaded.map(|l| l.stats).unwrap_or_default(),
            exact: loaded.exact,
        });
    }
    print_table(&args, &figures);
    Ok(())
}

/// One ingest run on its own scratch database.
async fn measure_once(
    mut settings: Settings,
    args: &IngestArgs,
    stats_clients: usize,
) -> anyhow::Result<Figures> {
    let url = super::scratch_database(&mut settings, "campaignd_bench")?;
    let result = measure(settings, args, stats_clients).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    result
}

async fn measure(
    settings: Settings,
    args: &IngestArgs,
    stats_clients: usize,
) -> anyhow::Result<Figures> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let (_, token) = store::api_keys::issue(&pool, tenant, "bench").await?;
    let spec = WorkloadSpec {
        dup_ratio: args.dup_ratio,
        shuffle_window: 10_000,
        one_report: true,
        ..WorkloadSpec::default()
    };
    let per_campaign = (args.events / 2 / args.campaigns.max(1)).max(1) as i64;
    eprintln!(
        "setting up {} campaigns x {per_campaign} recipients",
        args.campaigns
    );
    let mut campaigns = Vec::new();
    for _ in 0..args.campaigns.max(1) {
        campaigns.push(claimed_campaign(&pool, tenant, per_campaign).await?);
    }
    let workload = generate(&campaigns, spec);

    // the bench owns the broker unless one is configured, so the events can be on the topic
    // before the service starts
    let k = &settings.kafka;
    let embedded = match &k.brokers {
        Some(_) => None,
        None => Some(crate::kafka::EmbeddedBroker::start(
            &k.topic,
            args.partitions,
        )?),
    };
    let mut settings = settings.clone();
    settings.kafka.partitions = args.partitions;
    if let Some(broker) = &embedded {
        settings.kafka.brokers = Some(broker.bootstrap().to_owned());
    }
    let bootstrap = settings.kafka.brokers.clone().unwrap_or_default();
    let producer = crate::kafka::producer::EventProducer::new(&bootstrap, &settings.kafka.topic)?;
    eprintln!("producing {} events", workload.events.len());
    let produced = Instant::now();
    for chunk in workload.events.chunks(50_000) {
        producer.send(chunk).await.context("producing events")?;
    }
    let ends = crate::kafka::end_offsets(&bootstrap, &settings.kafka.topic)?;
    let dropped = crate::kafka::dropped_by_retention(&bootstrap, &settings.kafka.topic)?;
    anyhow::ensure!(
        dropped == 0,
        "the broker dropped {dropped} events to retention before they were read; use more --partitions"
    );
    eprintln!(
        "produced in {:.1?}; starting the service",
        produced.elapsed()
    );
    let started = Instant::now();
    let app = Application::build(settings.clone()).await?.spawn();
    let scope = OffsetScope {
        cluster_id: app.pipeline.broker.cluster_id.clone(),
        consumer_group: settings.kafka.consumer_group.clone(),
        topic: settings.kafka.topic.clone(),
    };
    let stats_load = match stats_clients {
        0 => None,
        clients => {
            let url = app.url(&format!("/api/v1/campaigns/{}/stats", campaigns[0].0));
            let auth = format!("Authorization: Bearer {}", token.reveal());
            let pace = match args.stats_rate {
                0 => None,
                rate => {
                    let script = std::env::temp_dir()
                        .join(format!("campaignd-paced-{}.lua", uuid::Uuid::new_v4()));
                    std::fs::write(&script, super::load::PACED_SCRIPT)?;
                    let pause_ms = (clients * 1000 / rate).max(1);
                    Some((script, vec![pause_ms.to_string()]))
                }
            };
            let script = pace
                .as_ref()
                .map(|(path, args)| (path.as_path(), args.as_slice()));
            Some(Wrk::start(&url, clients, 600, &[auth], script)?)
        }
    };
    wait_until_committed(&pool, &scope, &ends).await?;
    let ingest = started.elapsed();
    let stats = match stats_load {
        Some(wrk) => Some(tokio::task::spawn_blocking(move || wrk.stop()).await??),
        None => None,
    };
    let exact = counters_match(&app, &campaigns, &workload.expected).await;

    let (baseline_events, baseline) = baseline(&pool, tenant, args).await?;
    let first = campaigns[0].0;
    let stats_http = time_stats_http(
        &app.url(&format!("/api/v1/campaigns/{first}/stats")),
        token.reveal(),
        args.stats_queries,
    )
    .await?;
    let stats_actor = time_stats_actor(&app, first, args.stats_queries).await;
    let count_query = time_count_query(&pool, first, (args.stats_queries / 20).max(20)).await?;
    let (activation, recount, recipients) = time_activation(&pool, first, 20).await?;
    app.stop().await;
    pool.close().await;
    drop(embedded);
    Ok(Figures {
        events: workload.events.len(),
        ingest,
        baseline_events,
        baseline,
        stats_http,
        stats_actor,
        count_query,
        activation,
        recount,
        recipients,
        exact,
        loaded: stats.map(|stats| Loaded {
            events: workload.events.len(),
            ingest,
            stats,
            exact,
        }),
    })
}

/// Activation from the snapshot versus recounting the campaign from its rows (what
/// activation did before snapshots were read), `n` times each; and the campaign's size.
async fn time_activation(
    pool: &sqlx::PgPool,
    campaign: CampaignId,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, i64)> {
    let (mut activation, mut recount) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut recipients = 0;
    for _ in 0..n {
        let started = Instant::now();
        store::campaigns::load_for_activation(pool, campaign).await?;
        activation.push(started.elapsed());
        let started = Instant::now();
        let counted = store::campaigns::recount(pool, Some(campaign)).await?;
        recount.push(started.elapsed());
        recipients = counted.first().map_or(0, |r| r.rows.counters.total());
    }
    Ok((activation, recount, recipients))
}

/// Waits until a committed checkpoint covers the end of every partition.
pub(super) async fn wait_until_committed(
    pool: &sqlx::PgPool,
    scope: &OffsetScope,
    ends: &HashMap<i32, i64>,
) -> anyhow::Result<()> {
    let partitions: Vec<i32> = ends.keys().copied().collect();
    loop {
        let stored = store::checkpoints::load_offsets(pool, scope, &partitions).await?;
        if ends
            .iter()
            .all(|(p, end)| *end == 0 || stored.get(p) == Some(end))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counters_match(
    app: &crate::app::RunningApplication,
    campaigns: &[(CampaignId, Vec<crate::domain::RecipientId>)],
    expected: &HashMap<CampaignId, crate::engine::campaign::Counters>,
) -> bool {
    for (campaign, _) in campaigns {
        let Some((_, stats)) = app.pipeline.handles.registry.stats(*campaign).await else {
            return false;
        };
        let c = &expected[campaign];
        if (stats.sent, stats.delivered, stats.failed, stats.pending)
            != (c.sent(), c.delivered, c.failed(), c.pending)
        {
            eprintln!("campaign {campaign}: got {stats:?}, expected {c:?}");
            return false;
        }
    }
    true
}

/// The replaced design on its own campaigns: one committed UPDATE per event, 4 connections.
async fn baseline(
    pool: &sqlx::PgPool,
    tenant: crate::domain::TenantId,
    args: &IngestArgs,
) -> anyhow::Result<(usize, Duration)> {
    let n = (args.baseline_events / 2).max(1) as i64;
    let campaign = claimed_campaign(pool, tenant, n).await?;
    // in order: the replaced design has no parking, so each report must follow its send
    let spec = WorkloadSpec {
        dup_ratio: args.dup_ratio,
        shuffle_window: 1,
        one_report: true,
        seed: 11,
        ..WorkloadSpec::default()
    };
    let events = generate(&[campaign], spec).events;
    let started = Instant::now();
    let workers = 4;
    let chunk = events.len().div_ceil(workers);
    let runs = events.chunks(chunk).map(|part| async move {
        for event in part {
            store::baseline::apply_event(pool, event).await?;
        }
        Ok::<_, store::StoreError>(())
    });
    futures::future::try_join_all(runs).await?;
    Ok((events.len(), started.elapsed()))
}

async fn time_stats_http(url: &str, token: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http.get(url).bearer_auth(token).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "stats answered {}",
            response.status()
        );
        response.bytes().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

async fn time_stats_actor(
    app: &crate::app::RunningApplication,
    campaign: CampaignId,
    n: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let _ = app.pipeline.handles.registry.stats(campaign).await;
        times.push(started.elapsed());
    }
    times
}

async fn time_count_query(
    pool: &sqlx::PgPool,
    campaign: CampaignId,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        store::baseline::count_by_status(pool, campaign).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

fn percentile(times: &[Duration], p: f64) -> f64 {
    let mut sorted: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0.0)
}

/// Peak resident memory of this process (which hosts the embedded broker too), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn print_table(args: &IngestArgs, f: &Figures) {
    let rate = f.events as f64 / f.ingest.as_secs_f64();
    let baseline_rate = f.baseline_events as f64 / f.baseline.as_secs_f64();
    let rss = peak_rss_mb();
    println!();
    println!(
        "campaignd bench ingest — {} events, {} campaigns, dup ratio {}",
        f.events, args.campaigns, args.dup_ratio
    );
    println!("| measure | campaignd | replaced design | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| durable ingest, events/s | {rate:.0} | {baseline_rate:.0} | {:.1}x |",
        rate / baseline_rate
    );
    println!(
        "| events applied | {} in {:.2?} | {} in {:.2?} | |",
        f.events, f.ingest, f.baseline_events, f.baseline
    );
    println!(
        "| stats latency p50 / p99, ms | {:.3} / {:.3} (HTTP) | {:.3} / {:.3} (COUNT query) | |",
        percentile(&f.stats_http, 0.5),
        percentile(&f.stats_http, 0.99),
        percentile(&f.count_query, 0.5),
        percentile(&f.count_query, 0.99)
    );
    println!(
        "| stats from actor memory p50 / p99, ms | {:.3} / {:.3} | | |",
        percentile(&f.stats_actor, 0.5),
        percentile(&f.stats_actor, 0.99)
    );
    println!(
        "| campaign activation ({} recipients) p50 / p99, ms | {:.3} / {:.3} (snapshot) | {:.3} / {:.3} (recount of rows) | {:.0}x |",
        f.recipients,
        percentile(&f.activation, 0.5),
        percentile(&f.activation, 0.99),
        percentile(&f.recount, 0.5),
        percentile(&f.recount, 0.99),
        percentile(&f.recount, 0.5) / percentile(&f.activation, 0.5).max(1e-9)
    );
    if let Some(l) = &f.loaded {
        let loaded_rate = l.events as f64 / l.ingest.as_secs_f64();
        println!(
            "| durable ingest while {} connections ask for stats, events/s | {loaded_rate:.0} ({:+.1} % vs quiet) | | |",
            args.stats_clients,
            (loaded_rate / rate - 1.0) * 100.0
        );
        println!(
            "| stats requests during that ingest ({}): requests/s, p50 / p99 ms | {:.0}, {:.3} / {:.3} | | |",
            match args.stats_rate {
                0 => "as fast as answered".to_owned(),
                rate => format!("paced at {rate}/s"),
            },
            l.stats.requests_per_s,
            l.stats.p50_ms,
            l.stats.p99_ms
        );
        println!(
            "| stats answers other than 200 / socket errors | {} / {} | | |",
            l.stats.non_2xx, l.stats.errors
        );
        println!(
            "| counters equal the ground truth (loaded run) | {} | | |",
            if l.exact { "yes" } else { "NO" }
        );
    }
    println!(
        "| counters equal the ground truth | {} | | |",
        if f.exact { "yes" } else { "NO" }
    );
    println!("| peak RSS (process incl. embedded broker), MiB | {rss:.0} | | |");
    println!(
        "RESULT events_per_s={rate:.0} baseline_events_per_s={baseline_rate:.0} ratio={:.1} stats_p99_ms={:.3} count_query_p99_ms={:.3} activation_p99_ms={:.3} recount_p99_ms={:.3} peak_rss_mb={rss:.0} exact={}",
        rate / baseline_rate,
        percentile(&f.stats_http, 0.99),
        percentile(&f.count_query, 0.99),
        percentile(&f.activation, 0.99),
        percentile(&f.recount, 0.99),
        f.exact
    );
    if let Some(l) = &f.loaded {
        println!(
            "RESULT loaded_events_per_s={:.0} concurrent_stats_per_s={:.0} concurrent_stats_p50_ms={:.3} concurrent_stats_p99_ms={:.3} loaded_exact={}",
            l.events as f64 / l.ingest.as_secs_f64(),
            l.stats.requests_per_s,
            l.stats.p50_ms,
            l.stats.p99_ms,
            l.exact
        );
    }
}
