//! `POST /webhooks/mitto/dlr`: verified, parsed, deduplicated, produced — or refused with
//! nothing produced.

mod common;

use std::time::Duration;

use campaignd::app::{Application, RunningApplication};
use campaignd::mitto::signature::sign;
use common::{event_settings, read_topic, settings, TestDb, WEBHOOK_SECRET};

const TOPIC: &str = "message-events";

async fn post(
    app: &RunningApplication,
    body: &[u8],
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url("/webhooks/mitto/dlr"))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.send().await.unwrap()
}

fn signed(body: &[u8], ts: i64) -> Vec<(&'static str, String)> {
    vec![
        ("X-Webhook-Timestamp", ts.to_string()),
        ("X-Webhook-Signature", sign(WEBHOOK_SECRET, Some(ts), body)),
    ]
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[actix_web::test]
async fn a_signed_report_is_accepted_and_on_the_topic_keyed_by_message_id() {
    let db = TestDb::unique();
    let app = Application::build(event_settings(&db))
        .await
        .unwrap()
        .spawn();
    let body = br#"[{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered","updatedAt":"2026-11-20T10:00:05.1234567Z"},
                    {"msgid":"01KC69MT19BRK5MSXG1V95YPHY","dlr_status":"Undelivered"}]"#;
    let response = post(&app, body, &signed(body, now())).await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(accepted["accepted"], 2);

    let records = read_topic(&app.pipeline.broker.brokers.bootstrap, TOPIC);
    assert_eq!(records.len(), 2);
    let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.contains(&"01KC69MT19BRK5MSXG1V95YPHX")
            && keys.contains(&"01KC69MT19BRK5MSXG1V95YPHY")
    );
    for (_, payload) in &records {
        let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            (event["v"].as_i64(), event["type"].as_str()),
            (Some(1), Some("dlr"))
        );
    }
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn bad_signatures_stale_timestamps_replays_malformed_and_oversize_bodies_produce_nothing() {
    let db = TestDb::unique();
    let app = Application::build(event_settings(&db))
        .await
        .unwrap()
        .spawn();
    let body = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered"}"#;

    let wrong = vec![
        ("X-Webhook-Timestamp", now().to_string()),
        (
            "X-Webhook-Signature",
            sign("not-the-secret", Some(now()), body),
        ),
    ];
    assert_eq!(
        code(post(&app, body, &wrong).await).await,
        (401, "INVALID_SIGNATURE".into())
    );
    assert_eq!(
        code(post(&app, body, &[]).await).await,
        (401, "INVALID_SIGNATURE".into())
    );
    let stale = now() - 3600;
    assert_eq!(
        code(post(&app, body, &signed(body, stale)).await).await,
        (401, "INVALID_SIGNATURE".into())
    );
    let tampered = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Failed"}"#;
    assert_eq!(
        code(post(&app, tampered, &signed(body, now())).await).await,
        (401, "INVALID_SIGNATURE".into())
    );

    let malformed = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX""#;
    assert_eq!(
        code(post(&app, malformed, &signed(malformed, now())).await).await,
        (400, "INVALID_REPORT".into())
    );
    // Postgres refuses NUL in text: a report carrying one would fail every checkpoint
    let nul = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Deliv\u0000ered"}"#;
    let refused = post(&app, nul, &signed(nul, now())).await;
    assert_eq!(refused.status(), 400);
    let message: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(message["error"]["code"], "INVALID_REPORT");
    let message = message["error"]["message"].as_str().unwrap();
    assert!(message.contains("status contains a NUL byte"), "{message}");
    let half_bad = br#"[{"messageId":"A1","status":"Delivered"},{"messageId":"A2"}]"#;
    assert_eq!(
        code(post(&app, half_bad, &signed(half_bad, now())).await).await,
        (400, "INVALID_REPORT".into())
    );

    let huge = vec![b' '; 2 << 20];
    assert_eq!(
        code(post(&app, &huge, &signed(&huge, now())).await).await,
        (413, "PAYLOAD_TOO_LARGE".into())
    );

    let ts = now();
    let headers = signed(body, ts);
    assert_eq!(post(&app, body, &headers).await.status(), 202);
    assert_eq!(
        code(post(&app, body, &headers).await).await,
        (409, "REPLAYED".into())
    );

    let records = read_topic(&app.pipeline.broker.brokers.bootstrap, TOPIC);
    assert_eq!(
        records.len(),
        1,
        "only the one accepted request produced anything"
    );
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_static_token_is_accepted_as_a_fallback() {
    use figment::providers::{Format, Toml};
    let db = TestDb::unique();
    let figment = figment::Figment::from(Toml::string(campaignd::config::DEFAULTS))
        .merge(("database_url", db.url.as_str()))
        .merge(("http.bind", "127.0.0.1:0"))
        .merge(("webhook.tokens", vec!["fixed-token"]));
    let settings = campaignd::config::Settings::from_figment(figment).unwrap();
    let app = Application::build(settings).await.unwrap().spawn();
    let body = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered"}"#;
    let token = |t: &str| vec![("X-Webhook-Token", t.to_owned())];
    assert_eq!(post(&app, body, &token("fixed-token")).await.status(), 202);
    assert_eq!(
        code(post(&app, body, &token("guess")).await).await,
        (401, "INVALID_SIGNATURE".into())
    );
    assert_eq!(
        read_topic(&app.pipeline.broker.brokers.bootstrap, TOPIC).len(),
        1
    );
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn with_no_secret_configured_every_request_is_refused() {
    let db = TestDb::unique();
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let body = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered"}"#;
    assert_eq!(
        code(post(&app, body, &signed(body, now())).await).await,
        (401, "INVALID_SIGNATURE".into())
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(read_topic(&app.pipeline.broker.brokers.bootstrap, TOPIC).is_empty());
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn the_simulators_signed_callbacks_are_accepted_end_to_end() {
    use campaignd::mitto::simulator::{self, SimConfig};
    let db = TestDb::unique();
    let app = Application::build(event_settings(&db))
        .await
        .unwrap()
        .spawn();
    let sim = simulator::start(SimConfig {
        port: 0,
        callback: Some(url::Url::parse(&app.url("/webhooks/mitto/dlr")).unwrap()),
        callback_secret: Some(WEBHOOK_SECRET.into()),
        dlr_delay_ms: "1..20".parse().unwrap(),
        duplicate_ratio: 0.5,
        ..SimConfig::default()
    })
    .unwrap();
    let client = common::client_for(&sim, Duration::from_secs(5), 0);
    let account = campaignd::domain::TrafficAccountId::new_random();
    let messages: Vec<_> = (0..20)
        .map(|i| campaignd::mitto::wire::SendMessage {
            traffic_account_id: account,
            destination: format!("+3069{i:08}"),
            sms: campaignd::mitto::wire::Sms {
                text: "Hi".into(),
                sender: "Shop".into(),
            },
            reference: None,
        })
        .collect();
    client.send_bulk(&messages).await.unwrap();
    common::eventually(
        Duration::from_secs(10),
        "a report for every message",
        || async { (sim.stats().dlrs_sent >= 20).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // duplicates still in flight
    let stats = sim.stats();
    assert_eq!(stats.dlrs_failed, 0, "every signed callback was accepted");
    let records = read_topic(&app.pipeline.broker.brokers.bootstrap, TOPIC);
    assert_eq!(
        records.len() as u64,
        stats.dlrs_sent,
        "one record per report, duplicates included"
    );
    sim.stop().await;
    app.stop().await;
    db.drop_database().await;
}

/// The figures of a campaign's stats that an applied report moves.
fn figures(stats: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let keys = [
        "total",
        "sent",
        "delivered",
        "failed",
        "pending",
        "sendFailed",
        "deliveryFailed",
        "processing",
        "queued",
        "cancelled",
    ];
    keys.iter()
        .map(|k| (k.to_string(), stats[k].clone()))
        .collect()
}

async fn stats(app: &RunningApplication, token: &str, campaign: i64) -> serde_json::Value {
    let url = app.url(&format!("/api/v1/campaigns/{campaign}/stats"));
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap_or_default()
}

/// Every stored column of the campaign's recipients, and the tenant's credit ledger.
async fn stored_rows(pool: &sqlx::PgPool, campaign: i64) -> (Vec<String>, Vec<String>) {
    let recipients = sqlx::query_scalar(
        "SELECT row_to_json(r)::text FROM campaign_recipients r WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await
    .unwrap();
    let ledger = sqlx::query_scalar(
        "SELECT row_to_json(l)::text FROM credit_ledger l WHERE campaign_id = $1 ORDER BY 1",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await
    .unwrap();
    (recipients, ledger)
}

/// Waits until a checkpoint covers every record on the topic.
async fn checkpointed(app: &RunningApplication) {
    let ends = common::end_offsets(&app.pipeline.broker.brokers.bootstrap, TOPIC);
    common::wait_until_offsets_reach(&app.state.pool, &ends, Duration::from_secs(30)).await;
}

/// Waits until the stats show `want` and returns them.
async fn stats_reach(
    app: &RunningApplication,
    token: &str,
    campaign: i64,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    common::eventually(Duration::from_secs(30), "the stats to settle", || async {
        let seen = stats(app, token, campaign).await;
        want(&seen).then_some(seen)
    })
    .await
}

#[actix_web::test]
async fn a_signed_report_replayed_after_a_restart_moves_no_figure() {
    use campaignd::domain::{Event, MessageId};
    let db = TestDb::unique();
    let (_broker, bootstrap) = common::dev_broker();
    let mut settings = event_settings(&db);
    settings.kafka.brokers = Some(bootstrap);
    let app = Application::build(settings.clone()).await.unwrap().spawn();
    let pool = app.state.pool.clone();
    let (tenant, token) = common::tenant(&pool, "Shop").await;
    let (campaign, recipients) = campaignd::store::fixtures::claimed_campaign(&pool, tenant, 2)
        .await
        .unwrap();
    let ids: Vec<MessageId> = (0..2).map(|_| MessageId::generate()).collect();
    let sent: Vec<Event> = recipients
        .iter()
        .zip(&ids)
        .map(|(recipient, message_id)| Event::Sent {
            message_id: message_id.clone(),
            campaign_id: campaign,
            recipient_id: *recipient,
            bulk_id: None,
            attempt: 0,
            at: chrono::Utc::now(),
        })
        .collect();
    app.pipeline.handles.producer.send(&sent).await.unwrap();
    let body = serde_json::to_vec(&serde_json::json!([
        {"messageId": ids[0].to_string(), "deliveryStatus": "Delivered"},
        {"messageId": ids[1].to_string(), "deliveryStatus": "Undelivered"},
    ]))
    .unwrap();
    let headers = signed(&body, now());
    assert_eq!(post(&app, &body, &headers).await.status(), 202);
    let campaign = campaign.get();
    let settled = |s: &serde_json::Value| s["delivered"] == 1 && s["deliveryFailed"] == 1;
    let before = figures(&stats_reach(&app, &token, campaign, settled).await);
    checkpointed(&app).await;
    let rows_before = stored_rows(&pool, campaign).await;
    app.stop().await;

    // a new instance remembers no request: the replay reaches the topic again, and the
    // idempotent ledger is what keeps it from changing anything
    let app = Application::build(settings).await.unwrap().spawn();
    let pool = app.state.pool.clone();
    assert_eq!(post(&app, &body, &headers).await.status(), 202);
    checkpointed(&app).await;
    let after = stats_reach(&app, &token, campaign, settled).await;
    assert_eq!(figures(&after), before);
    tokio::time::sleep(Duration::from_millis(600)).await; // a later checkpoint changes nothing
    assert_eq!(figures(&stats(&app, &token, campaign).await), before);
    assert_eq!(stored_rows(&pool, campaign).await, rows_before);
    // the new instance remembers the request it accepted
    assert_eq!(
        code(post(&app, &body, &headers).await).await,
        (409, "REPLAYED".into())
    );
    app.stop().await;
    db.drop_database().await;
}
