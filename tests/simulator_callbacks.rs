//! The simulator's delivery-report callbacks: signed and verifiable, and with duplicates,
//! out-of-order reports and reports-before-response exactly when configured.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use campaignd::domain::TrafficAccountId;
use campaignd::mitto::signature::{
    Presented, SignatureError, Verifier, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use campaignd::mitto::simulator::{self, SimConfig, SimHandle};
use campaignd::mitto::wire::{MessageStatusResponse, SendMessage, Sms};
use campaignd::mitto::ItemResult;
use common::{client_for, eventually, Received, Receiver};

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
