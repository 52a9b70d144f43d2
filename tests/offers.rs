//! Offers and opt-outs, against real Postgres, the embedded broker and the simulator: the
//! message type of a campaign, and a link code for every marketing recipient.

mod common;
#[path = "support/harness.rs"]
mod harness;

use campaignd::domain::{LinkCode, RecipientId, LINK_CODE_LEN, SECRET_LEN};
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

#[actix_web::test]
async fn marketing_recipients_get_a_link_code_each_and_service_recipients_none() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let phones: Vec<String> = (0..500).map(phone).collect();
    // inline phones, and a personalised body (the other insert path)
    let mut campaigns = Vec::new();
    for (message_type, body) in [
        ("marketing", "Sale today"),
        ("marketing", "Hi {{firstName}}, sale today"),
        ("service", "Your order shipped"),
    ] {
        let (status, campaign) = h
            .post(
                &token,
                "/api/v1/campaigns",
                json!({ "name": "c", "body": body, "sender": "Shop", "messageType": message_type,
                        "audience": { "phones": phones } }),
            )
            .await;
        assert_eq!(status, 201, "{campaign}");
        let id = campaign["id"].as_i64().unwrap();
        assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
        campaigns.push(id);
    }
    for id in &campaigns[..2] {
        let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, link_secret FROM campaign_recipients WHERE campaign_id = $1",
        )
        .bind(id)
        .fetch_all(&h.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 500);
        let mut codes = std::collections::HashSet::new();
        let mut secrets = std::collections::HashSet::new();
        for (recipient, secret) in rows {
            let secret: [u8; SECRET_LEN] = secret.expect("a secret").try_into().unwrap();
            let code = LinkCode::new(RecipientId::new(recipient).unwrap(), secret);
            let text = code.to_string();
            assert_eq!(text.len(), LINK_CODE_LEN);
            let parsed = LinkCode::parse(&text).unwrap();
            assert!(parsed.matches(&secret));
            codes.insert(text);
            secrets.insert(secret);
        }
        assert_eq!((codes.len(), secrets.len()), (500, 500), "all different");
    }
    let service: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND link_secret IS NOT NULL",
    )
    .bind(campaigns[2])
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(service, 0, "service messages carry no links");
    h.stop().await;
    db.drop_database().await;
}
