//! Live stats over Server-Sent Events, against real Postgres, the embedded broker and the
//! simulator: a subscriber sees the counters move while a campaign sends and receives the
//! final figures, then the stream ends; another tenant gets a 404.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::TestDb;
use harness::*;
use serde_json::{json, Value};

/// Reads a stream until it ends (or `limit` passes); returns its `stats` events' data.
async fn read_events(mut response: reqwest::Response, limit: Duration) -> (Vec<Value>, bool) {
    let deadline = Instant::now() + limit;
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(Ok(None)) => return (events, true),
            Ok(Err(e)) => panic!("stream failed: {e}"),
            Err(_) => return (events, false),
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let is_stats = block.lines().any(|l| l == "event: stats");
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (true, Some(data)) = (is_stats, data) {
                events.push(serde_json::from_str(data).unwrap());
            }
        }
    }
}

async fn open(h: &Harness, token: &str, campaign: i64) -> reqwest::Response {
    h.http
        .get(
            h.app
                .url(&format!("/api/v1/campaigns/{campaign}/stats/stream")),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_subscriber_sees_the_counters_move_and_the_final_figures_then_the_stream_ends() {
    let db = TestDb::unique();
    let extra = [
        ("rate_limits.traffic_account_per_second", json!(400)),
        ("batch_size", json!(40)),
    ];
    let h = Harness::start(&db, |_| {}, &extra).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let (_, other) = h.tenant("Other", 10_000).await;
    let campaign = campaign_of(&h, &token, 1200, 0).await;

    let response = open(&h, &token, campaign).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let started = Instant::now();
    let (status, body) = h.action(&token, campaign, "enqueue").await;
    assert_eq!(status, 200, "{body}");
    let (events, ended) = read_events(response, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(ended, "the stream ends once the campaign is settled");

    let first = &events[0];
    assert_eq!(
        (first["status"].as_str(), first["sent"].as_i64()),
        (Some("draft"), Some(0))
    );
    let sent: Vec<i64> = events.iter().map(|e| e["sent"].as_i64().unwrap()).collect();
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "never backwards: {sent:?}"
    );
    let moving: std::collections::HashSet<i64> = sent
        .iter()
        .copied()
        .filter(|s| *s > 0 && *s < 1200)
        .collect();
    assert!(moving.len() >= 3, "counters seen moving: {sent:?}");
    // coalesced to at most four a second (plus the first event)
    assert!(
        (events.len() as f64) <= 4.0 * elapsed + 2.0,
        "{} events in {elapsed:.1} s",
        events.len()
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(
        (last["pending"].as_i64(), last["queued"].as_i64()),
        (Some(0), Some(0))
    );
    let figures = h.settled_figures(&token, campaign).await;
    let stats = h.stats(&token, campaign).await;
    for field in ["sent", "delivered", "failed", "total"] {
        assert_eq!(last[field], stats[field], "{field}");
    }
    assert_eq!(last["delivered"].as_i64(), Some(figures["delivered"]));

    // a finished campaign's stream: its final figures, then the end
    let (events, ended) =
        read_events(open(&h, &token, campaign).await, Duration::from_secs(10)).await;
    assert!(ended);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sent"], stats["sent"]);
    // an EventSource reconnecting after that end is told not to come back
    let again = h
        .http
        .get(
            h.app
                .url(&format!("/api/v1/campaigns/{campaign}/stats/stream")),
        )
        .bearer_auth(&token)
        .header("Last-Event-ID", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);

    for (token, id) in [
        (&other, campaign.to_string()),
        (&token, "999999".into()),
        (&token, "x".into()),
    ] {
        let response = h
            .http
            .get(h.app.url(&format!("/api/v1/campaigns/{id}/stats/stream")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "campaign {id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    assert_eq!(
        h.app.pipeline.handles.registry.watchers().1,
        0,
        "no watcher left behind"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn stopping_the_service_ends_an_open_stream_at_once() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let campaign = campaign_of(&h, &token, 3, 0).await;
    let mut response = open(&h, &token, campaign).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("\"status\":\"draft\""));
    assert_eq!(h.app.pipeline.handles.registry.watchers(), (1, 1));
    let stopped = tokio::time::timeout(Duration::from_secs(20), h.stop()).await;
    assert!(stopped.is_ok(), "an open stream does not hold up the stop");
    let rest = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await;
    assert!(
        matches!(rest, Ok(Ok(None)) | Ok(Err(_))),
        "the stream ended: {rest:?}"
    );
    db.drop_database().await;
}
