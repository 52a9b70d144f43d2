//! `campaignd bench import`: a contacts CSV imported over HTTP into a new list, against the
//! replaced design's import (one `INSERT` per contact and one per list membership, each
//! committed on its own), measured in the same run on the same database server.
//!
//! 1. A fresh database; the service starts; a tenant, a list and the CSV (phone, first_name,
//!    a `code` attribute) are prepared before anything is measured.
//! 2. `POST /api/v1/contacts/import?listId=…` with the whole CSV; rows/s from the request's
//!    start to its answer, and how far this process's resident memory (service and client
//!    together; the CSV itself was built before) rose meanwhile.
//! 3. Baseline: `--baseline-rows` contacts (a sample: one statement per row is slow) inserted
//!    one by one into another list, over 4 connections.
//!
//! The answer must count every row as imported, and the list must hold every contact; the
//! bench fails otherwise.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;

use super::RssGrowth;
use crate::app::Application;
use crate::config::Settings;
use crate::domain::TenantId;
use crate::store;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Rows of the imported CSV.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// Rows the one-INSERT-per-contact baseline inserts (its rate is per row).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub baseline_rows: u64,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// One way of importing: rows, time, and the memory growth while it ran.
struct Run {
    rows: u64,
    took: Duration,
    rss_growth_mb: f64,
}

impl Run {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64()
    }
}

const FIRST_NAMES: [&str; 4] = ["Anna", "Nikos", "Maria", "Giorgos"];

/// The bench's CSV: `rows` distinct phones starting at `first`.
pub fn contacts_csv(rows: u64, first: u64) -> String {
    let mut csv = String::with_capacity(rows as usize * 40);
    csv.push_str("phone,first_name,code\n");
    for i in first..first + rows {
        let name = FIRST_NAMES[i as usize % FIRST_NAMES.len()];
        let _ = writeln!(csv, "+3069{:08},{name},C{}", 10_000_000 + i, i % 1000);
    }
    csv
}

pub async fn run(mut settings: Settings, args: ImportArgs) -> anyhow::Result<()> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_import")?;
    let result = measure(settings, &args).await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    let (ours, baseline) = result?;
    print_table(&ours, &baseline);
    Ok(())
}

async fn measure(settings: Settings, args: &ImportArgs) -> anyhow::Result<(Run, Run)> {
    let pool = store::connect_and_migrate(settings.database_url.expose_secret()).await?;
    let tenant = store::tenants::create(&pool, "bench", 0).await?;
    let (_, token) = store::api_keys::issue(&pool, tenant, "bench").await?;
    let list = store::contacts::create_list(&pool, tenant, "Imported", &[]).await?;
    let app = Application::build(settings).await?.spawn();
    let csv = contacts_csv(args.rows, 0);
    eprintln!("importing {} contacts over HTTP", args.rows);
    let ours = import(
        &app.url(&format!("/api/v1/contacts/import?listId={list}")),
        token.reveal(),
        csv,
    )
    .await;
    app.stop().await;
    let ours = ours?;
    let members = members(&pool, list).await?;
    anyhow::ensure!(
        members == args.rows as i64,
        "the list holds {members} contacts, not {}",
        args.rows
    );
    eprintln!("baseline: {} contacts, one INSERT each", args.baseline_rows);
    let baseline = one_by_one(&pool, tenant, args.baseline_rows, args.rows).await?;
    pool.close().await;
    Ok((ours, baseline))
}

async fn import(url: &str, token: &str, csv: String) -> anyhow::Result<Run> {
    let rows = csv.lines().count() as u64 - 1;
    let http = reqwest::Client::new();
    let rss = RssGrowth::start();
    let started = Instant::now();
    let answer: serde_json::Value = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let took = started.elapsed();
    let rss_growth_mb = rss.stop();
    anyhow::ensure!(
        answer["imported"] == rows && answer["failed"] == 0,
        "the import answered {answer}"
    );
    Ok(Run {
        rows,
        took,
        rss_growth_mb,
    })
}

async fn members(pool: &PgPool, list: i64) -> anyhow::Result<i64> {
    let n = sqlx::query_scalar("SELECT count(*) FROM list_members WHERE list_id = $1")
        .bind(list)
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// The replaced design's import: per contact, one INSERT of the contact and one of its list
/// membership, each its own transaction, over 4 connections.
async fn one_by_one(pool: &PgPool, tenant: TenantId, rows: u64, first: u64) -> anyhow::Result<Run> {
    const CONNECTIONS: u64 = 4;
    let list = store::contacts::create_list(pool, tenant, "One by one", &[]).await?;
    let rss = RssGrowth::start();
    let started = Instant::now();
    let workers = (0..CONNECTIONS).map(|w| {
        let pool = pool.clone();
        async move {
            let mut i = first + w;
            while i < first + rows {
                let phone = format!("+3069{:08}", 10_000_000 + i);
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO contacts (tenant_id, phone_e164, first_name, attributes)
                     VALUES ($1, $2, $3, jsonb_build_object('code', $4::text)) RETURNING id",
                )
                .bind(tenant.get())
                .bind(&phone)
                .bind(FIRST_NAMES[i as usize % FIRST_NAMES.len()])
                .bind(format!("C{}", i % 1000))
                .fetch_one(&pool)
                .await?;
                sqlx::query("INSERT INTO list_members (list_id, contact_id) VALUES ($1, $2)")
                    .bind(list)
                    .bind(id)
                    .execute(&pool)
                    .await?;
                i += CONNECTIONS;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(workers)
        .await
        .context("the one-by-one import")?;
    let took = started.elapsed();
    Ok(Run {
        rows,
        took,
        rss_growth_mb: rss.stop(),
    })
}

fn print_table(ours: &Run, baseline: &Run) {
    println!();
    println!("| import | rows | time | rows/s | memory growth |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in [
        ("CSV over HTTP (campaignd)", ours),
        (
            "one INSERT per contact and membership (replaced design, 4 connections)",
            baseline,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} s | {:.0} | {:.1} MiB |",
            run.rows,
            run.took.as_secs_f64(),
            run.rows_per_s(),
            run.rss_growth_mb
        );
    }
    println!();
    println!(
        "RESULT import_rows_per_s={:.0} baseline_rows_per_s={:.0} speedup={:.1} rss_growth_mb={:.1}",
        ours.rows_per_s(),
        baseline.rows_per_s(),
        ours.rows_per_s() / baseline.rows_per_s(),
        ours.rss_growth_mb
    );
}
