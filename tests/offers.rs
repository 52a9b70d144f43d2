//! Offers and opt-outs, against real Postgres, the embedded broker and the simulator: every
//! recipient of a marketing campaign gets a link code of its own at enqueue.

mod common;
#[path = "support/harness.rs"]
mod harness;

use std::collections::HashSet;

use campaignd::store::enqueue::{LINK_CODE_LEN, LINK_CODE_SQL};
use common::TestDb;
use harness::*;
use serde_json::json;

#[actix_web::test]
async fn a_million_link_codes_never_collide_and_each_carries_at_least_96_random_bits() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (n, distinct, shortest, longest, url_safe): (i64, i64, i32, i32, bool) =
        sqlx::query_as(&format!(
            "SELECT count(*), count(DISTINCT c), min(length(c)), max(length(c)),
                    bool_and(c ~ '^[A-Za-z0-9_-]+$')
             FROM (SELECT {LINK_CODE_SQL} AS c FROM generate_series(1, 1000000)) s"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((n, distinct), (1_000_000, 1_000_000), "no collision");
    assert_eq!(
        (shortest, longest),
        (22, 22),
        "one length, so links have one length"
    );
    assert!(url_safe);
    // 22 base64 characters carry 132 bits: the 16 bytes of a random (v4) UUID, whose 122
    // bits besides version and variant come from Postgres's strong random source
    let (version, variant): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT get_byte(b, 6) >> 4), count(DISTINCT get_byte(b, 8) >> 6)
         FROM (SELECT uuid_send(gen_random_uuid()) AS b FROM generate_series(1, 1000)) s",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (version, variant),
        (1, 1),
        "only 6 of the 128 bits are fixed"
    );
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn marketing_recipients_get_a_code_each_and_service_recipients_none() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let phones: Vec<String> = (0..500).map(phone).collect();
    let mut ids = Vec::new();
    for message_type in [None, Some("service")] {
        let mut body = json!({ "name": "Sale", "body": "Sale today", "sender": "Shop",
                               "audience": { "phones": phones } });
        if let Some(t) = message_type {
            body["messageType"] = json!(t);
        }
        let (status, campaign) = h.post(&token, "/api/v1/campaigns", body).await;
        assert_eq!(status, 201, "{campaign}");
        assert_eq!(campaign["messageType"], message_type.unwrap_or("marketing"));
        let id = campaign["id"].as_i64().unwrap();
        let (status, _) = h.action(&token, id, "enqueue").await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    let codes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT tracking_token FROM campaign_recipients WHERE campaign_id = $1")
            .bind(ids[0])
            .fetch_all(&h.pool)
            .await
            .unwrap();
    let unique: HashSet<_> = codes.iter().flatten().collect();
    assert_eq!(
        unique.len(),
        500,
        "one code per marketing recipient, all different"
    );
    assert!(unique.iter().all(|c| c.len() == LINK_CODE_LEN));
    let service: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_recipients
         WHERE campaign_id = $1 AND tracking_token IS NOT NULL",
    )
    .bind(ids[1])
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(service, 0, "service messages carry no links");

    let (status, refused) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "x", "body": "y", "audience": { "phones": [phone(1)] },
                    "messageType": "promo" }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messageType"));
    h.stop().await;
    db.drop_database().await;
}
