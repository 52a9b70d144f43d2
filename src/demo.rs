//! `campaignd demo`: one campaign end to end on the embedded defaults — embedded broker, the
//! built-in simulator with realistic delays, duplicate reports and some failures — through the
//! public API: a tenant, a CSV import into a list, a personalised campaign with an offer,
//! enqueue, progress bars for sent and delivered, then recipients using their links (offer
//! visits, redemptions at the till, unsubscribes) and a final table.
//!
//! It runs in a database of its own (dropped afterwards unless `--keep`), so nothing left from
//! an earlier run or from `serve` mixes into its figures.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::app::{Application, RunningApplication};
use crate::config::Settings;
use crate::mitto::simulator::{MsRange, SimConfig};
use crate::store;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Recipients of the demo campaign.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    pub recipients: u64,
    /// SMS segments per second the traffic account allows (0: as fast as Mitto answers).
    #[arg(long, default_value_t = 5_000)]
    pub rate: u32,
    /// How long to wait for the last delivery reports once sending is done.
    #[arg(long, default_value_t = 30)]
    pub report_wait_secs: u64,
    /// Keep the demo database afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// The simulator as a real provider behaves: latency, a few refusals and throttles, reports
/// after 0.2–3 s, some twice, some out of order, some before the send is answered.
fn realistic_simulator() -> SimConfig {
    SimConfig {
        latency_ms: MsRange { min: 10, max: 60 },
        dlr_delay_ms: MsRange {
            min: 200,
            max: 3_000,
        },
        delivery_ratio: 0.94,
        duplicate_ratio: 0.05,
        out_of_order_ratio: 0.03,
        dlr_before_response_ratio: 0.01,
        item_error_ratio: 0.01,
        rate_429: 0.01,
        // reports are posted in arrays, as providers batch them under load
        dlr_batch: 50,
        ..SimConfig::default()
    }
}

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    let url = crate::bench::scratch_database(&mut settings, "campaignd_demo")?;
    settings.kafka.brokers = None;
    settings.mitto.base_url = None;
    settings.mitto.api_key = None;
    settings.rate_limits.traffic_account_per_second = NonZeroU32::new(args.rate);
    // every simulated recipient taps its links from this one machine's address
    settings.links.requests_per_minute = NonZeroU32::MAX;
    let app = Application::build_with_simulator(settings, realistic_simulator())
        .await
        .context("starting campaignd")?
        .spawn();
    let result = demo(&app, &args).await;
    app.stop().await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    print!("{}", result?);
    Ok(())
}

struct Api<'a> {
    app: &'a RunningApplication,
    http: reqwest::Client,
    token: String,
}

impl Api<'_> {
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "campaignd answered {status}: {body}");
        Ok(body)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(self.app.url(path)).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.app.url(path))).await
    }
}

const FIRST_NAMES: [&str; 8] = [
    "Anna", "Nikos", "Maria", "Giorgos", "Eleni", "Kostas", "Sofia", "Dimitris",
];

/// The CSV the demo imports: phone, first_name, and a `code` attribute.
fn contacts_csv(n: u64) -> String {
    let mut csv = String::with_capacity(n as usize * 40);
    csv.push_str("phone,first_name,code\n");
    for i in 0..n {
        let first = FIRST_NAMES[i as usize % FIRST_NAMES.len()];
        let _ = writeln!(csv, "+3069{:08},{first},SPRING{}", 10_000_000 + i, i % 100);
    }
    csv
}

async fn demo(app: &RunningApplication, args: &DemoArgs) -> anyhow::Result<String> {
    let pool = &app.state.pool;
    let tenant = store::tenants::create(pool, "Demo Shop", args.recipients as i64 * 3).await?;
    // the demo runs at any hour
    store::tenants::set_marketing_rules(pool, tenant, &store::tenants::MarketingRules::none())
        .await?;
    let (_, token) = store::api_keys::issue(pool, tenant, "demo").await?;
    let api = Api {
        app,
        http: reqwest::Client::new(),
        token: token.reveal().to_owned(),
    };
    eprintln!("importing {} contacts…", args.recipients);
    let list = api
        .post("/api/v1/lists", json!({ "name": "Everyone" }))
        .await?;
    let list_id = list["id"].as_i64().context("list id")?;
    let importing = Instant::now();
    let import = api
        .send(
            api.http
                .post(app.url(&format!("/api/v1/contacts/import?listId={list_id}")))
                .header("content-type", "text/csv")
                .body(contacts_csv(args.recipients)),
        )
        .await?;
    ensure!(import["imported"] == args.recipients, "import: {import}");
    let times = Times {
        import: importing.elapsed(),
        enqueue: Duration::ZERO,
    };
    let campaign = api
        .post(
            "/api/v1/campaigns",
            json!({ "name": "Spring sale", "sender": "DemoShop",
                    "body": "Hi {{firstName}}, spring sale: 20% off today with code {{code}}. Demo Shop",
                    "offerTitle": "20% off everything", "offerText": "Show this page at the till.",
                    "offerExpiresAt": chrono::Utc::now() + chrono::Duration::days(7),
                    "audience": { "listId": list_id } }),
        )
        .await?;
    let id = campaign["id"].as_i64().context("campaign id")?;
    let started = Instant::now();
    let enqueued = api
        .post(&format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await?;
    let times = Times {
        enqueue: started.elapsed(),
        ..times
    };
    let mut progress = follow(&api, id, args).await?;
    let engaged = engage(&api, id).await?;
    progress.stats = engaged.stats.clone();
    Ok(report(args, &enqueued, times, &progress) + &engaged.table())
}

/// What the simulated recipients did, and the stats that counted it.
struct Engagement {
    visitors: usize,
    clicks: usize,
    redeemed: usize,
    unsubscribed: usize,
    stats: Value,
}

impl Engagement {
    fn table(&self) -> String {
        let s = &self.stats;
        let n = |k: &str| s[k].as_i64().unwrap_or(0);
        let mut out = String::from("| engagement | done | counted |\n|---|---:|---:|\n");
        let rows = [
            ("offer visits (recipients)", self.visitors, n("visits")),
            ("offer link clicks", self.clicks, n("clicks")),
            ("redemptions", self.redeemed, n("redemptions")),
            ("unsubscribes", self.unsubscribed, n("unsubscribes")),
        ];
        for (k, done, counted) in rows {
            let _ = writeln!(out, "| {k} | {done} | {counted} |");
        }
        let rate = s["conversionRate"].as_f64().unwrap_or(0.0) * 100.0;
        let _ = writeln!(
            out,
            "| conversion rate (redemptions / delivered) | | {rate:.2} % |"
        );
        let _ = writeln!(
            out,
            "RESULT visits={} clicks={} redemptions={} unsubscribes={} conversion_rate={:.4}",
            n("visits"),
            n("clicks"),
            n("redemptions"),
            n("unsubscribes"),
            s["conversionRate"].as_f64().unwrap_or(0.0)
        );
        out
    }
}

/// Recipients use their links over HTTP: one in 20 opens the offer (every third of them
/// twice), one in 100 redeems at the till (the shop calls the API), one in 200 unsubscribes
/// from the link's page. Waits until the stats count exactly that (an error after 30 s).
async fn engage(api: &Api<'_>, id: i64) -> anyhow::Result<Engagement> {
    use futures::StreamExt;
    let codes = store::links::codes_of(&api.app.state.pool, id).await?;
    let every = |k: usize| codes.iter().step_by(k).cloned().collect::<Vec<_>>();
    let (visitors, redeemers, leavers) = (every(20), every(100), every(200));
    eprintln!(
        "{} recipients open the offer, {} redeem it, {} unsubscribe…",
        visitors.len(),
        redeemers.len(),
        leavers.len()
    );
    let opens: Vec<String> = visitors
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(c.clone(), 1 + usize::from(i % 3 == 0)))
        .collect();
    let clicks = opens.len();
    let http = &api.http;
    let get = |code: String| async move {
        let url = api.app.url(&format!("/o/{code}"));
        http.get(url).send().await.map(|r| r.status().is_success())
    };
    let opened = futures::stream::iter(opens).map(get).buffer_unordered(16);
    let ok = opened
        .filter(|r| futures::future::ready(matches!(r, Ok(true))))
        .count()
        .await;
    ensure!(
        ok == clicks,
        "{} of {clicks} offer pages failed to open",
        clicks - ok
    );
    for code in &redeemers {
        api.post("/api/v1/redemptions", json!({ "code": code }))
            .await?;
    }
    for code in &leavers {
        let page = http
            .get(api.app.url(&format!("/s/{code}")))
            .send()
            .await?
            .text()
            .await?;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("the unsubscribe page has a form")?;
        let posted = http
            .post(api.app.url(&format!("/s/{code}")))
            .form(&[("csrf", csrf)])
            .send()
            .await?;
        ensure!(
            posted.status().is_success(),
            "unsubscribe answered {}",
            posted.status()
        );
    }
    let want = (visitors.len(), clicks, redeemers.len(), leavers.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = api.get(&format!("/api/v1/campaigns/{id}/stats")).await?;
        let got = |k: &str| stats[k].as_u64().unwrap_or(0) as usize;
        let counted = (
            got("visits"),
            got("clicks"),
            got("redemptions"),
            got("unsubscribes"),
        );
        ensure!(
            counted == want || Instant::now() < deadline,
            "the stats counted {counted:?} of (visits, clicks, redemptions, unsubscribes) {want:?}"
        );
        if counted == want {
            return Ok(Engagement {
                visitors: want.0,
                clicks: want.1,
                redeemed: want.2,
                unsubscribed: want.3,
                stats,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Progress {
    stats: Value,
    sending: Duration,
    reports: Duration,
}

/// Shows sent and delivered as they move; returns when every report is in (or the wait ends).
async fn follow(api: &Api<'_>, id: i64, args: &DemoArgs) -> anyhow::Result<Progress> {
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>8}/{len} {per_sec:>12} {msg}")?
            .progress_chars("=> ");
    let bar = |prefix: &'static str| {
        let b = bars.add(ProgressBar::new(args.recipients));
        b.set_style(style.clone());
        b.set_prefix(prefix);
        b
    };
    let (sent_bar, report_bar) = (bar("sent"), bar("reported"));
    let started = Instant::now();
    let mut sending = None;
    loop {
        let stats = api.get(&format!("/api/v1/campaigns/{id}/stats")).await?;
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        sent_bar.set_position(n("sent") + n("sendFailed"));
        report_bar.set_position(n("delivered") + n("deliveryFailed") + n("sendFailed"));
        report_bar.set_message(format!("{} delivered", n("delivered")));
        let done = matches!(
            stats["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        );
        if done && sending.is_none() {
            sending = Some(started.elapsed());
            sent_bar.finish();
        }
        if let Some(sent_after) = sending {
            let waited = started.elapsed() - sent_after;
            if n("pending") == 0 || waited > Duration::from_secs(args.report_wait_secs) {
                report_bar.finish();
                return Ok(Progress {
                    stats,
                    sending: sent_after,
                    reports: started.elapsed(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long the contacts import and the enqueue took.
#[derive(Debug, Clone, Copy)]
struct Times {
    import: Duration,
    enqueue: Duration,
}

fn report(args: &DemoArgs, enqueued: &Value, times: Times, p: &Progress) -> String {
    let s = &p.stats;
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let per_s = |count: u64, d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    let queued = enqueued["queued"].as_u64().unwrap_or(0);
    let limit = match args.rate {
        0 => "none".to_owned(),
        r => format!("{r} segments/s"),
    };
    let mut out = String::new();
    let status = s["status"].as_str().unwrap_or("?");
    let _ = writeln!(
        out,
        "\ncampaignd demo — campaign {} ({status})",
        s["campaignId"]
    );
    let rows = [
        (
            "contacts imported (CSV over HTTP, into a list)",
            format!(
                "{} in {:.2?} ({:.0} rows/s)",
                args.recipients,
                times.import,
                per_s(args.recipients, times.import)
            ),
        ),
        (
            "recipients enqueued",
            format!(
                "{queued} in {:.2?} ({:.0} rows/s)",
                times.enqueue,
                per_s(queued, times.enqueue)
            ),
        ),
        ("sent (accepted by Mitto)", n("sent").to_string()),
        (
            "delivered",
            format!(
                "{} ({:.1} % of sent)",
                n("delivered"),
                s["deliveredRate"].as_f64().unwrap_or(0.0) * 100.0
            ),
        ),
        (
            "failed: refused / by report",
            format!("{} / {}", n("sendFailed"), n("deliveryFailed")),
        ),
        ("awaiting a report", n("pending").to_string()),
        (
            "sending took",
            format!(
                "{:.2?} ({:.0} msgs/s, limit {limit})",
                p.sending,
                per_s(n("sent") + n("sendFailed"), p.sending)
            ),
        ),
        ("last report after", format!("{:.2?}", p.reports)),
    ];
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(
        out,
        "RESULT recipients={queued} sent={} delivered={} failed={} pending={} send_msgs_per_s={:.0}",
        n("sent"),
        n("delivered"),
        n("failed"),
        n("pending"),
        per_s(n("sent") + n("sendFailed"), p.sending)
    );
    out
}
