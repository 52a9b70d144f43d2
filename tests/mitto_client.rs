//! The Mitto client against the simulator over real HTTP: mapping, retries, Retry-After,
//! refusals, per-item errors, ambiguous timeouts and status lookups.

mod common;

use std::time::{Duration, Instant, SystemTime};

use campaignd::domain::{MessageId, TrafficAccountId};
use campaignd::mitto::simulator::{self, Fault, SimConfig};
use campaignd::mitto::wire::{SendMessage, Sms};
use campaignd::mitto::{ItemResult, MittoError, Outcome};
use common::{client_for, eventually, Receiver};

fn account() -> TrafficAccountId {
    TrafficAccountId::parse("e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7").unwrap()
}

fn message(destination: &str, text: &str) -> SendMessage {
    SendMessage {
        traffic_account_id: account(),
        destination: destination.to_owned(),
        sms: Sms {
            text: text.to_owned(),
            sender: "Sendly".to_owned(),
        },
        reference: None,
    }
}

/// `n` messages to distinct phones.
fn batch(n: usize) -> Vec<SendMessage> {
    (0..n)
        .map(|i| message(&format!("+3069{:08}", i), &format!("Hi #{i}")))
        .collect()
}

fn quiet_sim() -> simulator::SimHandle {
    simulator::start(SimConfig {
        port: 0,
        ..SimConfig::default()
    })
    .unwrap()
}

fn accepted_id(item: &ItemResult) -> &MessageId {
    match item {
        ItemResult::Accepted { message_id } => message_id,
        other => panic!("expected an accepted item, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_1000_message_bulk_send_maps_every_message_id_to_its_request() {
    let sim = quiet_sim();
    let client = client_for(&sim, Duration::from_secs(10), 0);
    let messages = batch(1000);
    let outcome = client.send_bulk(&messages).await.unwrap();
    assert!(outcome.bulk_id.is_some());
    assert_eq!(outcome.items.len(), 1000);
    for (request, item) in messages.iter().zip(&outcome.items) {
        let id = accepted_id(item);
        assert_eq!(id.as_str().len(), 26, "Mitto ids are ULIDs");
        let seen = sim
            .message(id.as_str())
            .expect("the simulator knows the id");
        assert_eq!(
            seen.text.as_deref(),
            Some(request.sms.text.as_str()),
            "item order = request order"
        );
    }
    let stats = sim.stats();
    assert_eq!(
        (
            stats.bulk_requests,
            stats.accepted,
            stats.max_sends_per_message
        ),
        (1, 1000, 1)
    );
    sim.stop().await;
}

#[actix_web::test]
async fn a_429_with_retry_after_one_second_is_retried_after_about_a_second() {
    let sim = quiet_sim();
    sim.script([Fault::TooManyRequests {
        retry_after: "1".into(),
    }]);
    let client = client_for(&sim, Duration::from_secs(10), 3);
    let start = Instant::now();
    let outcome = client.send_bulk(&batch(5)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(outcome.items.len(), 5);
    assert!(
        waited >= Duration::from_millis(1000),
        "retried too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1800),
        "waited far beyond Retry-After: {waited:?}"
    );
    assert_eq!(sim.stats().bulk_requests, 2);
    assert_eq!(
        sim.stats().accepted,
        5,
        "the refused attempt accepted nothing"
    );
    sim.stop().await;
}

#[actix_web::test]
async fn a_retry_after_http_date_is_honoured() {
    let sim = quiet_sim();
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    sim.script([Fault::TooManyRequests { retry_after: at }]);
    let client = client_for(&sim, Duration::from_secs(10), 3);
    let start = Instant::now();
    client.send_bulk(&batch(1)).await.unwrap();
    // the date has whole-second precision: the wait is between 1 and 2 seconds
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sim.stats().bulk_requests, 2);
    sim.stop().await;
}

#[actix_web::test]
async fn two_503s_then_success_is_a_success() {
    let sim = quiet_sim();
    sim.script([Fault::Status { status: 503 }, Fault::Status { status: 503 }]);
    let client = client_for(&sim, Duration::from_secs(10), 5);
    let outcome = client.send_bulk(&batch(3)).await.unwrap();
    assert_eq!(outcome.items.len(), 3);
    assert_eq!(sim.stats().bulk_requests, 3);
    assert_eq!(sim.stats().max_sends_per_message, 1);
    sim.stop().await;
}

#[actix_web::test]
async fn persistent_5xx_gives_up_as_retryable_after_the_configured_attempts() {
    let sim = quiet_sim();
    sim.script(std::iter::repeat_n(Fault::Status { status: 502 }, 10));
    let client = client_for(&sim, Duration::from_secs(10), 2);
    let err = client.send_bulk(&batch(1)).await.unwrap_err();
    assert_eq!(err.outcome(), Outcome::Retryable);
    assert!(
        matches!(err, MittoError::Unavailable { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(sim.stats().bulk_requests, 3);
    sim.stop().await;
}

#[actix_web::test]
async fn a_400_fails_the_batch_without_retry() {
    let sim = quiet_sim();
    let client = client_for(&sim, Duration::from_secs(10), 5);
    let err = client.send_bulk(&batch(1001)).await.unwrap_err();
    assert_eq!(err.outcome(), Outcome::Failed);
    match &err {
        MittoError::Rejected {
            status: 400,
            message,
        } => assert!(message.contains("1000"), "{message}"),
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    assert_eq!(sim.stats().bulk_requests, 1, "a 400 is not retried");
    assert_eq!(sim.stats().accepted, 0);
    sim.stop().await;
}

#[actix_web::test]
async fn a_wrong_api_key_is_refused_without_retry() {
    let sim = quiet_sim();
    let client = common::client(&sim.base_url, "wrong", Duration::from_secs(5), 3);
    let err = client.send_bulk(&batch(1)).await.unwrap_err();
    assert!(
        matches!(err, MittoError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(sim.stats().bulk_requests, 1);
    sim.stop().await;
}

#[actix_web::test]
async fn a_per_item_error_fails_only_that_item() {
    let sim = quiet_sim();
    let client = client_for(&sim, Duration::from_secs(10), 0);
    let messages = vec![
        message("+306900000001", "a"),
        message("+12", "b"),
        message("+306900000003", "c"),
    ];
    let outcome = client.send_bulk(&messages).await.unwrap();
    accepted_id(&outcome.items[0]);
    assert!(
        matches!(&outcome.items[1], ItemResult::Rejected { code, .. } if code == "InvalidDestination"),
        "{:?}",
        outcome.items[1]
    );
    accepted_id(&outcome.items[2]);
    assert_eq!(sim.stats().accepted, 2);
    sim.stop().await;
}

#[actix_web::test]
async fn a_timeout_is_ambiguous_and_never_retried() {
    let sim = simulator::start(SimConfig {
        port: 0,
        hang_ms: 2_000,
        ..SimConfig::default()
    })
    .unwrap();
    sim.script([Fault::Timeout]);
    let client = client_for(&sim, Duration::from_millis(300), 5);
    let err = client.send_bulk(&batch(4)).await.unwrap_err();
    assert_eq!(err.outcome(), Outcome::Ambiguous, "{err:?}");
    // one request only, and the provider did accept it: a blind resend would double-send
    let stats = sim.stats();
    assert_eq!(stats.bulk_requests, 1);
    assert_eq!(stats.accepted, 4);
    sim.stop().await;
}

#[actix_web::test]
async fn connection_refused_is_retried_then_retryable() {
    let closed = url::Url::parse(&format!("http://127.0.0.1:{}", common::free_port())).unwrap();
    let client = common::client(&closed, "k", Duration::from_secs(1), 2);
    let err = client.send_bulk(&batch(1)).await.unwrap_err();
    assert!(
        matches!(err, MittoError::Unavailable { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.outcome(),
        Outcome::Retryable,
        "nothing was written, so trying later is safe"
    );
}

#[actix_web::test]
async fn the_single_send_endpoint_works_too() {
    let sim = quiet_sim();
    let client = client_for(&sim, Duration::from_secs(5), 0);
    let item = client
        .send_one(&message("+306900000001", "one"))
        .await
        .unwrap();
    let id = accepted_id(&item);
    assert!(sim.message(id.as_str()).is_some());
    assert_eq!(sim.stats().single_requests, 1);
    sim.stop().await;
}

#[actix_web::test]
async fn status_lookup_returns_what_the_simulator_delivered() {
    let receiver = Receiver::start();
    let sim = simulator::start(SimConfig {
        port: 0,
        callback: Some(receiver.url.clone()),
        callback_secret: Some("s".into()),
        delivery_ratio: 0.5,
        dlr_delay_ms: "5..50".parse().unwrap(),
        ..SimConfig::default()
    })
    .unwrap();
    let client = client_for(&sim, Duration::from_secs(5), 2);
    let outcome = client.send_bulk(&batch(40)).await.unwrap();
    let ids: Vec<MessageId> = outcome
        .items
        .iter()
        .map(|i| accepted_id(i).clone())
        .collect();
    let reports = eventually(Duration::from_secs(10), "40 delivery reports", || async {
        let got = receiver.received();
        (got.len() == 40).then_some(got)
    })
    .await;
    let mut finals = std::collections::HashSet::new();
    for report in reports {
        let report: campaignd::mitto::wire::MessageStatusResponse =
            serde_json::from_slice(&report.body).unwrap();
        let id = MessageId::parse(&report.message_id).unwrap();
        assert!(ids.contains(&id));
        let looked_up = client.message_status(&id).await.unwrap();
        assert_eq!(looked_up.delivery_status, report.delivery_status);
        assert_eq!(looked_up.updated_at, report.updated_at);
        finals.insert(report.delivery_status);
    }
    assert!(
        finals.contains("Delivered") && finals.len() > 1,
        "a mix of outcomes: {finals:?}"
    );
    let unknown = client
        .message_status(&MessageId::generate())
        .await
        .unwrap_err();
    assert!(matches!(unknown, MittoError::NotFound(_)), "{unknown:?}");
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn the_per_account_rate_limit_answers_429_with_retry_after() {
    let sim = simulator::start(SimConfig {
        port: 0,
        account_rate_limit: std::num::NonZeroU32::new(10),
        ..SimConfig::default()
    })
    .unwrap();
    let client = client_for(&sim, Duration::from_secs(5), 0);
    client.send_bulk(&batch(10)).await.unwrap();
    let http = reqwest::Client::new();
    let response = http
        .post(
            sim.base_url
                .join("/api/v1.1/Messages/sendmessagesbulk")
                .unwrap(),
        )
        .header("X-Mitto-API-Key", common::sim_key())
        .json(&serde_json::json!({ "messages": batch(5) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // with retries, the client waits out the limit and succeeds
    let patient = client_for(&sim, Duration::from_secs(5), 3);
    patient.send_bulk(&batch(5)).await.unwrap();
    sim.stop().await;
}
