//! The simulator's delivery-report callbacks: signed and verifiable, and with duplicates,
//! out-of-order reports and reports-before-response exactly when configured. Also the truth
//! reconciliation relies on: every message reaches its final status whether or not its
//! reports are posted, and lookups answer it (slowly or with 5xx when configured).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use campaignd::domain::MessageId;
use campaignd::domain::TrafficAccountId;
use campaignd::mitto::signature::{
    Presented, SignatureError, Verifier, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use campaignd::mitto::simulator::{self, SimConfig, SimHandle};
use campaignd::mitto::wire::{MessageStatusResponse, SendMessage, Sms};
use campaignd::mitto::{ItemResult, MittoError};
use common::{client_for, eventually, sim_key, Received, Receiver};

const SECRET: &str = "callback-secret";

fn batch(n: usize) -> Vec<SendMessage> {
    let account = TrafficAccountId::parse("e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7").unwrap();
    (0..n)
        .map(|i| SendMessage {
            traffic_account_id: account,
            destination: format!("+3069{i:08}"),
            sms: Sms {
                text: format!("Offer {i}"),
                sender: "Sendly".into(),
            },
            reference: Some(format!("r:{i}")),
        })
        .collect()
}

fn sim_posting_to(receiver: &Receiver, config: SimConfig) -> SimHandle {
    simulator::start(SimConfig {
        port: 0,
        callback: Some(receiver.url.clone()),
        callback_secret: Some(SECRET.into()),
        dlr_delay_ms: "1..30".parse().unwrap(),
        ..config
    })
    .unwrap()
}

async fn send(sim: &SimHandle, n: usize) -> Vec<String> {
    let outcome = client_for(sim, Duration::from_secs(10), 0)
        .send_bulk(&batch(n))
        .await
        .unwrap();
    outcome
        .items
        .into_iter()
        .map(|i| match i {
            ItemResult::Accepted { message_id } => message_id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn wait_for(receiver: &Receiver, n: usize) -> Vec<Received> {
    eventually(
        Duration::from_secs(15),
        &format!("{n} callbacks"),
        || async {
            let got = receiver.received();
            (got.len() >= n).then_some(got)
        },
    )
    .await
}

fn verifier(secret: &str) -> Verifier {
    Verifier {
        secrets: vec![secret.to_owned().into()],
        tokens: vec![],
        tolerance_secs: 300,
    }
}

fn presented(r: &Received) -> Presented<'_> {
    Presented {
        signature: r.header(SIGNATURE_HEADER),
        timestamp: r.header(TIMESTAMP_HEADER),
        token: None,
    }
}

fn report(r: &Received) -> MessageStatusResponse {
    serde_json::from_slice(&r.body).expect("a callback body is Mitto's status object")
}

#[actix_web::test]
async fn callbacks_arrive_signed_with_a_timestamp_and_verify() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(&receiver, SimConfig::default());
    let ids = send(&sim, 50).await;
    let received = wait_for(&receiver, 50).await;
    let now = chrono::Utc::now().timestamp();
    for r in &received {
        assert!(r.header(TIMESTAMP_HEADER).is_some());
        assert_eq!(verifier(SECRET).verify(presented(r), &r.body, now), Ok(()));
        assert_eq!(
            verifier("another").verify(presented(r), &r.body, now),
            Err(SignatureError::Mismatch)
        );
        assert!(ids.contains(&report(r).message_id));
    }
    // a replay far in the future is stale
    let r = &received[0];
    assert!(matches!(
        verifier(SECRET).verify(presented(r), &r.body, now + 3600),
        Err(SignatureError::Stale { .. })
    ));
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn body_only_signatures_and_static_tokens_are_sent_when_configured() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(
        &receiver,
        SimConfig {
            sign_with_timestamp: false,
            callback_token: Some("fixed".into()),
            ..SimConfig::default()
        },
    );
    send(&sim, 5).await;
    for r in wait_for(&receiver, 5).await {
        assert!(r.header(TIMESTAMP_HEADER).is_none());
        assert_eq!(verifier(SECRET).verify(presented(&r), &r.body, 0), Ok(()));
        assert_eq!(r.header("X-Webhook-Token"), Some("fixed"));
    }
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn without_fault_flags_each_message_gets_exactly_one_final_report() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(&receiver, SimConfig::default());
    let ids = send(&sim, 30).await;
    wait_for(&receiver, 30).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // nothing more arrives
    let received = receiver.received();
    assert_eq!(received.len(), 30);
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &received {
        let report = report(r);
        assert_ne!(
            report.delivery_status, "Sent",
            "only final statuses without out-of-order"
        );
        *per_id.entry(report.message_id).or_default() += 1;
    }
    assert!(ids.iter().all(|id| per_id.get(id) == Some(&1)));
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn duplicates_and_out_of_order_reports_arrive_when_configured() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(
        &receiver,
        SimConfig {
            duplicate_ratio: 1.0,
            out_of_order_ratio: 1.0,
            ..SimConfig::default()
        },
    );
    let ids = send(&sim, 20).await;
    let received = wait_for(&receiver, 60).await;
    let mut per_id: HashMap<String, Vec<MessageStatusResponse>> = HashMap::new();
    for r in &received {
        let report = report(r);
        per_id
            .entry(report.message_id.clone())
            .or_default()
            .push(report);
    }
    for id in &ids {
        let reports = &per_id[id];
        assert_eq!(
            reports.len(),
            3,
            "final, its duplicate, then a stale intermediate"
        );
        assert_eq!(
            reports[0].delivery_status, reports[1].delivery_status,
            "a duplicate"
        );
        assert_ne!(reports[0].delivery_status, "Sent");
        assert_eq!(
            reports[2].delivery_status, "Sent",
            "the intermediate arrives after the final"
        );
        let stale =
            campaignd::mitto::wire::parse_timestamp(reports[2].updated_at.as_deref().unwrap())
                .unwrap();
        let fresh =
            campaignd::mitto::wire::parse_timestamp(reports[0].updated_at.as_deref().unwrap())
                .unwrap();
        assert!(
            stale <= fresh,
            "the late report describes an earlier moment"
        );
    }
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn reports_can_arrive_before_the_send_response() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(
        &receiver,
        SimConfig {
            dlr_before_response_ratio: 1.0,
            ..SimConfig::default()
        },
    );
    let ids = send(&sim, 10).await;
    // no waiting: every report was delivered before the send call returned
    let received = receiver.received();
    assert_eq!(received.len(), 10);
    for r in &received {
        assert!(ids.contains(&report(r).message_id));
    }
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn batched_callbacks_post_json_arrays() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(
        &receiver,
        SimConfig {
            dlr_batch: 50,
            dlr_delay_ms: "0".parse().unwrap(),
            ..SimConfig::default()
        },
    );
    let ids = send(&sim, 100).await;
    let total = eventually(Duration::from_secs(10), "100 reports in arrays", || async {
        let reports: Vec<MessageStatusResponse> = receiver
            .received()
            .iter()
            .flat_map(|r| {
                serde_json::from_slice::<Vec<MessageStatusResponse>>(&r.body).expect("an array")
            })
            .collect();
        (reports.len() == 100).then_some(reports)
    })
    .await;
    assert!(total.iter().all(|r| ids.contains(&r.message_id)));
    assert!(receiver.received().len() < 100, "reports were grouped");
    sim.stop().await;
    receiver.stop().await;
}

/// Waits until the simulator holds no message in flight, and returns its stats then.
async fn wait_until_all_final(sim: &SimHandle) -> simulator::SimStats {
    eventually(Duration::from_secs(15), "every message final", || async {
        let stats = sim.stats();
        (stats.in_flight == 0).then_some(stats)
    })
    .await
}

/// The status each id's lookup answers, through the client.
async fn looked_up(sim: &SimHandle, ids: &[String]) -> Vec<MessageStatusResponse> {
    let client = client_for(sim, Duration::from_secs(10), 0);
    let mut answers = Vec::new();
    for id in ids {
        let id = MessageId::parse(id).unwrap();
        answers.push(client.message_status(&id).await.unwrap());
    }
    answers
}

fn lookup_url(sim: &SimHandle, path_and_query: &str) -> url::Url {
    sim.base_url.join(path_and_query).unwrap()
}

#[actix_web::test]
async fn dropped_reports_are_never_posted_but_lookups_answer_the_final_status() {
    let receiver = Receiver::start();
    let sim = sim_posting_to(
        &receiver,
        SimConfig {
            drop_dlr_ratio: 1.0,
            // every kind of report a message could have, so none may slip through
            duplicate_ratio: 1.0,
            out_of_order_ratio: 1.0,
            dlr_before_response_ratio: 0.5,
            delivery_ratio: 0.5,
            dlr_delay_ms: "10..50".parse().unwrap(),
            ..SimConfig::default()
        },
    );
    let n = 40;
    let ids = send(&sim, n).await;
    let stats = wait_until_all_final(&sim).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // any report would have left by now
    assert!(receiver.received().is_empty(), "no report is posted");
    assert_eq!(stats.dlrs_dropped, n as u64);
    assert_eq!((stats.dlrs_sent, stats.dlrs_failed), (0, 0));
    assert_eq!(stats.delivered + stats.failed, n as u64);
    let answers = looked_up(&sim, &ids).await;
    for (id, answer) in ids.iter().zip(&answers) {
        assert_eq!(&answer.message_id, id);
        assert_ne!(
            answer.delivery_status, "Sent",
            "the final status is answered"
        );
    }
    let delivered = answers
        .iter()
        .filter(|a| a.delivery_status == "Delivered")
        .count();
    assert_eq!(
        stats.delivered, delivered as u64,
        "stats agree with lookups"
    );
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn without_a_callback_messages_still_reach_their_final_status() {
    let sim = simulator::start(SimConfig {
        port: 0,
        callback: None,
        delivery_ratio: 0.0,
        failure_statuses: vec!["Expired".into()],
        dlr_delay_ms: "10..50".parse().unwrap(),
        ..SimConfig::default()
    })
    .unwrap();
    let n = 25;
    let ids = send(&sim, n).await;
    let stats = wait_until_all_final(&sim).await;
    assert_eq!((stats.delivered, stats.failed), (0, n as u64));
    assert_eq!(stats.dlrs_dropped, 0, "nothing to drop without a callback");
    assert_eq!(stats.dlrs_sent, 0);
    for answer in looked_up(&sim, &ids).await {
        assert_eq!(answer.delivery_status, "Expired");
        let at = |t: &Option<String>| {
            campaignd::mitto::wire::parse_timestamp(t.as_deref().unwrap()).unwrap()
        };
        assert!(
            at(&answer.updated_at) - at(&answer.created_at) >= chrono::Duration::milliseconds(10),
            "finalised after a delay sample, not at acceptance"
        );
    }
    sim.stop().await;
}

#[actix_web::test]
async fn lookups_can_be_slow_or_fail_with_5xx() {
    let failing = simulator::start(SimConfig {
        port: 0,
        lookup_5xx_ratio: 1.0,
        ..SimConfig::default()
    })
    .unwrap();
    let ids = send(&failing, 1).await;
    let id = MessageId::parse(&ids[0]).unwrap();
    let error = client_for(&failing, Duration::from_secs(10), 0)
        .message_status(&id)
        .await
        .unwrap_err();
    assert!(
        matches!(error, MittoError::Unavailable { attempts: 1, .. }),
        "{error:?}"
    );
    let http = reqwest::Client::new();
    let by_reference = http
        .get(lookup_url(&failing, "/api/v1.1/Messages?reference=r:0"))
        .header("X-Mitto-API-Key", sim_key())
        .send()
        .await
        .unwrap();
    assert_eq!(by_reference.status(), 503);
    let body: serde_json::Value = by_reference.json().await.unwrap();
    assert_eq!(body["title"], "simulated provider error");
    let anonymous = http
        .get(lookup_url(&failing, &format!("/api/v1.1/Messages/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "auth is checked before faults");
    assert_eq!(
        failing.stats().lookups,
        2,
        "unauthorised lookups are not counted"
    );
    failing.stop().await;

    let slow = simulator::start(SimConfig {
        port: 0,
        lookup_latency_ms: "150..200".parse().unwrap(),
        ..SimConfig::default()
    })
    .unwrap();
    let ids = send(&slow, 1).await;
    let client = client_for(&slow, Duration::from_secs(10), 0);
    let started = std::time::Instant::now();
    let answer = client
        .message_status(&MessageId::parse(&ids[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.message_id, ids[0]);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = std::time::Instant::now();
    let found = client.message_by_reference("r:0").await.unwrap();
    assert_eq!(found.map(|m| m.message_id), Some(ids[0].clone()));
    assert!(started.elapsed() >= Duration::from_millis(150));
    slow.stop().await;
}

#[actix_web::test]
async fn the_simulator_measures_lookups_per_second() {
    let sim = simulator::start(SimConfig {
        port: 0,
        ..SimConfig::default()
    })
    .unwrap();
    let ids = send(&sim, 1).await;
    let id = MessageId::parse(&ids[0]).unwrap();
    assert_eq!(sim.stats().max_lookups_per_second, 0);
    let client = client_for(&sim, Duration::from_secs(10), 0);
    let total = 30u64;
    let first_second = chrono::Utc::now().timestamp();
    for i in 0..total {
        if i % 2 == 0 {
            client.message_status(&id).await.unwrap();
        } else {
            client.message_by_reference("r:0").await.unwrap().unwrap();
        }
    }
    let last_second = chrono::Utc::now().timestamp();
    // unauthorised lookups are not counted
    let anonymous = reqwest::get(lookup_url(&sim, &format!("/api/v1.1/Messages/{id}")))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let stats = sim.stats();
    assert_eq!(stats.lookups, total);
    // every lookup arrived within [first_second, last_second], so the busiest of those
    // seconds saw at least its share (all of them when the loop fit in one second)
    let seconds = (last_second - first_second + 1) as u64;
    assert!(
        stats.max_lookups_per_second >= total.div_ceil(seconds)
            && stats.max_lookups_per_second <= total,
        "{} lookups over {seconds} second(s), busiest second {}",
        total,
        stats.max_lookups_per_second
    );
    sim.stop().await;
}
