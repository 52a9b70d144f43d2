//! `GET /metrics` after a bench-like run (a campaign sent through the simulator, its reports
//! through the webhook, duplicates produced on top): the scrape parses as Prometheus text and
//! its counters equal the ground truth. One test in this file: the recorder is per process.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::Duration;

use campaignd::domain::{DeliveryStatus, Event, MessageId};
use common::{eventually, TestDb};
use harness::*;
use serde_json::json;

const N: usize = 500;
const DUPLICATES: usize = 50;

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    metric: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly: every line is a `# HELP`/`# TYPE` comment or
/// `name{label="value",…} number`, label values quoted with `\\`, `\"` and `\n` escapes.
fn parse(text: &str) -> Vec<Sample> {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            match kind {
                Some("HELP") => assert!(name.is_some() && rest.is_some(), "{line}"),
                Some("TYPE") => {
                    let t = rest.expect(line);
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    types.insert(name.expect(line).to_owned(), t.to_owned());
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        samples.push(sample(line));
    }
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| s.metric.strip_suffix(suffix))
            .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            .unwrap_or(&s.metric);
        assert!(types.contains_key(family), "{} has no # TYPE", s.metric);
    }
    samples
}

fn sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect(line);
    let metric = &line[..name_end];
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    assert!(
        metric.starts_with("campaignd_") && metric.chars().all(valid),
        "{line}"
    );
    let mut labels = HashMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let next = |at: usize| inner[at..].chars().next().expect(line);
        let mut at = 0;
        loop {
            let eq = at + inner[at..].find("=\"").expect(line);
            let name = inner[at..eq].to_owned();
            assert!(!name.is_empty() && name.chars().all(valid), "{line}");
            let (mut value, mut i) = (String::new(), eq + 2);
            loop {
                let c = next(i);
                i += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let escaped = next(i);
                        i += escaped.len_utf8();
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    other => value.push(other),
                }
            }
            labels.insert(name, value);
            match next(i) {
                ',' => at = i + 1,
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                _ => panic!("bad labels: {line}"),
            }
        }
    }
    let value = rest.strip_prefix(' ').expect(line);
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
    };
    Sample {
        metric: metric.to_owned(),
        labels,
        value,
    }
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of a metric's samples whose labels include `labels`; for a histogram, the
    /// number of observations (its `_count`).
    fn count(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        let counted = format!("{metric}_count");
        let sum: f64 = self
            .0
            .iter()
            .filter(|s| s.metric == metric || s.metric == counted)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum();
        sum as u64
    }
}

async fn scrape(h: &Harness) -> Scrape {
    let response = h.http.get(h.app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let samples = parse(&response.text().await.unwrap());
    assert!(!samples.is_empty());
    Scrape(samples)
}

#[actix_web::test]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| sim.delivery_ratio = 0.8,
        &[("batch_size", json!(100))],
    )
    .await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let campaign = campaign_of(&h, &token, N, 0).await;
    let (status, body) = h.action(&token, campaign, "enqueue").await;
    assert_eq!(status, 200, "{body}");
    h.wait_for_status(&token, campaign, "completed", Duration::from_secs(60))
        .await;
    h.settled_figures(&token, campaign).await;

    // reports delivered a second time, straight to the topic: duplicates
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT provider_message_id FROM campaign_recipients
         WHERE campaign_id = $1 AND status = 'delivered' ORDER BY id LIMIT $2",
    )
    .bind(campaign)
    .bind(DUPLICATES as i64)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let again: Vec<Event> = ids
        .iter()
        .map(|id| Event::Dlr {
            message_id: MessageId::parse(id).unwrap(),
            status: DeliveryStatus::from_raw("Delivered"),
            description: None,
            at: chrono::Utc::now(),
            event_id: None,
            source: None,
        })
        .collect();
    h.app.pipeline.handles.producer.send(&again).await.unwrap();
    // the simulator counts a report once its POST has been answered, which can be after the
    // service has applied it: its count is read when the duplicates are in, and settles
    let (m, reports) = eventually(
        Duration::from_secs(20),
        "the duplicates to be counted and the simulator's count to settle",
        || async {
            let reports = h.sim.stats().dlrs_sent as u64;
            let m = scrape(&h).await;
            let dup = m.count(
                "campaignd_events_total",
                &[("type", "dlr"), ("outcome", "duplicate")],
            );
            let read = ["applied", "duplicate", "regression"]
                .iter()
                .map(|o| m.count("campaignd_events_total", &[("type", "dlr"), ("outcome", o)]))
                .sum::<u64>();
            // every message's report sent (on a loaded machine some are still on their way)
            let all_sent = reports >= N as u64;
            (all_sent && dup >= DUPLICATES as u64 && read == reports + DUPLICATES as u64)
                .then_some((m, reports))
        },
    )
    .await;
    let sim = h.sim.stats();

    let events =
        |t: &str, o: &str| m.count("campaignd_events_total", &[("type", t), ("outcome", o)]);
    assert_eq!(events("sent", "applied"), N as u64);
    assert_eq!(
        events("dlr", "applied"),
        N as u64,
        "one final report per message"
    );
    assert_eq!(events("dlr", "duplicate"), DUPLICATES as u64);
    assert_eq!(events("dlr", "dead_lettered"), 0);
    let dlr_read =
        events("dlr", "applied") + events("dlr", "duplicate") + events("dlr", "regression");
    assert_eq!(
        dlr_read,
        reports + DUPLICATES as u64,
        "every report read once"
    );

    assert_eq!(m.count("campaignd_messages_sent_total", &[]), N as u64);
    assert_eq!(m.count("campaignd_send_failures_total", &[]), 0);
    assert_eq!(
        m.count(
            "campaignd_mitto_requests_total",
            &[("endpoint", "send"), ("outcome", "ok")]
        ),
        sim.bulk_requests,
    );
    assert_eq!(
        m.count(
            "campaignd_mitto_request_duration_seconds",
            &[("endpoint", "send")]
        ),
        sim.bulk_requests,
        "one latency observation per call"
    );
    assert_eq!(
        m.count(
            "campaignd_webhook_requests_total",
            &[("webhook", "dlr"), ("outcome", "accepted")]
        ),
        reports,
    );
    assert_eq!(
        m.count(
            "campaignd_http_requests_total",
            &[("route", "/webhooks/mitto/dlr"), ("status", "202")]
        ),
        reports,
    );
    assert!(m.count("campaignd_limiter_wait_seconds", &[]) >= sim.bulk_requests);
    assert!(m.count("campaignd_checkpoint_duration_seconds", &[]) > 0);
    assert!(m.count("campaignd_checkpoint_rows", &[]) > 0);
    assert_eq!(m.count("campaignd_campaign_actors_active", &[]), 1);
    // routes are labelled by their pattern, never by a campaign's id
    h.stats(&token, campaign).await;
    let m = scrape(&h).await;
    let requests: Vec<String> =
        m.0.iter()
            .filter(|s| s.metric == "campaignd_http_requests_total")
            .map(|s| format!("{:?}", s.labels))
            .collect();
    let raw_id = format!("/{campaign}/");
    assert!(
        !requests.iter().any(|r| r.contains(&raw_id)),
        "{requests:#?}"
    );
    let stats_200 = [("route", "/api/v1/campaigns/{id}/stats"), ("status", "200")];
    assert!(
        m.count("campaignd_http_requests_total", &stats_200) >= 1,
        "{requests:#?}"
    );
    h.stop().await;
    db.drop_database().await;
}
