//! Offers and opt-outs, against real Postgres, the embedded broker and the simulator.

mod common;
#[path = "support/harness.rs"]
mod harness;

use common::TestDb;
use harness::*;
use serde_json::json;

#[actix_web::test]
async fn campaigns_are_marketing_unless_created_as_service() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let body = |message_type: Option<&str>| {
        let mut body = json!({ "name": "Sale", "body": "Sale today", "sender": "Shop",
                               "audience": { "phones": [phone(0)] } });
        if let Some(t) = message_type {
            body["messageType"] = json!(t);
        }
        body
    };
    for (asked, stored) in [(None, "marketing"), (Some("service"), "service")] {
        let (status, campaign) = h.post(&token, "/api/v1/campaigns", body(asked)).await;
        assert_eq!(status, 201, "{campaign}");
        assert_eq!(campaign["messageType"], stored);
        // an edit that does not mention it keeps it
        let id = campaign["id"].as_i64().unwrap();
        let (status, edited) = h
            .call(
                reqwest::Method::PATCH,
                &token,
                &format!("/api/v1/campaigns/{id}"),
                Some(json!({ "name": "Sale 2" })),
            )
            .await;
        assert_eq!(status, 200, "{edited}");
        assert_eq!(edited["messageType"], stored);
    }
    let (status, refused) = h
        .post(&token, "/api/v1/campaigns", body(Some("promo")))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messageType"));
    h.stop().await;
    db.drop_database().await;
}
