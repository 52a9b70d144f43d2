//! `campaignd bench webhook`: delivery reports the way a provider posts them — one signed
//! report per request from N keep-alive connections (wrk) — until every report is durably
//! applied (its offset committed in Postgres with the rows), against the replaced handler
//! measured in the same run over the same HTTP stack: verify the signature, one committed
//! `UPDATE … WHERE provider_message_id = $1`, answer 202.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::ingest::wait_until_committed;
use super::load::{self, Wrk, WrkFigures};
use crate::app::Application;
use crate::config::Settings;
use crate::domain::{CampaignId, Event, MessageId, RecipientId};
use crate::mitto::reports::parse_reports;
use crate::mitto::signature::{self, Presented, Verifier, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::store::{self, fixtures::claimed_campaign};

const SECRET: &str = "bench-webhook-secret";

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Reports to post to campaignd (one per request).
    #[arg(long, default_value_t = 200_000)]
    pub reports: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Reports posted to the replaced handler (at most `--reports`: it updates the same rows).
    #[arg(long, default_value_t = 30_000)]
    pub baseline_reports: usize,
    /// Partitions of the bench topic (the embedded broker keeps about 5 MiB per partition).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

struct Figures {
    reports: usize,
    /// From the first request until every report's offset is committed.
    durable: Duration,
    load: WrkFigures,
    answers: BTreeMap<u16, u64>,
    baseline_reports: usize,
    baseline_time: Duration,
    baseline: WrkFigures,
    baseline_answers: BTreeMap<u16, u64>,
    applied: i64,
}

pub async fn run(mut settings: Settings, args: WebhookArgs) -> anyhow::Result<()> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_webhook")?;
    settings.webhook.secrets = vec![SecretString::from(SECRET)];
    let result = measure(settings, &args).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    print_table(&args, &result?);
    Ok(())
}

async fn measure(mut settings: Settings, args: &WebhookArgs) -> anyhow::Result<Figures> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let n = args.reports.max(1);
    anyhow::ensure!(
        args.baseline_reports <= n,
        "--baseline-reports must not exceed --reports"
    );
    eprintln!("setting up a campaign of {n} messages awaiting their reports");
    let (campaign, recipients) = claimed_campaign(&pool, tenant, n as i64).await?;
    let messages: Vec<MessageId> = (0..n).map(|_| MessageId::generate()).collect();

    let embedded = crate::kafka::EmbeddedBroker::start(&settings.kafka.topic, args.partitions)?;
    settings.kafka.partitions = args.partitions;
    settings.kafka.brokers = Some(embedded.bootstrap().to_owned());
    let brokers = crate::kafka::Brokers::plain(embedded.bootstrap());
    let producer = crate::kafka::producer::EventProducer::new(&brokers, &settings.kafka.topic)?;
    for chunk in sent_events(campaign, &recipients, &messages).chunks(50_000) {
        producer
            .send(chunk)
            .await
            .context("producing sent events")?;
    }
    // no client may outlive the broker: the bench's producer goes first, then the service
    // (stopped on every path), the broker last
    drop(producer);
    let app = Application::build(settings.clone()).await?.spawn();
    let dir = BenchDir::create()?;
    let service = async {
        let scope = crate::pipeline::offset_scope(&app.pipeline.broker, &settings);
        let ends = crate::kafka::end_offsets(&brokers, &settings.kafka.topic)?;
        wait_until_committed(&pool, &scope, &ends).await?;
        eprintln!("{n} messages sent; posting {} reports", args.reports);
        let requests = write_requests(dir.path(), "campaignd", &messages[..args.reports])?;
        let started = Instant::now();
        let url = app.url("/webhooks/mitto/dlr");
        let (load, answers) = replay(&url, args.clients, dir.path(), &requests).await?;
        let ends = crate::kafka::end_offsets(&brokers, &settings.kafka.topic)?;
        wait_until_committed(&pool, &scope, &ends).await?;
        let durable = started.elapsed();
        let applied: i64 = sqlx::query_scalar("SELECT delivered FROM campaigns WHERE id = $1")
            .bind(campaign.get())
            .fetch_one(&pool)
            .await?;
        anyhow::Ok((load, answers, durable, applied))
    }
    .await;
    app.stop().await;
    drop(embedded);
    let (load, answers, durable, applied) = service?;

    eprintln!(
        "posting {} reports to the replaced handler",
        args.baseline_reports
    );
    let baseline_requests =
        write_requests(dir.path(), "baseline", &messages[..args.baseline_reports])?;
    let server = baseline_server(pool.clone())?;
    let baseline_url = format!("http://{}/webhooks/mitto/dlr", server.1);
    let started = Instant::now();
    let (baseline, baseline_answers) =
        replay(&baseline_url, args.clients, dir.path(), &baseline_requests).await?;
    let baseline_time = started.elapsed();
    server.0.stop(true).await;
    pool.close().await;
    Ok(Figures {
        reports: args.reports,
        durable,
        load,
        answers,
        baseline_reports: args.baseline_reports,
        baseline_time,
        baseline,
        baseline_answers,
        applied,
    })
}

/// A scratch folder for the request files, removed when dropped.
struct BenchDir(std::path::PathBuf);

impl BenchDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("campaignd-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `sent` event per message, so the reports find their messages.
fn sent_events(
    campaign: CampaignId,
    recipients: &[RecipientId],
    messages: &[MessageId],
) -> Vec<Event> {
    let at = chrono::Utc::now();
    recipients
        .iter()
        .zip(messages)
        .map(|(recipient, message)| Event::Sent {
            message_id: message.clone(),
            campaign_id: campaign,
            recipient_id: *recipient,
            bulk_id: None,
            attempt: 0,
            at,
        })
        .collect()
}

/// One signed `Delivered` report per line, as [`load::REPLAY_SCRIPT`] reads them.
fn write_requests(
    dir: &Path,
    name: &str,
    messages: &[MessageId],
) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(format!("{name}.tsv"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let now = chrono::Utc::now();
    for message in messages {
        let body = serde_json::json!({
            "messageId": message.as_str(),
            "deliveryStatus": "Delivered",
            "updatedAt": now.to_rfc3339(),
        })
        .to_string();
        let signature = signature::sign(SECRET, Some(now.timestamp()), body.as_bytes());
        writeln!(file, "{}\t{signature}\t{body}", now.timestamp())?;
    }
    file.flush()?;
    Ok(path)
}

/// Sends every prepared request once through wrk, stops it once each of its threads has
/// every answer (wrk itself runs for its whole duration), and reads its figures and the
/// answers by status.
async fn replay(
    url: &str,
    clients: usize,
    dir: &Path,
    requests: &Path,
) -> anyhow::Result<(WrkFigures, BTreeMap<u16, u64>)> {
    let script = dir.join("replay.lua");
    std::fs::write(&script, load::REPLAY_SCRIPT)?;
    let answers = dir.join(format!("answers-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&answers)?;
    let threads = load::threads(clients);
    let args = vec![
        requests.display().to_string(),
        threads.to_string(),
        answers.display().to_string(),
    ];
    let wrk = Wrk::start(url, clients, 600, &[], Some((&script, &args)))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = |t: usize| answers.join(format!("done-{t}")).exists();
    while !(0..threads).all(done) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let figures = tokio::task::spawn_blocking(move || wrk.stop()).await??;
    Ok((figures, answers_by_status(&answers, threads)?))
}

/// What the replay script's threads wrote: answers per status.
fn answers_by_status(folder: &Path, threads: usize) -> anyhow::Result<BTreeMap<u16, u64>> {
    let mut answers = BTreeMap::new();
    for t in 0..threads {
        let text = std::fs::read_to_string(folder.join(format!("done-{t}")))
            .with_context(|| format!("thread {t} did not finish within the run"))?;
        for line in text.lines() {
            if let Some((status, n)) = line.split_once(' ') {
                *answers.entry(status.parse()?).or_default() += n.parse::<u64>()?;
            }
        }
    }
    Ok(answers)
}

/// The replaced design's handler: verify, one committed UPDATE per report, 202.
fn baseline_server(
    pool: sqlx::PgPool,
) -> anyhow::Result<(actix_web::dev::ServerHandle, std::net::SocketAddr)> {
    let verifier = web::Data::new(Verifier {
        secrets: vec![SecretString::from(SECRET)],
        tokens: Vec::new(),
        tolerance_secs: 300,
    });
    let pool = web::Data::new(pool);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(verifier.clone())
            .app_data(pool.clone())
            .route("/webhooks/mitto/dlr", web::post().to(baseline_report))
            .route("/healthz", web::get().to(HttpResponse::Ok))
    })
    .bind("127.0.0.1:0")?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, addr))
}

async fn baseline_report(
    req: HttpRequest,
    body: web::Bytes,
    verifier: web::Data<Verifier>,
    pool: web::Data<sqlx::PgPool>,
) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let presented = Presented {
        signature: header(SIGNATURE_HEADER),
        timestamp: header(TIMESTAMP_HEADER),
        token: None,
    };
    let now = chrono::Utc::now();
    if verifier.verify(presented, &body, now.timestamp()).is_err() {
        return HttpResponse::Unauthorized().finish();
    }
    let Ok(events) = parse_reports(&body, now) else {
        return HttpResponse::BadRequest().finish();
    };
    for event in &events {
        if store::baseline::apply_event(&pool, event).await.is_err() {
            return HttpResponse::ServiceUnavailable().finish();
        }
    }
    HttpResponse::Accepted().finish()
}

fn print_table(args: &WebhookArgs, f: &Figures) {
    let rate = f.reports as f64 / f.durable.as_secs_f64();
    let baseline_rate = f.baseline_reports as f64 / f.baseline_time.as_secs_f64();
    println!();
    println!(
        "campaignd bench webhook — one signed report per request, {} keep-alive connections (wrk)",
        args.clients
    );
    println!("| measure | campaignd | replaced design | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| reports/s, until durably applied | {rate:.0} | {baseline_rate:.0} | {:.1}x |",
        rate / baseline_rate
    );
    println!(
        "| reports | {} in {:.2?} | {} in {:.2?} | |",
        f.reports, f.durable, f.baseline_reports, f.baseline_time
    );
    println!(
        "| request latency p50 / p99, ms | {:.2} / {:.2} | {:.2} / {:.2} | |",
        f.load.p50_ms, f.load.p99_ms, f.baseline.p50_ms, f.baseline.p99_ms
    );
    println!(
        "| answers by status / socket errors | {:?} / {} | {:?} / {} | |",
        f.answers, f.load.errors, f.baseline_answers, f.baseline.errors
    );
    println!(
        "| reports applied (delivered in the snapshot) | {} of {} | | |",
        f.applied, f.reports
    );
    println!(
        "RESULT webhook_reports_per_s={rate:.0} webhook_p50_ms={:.2} webhook_p99_ms={:.2} baseline_reports_per_s={baseline_rate:.0} baseline_p99_ms={:.2} applied={} of={}",
        f.load.p50_ms, f.load.p99_ms, f.baseline.p99_ms, f.applied, f.reports
    );
}
