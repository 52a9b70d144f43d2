//! Campaign reports through the HTTP API against real Postgres, the embedded broker and the
//! simulator: the time series and breakdowns agree from memory and from the snapshot, pages
//! and exports hold every recipient once, another tenant sees nothing, bad parameters are
//! 4xx.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{eventually, TestDb};
use harness::*;
use serde_json::Value;

const N: usize = 300;

async fn finished_campaign(h: &Harness, token: &str) -> i64 {
    let campaign = campaign_of(h, token, N, 0).await;
    let (status, body) = h.action(token, campaign, "enqueue").await;
    assert_eq!(status, 200, "{body}");
    h.wait_for_status(token, campaign, "completed", Duration::from_secs(60))
        .await;
    // finished means every report is in, not only every message sent
    eventually(
        Duration::from_secs(60),
        "every report to arrive",
        || async {
            let stats = h.stats(token, campaign).await;
            (stats["pending"] == 0).then_some(())
        },
    )
    .await;
    h.settled_figures(token, campaign).await;
    campaign
}

async fn reports(h: &Harness, token: &str, campaign: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "timeseries?bucket=minute",
        "timeseries?bucket=hour",
        "timeseries?bucket=day",
        "breakdown",
    ] {
        let (status, body) = h
            .get(token, &format!("/api/v1/campaigns/{campaign}/{path}"))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push(body);
    }
    out
}

fn without_source(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("source");
    v
}

async fn csv(h: &Harness, token: &str, path: &str) -> (String, Vec<csv::StringRecord>) {
    let response = h
        .http
        .get(h.app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/csv"), "{kind}");
    let bytes = response.bytes().await.unwrap();
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "a byte-order mark for spreadsheets"
    );
    let mut reader = csv::Reader::from_reader(&bytes[3..]);
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .collect::<Vec<_>>()
        .join(",");
    let rows = reader.records().map(Result::unwrap).collect();
    (header, rows)
}

#[actix_web::test]
async fn time_series_and_breakdown_of_a_finished_campaign_are_the_same_from_memory_and_from_rows() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |sim| sim.delivery_ratio = 0.7, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let campaign = finished_campaign(&h, &token).await;
    let stats = h.stats(&token, campaign).await;

    let from_memory = reports(&h, &token, campaign).await;
    assert!(from_memory.iter().all(|r| r["source"] == "memory"));
    let registry = &h.app.pipeline.handles.registry;
    eventually(
        Duration::from_secs(30),
        "the actor to passivate",
        || async {
            registry.passivate_idle(Duration::ZERO).await;
            (registry.active() == 0).then_some(())
        },
    )
    .await;
    let from_rows = reports(&h, &token, campaign).await;
    assert!(from_rows.iter().all(|r| r["source"] == "snapshot"));
    for (memory, rows) in from_memory.into_iter().zip(from_rows) {
        assert_eq!(without_source(memory), without_source(rows));
    }

    // and both equal the stats
    let (_, minutes) = h
        .get(&token, &format!("/api/v1/campaigns/{campaign}/timeseries"))
        .await;
    for field in ["sent", "delivered", "failed"] {
        assert_eq!(minutes["totals"][field], stats[field], "{field}");
    }
    let sum = |points: &Value, field: &str| -> i64 {
        points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[field].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        sum(&minutes["points"], "sent"),
        stats["sent"].as_i64().unwrap()
    );
    let (_, b) = h
        .get(&token, &format!("/api/v1/campaigns/{campaign}/breakdown"))
        .await;
    assert_eq!(b["byStatus"]["delivered"], stats["delivered"]);
    assert_eq!(b["byStatus"]["deliveryFailed"], stats["deliveryFailed"]);
    let by_delivery_status: HashMap<String, i64> = b["byDeliveryStatus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["deliveryStatus"].as_str().unwrap().to_owned(),
                d["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_delivery_status["Delivered"],
        stats["delivered"].as_i64().unwrap()
    );
    assert_eq!(
        by_delivery_status.values().sum::<i64>(),
        stats["sent"].as_i64().unwrap(),
        "{by_delivery_status:?}"
    );
    assert!(
        stats["failed"].as_i64().unwrap() > 0,
        "the simulator failed some"
    );
    assert_eq!(
        sum(&b["errors"], "count"),
        stats["failed"].as_i64().unwrap()
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn recipients_page_by_keyset_and_export_as_csv_each_recipient_once() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |sim| sim.delivery_ratio = 0.7, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let campaign = finished_campaign(&h, &token).await;
    let stats = h.stats(&token, campaign).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/campaigns/{campaign}/recipients?limit=70");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = h.get(&token, &path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 70);
        for item in items {
            assert!(item["sentAt"].is_string(), "{item}");
            seen.push(item["phone"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (N, N));
    let expected: HashSet<String> = (0..N).map(phone).collect();
    assert_eq!(unique, expected.iter().collect());

    for (status, figure) in [("delivered", "delivered"), ("failed", "failed")] {
        let path = format!("/api/v1/campaigns/{campaign}/recipients?status={status}&limit=1000");
        let (_, page) = h.get(&token, &path).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(
            items.len() as i64,
            stats[figure].as_i64().unwrap(),
            "{status}"
        );
        assert!(items
            .iter()
            .all(|i| i["status"].as_str().unwrap().ends_with(status)));
    }

    let (header, rows) = csv(
        &h,
        &token,
        &format!("/api/v1/campaigns/{campaign}/recipients.csv"),
    )
    .await;
    assert!(
        header.starts_with("recipient_id,phone,status,delivery_status"),
        "{header}"
    );
    assert_eq!(rows.len(), N);
    let phones: HashSet<String> = rows.iter().map(|r| r[1].to_owned()).collect();
    assert_eq!(phones, expected);
    let delivered = rows.iter().filter(|r| &r[2] == "delivered").count() as i64;
    assert_eq!(delivered, stats["delivered"].as_i64().unwrap());

    let (header, rows) = csv(
        &h,
        &token,
        &format!("/api/v1/campaigns/{campaign}/report.csv?status=failed"),
    )
    .await;
    assert!(
        header.ends_with("unsubscribed_at,unsubscribed_via"),
        "{header}"
    );
    assert_eq!(rows.len() as i64, stats["failed"].as_i64().unwrap());
    assert!(rows.iter().all(|r| r.len() == 18 && r[10].is_empty()));
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn another_tenants_campaign_is_404_and_bad_parameters_are_400_on_every_report() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let (_, other) = h.tenant("Other", 10_000).await;
    let campaign = campaign_of(&h, &token, 5, 0).await;
    let routes = [
        "timeseries",
        "breakdown",
        "recipients",
        "recipients.csv",
        "report.csv",
    ];
    for route in routes {
        let path = format!("/api/v1/campaigns/{campaign}/{route}");
        let (status, body) = h.get(&other, &path).await;
        assert_eq!(status, 404, "{route}: {body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        let (status, _) = h
            .get(&token, &format!("/api/v1/campaigns/999999/{route}"))
            .await;
        assert_eq!(status, 404, "{route} of a campaign that does not exist");
        let (status, _) = h
            .get(&token, &format!("/api/v1/campaigns/abc/{route}"))
            .await;
        assert_eq!(status, 404, "{route} of a malformed id");
        let (status, _) = h.get(&token, &path).await;
        assert_eq!(status, 200, "{route} of its own campaign");
    }
    let base = format!("/api/v1/campaigns/{campaign}");
    for query in [
        "timeseries?bucket=week",
        "timeseries?from=2026-12-01T10:00:00Z&to=2026-12-01T10:00:00Z",
        "timeseries?from=yesterday",
        "timeseries?bucket=minute&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "timeseries?extra=1",
        "recipients?limit=0",
        "recipients?limit=1001",
        "recipients?limit=x",
        "recipients?cursor=abc",
        "recipients?cursor=-5",
        "recipients?status=nope",
        "recipients.csv?status=nope",
        "report.csv?status=nope",
    ] {
        let (status, body) = h.get(&token, &format!("{base}/{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{query}");
    }
    // a draft has no figures yet: empty, not an error
    let (_, series) = h
        .get(&token, &format!("{base}/timeseries?bucket=day"))
        .await;
    assert_eq!(series["points"], Value::Array(vec![]));
    let (_, page) = h.get(&token, &format!("{base}/recipients")).await;
    assert_eq!(page["items"], Value::Array(vec![]));
    h.stop().await;
    db.drop_database().await;
}
