//! `campaignd bench export`: the CSV exports of a large finished campaign, downloaded over HTTP
//! as they stream, against what a non-streaming export does (every row fetched into a `Vec`,
//! the whole CSV built in memory), measured in the same run on the same machine.
//!
//! 1. A fresh database; one completed campaign of N recipients with mixed outcomes (delivered,
//!    failed both ways, awaiting a report, unknown, skipped), inserted by one statement.
//! 2. The service starts; after an unmeasured warm-up (the skipped recipients' CSV),
//!    `recipients.csv` and `report.csv` are downloaded, their lines counted as the chunks
//!    arrive (nothing is kept), while this process's resident memory (service and client
//!    together) is sampled every 50 ms.
//! 3. Baseline: the same recipients read by one `fetch_all` and written into one CSV string,
//!    memory sampled the same way. It sends nothing, which flatters its time; it runs last, so
//!    memory the allocator kept from the downloads can only lower its growth.
//!
//! Every CSV must hold its header and N lines; the bench fails otherwise.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::RssGrowth;
use crate::app::{Application, RunningApplication};
use crate::config::Settings;
use crate::domain::{CampaignId, TenantId};
use crate::store::reports::{self, RecipientFilter, RecipientRow};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Recipients of the exported campaign.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub rows: i64,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// One export: its lines (header included), bytes, time and how far the process's resident
/// memory rose while it ran.
struct Export {
    lines: u64,
    bytes: u64,
    took: Duration,
    rss_growth_mb: f64,
}

impl Export {
    fn rows_per_s(&self, rows: i64) -> f64 {
        rows as f64 / self.took.as_secs_f64()
    }
}

struct Figures {
    rows: i64,
    seeded: Duration,
    recipients: Export,
    report: Export,
    in_memory: Export,
}

impl Figures {
    /// Header and one line per recipient in every export.
    fn lines_as_expected(&self) -> bool {
        let expected = self.rows as u64 + 1;
        [&self.recipients, &self.report, &self.in_memory]
            .iter()
            .all(|e| e.lines == expected)
    }
}

pub async fn run(mut settings: Settings, args: ExportArgs) -> anyhow::Result<()> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_export")?;
    // the campaign's messages awaiting a report must not be looked up at the built-in
    // simulator (which never sent them) while the bench reads them
    settings.reconcile.after_secs = 7 * 24 * 3600;
    let result = measure(settings, &args).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    let figures = result?;
    print_table(&figures);
    anyhow::ensure!(
        figures.lines_as_expected(),
        "an export does not hold its header and {} lines: recipients.csv {}, report.csv {}, in memory {}",
        figures.rows,
        figures.recipients.lines,
        figures.report.lines,
        figures.in_memory.lines
    );
    Ok(())
}

async fn measure(settings: Settings, args: &ExportArgs) -> anyhow::Result<Figures> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let (_, token) = store::api_keys::issue(&pool, tenant, "bench").await?;
    eprintln!("inserting a completed campaign of {} recipients", args.rows);
    let started = Instant::now();
    let campaign = finished_campaign(&pool, tenant, args.rows)
        .await
        .context("inserting the campaign")?;
    let seeded = started.elapsed();
    eprintln!("inserted in {seeded:.1?}; starting the service");
    let app = Application::build(settings).await?.spawn();
    let downloads = download_both(&app, campaign, token.reveal()).await;
    app.stop().await;
    let (recipients, report) = downloads?;
    eprintln!("building the same recipients' CSV in memory");
    let in_memory = in_memory_export(&pool, tenant, campaign).await?;
    pool.close().await;
    Ok(Figures {
        rows: args.rows,
        seeded,
        recipients,
        report,
        in_memory,
    })
}

async fn download_both(
    app: &RunningApplication,
    campaign: CampaignId,
    token: &str,
) -> anyhow::Result<(Export, Export)> {
    let http = reqwest::Client::new();
    let path = |file: &str| app.url(&format!("/api/v1/campaigns/{campaign}/{file}"));
    // unmeasured: the first request's one-off memory (connections, the worker's first
    // allocations; some 25 MiB) is not the export's, and would be counted on recipients.csv
    download(&http, &path("recipients.csv?status=skipped"), token).await?;
    eprintln!("downloading recipients.csv");
    let recipients = download(&http, &path("recipients.csv"), token).await?;
    eprintln!("downloading report.csv");
    let report = download(&http, &path("report.csv"), token).await?;
    Ok((recipients, report))
}

/// Downloads `url`, counting lines as the chunks arrive and keeping none of them. (reqwest's
/// `stream` feature, for `bytes_stream`, is not enabled; `chunk` reads the body the same way.)
async fn download(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Export> {
    let rss = RssGrowth::start();
    let started = Instant::now();
    let mut response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("asking for {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    let (mut lines, mut bytes) = (0, 0);
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        // no field holds a line break (see `finished_campaign`), so lines are records
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
    }
    Ok(Export {
        lines,
        bytes,
        took: started.elapsed(),
        rss_growth_mb: rss.stop(),
    })
}

/// The non-streaming export: every row in one `Vec` from one `fetch_all`, then the whole CSV
/// in one `String` (both held at the peak, as such a handler holds them before it answers).
async fn in_memory_export(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    campaign: CampaignId,
) -> anyhow::Result<Export> {
    let rss = RssGrowth::start();
    let started = Instant::now();
    let scope = reports::scope(pool, tenant, campaign)
        .await?
        .context("the campaign's rows")?;
    let all = RecipientFilter::default();
    let rows = reports::recipients_page(pool, &scope, all, None, i64::MAX).await?;
    let csv = csv_in_memory(&rows)?;
    let took = started.elapsed();
    let lines = csv.bytes().filter(|b| *b == b'\n').count() as u64;
    let bytes = csv.len() as u64;
    drop((rows, csv));
    Ok(Export {
        lines,
        bytes,
        took,
        rss_growth_mb: rss.stop(),
    })
}

/// The columns and cells of `recipients.csv`, written into one string (without the service's
/// formula guard: no seeded text starts with `=`, `+`, `-` or `@`, phones aside, which it
/// leaves alone too).
fn csv_in_memory(rows: &[RecipientRow]) -> anyhow::Result<String> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    writer.write_record(crate::http::reports::RECIPIENT_HEADER)?;
    for row in rows {
        let status = row.message_status().map_or("unreadable", |s| s.name());
        writer.write_record([
            row.id.to_string().as_str(),
            &row.phone_e164,
            status,
            row.delivery_status.as_deref().unwrap_or_default(),
            row.provider_message_id.as_deref().unwrap_or_default(),
            &time(row.sent_at),
            &time(row.delivered_at),
            &time(row.failed_at),
            row.error.as_deref().unwrap_or_default(),
            &row.retry_count.to_string(),
        ])?;
    }
    let bytes = writer.into_inner().context("finishing the CSV")?;
    Ok(String::from_utf8(bytes)?)
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A completed campaign of `n` recipients and its snapshot counted from them. Out of every
/// 100: 80 delivered, 8 failed delivery, 4 refused at sending, 5 awaiting a report, 2
/// unknown, 1 skipped; every other one has a contact with a name; some delivered ones opened
/// their link, redeemed or unsubscribed. Texts with commas, quotes and non-Latin letters need
/// CSV quoting or UTF-8; none holds a line break (the download counts lines). All times lie
/// in the last three hours, inside the reconciler's give-up window.
///
/// The SQL is here rather than in `store` because only this bench needs such a campaign.
async fn finished_campaign(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    n: i64,
) -> Result<CampaignId, StoreError> {
    let campaign: i64 = sqlx::query_scalar(
        "INSERT INTO campaigns (tenant_id, name, body, sender, status, started_at, finished_at)
         VALUES ($1, 'export campaign', 'Hi {first_name}, 20% off today', 'Shop', 'completed',
                 now() - interval '3 hours', now() - interval '1 minute')
         RETURNING id",
    )
    .bind(tenant.get())
    .fetch_one(pool)
    .await?;
    let mut tx = pool.begin().await?;
    sqlx::query(SEED_RECIPIENTS)
        .bind(campaign)
        .bind(tenant.get())
        .bind(n)
        .execute(&mut *tx)
        .await?;
    sqlx::query(COUNT_INTO_SNAPSHOT)
        .bind(campaign)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    CampaignId::new(campaign).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `$1` campaign, `$2` tenant, `$3` recipients; `k` picks the outcome, `at` spreads the sends
/// over the last three hours.
const SEED_RECIPIENTS: &str = r#"
WITH people AS (
    INSERT INTO contacts (tenant_id, phone_e164, first_name, last_name)
    SELECT $2, '+3069' || lpad(g::text, 8, '0'),
           (ARRAY['Νίκος', 'Maria', 'Jean-Luc', 'Zoë'])[1 + g % 4],
           (ARRAY['Παπαδόπουλος', 'O''Brien, Jr.', 'Müller', 'van "the Man" Dijk'])[1 + g / 4 % 4]
    FROM generate_series(2, $3, 2) AS g
    RETURNING id, phone_e164
), picked AS (
    SELECT g, g % 100 AS k, '+3069' || lpad(g::text, 8, '0') AS phone,
           now() - interval '3 hours' + (g::float8 / $3) * interval '150 minutes' AS at
    FROM generate_series(1, $3) AS g
)
INSERT INTO campaign_recipients (
    campaign_id, tenant_id, phone_e164, contact_id, status, provider_message_id,
    delivery_status, error, error_retryable, retry_count, sent_at, delivered_at, failed_at,
    billing_status, visited_at, clicks, redeemed_at, redeemed_by, unsubscribed_at,
    unsubscribed_via)
SELECT $1, $2, o.phone, p.id,
    CASE WHEN k < 80 THEN 'delivered' WHEN k < 92 THEN 'failed' WHEN k < 97 THEN 'sent'
         WHEN k < 99 THEN 'unknown' ELSE 'skipped' END,
    CASE WHEN k < 88 OR k BETWEEN 92 AND 98 THEN gen_random_uuid()::text END,
    CASE WHEN k < 40 THEN 'Delivered' WHEN k < 80 THEN 'DELIVRD' WHEN k < 84 THEN 'Undelivered'
         WHEN k < 88 THEN 'Expired' WHEN k < 97 AND k >= 92 THEN 'Enroute' END,
    CASE WHEN k BETWEEN 80 AND 83 THEN 'Handset "absent", code 27'
         WHEN k BETWEEN 84 AND 87 THEN 'Expired: no answer within 48 h, code 12'
         WHEN k BETWEEN 88 AND 91 THEN 'Rejected by Mitto: destination not reachable, "+' || g || '"'
         WHEN k = 99 THEN 'opted out' END,
    CASE WHEN k BETWEEN 88 AND 91 THEN false END,
    CASE WHEN k BETWEEN 88 AND 91 THEN 2 ELSE 0 END,
    CASE WHEN k < 88 OR k BETWEEN 92 AND 98 THEN at END,
    CASE WHEN k < 80 THEN at + (2 + g % 40) * interval '1 second' END,
    CASE WHEN k BETWEEN 80 AND 91 THEN at + (5 + g % 60) * interval '1 second' END,
    CASE WHEN k < 80 OR k BETWEEN 92 AND 98 THEN 'charged' ELSE 'refunded' END,
    CASE WHEN k < 80 AND g % 7 = 0 THEN at + interval '5 minutes' END,
    CASE WHEN k < 80 AND g % 7 = 0 THEN 1 + g % 3 ELSE 0 END,
    CASE WHEN k < 80 AND g % 29 = 0 THEN at + interval '20 minutes' END,
    CASE WHEN k < 80 AND g % 29 = 0 THEN (ARRAY['shop', 'self'])[1 + g % 2] END,
    CASE WHEN k < 80 AND g % 97 = 0 THEN at + interval '30 minutes' END,
    CASE WHEN k < 80 AND g % 97 = 0 THEN 'link' END
FROM picked o LEFT JOIN people p ON p.phone_e164 = o.phone
"#;

/// The campaign's row range and snapshot counted from its recipients, as the service keeps
/// them: `$1` campaign.
const COUNT_INTO_SNAPSHOT: &str = "
UPDATE campaigns c SET
    recipients_from = r.lo, recipients_to = r.hi,
    pending = r.pending, delivered = r.delivered, send_failed = r.send_failed,
    delivery_failed = r.delivery_failed, unknown = r.unknown, skipped = r.skipped,
    visits = r.visits, clicks = r.clicks, redemptions = r.redemptions,
    unsubscribes = r.unsubscribes, first_sent_at = r.first_sent_at,
    last_event_at = r.last_event_at
FROM (
    SELECT min(id) AS lo, max(id) AS hi,
           count(*) FILTER (WHERE status = 'sent') AS pending,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed' AND sent_at IS NULL) AS send_failed,
           count(*) FILTER (WHERE status = 'failed' AND sent_at IS NOT NULL) AS delivery_failed,
           count(*) FILTER (WHERE status = 'unknown') AS unknown,
           count(*) FILTER (WHERE status = 'skipped') AS skipped,
           count(visited_at) AS visits, sum(clicks) AS clicks,
           count(redeemed_at) AS redemptions, count(unsubscribed_at) AS unsubscribes,
           min(sent_at) AS first_sent_at,
           max(GREATEST(sent_at, delivered_at, failed_at)) AS last_event_at
    FROM campaign_recipients WHERE campaign_id = $1
) r
WHERE c.id = $1";

fn print_table(f: &Figures) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let (s, r, m) = (&f.recipients, &f.report, &f.in_memory);
    println!();
    println!(
        "campaignd bench export — one completed campaign of {} recipients (inserted in {:.1?}), CSV over HTTP",
        f.rows, f.seeded
    );
    println!("| measure | campaignd (streamed) | in-memory export | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| recipients.csv, rows/s | {:.0} | {:.0} (built, not sent) | {:.1}x |",
        s.rows_per_s(f.rows),
        m.rows_per_s(f.rows),
        s.rows_per_s(f.rows) / m.rows_per_s(f.rows)
    );
    println!(
        "| recipients.csv: lines, MiB, time | {}, {:.1}, {:.2?} | {}, {:.1}, {:.2?} | |",
        s.lines,
        mib(s.bytes),
        s.took,
        m.lines,
        mib(m.bytes),
        m.took
    );
    println!(
        "| recipients.csv: RSS growth during the export, MiB | {:.1} | {:.1} | |",
        s.rss_growth_mb, m.rss_growth_mb
    );
    println!("| report.csv, rows/s | {:.0} | | |", r.rows_per_s(f.rows));
    println!(
        "| report.csv: lines, MiB, time | {}, {:.1}, {:.2?} | | |",
        r.lines,
        mib(r.bytes),
        r.took
    );
    println!(
        "| report.csv: RSS growth during the export, MiB | {:.1} | | |",
        r.rss_growth_mb
    );
    println!(
        "| every export holds its header and {} lines | {} | | |",
        f.rows,
        if f.lines_as_expected() { "yes" } else { "NO" }
    );
    println!(
        "RESULT export_rows={} recipients_csv_rows_per_s={:.0} report_csv_rows_per_s={:.0} in_memory_rows_per_s={:.0} recipients_csv_rss_growth_mb={:.1} report_csv_rss_growth_mb={:.1} in_memory_rss_growth_mb={:.1} lines_ok={}",
        f.rows,
        s.rows_per_s(f.rows),
        r.rows_per_s(f.rows),
        m.rows_per_s(f.rows),
        s.rss_growth_mb,
        r.rss_growth_mb,
        m.rss_growth_mb,
        f.lines_as_expected()
    );
}
