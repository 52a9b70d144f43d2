//! `campaignd bench send`: enqueue and send throughput against the built-in simulator, the
//! rate limiter's accuracy, and the replaced design measured in the same run.
//!
//! 1. Unlimited: N contacts in a list, one campaign; enqueue (one transaction) is timed, then
//!    sending until the campaign completes (every `sent` recorded through the topic).
//! 2. Limited: a second service with a traffic-account limit of L segments/s sends L × S
//!    recipients; the achieved rate is read from the simulator's acceptance count.
//! 3. Baseline, the replaced design: one INSERT per recipient to enqueue, and per message one
//!    single-send request plus one UPDATE (4 workers), on a sample.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use crate::actors::campaign::{Command, LifecycleReply};
use crate::app::{Application, RunningApplication};
use crate::config::Settings;
use crate::domain::{CampaignId, MessageType, PhoneE164, TenantId};
use crate::mitto::client::ItemResult;
use crate::mitto::simulator::{MsRange, SimConfig};
use crate::mitto::wire::{SendMessage, Sms};
use crate::store::contacts::{self, NewContact};
use crate::store::enqueue::EnqueueOutcome;
use crate::store::{self, campaigns::Definition};

#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Recipients of the unlimited run.
    #[arg(long, default_value_t = 200_000)]
    pub recipients: u64,
    /// Segments per second of the limited run.
    #[arg(long, default_value_t = 5_000)]
    pub limit: u32,
    /// How long the limited run sends (its recipients: limit × this).
    #[arg(long, default_value_t = 10)]
    pub limited_secs: u64,
    /// Messages the replaced design enqueues and sends for its baseline.
    #[arg(long, default_value_t = 2_000)]
    pub baseline_messages: u64,
    /// Keep the bench databases afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// What one service run measured.
struct Run {
    enqueued: u64,
    enqueue: Duration,
    sending: Duration,
    /// Acceptances per second in full swing, from the simulator's count.
    accepted_rate: f64,
    /// Time spent in claims, and how many, while sending.
    claims: Totals,
    /// Time spent in Mitto bulk calls, and how many, while sending.
    bulk_calls: Totals,
}

/// A histogram's sum (seconds) and count, as the process's metrics show them.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    seconds: f64,
    count: u64,
}

impl Totals {
    /// `series` (a histogram's name and labels, as the Prometheus text writes them) now.
    fn read(name: &str, labels: &str) -> Self {
        let text = crate::metrics::render();
        let value = |suffix: &str| {
            let series = format!("{name}_{suffix}{labels} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Self {
            seconds: value("sum"),
            count: value("count") as u64,
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            seconds: self.seconds - before.seconds,
            count: self.count.saturating_sub(before.count),
        }
    }

    fn mean_ms(self) -> f64 {
        self.seconds * 1000.0 / self.count.max(1) as f64
    }
}

struct Baseline {
    enqueue_rate: f64,
    send_rate: f64,
}

pub async fn run(settings: Settings, args: SendArgs) -> anyhow::Result<()> {
    let marketing = MessageType::Marketing;
    let unlimited =
        service_run(settings.clone(), args.recipients, (None, marketing), &args).await?;
    // the same campaign without link codes (service messages): what the codes cost
    let uncoded = (None, MessageType::Service);
    let uncoded = service_run(settings.clone(), args.recipients, uncoded, &args).await?;
    let limited_n = u64::from(args.limit) * args.limited_secs;
    let limited = (NonZeroU32::new(args.limit), marketing);
    let limited = service_run(settings.clone(), limited_n, limited, &args).await?;
    let baseline = baseline_run(settings, &args).await?;
    print_table(&args, [&unlimited, &uncoded, &limited], &baseline);
    Ok(())
}

fn bench_simulator() -> SimConfig {
    SimConfig {
        latency_ms: MsRange { min: 0, max: 0 },
        dlr_delay_ms: MsRange {
            min: 100,
            max: 1_000,
        },
        dlr_batch: 100,
        ..SimConfig::default()
    }
}

/// One service on a scratch database: set up `n` recipients, enqueue, send to completion.
async fn service_run(
    mut settings: Settings,
    n: u64,
    (limit, message_type): (Option<NonZeroU32>, MessageType),
    args: &SendArgs,
) -> anyhow::Result<Run> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_send")?;
    settings.mitto.base_url = None;
    settings.mitto.api_key = None;
    settings.rate_limits.traffic_account_per_second = limit;
    settings.rate_limits.tenant_per_second = None;
    let app = Application::build_with_simulator(settings, bench_simulator())
        .await?
        .spawn();
    let result = measure_run(&app, n, message_type).await;
    app.stop().await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    result
}

async fn measure_run(
    app: &RunningApplication,
    n: u64,
    message_type: MessageType,
) -> anyhow::Result<Run> {
    let pool = &app.state.pool;
    let tenant = store::tenants::create(pool, "bench", n as i64 * 2).await?;
    store::tenants::set_marketing_rules(pool, tenant, &store::tenants::MarketingRules::none())
        .await?;
    let campaign = campaign_with_list(pool, tenant, n, message_type).await?;
    let registry = &app.pipeline.handles.registry;
    eprintln!("enqueueing {n} recipients");
    let started = Instant::now();
    let command = Command::Enqueue {
        idempotency_key: None,
    };
    let reply = registry
        .lifecycle(campaign, tenant, command)
        .await
        .context("the campaign actor did not answer")??;
    let enqueue = started.elapsed();
    let LifecycleReply::Enqueued(EnqueueOutcome::Done(done)) = reply else {
        anyhow::bail!("unexpected enqueue answer {reply:?}");
    };
    let sim = app.simulator.as_ref().context("the built-in simulator")?;
    let claims_before = Totals::read(crate::metrics::CLAIM_SECONDS, "");
    let bulk_before = Totals::read(crate::metrics::MITTO_SECONDS, BULK_LABELS);
    let sending_started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let accepted = sim.accepted();
        samples.push((sending_started.elapsed().as_secs_f64(), accepted as f64));
        let (_, stats) = registry.stats(campaign).await.context("stats")?;
        if matches!(stats.status.as_str(), "completed" | "failed") {
            ensure!(stats.sent as u64 == n, "{} of {n} sent", stats.sent);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sending = sending_started.elapsed();
    let accepted_rate = steady_rate(&samples, n as f64);
    Ok(Run {
        enqueued: done.added as u64,
        enqueue,
        sending,
        accepted_rate,
        claims: Totals::read(crate::metrics::CLAIM_SECONDS, "").since(claims_before),
        bulk_calls: Totals::read(crate::metrics::MITTO_SECONDS, BULK_LABELS).since(bulk_before),
    })
}

/// The labels of Mitto bulk calls' latency series.
const BULK_LABELS: &str = "{endpoint=\"send\"}";

/// Acceptances per second while sending is in full swing: the least-squares slope of the
/// (time, accepted) samples between 10 % and 90 % of `total`, so the start-up burst and the
/// tail do not count.
pub fn steady_rate(samples: &[(f64, f64)], total: f64) -> f64 {
    let middle: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(_, c)| *c >= 0.1 * total && *c <= 0.9 * total)
        .collect();
    let n = middle.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mt, mc) = (
        middle.iter().map(|s| s.0).sum::<f64>() / n,
        middle.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let cov: f64 = middle.iter().map(|(t, c)| (t - mt) * (c - mc)).sum();
    let var: f64 = middle.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    if var > 0.0 {
        cov / var
    } else {
        0.0
    }
}

fn bench_phone(i: u64) -> PhoneE164 {
    PhoneE164::parse(&format!("+3069{:08}", 10_000_000 + i)).expect("a valid generated phone")
}

/// A campaign whose audience is a list of `n` contacts.
pub(crate) async fn campaign_with_list(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    n: u64,
    message_type: MessageType,
) -> anyhow::Result<CampaignId> {
    let list = contacts::create_list(pool, tenant, "bench", &[]).await?;
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(10_000) {
        let batch: Vec<NewContact> = chunk
            .iter()
            .map(|i| NewContact {
                phone: Some(bench_phone(*i)),
                ..NewContact::default()
            })
            .collect();
        let saved = contacts::upsert(pool, tenant, &batch).await?;
        let ids: Vec<i64> = saved.iter().map(|c| c.id).collect();
        contacts::add_members(pool, tenant, list, &ids).await?;
    }
    let record = store::campaigns::create(
        pool,
        tenant,
        &Definition {
            name: "bench".into(),
            body: "Spring sale: 20% off everything today".into(),
            sender: "Shop".into(),
            traffic_account_id: None,
            audience: serde_json::json!({ "listIds": [list], "phones": [] }),
            scheduled_at: None,
            message_type,
            offer: None,
        },
    )
    .await?;
    Ok(CampaignId::new(record.id)?)
}

/// The replaced design on a sample: per-recipient INSERTs, then per message one single-send
/// request and one UPDATE, four workers, against the same simulator.
async fn baseline_run(mut settings: Settings, args: &SendArgs) -> anyhow::Result<Baseline> {
    let url = super::scratch_database(&mut settings, "campaignd_bench_send")?;
    let pool = store::connect_and_migrate(&url).await?;
    let result = baseline_measure(&pool, args.baseline_messages).await;
    pool.close().await;
    if !args.keep {
        store::drop_database(&url).await?;
    }
    result
}

async fn baseline_measure(pool: &sqlx::PgPool, n: u64) -> anyhow::Result<Baseline> {
    let tenant = store::tenants::create(pool, "baseline", 0).await?;
    let record = store::campaigns::create(
        pool,
        tenant,
        &Definition {
            name: "baseline".into(),
            body: "Spring sale: 20% off everything today".into(),
            sender: "Shop".into(),
            traffic_account_id: None,
            audience: serde_json::json!({}),
            scheduled_at: None,
            message_type: MessageType::Marketing,
            offer: None,
        },
    )
    .await?;
    let campaign = CampaignId::new(record.id)?;
    let phones: Vec<PhoneE164> = (0..n).map(bench_phone).collect();
    // one INSERT per recipient over 4 connections, as the send baseline and the service use
    let started = Instant::now();
    let parts = phones
        .chunks(phones.len().div_ceil(4).max(1))
        .map(|part| async move {
            let mut inserted = Vec::with_capacity(part.len());
            for phone in part {
                let id = store::baseline::insert_recipient(pool, campaign, tenant, phone.as_str())
                    .await?;
                inserted.push((id, phone));
            }
            anyhow::Ok(inserted)
        });
    let jobs: Vec<(i64, &PhoneE164)> = futures::future::try_join_all(parts)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let enqueue = started.elapsed();

    let sim = crate::mitto::simulator::start(SimConfig {
        port: 0,
        ..bench_simulator()
    })?;
    let client = super::simulator_client(&sim)?;
    let account = crate::domain::TrafficAccountId::new_random();
    let started = Instant::now();
    let workers = jobs.chunks(jobs.len().div_ceil(4).max(1)).map(|part| {
        let client = client.clone();
        async move {
            for (recipient, phone) in part {
                let message = SendMessage {
                    traffic_account_id: account,
                    destination: phone.as_str().to_owned(),
                    sms: Sms {
                        text: "Spring sale: 20% off everything today".into(),
                        sender: "Shop".into(),
                    },
                    reference: None,
                };
                if let ItemResult::Accepted { message_id } = client.send_one(&message).await? {
                    store::baseline::mark_sent(pool, *recipient, message_id.as_str()).await?;
                }
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(workers).await?;
    let sending = started.elapsed();
    sim.stop().await;
    Ok(Baseline {
        enqueue_rate: n as f64 / enqueue.as_secs_f64().max(1e-9),
        send_rate: n as f64 / sending.as_secs_f64().max(1e-9),
    })
}

fn print_table(args: &SendArgs, [unlimited, uncoded, limited]: [&Run; 3], baseline: &Baseline) {
    let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let enqueue_rate = per_s(unlimited.enqueued, unlimited.enqueue);
    let uncoded_rate = per_s(uncoded.enqueued, uncoded.enqueue);
    let code_cost = (uncoded_rate - enqueue_rate) / uncoded_rate * 100.0;
    let send_rate = per_s(unlimited.enqueued, unlimited.sending);
    let target = f64::from(args.limit);
    let achieved = limited.accepted_rate;
    let deviation = (achieved - target) / target * 100.0;
    println!(
        "\ncampaignd bench send — {} recipients unlimited, {} at {} segments/s",
        unlimited.enqueued, limited.enqueued, args.limit
    );
    println!("| measure | campaignd | replaced design | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| enqueue, recipients/s (marketing: a link code each) | {enqueue_rate:.0} | {:.0} | {:.1}x |",
        baseline.enqueue_rate,
        enqueue_rate / baseline.enqueue_rate
    );
    println!(
        "| enqueue without codes (service), recipients/s; codes cost | {uncoded_rate:.0}; {code_cost:+.1} % | | |"
    );
    println!(
        "| send to completion, messages/s (no limit) | {send_rate:.0} | {:.0} | {:.1}x |",
        baseline.send_rate,
        send_rate / baseline.send_rate
    );
    println!(
        "| enqueue / send time | {:.2?} / {:.2?} | | |",
        unlimited.enqueue, unlimited.sending
    );
    let (claims, calls) = (unlimited.claims, unlimited.bulk_calls);
    println!(
        "| where the send time goes: claims (one at a time per campaign): count, mean, share of the send time | {}, {:.1} ms, {:.0} % | | |",
        claims.count,
        claims.mean_ms(),
        claims.seconds / unlimited.sending.as_secs_f64() * 100.0
    );
    println!(
        "| ... Mitto bulk calls (simulator without latency): count, mean | {}, {:.1} ms | | |",
        calls.count,
        calls.mean_ms()
    );
    println!("| limiter: target / achieved, segments/s | {target:.0} / {achieved:.0} ({deviation:+.2} %) | | |");
    println!(
        "| peak RSS (process incl. broker and simulator), MiB | {:.0} | | |",
        super::ingest::peak_rss_mb()
    );
    println!(
        "replaced design, {} recipients of its own campaign: enqueue = one INSERT per recipient, \
         send = one Mitto request and one UPDATE per message; both over 4 connections",
        args.baseline_messages
    );
    println!(
        "RESULT enqueue_rows_per_s={enqueue_rate:.0} enqueue_uncoded_rows_per_s={uncoded_rate:.0} send_msgs_per_s={send_rate:.0} claim_mean_ms={:.1} limiter_target={target:.0} limiter_achieved={achieved:.0} baseline_enqueue_rows_per_s={:.0} baseline_send_msgs_per_s={:.0}",
        claims.mean_ms(),
        baseline.enqueue_rate,
        baseline.send_rate
    );
}

#[cfg(test)]
mod tests {
    use super::steady_rate;

    #[test]
    fn the_steady_rate_ignores_the_burst_and_the_tail() {
        // a burst of 50 at t=0, then 100/s, then a stall before the end
        let mut samples = vec![(0.0, 0.0), (0.01, 50.0)];
        samples.extend((1..=95).map(|i| (i as f64 * 0.1, 50.0 + 10.0 * i as f64)));
        samples.push((9.0, 1000.0));
        let rate = steady_rate(&samples, 1000.0);
        assert!((rate - 100.0).abs() < 0.5, "{rate}");
    }
}
