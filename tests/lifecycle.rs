//! One owner per campaign, tried through the HTTP API against real Postgres, the embedded
//! broker and the simulator: every (status, action) pair answers by the lifecycle table and
//! stores what it answers; a busy campaign holds back no checkpoint; absence is never
//! cached; stats of several campaigns check ownership first; idempotency keys are bound to
//! their campaign; texts have a bounded length.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use common::{eventually, stored_offsets, TestDb};
use harness::*;
use serde_json::{json, Value};

/// `completed` first: its campaigns must send to the end before slow `sending` campaigns of
/// the other rows occupy the senders.
const STATUSES: [&str; 6] = [
    "completed",
    "draft",
    "scheduled",
    "sending",
    "paused",
    "cancelled",
];
const ACTIONS: [&str; 9] = [
    "enqueue",
    "schedule",
    "unschedule",
    "pause",
    "resume",
    "cancel",
    "retry-failed",
    "edit",
    "delete",
];

/// The answer and the stored status after each action, per status (rows as `STATUSES`,
/// columns as `ACTIONS`): `code→status`; `gone` after a delete.
const TABLE: [[&str; 9]; 6] = [
    [
        "409→completed",
        "409→completed",
        "409→completed",
        "409→completed",
        "409→completed",
        "409→completed",
        "400→completed",
        "409→completed",
        "409→completed",
    ],
    [
        "200→sending",
        "200→scheduled",
        "409→draft",
        "409→draft",
        "409→draft",
        "409→draft",
        "409→draft",
        "200→draft",
        "204→gone",
    ],
    [
        "200→sending",
        "200→scheduled",
        "200→draft",
        "409→scheduled",
        "409→scheduled",
        "200→cancelled",
        "409→scheduled",
        "200→scheduled",
        "409→scheduled",
    ],
    [
        "409→sending",
        "409→sending",
        "409→sending",
        "200→paused",
        "409→sending",
        "200→cancelled",
        "409→sending",
        "409→sending",
        "409→sending",
    ],
    [
        "200→sending",
        "409→paused",
        "409→paused",
        "409→paused",
        "200→sending",
        "200→cancelled",
        "409→paused",
        "409→paused",
        "409→paused",
    ],
    [
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
        "409→cancelled",
    ],
];

fn later() -> String {
    (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339()
}

/// A campaign brought to `status` through the API. `sending` campaigns send one message a
/// second (the tenant's limit), so they stay sending for the whole test.
async fn campaign_in(h: &Harness, token: &str, status: &str, offset: usize) -> i64 {
    let n = if status == "completed" { 1 } else { 40 };
    let id = campaign_of(h, token, n, offset).await;
    let steps: &[&str] = match status {
        "draft" => &[],
        "scheduled" => &["schedule"],
        "sending" => &["enqueue"],
        "paused" => &["enqueue", "pause"],
        "completed" => &["enqueue"],
        "cancelled" => &["enqueue", "cancel"],
        other => panic!("no way to {other}"),
    };
    for step in steps {
        let (code, body) = act(h, token, id, step).await;
        assert!(code < 300, "{step} for {status}: {code} {body}");
    }
    if status == "completed" {
        h.wait_for_status(token, id, "completed", Duration::from_secs(30))
            .await;
    }
    id
}

/// Runs one action through its route.
async fn act(h: &Harness, token: &str, id: i64, action: &str) -> (u16, Value) {
    let path = format!("/api/v1/campaigns/{id}");
    match action {
        "schedule" => {
            h.post(
                token,
                &format!("{path}/schedule"),
                json!({ "scheduledAt": later() }),
            )
            .await
        }
        "edit" => {
            let body = json!({ "name": "renamed" });
            h.call(reqwest::Method::PATCH, token, &path, Some(body))
                .await
        }
        "delete" => h.call(reqwest::Method::DELETE, token, &path, None).await,
        other => h.action(token, id, other).await,
    }
}

async fn stored_status(h: &Harness, id: i64) -> String {
    sqlx::query_scalar::<_, String>("SELECT status FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_optional(&h.pool)
        .await
        .unwrap()
        .unwrap_or_else(|| "gone".into())
}

#[actix_web::test]
async fn every_status_and_action_pair_answers_by_the_lifecycle_table() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[("rate_limits.tenant_per_second", json!(1))]).await;
    let mut offset = 0;
    for (row, status) in STATUSES.iter().enumerate() {
        // a tenant per status: each has its own send budget of one message a second
        let (_, token) = h.tenant(status, 100_000).await;
        for (column, action) in ACTIONS.iter().enumerate() {
            offset += 100;
            let id = campaign_in(&h, &token, status, offset).await;
            let (code, body) = act(&h, &token, id, action).await;
            let stored = stored_status(&h, id).await;
            let got = format!("{code}→{stored}");
            assert_eq!(got, TABLE[row][column], "{status} + {action}: {body}");
            if code == 409 {
                assert_eq!(body["error"]["code"], "INVALID_STATE", "{body}");
                assert_eq!(body["error"]["status"], *status, "{body}");
            }
            if stored != "gone" {
                // memory agrees with what was stored
                assert_eq!(h.stats(&token, id).await["status"], stored.as_str());
            }
            if matches!(stored.as_str(), "sending" | "paused") {
                // slow sends of one tenant must not queue ahead of the next rows' sends
                assert_eq!(h.action(&token, id, "cancel").await.0, 200);
            }
        }
    }
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_busy_campaign_holds_back_no_checkpoint_and_still_answers_stats() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (busy_tenant, busy_token) = h.tenant("busy", 100_000).await;
    let (_, token) = h.tenant("other", 100_000).await;
    let busy = campaign_of(&h, &busy_token, 2_000, 0).await;
    let other = campaign_of(&h, &token, 3_000, 10_000).await;
    // the busy campaign's enqueue waits on the tenant row this transaction holds
    let mut lock = h.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(busy_tenant)
        .execute(&mut *lock)
        .await
        .unwrap();
    let enqueue = {
        let (http, url) = (
            h.http.clone(),
            h.app.url(&format!("/api/v1/campaigns/{busy}/enqueue")),
        );
        let token = busy_token.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    eventually(Duration::from_secs(10), "the enqueue to be waiting on the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    let before = stored_offsets(&h.pool).await.values().sum::<i64>();
    assert_eq!(h.action(&token, other, "enqueue").await.0, 200);
    let sent = h
        .wait_for_status(&token, other, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(sent["sent"], 3_000, "{sent}");
    // the offsets count reports too, so they can pass the sends' count before every `sent`
    // is checkpointed: what must not be held back is the other campaign's snapshot itself
    eventually(
        Duration::from_secs(10),
        "checkpoints to write the other campaign's snapshot while the busy one waits",
        || async {
            let now = stored_offsets(&h.pool).await.values().sum::<i64>();
            let snapshot: i64 = sqlx::query_scalar("SELECT sent FROM campaigns WHERE id = $1")
                .bind(other)
                .fetch_one(&h.pool)
                .await
                .unwrap();
            (now >= before + 3_000 && snapshot == 3_000).then_some(())
        },
    )
    .await;
    assert!(
        !enqueue.is_finished(),
        "the busy campaign's enqueue is still waiting"
    );
    let stats = h.stats(&busy_token, busy).await;
    assert_eq!(
        stats["status"], "draft",
        "the busy actor answers stats: {stats}"
    );
    lock.rollback().await.unwrap();
    assert_eq!(enqueue.await.unwrap().as_u16(), 200);
    h.wait_for_status(&busy_token, busy, "completed", Duration::from_secs(60))
        .await;
    h.settled_figures(&busy_token, busy).await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn asking_for_a_campaign_that_does_not_exist_yet_leaves_nothing_behind() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let (_, stranger) = h.tenant("stranger", 0).await;
    let first = campaign_of(&h, &token, 3, 0).await;
    let next = first + 1;
    for path in [
        format!("/api/v1/campaigns/{next}/stats"),
        format!("/api/campaigns/{next}/status"),
    ] {
        assert_eq!(h.get(&stranger, &path).await.0, 404);
    }
    assert_eq!(h.action(&stranger, next, "enqueue").await.0, 404);
    let created = campaign_of(&h, &token, 3, 10).await;
    assert_eq!(created, next);
    let (code, stats) = h
        .get(&token, &format!("/api/v1/campaigns/{next}/stats"))
        .await;
    assert_eq!((code, stats["total"].as_i64()), (200, Some(0)), "{stats}");
    assert_eq!(h.action(&token, next, "enqueue").await.0, 200);
    h.wait_for_status(&token, next, "completed", Duration::from_secs(30))
        .await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn stats_of_several_campaigns_omit_foreign_and_unknown_ids_without_activating_them() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let (_, other_token) = h.tenant("other", 1_000).await;
    let mine = campaign_of(&h, &token, 2, 0).await;
    let theirs = campaign_of(&h, &other_token, 2, 10).await;
    let registry = &h.app.state.events.registry;
    let active = registry.active();
    let ids = format!("{theirs},{},{mine},{}", theirs + 100, theirs + 101);
    let (code, found) = h
        .get(&token, &format!("/api/v1/campaigns/stats?ids={ids}"))
        .await;
    assert_eq!(code, 200, "{found}");
    let found: Vec<i64> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["campaignId"].as_i64().unwrap())
        .collect();
    assert_eq!(found, vec![mine]);
    assert!(
        registry.active() <= active + 1,
        "only the tenant's own campaign was activated"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn an_idempotency_key_reused_for_another_campaign_is_refused() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("shop", 1_000).await;
    let first = campaign_of(&h, &token, 5, 0).await;
    let second = campaign_of(&h, &token, 5, 10).await;
    let enqueue = |id: i64| {
        h.http
            .post(h.app.url(&format!("/api/v1/campaigns/{id}/enqueue")))
            .bearer_auth(&token)
            .header("Idempotency-Key", "launch")
            .send()
    };
    assert_eq!(enqueue(first).await.unwrap().status().as_u16(), 200);
    let reused = enqueue(second).await.unwrap();
    assert_eq!(reused.status().as_u16(), 422);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REUSED", "{body}");
    assert_eq!(
        stored_status(&h, second).await,
        "draft",
        "nothing was enqueued"
    );
    let (_, ledger) = h.credits(tenant).await;
    assert_eq!(
        ledger["reserve"], -5,
        "reserved once, for the first campaign"
    );
    // another tenant has keys of its own
    let (_, other_token) = h.tenant("other", 1_000).await;
    let theirs = campaign_of(&h, &other_token, 5, 20).await;
    let response = h
        .http
        .post(h.app.url(&format!("/api/v1/campaigns/{theirs}/enqueue")))
        .bearer_auth(&other_token)
        .header("Idempotency-Key", "launch")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_text_longer_than_max_segments_is_refused_naming_the_recipient() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("shop", 10_000).await;
    let long = "x".repeat(5_000);
    let (code, saved) = h
        .post(
            &token,
            "/api/v1/contacts",
            json!([{ "phone": phone(1), "attributes": { "note": "short" } },
                   { "phone": phone(2), "attributes": { "note": long } }]),
        )
        .await;
    assert_eq!(code, 201, "{saved}");
    let (code, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "long", "body": "Hi {{note}}", "sender": "Shop",
                    "audience": { "phones": [phone(1), phone(2)] } }),
        )
        .await;
    assert_eq!(code, 201, "{campaign}");
    let id = campaign["id"].as_i64().unwrap();
    let (code, body) = h.action(&token, id, "enqueue").await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "TEXT_TOO_LONG", "{body}");
    assert_eq!(body["error"]["recipient"], phone(2), "{body}");
    assert_eq!(body["error"]["maxSegments"], 10, "{body}");
    assert_eq!(stored_status(&h, id).await, "draft");
    assert_eq!(h.credits(tenant).await.0, 10_000, "nothing reserved");
    h.stop().await;
    db.drop_database().await;
}

/// `campaignd verify` with the test database; (exit code, stdout).
fn verify(db: &TestDb) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .arg("verify")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

#[actix_web::test]
async fn verify_passes_after_sending_and_names_a_snapshot_that_differs_from_its_rows() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 50, 0).await;
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", Duration::from_secs(30))
        .await;
    h.settled_figures(&token, id).await;
    let (code, out) = verify(&db);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified 1 campaigns: 0 differ"), "{out}");
    sqlx::query("UPDATE campaigns SET delivered = delivered + 1 WHERE id = $1")
        .bind(id)
        .execute(&h.pool)
        .await
        .unwrap();
    let (code, out) = verify(&db);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("campaign {id}: Delivered: snapshot")),
        "{out}"
    );
    h.stop().await;
    db.drop_database().await;
}
