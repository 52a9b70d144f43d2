//! Reconciliation against real Postgres, the embedded broker and the simulator over HTTP:
//! reports the simulator never posts are fetched by the periodic refresher and the refresh
//! API, applied through the same forward-only rule as webhook reports, and counted exactly;
//! messages Mitto cannot settle end `unknown`; no campaign stays stuck in `sending`.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use campaignd::mitto::simulator::{MsRange, SimConfig};
use common::{eventually, TestDb, WEBHOOK_SECRET};
use harness::*;
use serde_json::{json, Value};

/// Settings that keep the periodic refresher out of a test's way.
const NO_PASSES: (&str, i64) = ("reconcile.after_secs", 86_400);

/// A simulator that posts no report at all; each message reaches its final status (what
/// lookups answer) `delay_ms` after it was accepted.
fn no_reports(delay_ms: u64) -> impl FnOnce(&mut SimConfig) {
    move |sim| {
        sim.drop_dlr_ratio = 1.0;
        sim.dlr_delay_ms = MsRange {
            min: delay_ms,
            max: delay_ms,
        };
    }
}

/// A campaign of `n` inline phones, sent to the end, with every `sent` committed.
async fn sent_campaign(h: &Harness, token: &str, n: usize, offset: usize) -> i64 {
    let id = campaign_of(h, token, n, offset).await;
    let (status, body) = h
        .post(token, &format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    h.wait_for_status(token, id, "completed", Duration::from_secs(120))
        .await;
    eventually(
        Duration::from_secs(60),
        "sent rows to be committed",
        || async {
            let accepted: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM campaign_recipients
             WHERE campaign_id = $1 AND provider_message_id IS NOT NULL",
            )
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
            (accepted == n as i64).then_some(())
        },
    )
    .await;
    // the reconciler reads a campaign's rows within the id range its enqueue recorded
    let range: (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT recipients_from, recipients_to FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    let rows: (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT min(id), max(id) FROM campaign_recipients WHERE campaign_id = $1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(range, rows);
    id
}

async fn message_ids(h: &Harness, campaign: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT provider_message_id FROM campaign_recipients WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

async fn refresh(h: &Harness, token: &str, message: &str) -> (u16, Value) {
    h.post(
        token,
        "/api/mitto/refresh-status",
        json!({ "providerMessageId": message }),
    )
    .await
}

async fn wait_for_job(h: &Harness, token: &str, job: &str) -> Value {
    eventually(
        Duration::from_secs(120),
        "the refresh job to end",
        || async {
            let (status, body) = h
                .get(token, &format!("/api/mitto/refresh-jobs/{job}"))
                .await;
            assert_eq!(status, 200, "{body}");
            (body["state"] != "running").then_some(body)
        },
    )
    .await
}

/// The stats agree with what the simulator knows happened to every message.
fn assert_matches_truth(stats: &Value, truth: &campaignd::mitto::simulator::SimStats) {
    assert_eq!(stats["sent"], truth.accepted, "{stats}");
    assert_eq!(stats["delivered"], truth.delivered, "{stats}");
    assert_eq!(stats["deliveryFailed"], truth.failed, "{stats}");
    assert_eq!(truth.max_sends_per_message, 1, "a phone was messaged twice");
}

#[actix_web::test]
async fn the_refresher_fetches_every_dropped_report_and_counts_match_the_simulator() {
    const N: usize = 10_000;
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| sim.drop_dlr_ratio = 0.2,
        &[
            ("reconcile.after_secs", json!(1)),
            ("reconcile.interval_secs", json!(1)),
            ("mitto.status_lookups_per_second", json!(1000)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 100_000).await;
    let id = campaign_of(&h, &token, N, 0).await;
    let started = Instant::now();
    let (status, _) = h
        .post(&token, &format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await;
    assert_eq!(status, 200);
    h.wait_for_status(&token, id, "completed", Duration::from_secs(120))
        .await;
    let sent_in = started.elapsed();
    let stats = eventually(Duration::from_secs(120), "pending to reach 0", || async {
        let stats = h.stats(&token, id).await;
        (stats["pending"] == 0 && stats["awaitingReport"] == 0).then_some(stats)
    })
    .await;
    let settled_in = started.elapsed();
    let truth = h.sim.stats();
    eprintln!(
        "{N} recipients, {} reports dropped: sent in {sent_in:?}, every status known after \
         {settled_in:?}; {} lookups, at most {} in one second",
        truth.dlrs_dropped, truth.lookups, truth.max_lookups_per_second
    );
    assert!(truth.dlrs_dropped > N as u64 / 10, "reports were dropped");
    assert_eq!(truth.in_flight, 0);
    assert_matches_truth(&stats, &truth);
    assert_eq!(stats["unknown"], 0);
    assert!(stats["lastRefreshAt"].is_string(), "{stats}");
    assert!(truth.max_lookups_per_second <= 1000);
    let figures = h.settled_figures(&token, id).await;
    assert_eq!(figures["pending"], 0);
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn bulk_refresh_covers_every_waiting_message_and_runs_large_ones_as_jobs() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        no_reports(20),
        &[
            (NO_PASSES.0, json!(NO_PASSES.1)),
            ("reconcile.sync_limit", json!(5_000)),
            ("mitto.status_lookups_per_second", json!(2_000)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 100_000).await;

    // up to the sync limit: every waiting message, answered in the replaced system's shape
    let small = sent_campaign(&h, &token, 5_000, 0).await;
    assert_eq!(h.stats(&token, small).await["awaitingReport"], 5_000);
    let (status, report) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": small }),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["total"], &report["updated"], &report["failed"]),
        (&json!(5_000), &json!(5_000), &json!(0))
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 5_000);
    assert!(results.iter().all(|r| r["success"] == true
        && r["updated"] == true
        && r["providerMessageId"].is_string()));
    let stats = h.stats(&token, small).await;
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(
        stats["delivered"].as_i64().unwrap() + stats["deliveryFailed"].as_i64().unwrap(),
        5_000
    );

    // above it: 202 at once, a job that reaches the same totals, one job per campaign
    let large = sent_campaign(&h, &token, 5_001, 10_000).await;
    let (status, started) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": large }),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["total"], 5_001);
    let job = started["jobId"].as_str().unwrap().to_owned();
    let (status, second) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": large }),
        )
        .await;
    assert_eq!(status, 409, "{second}");
    assert_eq!(second["error"]["code"], "REFRESH_IN_PROGRESS");
    let done = wait_for_job(&h, &token, &job).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        (
            &done["total"],
            &done["processed"],
            &done["updated"],
            &done["failed"]
        ),
        (&json!(5_001), &json!(5_001), &json!(5_001), &json!(0))
    );
    let stats = h.stats(&token, large).await;
    assert_eq!(stats["pending"], 0, "{stats}");

    // nothing waits any more: a new refresh finds nothing to do
    let (status, again) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": large }),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["total"], 0);

    let truth = h.sim.stats();
    assert_eq!(truth.dlrs_sent, 0, "the simulator posted no report at all");
    let small_stats = h.stats(&token, small).await;
    let delivered =
        small_stats["delivered"].as_u64().unwrap() + stats["delivered"].as_u64().unwrap();
    assert_eq!(delivered, truth.delivered);
    h.settled_figures(&token, large).await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_refresh_never_moves_a_delivered_message_back() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| {
            no_reports(20)(sim);
            sim.delivery_ratio = 0.0;
            sim.failure_statuses = vec!["Undelivered".into()];
        },
        &[(NO_PASSES.0, json!(NO_PASSES.1))],
    )
    .await;
    let (_, token) = h.tenant("Shop", 1_000).await;
    let id = sent_campaign(&h, &token, 2, 0).await;
    let ids = message_ids(&h, id).await;

    // a webhook report says Delivered; Mitto's lookup (later) says Undelivered
    let body =
        serde_json::to_vec(&json!({ "messageId": ids[0], "deliveryStatus": "Delivered" })).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let posted = h
        .http
        .post(h.app.url("/webhooks/mitto/dlr"))
        .header("Content-Type", "application/json")
        .header("X-Webhook-Timestamp", ts.to_string())
        .header(
            "X-Webhook-Signature",
            campaignd::mitto::signature::sign(WEBHOOK_SECRET, Some(ts), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 202);
    eventually(Duration::from_secs(30), "the report to count", || async {
        (h.stats(&token, id).await["delivered"] == 1).then_some(())
    })
    .await;

    let (status, kept) = refresh(&h, &token, &ids[0]).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        kept,
        json!({ "providerMessageId": ids[0], "campaignId": id, "status": "delivered",
                "deliveryStatus": "Delivered", "updated": false })
    );
    let (status, failed) = refresh(&h, &token, &ids[1]).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(
        (
            &failed["status"],
            &failed["deliveryStatus"],
            &failed["updated"]
        ),
        (&json!("failed"), &json!("Undelivered"), &json!(true))
    );
    let stats = h.stats(&token, id).await;
    assert_eq!(
        (
            &stats["delivered"],
            &stats["deliveryFailed"],
            &stats["pending"]
        ),
        (&json!(1), &json!(1), &json!(0))
    );
    h.settled_figures(&token, id).await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn in_flight_answers_leave_messages_in_flight_and_lookups_keep_their_rate() {
    const RATE: u64 = 20;
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| {
            no_reports(600_000)(sim);
            // slow answers: many lookups in flight at once must still leave at the rate
            sim.lookup_latency_ms = MsRange { min: 300, max: 300 };
        },
        &[
            (NO_PASSES.0, json!(NO_PASSES.1)),
            ("mitto.status_lookups_per_second", json!(RATE)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 1_000).await;
    let id = sent_campaign(&h, &token, 60, 0).await;
    let ids = message_ids(&h, id).await;

    let (status, one) = refresh(&h, &token, &ids[0]).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (&one["status"], &one["deliveryStatus"], &one["updated"]),
        (&json!("sent"), &json!("Sent"), &json!(false))
    );
    let started = Instant::now();
    let (status, bulk) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(
        (&bulk["total"], &bulk["updated"], &bulk["failed"]),
        (&json!(60), &json!(0), &json!(0))
    );
    let stats = h.stats(&token, id).await;
    assert_eq!(
        (&stats["pending"], &stats["sent"]),
        (&json!(60), &json!(60))
    );
    let truth = h.sim.stats();
    eprintln!(
        "60 lookups at {RATE}/s took {took:?}; at most {} in one second",
        truth.max_lookups_per_second
    );
    assert!(
        truth.max_lookups_per_second <= RATE,
        "{} lookups in one second",
        truth.max_lookups_per_second
    );
    assert!(
        took >= Duration::from_millis(2_500),
        "60 lookups at 20/s take ~3 s: {took:?}"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn messages_mitto_cannot_settle_end_unknown_after_the_give_up_time() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        no_reports(600_000),
        &[
            ("reconcile.after_secs", json!(0)),
            ("reconcile.interval_secs", json!(1)),
            ("reconcile.give_up_after_hours", json!(0.001)),
            ("mitto.status_lookups_per_second", json!(500)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 1_000).await;
    let id = sent_campaign(&h, &token, 20, 0).await;
    let stats = eventually(Duration::from_secs(60), "every message to end", || async {
        let stats = h.stats(&token, id).await;
        (stats["pending"] == 0).then_some(stats)
    })
    .await;
    assert_eq!(
        (
            &stats["unknown"],
            &stats["sent"],
            &stats["delivered"],
            &stats["failed"]
        ),
        (&json!(20), &json!(20), &json!(0), &json!(0)),
        "{stats}"
    );
    assert!(stats["lastRefreshAt"].is_string());
    let figures = h.settled_figures(&token, id).await;
    assert_eq!(figures["unknown"], 20);
    let error: String =
        sqlx::query_scalar("SELECT error FROM campaign_recipients WHERE campaign_id = $1 LIMIT 1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(error.contains("Mitto still says Sent"), "{error}");
    // a refresh asked for by a person tries the given-up messages again
    let (status, again) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["total"], &again["failed"], &again["updated"]),
        (&json!(20), &json!(0), &json!(0)),
        "Mitto still says Sent: they stay unknown"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn another_tenants_message_campaign_bulk_and_job_are_not_found() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        no_reports(20),
        &[
            (NO_PASSES.0, json!(NO_PASSES.1)),
            ("reconcile.sync_limit", json!(1)),
            ("mitto.status_lookups_per_second", json!(1000)),
        ],
    )
    .await;
    let (_, owner) = h.tenant("Owner", 1_000).await;
    let (_, other) = h.tenant("Other", 1_000).await;
    let id = sent_campaign(&h, &owner, 3, 0).await;
    let message = message_ids(&h, id).await.remove(0);
    let bulk: uuid::Uuid = sqlx::query_scalar(
        "SELECT bulk_id FROM campaign_recipients WHERE campaign_id = $1 LIMIT 1",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();

    let (status, started) = h
        .post(
            &owner,
            "/api/mitto/refresh-status-bulk",
            json!({ "bulkId": bulk }),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let job = started["jobId"].as_str().unwrap().to_owned();

    let not_found = [
        refresh(&h, &other, &message).await,
        h.post(
            &other,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await,
        h.post(
            &other,
            "/api/mitto/refresh-status-bulk",
            json!({ "bulkId": bulk }),
        )
        .await,
        h.get(&other, &format!("/api/mitto/refresh-jobs/{job}"))
            .await,
        refresh(&h, &owner, "01KC69MT19BRK5MSXG1V95YPHX").await,
        h.get(&owner, "/api/mitto/refresh-jobs/not-a-job").await,
    ];
    for (status, body) in not_found {
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let bad = [
        json!({}),
        json!({ "campaignId": id, "bulkId": bulk }),
        json!({ "campaignId": -1 }),
        json!({ "campaignId": 1.5 }),
        json!({ "campaignId": "+1" }),
        json!({ "campaignId": " 1" }),
        json!({ "bulkId": "nope" }),
    ];
    for body in bad {
        let (status, answer) = h.post(&owner, "/api/mitto/refresh-status-bulk", body).await;
        assert_eq!(status, 400, "{answer}");
    }
    let (status, _) = refresh(&h, &owner, "").await;
    assert_eq!(status, 400);

    let done = wait_for_job(&h, &owner, &job).await;
    assert_eq!(
        (&done["state"], &done["total"]),
        (&json!("completed"), &json!(3))
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_campaign_marked_sending_without_a_live_actor_is_picked_up_and_completes() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |_| {},
        &[
            ("campaign_idle_secs", json!(1)),
            ("reconcile.stuck_sweep_secs", json!(1)),
            ("rate_limits.tenant_per_second", json!(100)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let row_status = |id: i64| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM campaigns WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let registry = h.app.state.events.registry.clone();

    // paused half way, passivated, then its row says `sending` with no actor on it
    let halted = campaign_of(&h, &token, 300, 0).await;
    let (status, _) = h
        .post(
            &token,
            &format!("/api/campaigns/{halted}/enqueue"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = h.action(&token, halted, "pause").await;
    assert_eq!(status, 200);
    // a finished campaign whose row says `sending` again has nothing queued or out
    let finished = sent_campaign(&h, &token, 5, 1_000).await;
    eventually(
        Duration::from_secs(30),
        "both actors to passivate",
        || async { (registry.active() == 0).then_some(()) },
    )
    .await;
    let queued: i64 = sqlx::query_scalar("SELECT queued FROM campaigns WHERE id = $1")
        .bind(halted)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert!(queued > 0, "the pause left messages queued");
    sqlx::query("UPDATE campaigns SET status = 'sending' WHERE id = ANY($1)")
        .bind(vec![halted, finished])
        .execute(&h.pool)
        .await
        .unwrap();

    // only the sweep can notice: nothing else asks for these campaigns
    for id in [halted, finished] {
        eventually(
            Duration::from_secs(60),
            "the sweep to finish the campaign",
            || async { (row_status(id).await == "completed").then_some(()) },
        )
        .await;
    }
    let sends = h.sends();
    assert_eq!(sends.len(), 305, "every phone messaged");
    assert!(sends.values().all(|n| *n == 1), "nobody messaged twice");
    h.settled_figures(&token, halted).await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn an_outage_at_mitto_keeps_no_message_waiting_past_the_give_up_time() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| {
            no_reports(20)(sim);
            sim.lookup_5xx_ratio = 1.0;
        },
        &[
            ("reconcile.after_secs", json!(0)),
            ("reconcile.interval_secs", json!(1)),
            ("reconcile.give_up_after_hours", json!(0.001)),
            ("mitto.max_retries", json!(1)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 1_000).await;
    let id = sent_campaign(&h, &token, 10, 0).await;

    // a refresh asked for while Mitto fails: every lookup failed, the job says so
    let (status, report) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["total"], &report["failed"]),
        (&json!(10), &json!(10))
    );
    assert!(report["results"][0]["error"]
        .as_str()
        .unwrap()
        .contains("503"));
    let job = report["jobId"].as_str().unwrap();
    let (_, job) = h
        .get(&token, &format!("/api/mitto/refresh-jobs/{job}"))
        .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("answered none"),
        "{job}"
    );
    let (status, one) = refresh(&h, &token, &message_ids(&h, id).await[0]).await;
    assert_eq!(status, 503, "{one}");
    assert_eq!(one["error"]["code"], "PROVIDER_UNAVAILABLE");

    // past the give-up time the refresher records them unknown all the same
    let stats = eventually(Duration::from_secs(60), "every message to end", || async {
        let stats = h.stats(&token, id).await;
        (stats["pending"] == 0).then_some(stats)
    })
    .await;
    assert_eq!(
        (&stats["unknown"], &stats["sent"]),
        (&json!(10), &json!(10))
    );
    assert!(
        stats["lastRefreshAt"].is_null(),
        "Mitto never answered: {stats}"
    );
    h.settled_figures(&token, id).await;
    let error: String =
        sqlx::query_scalar("SELECT error FROM campaign_recipients WHERE campaign_id = $1 LIMIT 1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(error.contains("could not be asked"), "{error}");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn slow_lookups_never_hold_a_request_past_its_deadline_and_live_jobs_are_never_interrupted() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |sim| {
            no_reports(20)(sim);
            sim.lookup_latency_ms = MsRange {
                min: 1_500,
                max: 1_500,
            };
        },
        &[
            (NO_PASSES.0, json!(NO_PASSES.1)),
            ("reconcile.answer_within_ms", json!(800)),
            ("reconcile.concurrency", json!(2)),
        ],
    )
    .await;
    let (_, token) = h.tenant("Shop", 1_000).await;
    let id = sent_campaign(&h, &token, 6, 0).await;

    let started = Instant::now();
    let (status, one) = refresh(&h, &token, &message_ids(&h, id).await[0]).await;
    assert_eq!(status, 504, "{one}");
    assert_eq!(one["error"]["code"], "PROVIDER_TIMEOUT");
    assert!(started.elapsed() < Duration::from_millis(1_400));

    // under the sync limit, but Mitto is slow: 202 at the deadline, the job goes on
    let started = Instant::now();
    let (status, answer) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1_400));
    let job = answer["jobId"].as_str().unwrap().to_owned();

    // what a second instance does at start-up leaves a live job alone
    let interrupted = campaignd::store::reconcile::interrupt_dead_jobs(&h.pool)
        .await
        .unwrap();
    assert_eq!(interrupted, 0);
    let (_, running) = h
        .get(&token, &format!("/api/mitto/refresh-jobs/{job}"))
        .await;
    assert_eq!(running["state"], "running", "{running}");
    let (status, _) = h
        .post(
            &token,
            "/api/mitto/refresh-status-bulk",
            json!({ "campaignId": id }),
        )
        .await;
    assert_eq!(status, 409);

    let done = wait_for_job(&h, &token, &job).await;
    assert_eq!(
        (&done["state"], &done["processed"], &done["failed"]),
        (&json!("completed"), &json!(6), &json!(0)),
        "{done}"
    );
    assert_eq!(h.stats(&token, id).await["pending"], 0);
    h.stop().await;
    db.drop_database().await;
}
