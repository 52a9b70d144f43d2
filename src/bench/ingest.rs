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
//! 6. With `--stats-clients`, the ingest again while wrk asks for the first campaign's stats;
//!    with `--sse-subscribers`, again while clients hold its live stats stream open, each
//!    counting the events it receives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;

use super::load::{Wrk, WrkFigures};
/// Kept here too: other benches read it as `ingest::peak_rss_mb`.
pub use super::peak_rss_mb;
use super::workload::{generate, Reports, WorkloadSpec};
use crate::app::Application;
use crate::config::Settings;
use crate::domain::CampaignId;
use crate::engine::campaign::Counters;
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
    /// Clients holding the first campaign's live stats stream (SSE) open during one more
    /// ingest run, to show what they cost the ingest; 0 skips that run. Each takes two open
    /// files in this process (its socket and the service's end).
    #[arg(long, default_value_t = 0)]
    pub sse_subscribers: usize,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// What else asks the service about the first campaign while an ingest runs.
#[derive(Debug, Clone, Copy)]
enum Load {
    Quiet,
    /// wrk connections asking for its stats.
    Stats(usize),
    /// Clients holding its live stats stream open.
    Subscribers(usize),
}

/// One ingest run: its events, the time until all were durably applied, whether the counters
/// then equal the ground truth, and what the load saw meanwhile.
struct Ingest {
    events: usize,
    took: Duration,
    /// Until every committed message row was also folded into `campaign_recipients` (the
    /// rows a recipient listing or export reads).
    folded: Duration,
    /// CPU time of this process from the service's start until every event was committed.
    cpu: Duration,
    exact: bool,
    seen: Seen,
}

impl Ingest {
    fn rate(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64()
    }

    fn folded_rate(&self) -> f64 {
        self.events as f64 / self.folded.as_secs_f64()
    }

    /// CPU seconds this process (service, embedded broker and any load) spent per million
    /// events: steadier than the wall clock, which moves in whole checkpoints.
    fn cpu_per_million(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events as f64
    }
}

/// What the load saw during an ingest.
enum Seen {
    Nothing,
    Stats(WrkFigures),
    Live(live::LiveFigures),
}

/// Figures measured after the quiet run only: the replaced design, stats latency, activation.
struct Extras {
    baseline_events: usize,
    baseline: Duration,
    stats_http: Vec<Duration>,
    stats_actor: Vec<Duration>,
    count_query: Vec<Duration>,
    /// Loading the first campaign from its snapshot, and recounting it from its rows.
    activation: Vec<Duration>,
    recount: Vec<Duration>,
    recipients: i64,
}

struct Figures {
    quiet: Ingest,
    extras: Extras,
    /// The same ingest again while `--stats-clients` connections ask for stats.
    loaded: Option<Ingest>,
    /// The same ingest again while `--sse-subscribers` clients hold the live stats stream.
    subscribed: Option<Ingest>,
}

pub async fn run(settings: Settings, args: IngestArgs) -> anyhow::Result<()> {
    if args.sse_subscribers > 0 {
        live::ensure_open_files(args.sse_subscribers)?;
    }
    let (quiet, extras) = measure_once(settings.clone(), &args, Load::Quiet).await?;
    let mut figures = Figures {
        quiet,
        extras: extras.context("the quiet run measures the baseline and latencies")?,
        loaded: None,
        subscribed: None,
    };
    if args.stats_clients > 0 {
        eprintln!(
            "again, with {} connections asking for stats",
            args.stats_clients
        );
        let load = Load::Stats(args.stats_clients);
        figures.loaded = Some(measure_once(settings.clone(), &args, load).await?.0);
    }
    if args.sse_subscribers > 0 {
        eprintln!(
            "again, with {} clients holding the live stats stream",
            args.sse_subscribers
        );
        let load = Load::Subscribers(args.sse_subscribers);
        figures.subscribed = Some(measure_once(settings, &args, load).await?.0);
    }
    print_table(&args, &figures);
    Ok(())
}

/// One ingest run on its own scratch database; the quiet run measures the extras too.
async fn measure_once(
    mut settings: Settings,
    args: &IngestArgs,
    load: Load,
) -> anyhow::Result<(Ingest, Option<Extras>)> {
    let url = super::scratch_database(&mut settings, "campaignd_bench")?;
    let result = measure(settings, args, load).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    result
}

async fn measure(
    settings: Settings,
    args: &IngestArgs,
    load: Load,
) -> anyhow::Result<(Ingest, Option<Extras>)> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let (_, token) = store::api_keys::issue(&pool, tenant, "bench").await?;
    let spec = WorkloadSpec {
        dup_ratio: args.dup_ratio,
        shuffle_window: 10_000,
        reports: Reports::OneFinal,
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

    let (embedded, settings, ends) =
        on_the_topic(&settings, args.partitions, &workload.events).await?;
    let started = Instant::now();
    let cpu_at_start = super::process_cpu();
    let app = Application::build(settings.clone()).await?.spawn();
    let scope = crate::pipeline::offset_scope(&app.pipeline.broker, &settings);
    let first = campaigns[0].0;
    let running = start_load(&app, first, token.reveal(), args, load)?;
    let timeline = follow_commits(&pool, &scope, &ends, started).await?;
    let took = started.elapsed();
    let cpu = super::process_cpu().saturating_sub(cpu_at_start);
    eprintln!("committed over time: {}", progress(&timeline));
    while store::messages::unfolded(&pool).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let folded = started.elapsed();
    eprintln!("folded into campaign_recipients after {folded:.2?}");
    let seen = running.stop(&workload.expected[&first]).await?;
    let exact = counters_match(&app, &campaigns, &workload.expected).await;
    let ingest = Ingest {
        events: workload.events.len(),
        took,
        folded,
        cpu,
        exact,
        seen,
    };
    let extras = match load {
        Load::Quiet => Some(extras(&app, &pool, tenant, first, token.reveal(), args).await?),
        Load::Stats(_) | Load::Subscribers(_) => None,
    };
    app.stop().await;
    // after the final checkpoint every message row must hold exactly the truth too
    let rows_exact = rows_match(&pool, &campaigns, &workload.expected_status).await?;
    let ingest = Ingest {
        exact: ingest.exact && rows_exact,
        ..ingest
    };
    pool.close().await;
    drop(embedded);
    Ok((ingest, extras))
}

/// The bench owns the broker unless one is configured, so that the events can be on the topic
/// before the service starts. Produces `events`, checks that the broker kept them all, and
/// answers the broker, the settings that reach it and each partition's end offset.
pub(super) async fn on_the_topic(
    settings: &Settings,
    partitions: i32,
    events: &[crate::domain::Event],
) -> anyhow::Result<(
    Option<crate::kafka::EmbeddedBroker>,
    Settings,
    HashMap<i32, i64>,
)> {
    let k = &settings.kafka;
    let embedded = match &k.brokers {
        Some(_) => None,
        None => Some(crate::kafka::EmbeddedBroker::start(&k.topic, partitions)?),
    };
    let mut settings = settings.clone();
    settings.kafka.partitions = partitions;
    if let Some(broker) = &embedded {
        settings.kafka.brokers = Some(broker.bootstrap().to_owned());
    }
    let brokers = crate::kafka::Brokers::configured(
        settings.kafka.brokers.as_deref().unwrap_or_default(),
        &settings.kafka,
    );
    let producer = crate::kafka::producer::EventProducer::new(&brokers, &settings.kafka.topic)?;
    eprintln!("producing {} events", events.len());
    let produced = Instant::now();
    for chunk in events.chunks(50_000) {
        producer.send(chunk).await.context("producing events")?;
    }
    let ends = crate::kafka::end_offsets(&brokers, &settings.kafka.topic)?;
    let dropped = crate::kafka::dropped_by_retention(&brokers, &settings.kafka.topic)?;
    anyhow::ensure!(
        dropped == 0,
        "the broker dropped {dropped} events to retention before they were read; use more --partitions"
    );
    eprintln!(
        "produced in {:.1?}; starting the service",
        produced.elapsed()
    );
    Ok((embedded, settings, ends))
}

/// Whether every recipient's row holds the status the workload's truth says; prints the first
/// few that do not.
async fn rows_match(
    pool: &sqlx::PgPool,
    campaigns: &[(CampaignId, Vec<crate::domain::RecipientId>)],
    truth: &HashMap<crate::domain::RecipientId, crate::domain::MessageStatus>,
) -> anyhow::Result<bool> {
    let ids: Vec<i64> = campaigns.iter().map(|(c, _)| c.get()).collect();
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, status, sent_at IS NOT NULL FROM campaign_recipients
         WHERE campaign_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut wrong = 0;
    for (id, status, was_sent) in &rows {
        let seen = crate::domain::MessageStatus::from_db(status, *was_sent)?;
        let expected = crate::domain::RecipientId::new(*id)
            .ok()
            .and_then(|r| truth.get(&r));
        if expected != Some(&seen) {
            wrong += 1;
            if wrong <= 5 {
                eprintln!("recipient {id}: row {seen:?}, truth {expected:?}");
            }
        }
    }
    if rows.len() != truth.len() {
        eprintln!(
            "{} rows for {} recipients of the truth",
            rows.len(),
            truth.len()
        );
        return Ok(false);
    }
    Ok(wrong == 0)
}

/// A load running against a campaign during an ingest.
enum Running {
    Nothing,
    Wrk(Wrk),
    Subscribers(live::Subscribers),
}

impl Running {
    /// Stops the load and reads what it saw; subscribers are first given the time to receive
    /// the campaign's final figures, `expected`.
    async fn stop(self, expected: &Counters) -> anyhow::Result<Seen> {
        Ok(match self {
            Running::Nothing => Seen::Nothing,
            Running::Wrk(wrk) => {
                Seen::Stats(tokio::task::spawn_blocking(move || wrk.stop()).await??)
            }
            Running::Subscribers(subscribers) => Seen::Live(subscribers.stop(expected).await?),
        })
    }
}

fn start_load(
    app: &crate::app::RunningApplication,
    campaign: CampaignId,
    token: &str,
    args: &IngestArgs,
    load: Load,
) -> anyhow::Result<Running> {
    let url = app.url(&format!("/api/v1/campaigns/{campaign}/stats"));
    Ok(match load {
        Load::Quiet => Running::Nothing,
        Load::Stats(clients) => Running::Wrk(start_wrk(&url, token, clients, args.stats_rate)?),
        Load::Subscribers(clients) => Running::Subscribers(live::Subscribers::start(
            format!("{url}/stream"),
            token,
            clients,
        )?),
    })
}

/// wrk asking for `url` on `clients` keep-alive connections, `rate` requests a second in all
/// (each connection pausing between its requests), or as fast as answered for 0.
fn start_wrk(url: &str, token: &str, clients: usize, rate: usize) -> anyhow::Result<Wrk> {
    let auth = format!("Authorization: Bearer {token}");
    let pace = match rate {
        0 => None,
        rate => {
            let script =
                std::env::temp_dir().join(format!("campaignd-paced-{}.lua", uuid::Uuid::new_v4()));
            std::fs::write(&script, super::load::PACED_SCRIPT)?;
            let pause_ms = (clients * 1000 / rate).max(1);
            Some((script, vec![pause_ms.to_string()]))
        }
    };
    let script = pace
        .as_ref()
        .map(|(path, args)| (path.as_path(), args.as_slice()));
    Wrk::start(url, clients, 600, &[auth], script)
}

/// The replaced design's ingest, then stats latency and activation on `campaign`.
async fn extras(
    app: &crate::app::RunningApplication,
    pool: &sqlx::PgPool,
    tenant: crate::domain::TenantId,
    campaign: CampaignId,
    token: &str,
    args: &IngestArgs,
) -> anyhow::Result<Extras> {
    let (baseline_events, baseline) = baseline(pool, tenant, args).await?;
    let stats_http = time_stats_http(
        &app.url(&format!("/api/v1/campaigns/{campaign}/stats")),
        token,
        args.stats_queries,
    )
    .await?;
    let stats_actor = time_stats_actor(app, campaign, args.stats_queries).await;
    let count_query = time_count_query(pool, campaign, (args.stats_queries / 20).max(20)).await?;
    let (activation, recount, recipients) = time_activation(pool, campaign, 20).await?;
    Ok(Extras {
        baseline_events,
        baseline,
        stats_http,
        stats_actor,
        count_query,
        activation,
        recount,
        recipients,
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
    let member = store::cluster::MemberId::generate();
    for _ in 0..n {
        let started = Instant::now();
        store::campaigns::load_for_activation(pool, campaign, member).await?;
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

/// When each tenth of the events was committed: where an ingest spent its time.
fn progress(timeline: &[(Duration, i64)]) -> String {
    let total = timeline.last().map_or(0, |(_, n)| *n) as f64;
    (1..=10)
        .filter_map(|tenth| {
            let share = f64::from(tenth) / 10.0;
            let (at, _) = timeline.iter().find(|(_, n)| *n as f64 >= share * total)?;
            Some(format!("{}0 % {:.1}s", tenth, at.as_secs_f64()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits like [`wait_until_committed`], recording the events committed over time.
pub(super) async fn follow_commits(
    pool: &sqlx::PgPool,
    scope: &OffsetScope,
    ends: &HashMap<i32, i64>,
    started: Instant,
) -> anyhow::Result<Vec<(Duration, i64)>> {
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let mut timeline = Vec::new();
    loop {
        let stored = store::checkpoints::load_offsets(pool, scope, &partitions).await?;
        timeline.push((started.elapsed(), stored.values().sum()));
        if ends
            .iter()
            .all(|(p, end)| *end == 0 || stored.get(p) == Some(end))
        {
            return Ok(timeline);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn counters_match(
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
        reports: Reports::OneFinal,
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

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

fn print_table(args: &IngestArgs, f: &Figures) {
    let (q, e) = (&f.quiet, &f.extras);
    let rate = q.rate();
    let baseline_rate = e.baseline_events as f64 / e.baseline.as_secs_f64();
    let rss = peak_rss_mb();
    println!();
    println!(
        "campaignd bench ingest — {} events, {} campaigns, dup ratio {}",
        q.events, args.campaigns, args.dup_ratio
    );
    println!("| measure | campaignd | replaced design | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| durable ingest (committed with the message log), events/s | {rate:.0} | {baseline_rate:.0} | {:.1}x |",
        rate / baseline_rate
    );
    println!(
        "| events applied | {} in {:.2?} | {} in {:.2?} | |",
        q.events, q.took, e.baseline_events, e.baseline
    );
    println!(
        "| ... and every message row folded into campaign_recipients, events/s | {:.0} ({:.2?}) | | {:.1}x |",
        q.folded_rate(),
        q.folded,
        q.folded_rate() / baseline_rate
    );
    println!(
        "| stats latency p50 / p99, ms | {:.3} / {:.3} (HTTP) | {:.3} / {:.3} (COUNT query) | |",
        percentile(&e.stats_http, 0.5),
        percentile(&e.stats_http, 0.99),
        percentile(&e.count_query, 0.5),
        percentile(&e.count_query, 0.99)
    );
    println!(
        "| stats from actor memory p50 / p99, ms | {:.3} / {:.3} | | |",
        percentile(&e.stats_actor, 0.5),
        percentile(&e.stats_actor, 0.99)
    );
    println!(
        "| campaign activation ({} recipients) p50 / p99, ms | {:.3} / {:.3} (snapshot) | {:.3} / {:.3} (recount of rows) | {:.0}x |",
        e.recipients,
        percentile(&e.activation, 0.5),
        percentile(&e.activation, 0.99),
        percentile(&e.recount, 0.5),
        percentile(&e.recount, 0.99),
        percentile(&e.recount, 0.5) / percentile(&e.activation, 0.5).max(1e-9)
    );
    if let Some(
        l @ Ingest {
            seen: Seen::Stats(stats),
            ..
        },
    ) = &f.loaded
    {
        println!(
            "| durable ingest while {} connections ask for stats, events/s | {:.0} ({:+.1} % vs quiet) | | |",
            args.stats_clients,
            l.rate(),
            (l.rate() / rate - 1.0) * 100.0
        );
        println!(
            "| stats requests during that ingest ({}): requests/s, p50 / p99 ms | {:.0}, {:.3} / {:.3} | | |",
            match args.stats_rate {
                0 => "as fast as answered".to_owned(),
                rate => format!("paced at {rate}/s"),
            },
            stats.requests_per_s,
            stats.p50_ms,
            stats.p99_ms
        );
        println!(
            "| stats answers other than 200 / socket errors | {} / {} | | |",
            stats.non_2xx, stats.errors
        );
        println!(
            "| counters and every message row equal the ground truth (loaded run) | {} | | |",
            yes_no(l.exact)
        );
    }
    if let Some(
        s @ Ingest {
            seen: Seen::Live(live),
            ..
        },
    ) = &f.subscribed
    {
        print_subscribed_rows(q, s, live);
    }
    println!(
        "| counters and every message row equal the ground truth | {} | | |",
        yes_no(q.exact)
    );
    println!("| peak RSS (process incl. embedded broker), MiB | {rss:.0} | | |");
    println!(
        "RESULT events_per_s={rate:.0} folded_events_per_s={:.0} baseline_events_per_s={baseline_rate:.0} ratio={:.1} stats_p99_ms={:.3} count_query_p99_ms={:.3} activation_p99_ms={:.3} recount_p99_ms={:.3} peak_rss_mb={rss:.0} exact={}",
        q.folded_rate(),
        rate / baseline_rate,
        percentile(&e.stats_http, 0.99),
        percentile(&e.count_query, 0.99),
        percentile(&e.activation, 0.99),
        percentile(&e.recount, 0.99),
        q.exact
    );
    if let Some(
        l @ Ingest {
            seen: Seen::Stats(stats),
            ..
        },
    ) = &f.loaded
    {
        println!(
            "RESULT loaded_events_per_s={:.0} concurrent_stats_per_s={:.0} concurrent_stats_p50_ms={:.3} concurrent_stats_p99_ms={:.3} loaded_exact={}",
            l.rate(),
            stats.requests_per_s,
            stats.p50_ms,
            stats.p99_ms,
            l.exact
        );
    }
    if let Some(
        s @ Ingest {
            seen: Seen::Live(live),
            ..
        },
    ) = &f.subscribed
    {
        println!(
            "RESULT sse_subscribers={} quiet_events_per_s={rate:.0} sse_events_per_s={:.0} quiet_cpu_s_per_m={:.2} sse_cpu_s_per_m={:.2} sse_cpu_overhead_pct={:.1} sse_events_received={} sse_fewest_per_subscriber={} sse_all_received={} sse_final_figures={} sse_exact={}",
            live.subscribers,
            s.rate(),
            q.cpu_per_million(),
            s.cpu_per_million(),
            (s.cpu_per_million() / q.cpu_per_million() - 1.0) * 100.0,
            live.events,
            live.fewest,
            live.fewest > 0,
            live.final_figures,
            s.exact
        );
    }
}

/// The rows of the run with `--sse-subscribers` clients on the live stats stream.
fn print_subscribed_rows(quiet: &Ingest, s: &Ingest, live: &live::LiveFigures) {
    println!(
        "| durable ingest while {} clients hold the live stats stream (SSE), events/s | {:.0} ({:+.1} % vs quiet) | | |",
        live.subscribers,
        s.rate(),
        (s.rate() / quiet.rate() - 1.0) * 100.0
    );
    println!(
        "| CPU seconds per million events (process: service, broker, clients): quiet / with {} streams | {:.2} / {:.2} ({:+.1} %) | | |",
        live.subscribers,
        quiet.cpu_per_million(),
        s.cpu_per_million(),
        (s.cpu_per_million() / quiet.cpu_per_million() - 1.0) * 100.0
    );
    println!(
        "| live stats events received: in all / fewest by one subscriber | {} / {} | | |",
        live.events, live.fewest
    );
    println!(
        "| every subscriber received an event / all streams open after | {} / {:.2?} | | |",
        yes_no(live.fewest > 0),
        live.connected_in
    );
    println!(
        "| subscribers whose last event showed the final figures | {} of {} | | |",
        live.final_figures, live.subscribers
    );
    println!(
        "| counters and every message row equal the ground truth (subscribed run) | {} | | |",
        yes_no(s.exact)
    );
}

/// Clients of the live stats stream (`GET …/stats/stream`, Server-Sent Events) for the
/// `--sse-subscribers` run.
mod live {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use futures::{StreamExt, TryStreamExt};
    use tokio::sync::watch;

    use crate::engine::campaign::Counters;

    /// Streams opened at once: the service listens with std's backlog of 128, and a burst of
    /// a thousand connections past it would see SYNs dropped and retried a second later.
    const OPENING_AT_ONCE: usize = 64;
    /// How long subscribers get, once the ingest is durable, to receive the final figures
    /// (the stream sends at most one event per 250 ms).
    const FINAL_FIGURES_WITHIN: Duration = Duration::from_secs(5);

    /// Fails with what to do when this process may not open files enough for `subscribers`:
    /// each takes two here (its socket and the service's end), and the service, the broker and
    /// the pools need some more. The soft limit is not raised here: no crate for it is a
    /// dependency, and `ulimit -n` does it.
    pub fn ensure_open_files(subscribers: usize) -> anyhow::Result<()> {
        let needed = subscribers * 2 + 1024;
        let soft = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
                line.split_whitespace().nth(3)?.parse::<usize>().ok()
            });
        match soft {
            Some(soft) if soft < needed => anyhow::bail!(
                "--sse-subscribers {subscribers} needs about {needed} open files and this process may open {soft}: run `ulimit -n {}` in this shell first",
                needed.max(4096)
            ),
            // enough, unlimited, or not Linux
            _ => Ok(()),
        }
    }

    /// What the subscribers saw.
    #[derive(Debug, Clone, Copy)]
    pub struct LiveFigures {
        pub subscribers: usize,
        /// From the service's start until every stream was open.
        pub connected_in: Duration,
        pub events: u64,
        /// Events received by the subscriber that received the fewest.
        pub fewest: u64,
        /// Subscribers whose last event showed the campaign's final figures.
        pub final_figures: usize,
    }

    /// The figures of a stats event that are compared with the ground truth.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
    struct Figures {
        sent: i64,
        delivered: i64,
        failed: i64,
        pending: i64,
    }

    impl Figures {
        fn of(c: &Counters) -> Self {
            Self {
                sent: c.sent(),
                delivered: c.delivered,
                failed: c.failed(),
                pending: c.pending,
            }
        }
    }

    /// What one subscriber has received so far.
    #[derive(Default)]
    struct Received {
        events: AtomicU64,
        last: Mutex<Option<Figures>>,
    }

    impl Received {
        /// Takes one line of the stream; every event has exactly one `data:` line.
        fn line(&self, line: &[u8]) {
            let Some(data) = line.strip_prefix(b"data:") else {
                return;
            };
            self.events.fetch_add(1, Ordering::Relaxed);
            let figures = serde_json::from_slice(data.trim_ascii()).ok();
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = figures;
        }

        fn last(&self) -> Option<Figures> {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// Subscribers holding one stream each, on a thread and runtime of their own: their
    /// reading competes with the service for the cores, not for the thread the campaign
    /// actors run on.
    pub struct Subscribers {
        received: Arc<Vec<Received>>,
        stop: watch::Sender<bool>,
        thread: std::thread::JoinHandle<anyhow::Result<Duration>>,
    }

    impl Subscribers {
        /// Opens `n` streams of `url` with the bearer `token` and reads them until stopped.
        pub fn start(url: String, token: &str, n: usize) -> anyhow::Result<Self> {
            let received: Arc<Vec<Received>> =
                Arc::new((0..n).map(|_| Received::default()).collect());
            let (stop, stopped) = watch::channel(false);
            let (token, counting) = (token.to_owned(), received.clone());
            let thread = std::thread::Builder::new()
                .name("sse-subscribers".into())
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(subscribe(&url, &token, &counting, stopped))
                })
                .context("starting the subscribers' thread")?;
            Ok(Self {
                received,
                stop,
                thread,
            })
        }

        /// Waits until every subscriber's last event shows `expected` (at most
        /// [`FINAL_FIGURES_WITHIN`]), then closes the streams and sums up what they saw.
        pub async fn stop(self, expected: &Counters) -> anyhow::Result<LiveFigures> {
            let expected = Figures::of(expected);
            let deadline = Instant::now() + FINAL_FIGURES_WITHIN;
            while Instant::now() < deadline
                && !self.thread.is_finished()
                && self.showing(expected) < self.received.len()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let final_figures = self.showing(expected);
            let Self {
                received,
                stop,
                thread,
            } = self;
            let _ = stop.send(true);
            let connected_in = tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the subscribers' thread panicked"))??;
            let events = received.iter().map(|r| r.events.load(Ordering::Relaxed));
            Ok(LiveFigures {
                subscribers: received.len(),
                connected_in,
                events: events.clone().sum(),
                fewest: events.min().unwrap_or(0),
                final_figures,
            })
        }

        /// Subscribers whose last event shows `figures`.
        fn showing(&self, figures: Figures) -> usize {
            self.received
                .iter()
                .filter(|r| r.last() == Some(figures))
                .count()
        }
    }

    /// Opens a stream per subscriber, a few at a time, then reads them all until `stopped`;
    /// returns how long opening took.
    async fn subscribe(
        url: &str,
        token: &str,
        received: &[Received],
        mut stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<Duration> {
        // one client for all: without reqwest's http2 feature every stream in flight has an
        // HTTP/1.1 connection of its own, and the pool does not cap connections in use
        let http = reqwest::Client::new();
        let started = Instant::now();
        let streams: Vec<reqwest::Response> = futures::stream::iter(received)
            .map(|_| open(&http, url, token))
            .buffer_unordered(OPENING_AT_ONCE)
            .try_collect()
            .await?;
        let connected_in = started.elapsed();
        let reading = streams.into_iter().zip(received).map(|(s, r)| read(s, r));
        tokio::select! {
            read = futures::future::try_join_all(reading) => { read?; }
            _ = stopped.wait_for(|stop| *stop) => {}
        }
        Ok(connected_in)
    }

    async fn open(
        http: &reqwest::Client,
        url: &str,
        token: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .context("opening a live stats stream")?;
        anyhow::ensure!(
            response.status().is_success(),
            "the live stats stream answered {}",
            response.status()
        );
        Ok(response)
    }

    /// Reads one stream line by line until it ends. (reqwest's `stream` feature is not
    /// enabled; `chunk` reads the body as it arrives all the same.)
    async fn read(mut stream: reqwest::Response, received: &Received) -> anyhow::Result<()> {
        let mut partial = Vec::new();
        while let Some(chunk) = stream
            .chunk()
            .await
            .context("reading a live stats stream")?
        {
            partial.extend_from_slice(&chunk);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                received.line(&partial[..end]);
                partial.drain(..=end);
            }
        }
        Ok(())
    }
}
