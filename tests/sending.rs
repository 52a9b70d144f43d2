//! Sending end to end against real Postgres, the embedded Kafka-protocol broker and the Mitto
//! simulator over HTTP: contacts and lists, the campaign API and its state machine,
//! enqueue with credits, the rate-limited send loop, pause/resume/cancel, retry-failed, and
//! tenant isolation.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use campaignd::mitto::simulator::Fault;
use common::{eventually, TestDb};
use harness::*;
use serde_json::{json, Value};

#[actix_web::test]
async fn contacts_lists_and_campaign_definitions_follow_the_state_machine() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let (_, other) = h.tenant("other shop", 1_000).await;

    // CSV import keeps good rows and reports bad ones by line
    let csv = "phone,first_name,last_name,tier\n+306900000001,Ann,Lee,gold\nnope,Bob,,\n00306900000002,Cy,,\n";
    let response = h
        .http
        .post(h.app.url("/api/v1/contacts/import"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let imported: Value = response.json().await.unwrap();
    assert_eq!(imported["imported"], 2);
    assert_eq!(imported["errors"][0]["line"], 3);

    // JSON contacts: all or nothing, with every problem named
    let (status, body) = h
        .post(
            &token,
            "/api/v1/contacts",
            json!([{ "phone": "+306900000003" }, { "phone": "12" }]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("item 1"));

    let (status, list) = h
        .post(&token, "/api/v1/lists", json!({ "name": "VIP" }))
        .await;
    assert_eq!(status, 201);
    let list_id = list["id"].as_i64().unwrap();
    let ids = contacts(
        &h,
        &token,
        &["+306900000001".into(), "+306900000002".into()],
        &HashSet::new(),
    )
    .await;
    let (_, added) = h
        .post(
            &token,
            &format!("/api/v1/lists/{list_id}/members"),
            json!({ "contactIds": ids }),
        )
        .await;
    assert_eq!(added["added"], 2);
    assert_eq!(
        h.post(&token, "/api/v1/lists", json!({ "name": "VIP" }))
            .await
            .0,
        409
    );

    // a campaign: validation, then a draft
    let (status, body) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "", "body": "Hi", "sender": "WayTooLongSender" }),
        )
        .await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("name") && message.contains("sender"),
        "{message}"
    );
    let (status, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Spring sale", "body": "Hi {{firstName}}, 20% off", "sender": "Shop",
                    "audience": { "listId": list_id, "phones": ["+30 690 000 0009"] } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    assert_eq!(campaign["status"], "draft");
    assert_eq!(campaign["audience"]["phones"][0], "+306900000009");
    let id = campaign["id"].as_i64().unwrap();

    // edit, schedule, unschedule; refused transitions say the current status
    let (status, edited) = h
        .call(
            reqwest::Method::PATCH,
            &token,
            &format!("/api/v1/campaigns/{id}"),
            Some(json!({ "name": "Spring sale!" })),
        )
        .await;
    assert_eq!(
        (status, edited["name"].as_str()),
        (200, Some("Spring sale!"))
    );
    let (status, body) = h.action(&token, id, "pause").await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (409, Some("draft")),
        "{body}"
    );
    let at = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = h
        .post(
            &token,
            &format!("/api/v1/campaigns/{id}/schedule"),
            json!({ "scheduledAt": at }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("scheduled")),
        "{body}"
    );
    let (status, _) = h.action(&token, id, "unschedule").await;
    assert_eq!(status, 200);

    // listing with search, status filter and stats
    let (status, page) = h
        .get(
            &token,
            "/api/v1/campaigns?page=1&pageSize=10&status=draft&search=spring&withStats=true",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["stats"]["status"], "draft");

    // another tenant sees nothing of it, on every route
    let routes = [
        (reqwest::Method::GET, format!("/api/v1/campaigns/{id}")),
        (reqwest::Method::PATCH, format!("/api/v1/campaigns/{id}")),
        (reqwest::Method::DELETE, format!("/api/v1/campaigns/{id}")),
        (
            reqwest::Method::GET,
            format!("/api/v1/campaigns/{id}/stats"),
        ),
        (reqwest::Method::GET, format!("/api/campaigns/{id}/status")),
        (
            reqwest::Method::POST,
            format!("/api/campaigns/{id}/enqueue"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/lists/{list_id}/members"),
        ),
    ];
    let actions = [
        "enqueue",
        "schedule",
        "unschedule",
        "pause",
        "resume",
        "cancel",
        "retry-failed",
    ];
    let all = routes.into_iter().chain(
        actions
            .iter()
            .map(|a| (reqwest::Method::POST, format!("/api/v1/campaigns/{id}/{a}"))),
    );
    for (method, path) in all {
        let body = if path.ends_with("/members") {
            json!({ "contactIds": [1] })
        } else if path.ends_with("/schedule") {
            json!({ "scheduledAt": at })
        } else {
            json!({ "name": "x" })
        };
        let (status, _) = h.call(method.clone(), &other, &path, Some(body)).await;
        assert_eq!(status, 404, "{method} {path} with another tenant's token");
    }
    let (_, theirs) = h.get(&other, "/api/v1/campaigns").await;
    assert_eq!(theirs["total"], 0);

    // a draft can be deleted; then it is gone
    assert_eq!(
        h.call(
            reqwest::Method::DELETE,
            &token,
            &format!("/api/v1/campaigns/{id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        h.get(&token, &format!("/api/v1/campaigns/{id}")).await.0,
        404
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_campaign_with_duplicates_unsubscribes_and_faults_messages_every_eligible_phone_once() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |c| {
            c.rate_429 = 0.10;
            c.rate_5xx = 0.05;
            c.item_error_ratio = 0.02;
            c.duplicate_ratio = 0.2;
            c.out_of_order_ratio = 0.1;
            c.dlr_before_response_ratio = 0.05;
            c.retry_after_secs = 1;
        },
        &[],
    )
    .await;
    let (tenant, token) = h.tenant("shop", 100_000).await;

    // 5,000 audience entries: 4,000 distinct phones (20 % repeated), 3 % unsubscribed
    let distinct: Vec<String> = (0..4_000).map(phone).collect();
    let unsubscribed: HashSet<String> = distinct.iter().step_by(33).cloned().collect();
    let ids = contacts(&h, &token, &distinct, &unsubscribed).await;
    let (_, list) = h
        .post(&token, "/api/v1/lists", json!({ "name": "all" }))
        .await;
    let list_id = list["id"].as_i64().unwrap();
    h.post(
        &token,
        &format!("/api/v1/lists/{list_id}/members"),
        json!({ "contactIds": ids }),
    )
    .await;
    let repeated: Vec<String> = distinct.iter().take(1_000).cloned().collect();
    let (_, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Launch", "body": "Hello {{firstName}}, the shop is open", "sender": "Shop",
                    "audience": { "listId": list_id, "phones": repeated } }),
        )
        .await;
    let id = campaign["id"].as_i64().unwrap();
    let eligible: HashSet<String> = distinct
        .iter()
        .filter(|p| !unsubscribed.contains(*p))
        .cloned()
        .collect();

    let (status, enqueued) = h
        .post(&token, &format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await;
    assert_eq!(status, 200, "{enqueued}");
    assert_eq!(enqueued["ok"], true);
    assert_eq!(enqueued["queued"], eligible.len());
    assert_eq!(enqueued["enqueuedJobs"], eligible.len().div_ceil(200));

    let stats = h
        .wait_for_status(&token, id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(stats["total"], eligible.len());
    let figures = h.settled_figures(&token, id).await;

    // every eligible phone was accepted once or refused individually; none twice, none other
    let sends = h.sends();
    assert!(
        sends.values().all(|n| *n == 1),
        "a phone was messaged twice"
    );
    let accepted: HashSet<String> = sends.keys().cloned().collect();
    assert!(accepted.is_subset(&eligible));
    let refused = figures["sendFailed"] as usize;
    assert_eq!(accepted.len() + refused, eligible.len());
    assert_eq!(h.sim.stats().item_errors as usize, refused);

    // credits: reserved = charged + refunded, to the unit (1 segment each)
    let (balance, ledger) = h.credits(tenant).await;
    let sent = (figures["pending"] + figures["delivered"] + figures["deliveryFailed"]) as i64;
    assert_eq!(ledger["reserve"], -(eligible.len() as i64));
    assert_eq!(ledger.get("charge").copied().unwrap_or(0), -sent);
    assert_eq!(ledger.get("refund").copied().unwrap_or(0), refused as i64);
    assert_eq!(balance, 100_000 - sent);
    assert_eq!(
        balance,
        ledger
            .iter()
            .filter(|(r, _)| *r != "charge")
            .map(|(_, d)| d)
            .sum::<i64>()
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn pause_stops_new_batches_resume_finishes_and_cancel_refunds_exactly_the_unsent() {
    let db = TestDb::unique();
    // 400 segments/s and batches of 100: a 2,000 campaign takes about five seconds
    let limits = [
        ("rate_limits.tenant_per_second", json!(400)),
        ("sending.max_in_flight_batches", json!(2)),
    ];
    let h = Harness::start(&db, |_| {}, &limits).await;
    let (tenant, token) = h.tenant("shop", 10_000).await;
    let id = campaign_of(&h, &token, 2_000, 0).await;
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    eventually(Duration::from_secs(30), "first sends", || async {
        (h.sim.stats().accepted > 0).then_some(())
    })
    .await;
    let (status, body) = h.action(&token, id, "pause").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("paused")));
    let at_pause = h.sim.stats().accepted;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = h.sim.stats().accepted;
    // batches already out finish; no new one starts (2 in flight of 100, plus one being claimed)
    assert!(
        settled - at_pause <= 300,
        "paused campaign kept sending: {at_pause} -> {settled}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        h.sim.stats().accepted,
        settled,
        "nothing is sent while paused"
    );
    assert_eq!(h.action(&token, id, "resume").await.0, 200);
    h.wait_for_status(&token, id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(h.sim.stats().accepted, 2_000);

    // cancel: the queued rest is cancelled and refunded, what was sent stays charged
    let second = campaign_of(&h, &token, 2_000, 10_000).await;
    assert_eq!(h.action(&token, second, "enqueue").await.0, 200);
    eventually(
        Duration::from_secs(30),
        "sends of the second campaign",
        || async { (h.sim.stats().accepted > 2_000).then_some(()) },
    )
    .await;
    let (status, body) = h.action(&token, second, "cancel").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let cancelled = body["affected"].as_i64().unwrap();
    assert!(cancelled > 0 && cancelled < 2_000);
    let figures = eventually(
        Duration::from_secs(30),
        "batches out at cancel to finish",
        || async {
            let figures = h.settled_figures(&token, second).await;
            (figures["processing"] == 0).then_some(figures)
        },
    )
    .await;
    assert_eq!(figures["cancelled"], cancelled);
    let sent_second = (h.sim.stats().accepted - 2_000) as i64;
    assert_eq!(
        sent_second + cancelled,
        2_000,
        "every recipient is either sent or cancelled"
    );
    let (balance, ledger) = h.credits(tenant).await;
    assert_eq!(ledger["refund"], cancelled);
    assert_eq!(balance, 10_000 - 2_000 - sent_second);
    assert_eq!(h.action(&token, second, "resume").await.0, 409);
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn retry_failed_resends_only_retryable_failures_and_only_once() {
    let db = TestDb::unique();
    let extra = [
        ("mitto.max_retries", json!(1)),
        ("sending.unavailable_rounds", json!(1)),
        ("sending.max_in_flight_batches", json!(1)),
    ];
    let h = Harness::start(&db, |c| c.item_error_ratio = 0.1, &extra).await;
    let (tenant, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 300, 0).await;
    // the first batch meets a provider outage longer than every retry
    h.sim
        .script([Fault::Status { status: 503 }, Fault::Status { status: 503 }]);
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", Duration::from_secs(60))
        .await;
    let before = h.settled_figures(&token, id).await;
    let outage: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND error_retryable",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let errors: Vec<(String, Option<bool>, i64)> = sqlx::query_as(
        "SELECT COALESCE(error, ''), error_retryable, count(*) FROM campaign_recipients WHERE campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        outage, 200,
        "the whole first batch failed as retryable: {errors:?}"
    );
    assert!(
        before["sendFailed"] > outage,
        "per-item refusals are failures too"
    );

    let (status, body) = h.action(&token, id, "retry-failed").await;
    assert_eq!(
        (status, body["affected"].as_i64()),
        (200, Some(outage)),
        "{body}"
    );
    h.wait_for_status(&token, id, "completed", Duration::from_secs(60))
        .await;
    let after = h.settled_figures(&token, id).await;
    let sends = h.sends();
    assert!(sends.values().all(|n| *n == 1), "nobody is messaged twice");
    let refused_now = h.sim.stats().item_errors as i64;
    assert_eq!(
        after["sendFailed"], refused_now,
        "only individual refusals remain failed"
    );
    assert_eq!(sends.len() as i64 + refused_now, 300);
    // those failures are not retryable; the retried ones had their one retry
    let (status, body) = h.action(&token, id, "retry-failed").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("NO_RECIPIENTS")),
        "{body}"
    );
    let (balance, _) = h.credits(tenant).await;
    assert_eq!(balance, 1_000 - sends.len() as i64);
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn concurrent_enqueues_never_overdraw_and_repeated_keys_do_nothing() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    // credits for exactly 7 of 20 campaigns of 10 recipients
    let (tenant, token) = h.tenant("shop", 70).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(campaign_of(&h, &token, 10, i * 10).await);
    }
    let enqueues = ids.iter().map(|id| {
        let (http, url, token) = (
            h.http.clone(),
            h.app.url(&format!("/api/v1/campaigns/{id}/enqueue")),
            token.clone(),
        );
        async move { http.post(url).bearer_auth(token).send().await.unwrap() }
    });
    let responses = futures::future::join_all(enqueues).await;
    let mut codes: HashMap<u16, usize> = HashMap::new();
    let mut refused = None;
    for (id, r) in ids.iter().zip(responses) {
        let code = r.status().as_u16();
        *codes.entry(code).or_default() += 1;
        if code == 402 {
            refused = Some(*id);
        }
    }
    assert_eq!(codes.get(&200), Some(&7), "{codes:?}");
    assert_eq!(codes.get(&402), Some(&13), "{codes:?}");
    let (balance, ledger) = h.credits(tenant).await;
    assert_eq!((balance, ledger["reserve"]), (0, -70));

    // an insufficient enqueue says how much is missing, and changes nothing
    let refused = refused.unwrap();
    let (status, body) = h.action(&token, refused, "enqueue").await;
    assert_eq!(status, 402);
    assert_eq!(
        (
            body["error"]["required"].as_i64(),
            body["error"]["available"].as_i64()
        ),
        (Some(10), Some(0))
    );
    let (_, stats) = h
        .get(&token, &format!("/api/v1/campaigns/{refused}/stats"))
        .await;
    assert_eq!(
        (stats["status"].as_str(), stats["total"].as_i64()),
        (Some("draft"), Some(0))
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_repeated_idempotency_key_returns_the_first_answer_and_does_nothing() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[("rate_limits.tenant_per_second", json!(50))]).await;
    let (tenant, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 100, 0).await;
    let enqueue = || async {
        let response = h
            .http
            .post(h.app.url(&format!("/api/campaigns/{id}/enqueue")))
            .bearer_auth(&token)
            .header("Idempotency-Key", "launch-1")
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    let first = enqueue().await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["queued"], 100);
    let again = enqueue().await;
    assert_eq!(again, first);
    let (_, ledger) = h.credits(tenant).await;
    assert_eq!(ledger["reserve"], -100, "reserved once");
    // without the key, a paused-or-sending campaign cannot be enqueued again
    let (status, body) = h
        .post(&token, &format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (409, Some("sending")),
        "{body}"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_send_whose_answer_is_lost_is_looked_up_never_resent() {
    let db = TestDb::unique();
    let extra = [
        ("mitto.request_timeout_ms", json!(800)),
        ("sending.max_in_flight_batches", json!(1)),
    ];
    let h = Harness::start(&db, |c| c.hang_ms = 3_000, &extra).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 500, 0).await;
    // the first batch is accepted but its answer never comes back in time
    h.sim.script([Fault::Timeout]);
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    let stats = h
        .wait_for_status(&token, id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(
        (stats["sent"].as_i64(), stats["sendFailed"].as_i64()),
        (Some(500), Some(0))
    );
    let sends = h.sends();
    assert_eq!(sends.len(), 500);
    assert!(
        sends.values().all(|n| *n == 1),
        "the unanswered batch was not resent"
    );
    assert!(
        h.sim.stats().lookups >= 200,
        "the unanswered batch was looked up by reference"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn claims_that_never_left_are_cancelled_and_refunded_when_the_campaign_was_cancelled_meanwhile(
) {
    let db = TestDb::unique();
    let extra = [
        ("mitto.request_timeout_ms", json!(800)),
        ("sending.max_in_flight_batches", json!(1)),
    ];
    let h = Harness::start(&db, |_| {}, &extra).await;
    let (tenant, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 500, 0).await;
    // the first batch's request is never answered in time and Mitto never takes it: its
    // claims provably did not leave and come back while the campaign is already cancelled
    h.sim.script([Fault::Latency { ms: 5_000 }]);
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    eventually(
        Duration::from_secs(10),
        "the first batch to be out",
        || async {
            (h.row_counts(id)
                .await
                .get("processing")
                .copied()
                .unwrap_or(0)
                > 0)
            .then_some(())
        },
    )
    .await;
    let (status, body) = h.action(&token, id, "cancel").await;
    assert_eq!(status, 200, "{body}");
    let figures = eventually(
        Duration::from_secs(30),
        "the claims to be settled",
        || async {
            let figures = h.settled_figures(&token, id).await;
            (figures["processing"] == 0).then_some(figures)
        },
    )
    .await;
    assert_eq!(
        (figures["queued"], figures["cancelled"], figures["pending"]),
        (0, 500, 0),
        "{figures:?}"
    );
    let (balance, ledger) = h.credits(tenant).await;
    assert_eq!((balance, ledger["refund"]), (1_000, 500), "{ledger:?}");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_scheduled_campaign_starts_by_itself_when_its_time_comes() {
    let db = TestDb::unique();
    let h = Harness::start(
        &db,
        |_| {},
        &[("sending.scheduler_interval_ms", json!(200))],
    )
    .await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let phones: Vec<String> = (0..50).map(phone).collect();
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (status, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Later", "body": "Sale today", "sender": "Shop",
                    "audience": { "phones": phones }, "scheduledAt": at }),
        )
        .await;
    assert_eq!(
        (status, campaign["status"].as_str()),
        (201, Some("scheduled")),
        "{campaign}"
    );
    let id = campaign["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.sim.stats().accepted, 0, "nothing is sent before its time");
    h.wait_for_status(&token, id, "completed", Duration::from_secs(30))
        .await;
    let sends = h.sends();
    assert_eq!(sends.len(), 50);
    assert!(sends.values().all(|n| *n == 1));
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn enqueue_refusals_leave_the_campaign_as_it_was() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("shop", 1_000).await;

    // every phone of the audience unsubscribed: nothing to send
    let phones: Vec<String> = (0..5).map(phone).collect();
    let all: HashSet<String> = phones.iter().cloned().collect();
    contacts(&h, &token, &phones, &all).await;
    let (_, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Nobody", "body": "Hi", "sender": "Shop", "audience": { "phones": phones } }),
        )
        .await;
    let id = campaign["id"].as_i64().unwrap();
    let (status, body) = h.action(&token, id, "enqueue").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("NO_RECIPIENTS")),
        "{body}"
    );
    let (_, after) = h.get(&token, &format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(after["status"], "draft");

    // a lapsed subscription cannot send
    let other = campaign_of(&h, &token, 10, 100).await;
    sqlx::query("UPDATE tenants SET subscription_active = false WHERE id = $1")
        .bind(tenant)
        .execute(&h.pool)
        .await
        .unwrap();
    let (status, body) = h.action(&token, other, "enqueue").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("SUBSCRIPTION_REQUIRED")),
        "{body}"
    );
    let (balance, ledger) = h.credits(tenant).await;
    assert_eq!(
        (balance, ledger.get("reserve")),
        (1_000, None),
        "nothing reserved"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_campaign_that_mitto_refuses_entirely_fails_and_refunds_everything() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |c| c.item_error_ratio = 1.0, &[]).await;
    let (tenant, token) = h.tenant("shop", 100).await;
    let id = campaign_of(&h, &token, 40, 0).await;
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    // a sending campaign's definition is frozen, and it cannot be deleted
    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            &token,
            &format!("/api/v1/campaigns/{id}"),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let stats = h
        .wait_for_status(&token, id, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(
        (stats["sent"].as_i64(), stats["sendFailed"].as_i64()),
        (Some(0), Some(40))
    );
    assert_eq!(
        h.call(
            reqwest::Method::DELETE,
            &token,
            &format!("/api/v1/campaigns/{id}"),
            None
        )
        .await
        .0,
        409
    );
    h.settled_figures(&token, id).await;
    let (balance, ledger) = eventually(Duration::from_secs(10), "refunds to be booked", || async {
        let (balance, ledger) = h.credits(tenant).await;
        (balance == 100).then_some((balance, ledger))
    })
    .await;
    assert_eq!(
        (balance, ledger["reserve"], ledger["refund"]),
        (100, -40, 40)
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn with_ambiguous_outcome_fail_a_lost_answer_is_failed_as_outcome_unknown_not_resent() {
    let db = TestDb::unique();
    let extra = [
        ("mitto.request_timeout_ms", json!(800)),
        ("sending.max_in_flight_batches", json!(1)),
        ("sending.ambiguous_outcome", json!("fail")),
    ];
    let h = Harness::start(&db, |c| c.hang_ms = 3_000, &extra).await;
    let (_, token) = h.tenant("shop", 1_000).await;
    let id = campaign_of(&h, &token, 300, 0).await;
    h.sim.script([Fault::Timeout]);
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    let stats = h
        .wait_for_status(&token, id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(
        (stats["sent"].as_i64(), stats["sendFailed"].as_i64()),
        (Some(100), Some(200))
    );
    h.settled_figures(&token, id).await;
    let unknown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_recipients
         WHERE campaign_id = $1 AND error LIKE 'outcome_unknown%' AND NOT error_retryable",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(unknown, 200);
    let sends = h.sends();
    assert_eq!(sends.len(), 300, "Mitto did accept the unanswered batch");
    assert!(sends.values().all(|n| *n == 1), "and it was not sent again");
    let (status, _) = h.action(&token, id, "retry-failed").await;
    assert_eq!(status, 400, "an unknown outcome is never retried");
    h.stop().await;
    db.drop_database().await;
}
