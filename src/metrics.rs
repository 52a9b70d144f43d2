//! Prometheus metrics: every metric campaignd exports is named here, with the function that
//! records it, so the README's table and the code cannot drift apart. Recording goes through
//! the `metrics` facade (a few atomic adds; nothing when no recorder is installed); `GET
//! /metrics` renders them in the Prometheus text format.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS: &str = "campaignd_events_total";
pub const CONSUMER_LAG: &str = "campaignd_consumer_lag";
pub const CONSUMER_HELD_BACK: &str = "campaignd_consumer_held_back";
pub const CHECKPOINT_SECONDS: &str = "campaignd_checkpoint_duration_seconds";
pub const CHECKPOINT_ROWS: &str = "campaignd_checkpoint_rows";
pub const CHECKPOINT_FAILURES: &str = "campaignd_checkpoint_failures_total";
pub const PARTITIONS_FENCED: &str = "campaignd_partitions_fenced_total";
pub const FOLD_SECONDS: &str = "campaignd_fold_duration_seconds";
pub const FOLD_ROWS: &str = "campaignd_fold_rows";
pub const FOLD_FAILURES: &str = "campaignd_fold_failures_total";
pub const UNFOLDED_ROWS: &str = "campaignd_unfolded_rows";
pub const CAMPAIGN_ACTORS: &str = "campaignd_campaign_actors_active";
pub const LEDGER_MESSAGES: &str = "campaignd_ledger_messages";
pub const LEDGER_BYTES: &str = "campaignd_ledger_bytes";
pub const STREAM_SUBSCRIBERS: &str = "campaignd_stats_stream_subscribers";
pub const MITTO_REQUESTS: &str = "campaignd_mitto_requests_total";
pub const MITTO_SECONDS: &str = "campaignd_mitto_request_duration_seconds";
pub const LIMITER_WAIT_SECONDS: &str = "campaignd_limiter_wait_seconds";
pub const CLAIM_SECONDS: &str = "campaignd_claim_duration_seconds";
pub const MESSAGES_SENT: &str = "campaignd_messages_sent_total";
pub const SEND_FAILURES: &str = "campaignd_send_failures_total";
pub const WEBHOOK_REQUESTS: &str = "campaignd_webhook_requests_total";
pub const HTTP_REQUESTS: &str = "campaignd_http_requests_total";
pub const HTTP_SECONDS: &str = "campaignd_http_request_duration_seconds";

/// Latency buckets from 0.5 ms to 30 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
    30.0,
];
/// Row-count buckets for checkpoints.
const ROWS_BUCKETS: [f64; 10] = [
    0.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0, 250_000.0, 500_000.0, 1e6,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (one per process: several applications in
/// one test process share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CHECKPOINT_ROWS.into()), &ROWS_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FOLD_ROWS.into()), &ROWS_BUCKETS))
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only this one's"
            );
        }
        describe();
        handle
    })
}

/// The scrape: upkeep first (histograms' housekeeping), then the text format.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS, "Events read from message-events, by type and what became of them (applied, duplicate, regression, parked, dead_lettered).");
    describe_gauge!(
        CONSUMER_LAG,
        "Records of message-events past the offset committed with the state in Postgres, per partition."
    );
    describe_gauge!(
        CONSUMER_HELD_BACK,
        "1 while back-pressure holds the consumer (records applied but not committed, or rows not folded, past their bounds)."
    );
    describe_histogram!(
        CHECKPOINT_SECONDS,
        Unit::Seconds,
        "Time to write one checkpoint (rows appended to the message log, snapshots, offsets) to Postgres."
    );
    describe_histogram!(
        CHECKPOINT_ROWS,
        Unit::Count,
        "Message rows one checkpoint wrote."
    );
    describe_counter!(
        CHECKPOINT_FAILURES,
        "Checkpoints whose write failed (their data is kept for the next)."
    );
    describe_counter!(
        PARTITIONS_FENCED,
        "Partitions whose state this member dropped: another member had taken them over, and the checkpoint was refused."
    );
    describe_histogram!(
        FOLD_SECONDS,
        Unit::Seconds,
        "Time to fold the message log into campaign_recipients once."
    );
    describe_histogram!(
        FOLD_ROWS,
        Unit::Count,
        "Recipient rows one fold wrote (one per recipient, however many states it logged)."
    );
    describe_counter!(
        FOLD_FAILURES,
        "Folds that failed (the log keeps the rows; the fold is retried)."
    );
    describe_gauge!(
        UNFOLDED_ROWS,
        "Message rows committed to the message log and not yet folded into campaign_recipients."
    );
    describe_gauge!(CAMPAIGN_ACTORS, "Campaign actors in memory.");
    describe_gauge!(
        LEDGER_MESSAGES,
        "Messages whose state a partition holds in memory, by held (full: rows changed lately or final; waiting: accepted, awaiting their report, compact)."
    );
    describe_gauge!(
        LEDGER_BYTES,
        Unit::Bytes,
        "Bytes a partition's message state takes in memory (its tables, ids and the compact book of waiting messages)."
    );
    describe_gauge!(STREAM_SUBSCRIBERS, "Open live stats streams.");
    describe_counter!(MITTO_REQUESTS, "Calls to Mitto by endpoint and outcome (ok, rate_limited, server_error, client_error, timeout, connection).");
    describe_histogram!(
        MITTO_SECONDS,
        Unit::Seconds,
        "Mitto call latency by endpoint (every attempt)."
    );
    describe_histogram!(
        LIMITER_WAIT_SECONDS,
        Unit::Seconds,
        "Time a batch waited for the rate limiter."
    );
    describe_histogram!(
        CLAIM_SECONDS,
        Unit::Seconds,
        "Time a campaign's claim of its next batch took (queued → processing, committed before the batch leaves); a campaign claims one batch at a time."
    );
    describe_counter!(MESSAGES_SENT, "Messages Mitto accepted.");
    describe_counter!(
        SEND_FAILURES,
        "Messages refused before acceptance, by retryable (true, false)."
    );
    describe_counter!(WEBHOOK_REQUESTS, "Webhook requests by webhook (dlr, inbound) and outcome (accepted, unauthorized, replay, bad_request, too_large, unavailable).");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, route pattern and status."
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "HTTP request latency by method and route pattern."
    );
}

/// `n` events of `kind` ended as `outcome`.
pub fn events(kind: &'static str, outcome: &'static str, n: u64) {
    counter!(EVENTS, "type" => kind, "outcome" => outcome).increment(n);
}

pub fn consumer_lag(partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(lag.max(0) as f64);
}

pub fn consumer_held_back(held: bool) {
    gauge!(CONSUMER_HELD_BACK).set(if held { 1.0 } else { 0.0 });
}

pub fn checkpoint(took: Duration, rows: usize) {
    histogram!(CHECKPOINT_SECONDS).record(took.as_secs_f64());
    histogram!(CHECKPOINT_ROWS).record(rows as f64);
}

pub fn fold(took: Duration, rows: u64) {
    histogram!(FOLD_SECONDS).record(took.as_secs_f64());
    histogram!(FOLD_ROWS).record(rows as f64);
}

pub fn fold_failed() {
    counter!(FOLD_FAILURES).increment(1);
}

pub fn unfolded_rows(rows: u64) {
    gauge!(UNFOLDED_ROWS).set(rows as f64);
}

pub fn checkpoint_failed() {
    counter!(CHECKPOINT_FAILURES).increment(1);
}

/// Partitions whose state this member dropped because another member had taken them over.
pub fn partitions_fenced(n: usize) {
    counter!(PARTITIONS_FENCED).increment(n as u64);
}

/// A partition's message state after a checkpoint barrier.
pub fn ledger(m: crate::engine::ledger::LedgerMemory) {
    let p = m.partition.to_string();
    gauge!(LEDGER_MESSAGES, "partition" => p.clone(), "held" => "full").set(m.full_rows as f64);
    gauge!(LEDGER_MESSAGES, "partition" => p.clone(), "held" => "waiting").set(m.waiting as f64);
    gauge!(LEDGER_BYTES, "partition" => p).set(m.bytes as f64);
}

/// A partition left this instance: it holds no message state here any more.
pub fn ledger_gone(partition: i32) {
    ledger(crate::engine::ledger::LedgerMemory {
        partition,
        full_rows: 0,
        waiting: 0,
        bytes: 0,
    });
}

pub fn campaign_actors(active: usize) {
    gauge!(CAMPAIGN_ACTORS).set(active as f64);
}

pub fn stream_subscribers(open: usize) {
    gauge!(STREAM_SUBSCRIBERS).set(open as f64);
}

pub fn mitto_call(endpoint: &'static str, outcome: &'static str, took: Duration) {
    counter!(MITTO_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
    histogram!(MITTO_SECONDS, "endpoint" => endpoint).record(took.as_secs_f64());
}

pub fn limiter_wait(took: Duration) {
    histogram!(LIMITER_WAIT_SECONDS).record(took.as_secs_f64());
}

pub fn claim(took: Duration) {
    histogram!(CLAIM_SECONDS).record(took.as_secs_f64());
}

pub fn sends(accepted: u64, failed_retryable: u64, failed_final: u64) {
    counter!(MESSAGES_SENT).increment(accepted);
    counter!(SEND_FAILURES, "retryable" => "true").increment(failed_retryable);
    counter!(SEND_FAILURES, "retryable" => "false").increment(failed_final);
}

pub fn webhook(webhook: &'static str, outcome: &'static str) {
    counter!(WEBHOOK_REQUESTS, "webhook" => webhook, "outcome" => outcome).increment(1);
}

pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_SECONDS, "method" => method, "route" => route).record(took.as_secs_f64());
}
