//! Preview before sending, through the HTTP API against real Postgres: the audience after
//! de-duplication and opt-outs, encodings and parts, and credits are exactly what the enqueue
//! that follows adds and reserves; unsaved bodies preview without saving; bad input is 4xx.

mod common;
#[path = "support/harness.rs"]
mod harness;

use common::TestDb;
use harness::*;
use serde_json::{json, Value};

/// A list of ten contacts (the first two opted out, one named in Greek) and a marketing
/// campaign with an offer sent to the list plus five inline phones (three of them already
/// in the list).
async fn audience(h: &Harness, token: &str) -> i64 {
    let list_phones: Vec<String> = (0..10).map(phone).collect();
    let body: Vec<Value> = list_phones
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if i == 3 { "Νίκος" } else { "Ann" };
            json!({ "phone": p, "firstName": name, "unsubscribed": i < 2 })
        })
        .collect();
    let (status, saved) = h.post(token, "/api/v1/contacts", Value::Array(body)).await;
    assert_eq!(status, 201, "{saved}");
    let ids: Vec<i64> = saved["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let (status, list) = h
        .post(
            token,
            "/api/v1/lists",
            json!({ "name": "All", "contactIds": ids }),
        )
        .await;
    assert_eq!(status, 201, "{list}");
    let inline: Vec<String> = [5, 6, 7, 20, 21].into_iter().map(phone).collect();
    let (status, campaign) = h
        .post(
            token,
            "/api/v1/campaigns",
            json!({ "name": "Sale", "body": "Hi {{firstName}}, 20% off today at the shop", "sender": "Shop",
                    "offerTitle": "20% off", "audience": { "listIds": [list["id"]], "phones": inline } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    campaign["id"].as_i64().unwrap()
}

#[actix_web::test]
async fn a_preview_names_the_recipients_parts_and_credits_the_enqueue_then_uses() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 10_000).await;
    let campaign = audience(&h, &token).await;

    let path = format!("/api/v1/campaigns/{campaign}/preview?samples=20");
    let (status, preview) = h.post(&token, &path, json!({})).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["audience"],
        json!({ "entries": 15, "duplicates": 3, "optedOut": 2, "alreadyAdded": 0, "recipients": 10 })
    );
    let samples = preview["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 10);
    let greek = samples.iter().find(|s| s["phone"] == phone(3)).unwrap();
    assert_eq!(greek["encoding"], "UCS-2");
    assert_eq!(greek["ucs2Characters"], json!(["Ν", "ί", "κ", "ο", "ς"]));
    assert!(greek["text"]
        .as_str()
        .unwrap()
        .starts_with("Hi Νίκος, 20% off"));
    let plain = samples.iter().find(|s| s["phone"] == phone(4)).unwrap();
    assert_eq!(
        (
            plain["encoding"].as_str(),
            plain["ucs2Characters"].as_array().map(Vec::len)
        ),
        (Some("GSM-7"), Some(0))
    );
    let text = plain["text"].as_str().unwrap();
    assert!(
        text.contains("/o/") && text.contains("/s/"),
        "links in the text: {text}"
    );
    let (min, max) = (
        preview["segmentsMin"].as_i64().unwrap(),
        preview["segmentsMax"].as_i64().unwrap(),
    );
    assert!(min < max, "the Greek name takes more parts: {min} {max}");
    let required = preview["credits"]["required"].as_i64().unwrap();
    let from_samples: i64 = samples
        .iter()
        .map(|s| s["segments"].as_i64().unwrap())
        .sum();
    assert_eq!(required, from_samples);
    assert_eq!(preview["credits"]["balance"], 10_000);
    assert_eq!(preview["credits"]["sufficient"], true);
    assert_eq!(preview["subscriptionActive"], true);

    // the enqueue adds and reserves exactly that, and stores the same parts per phone
    let (status, enqueued) = h.action(&token, campaign, "enqueue").await;
    assert_eq!(status, 200, "{enqueued}");
    assert_eq!(
        (enqueued["added"].as_i64(), enqueued["reserved"].as_i64()),
        (Some(10), Some(required))
    );
    let stored: Vec<(String, i16)> = sqlx::query_as(
        "SELECT phone_e164, segments FROM campaign_recipients WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    for (p, segments) in stored {
        let sample = samples.iter().find(|s| s["phone"] == p.as_str()).unwrap();
        assert_eq!(sample["segments"].as_i64(), Some(segments.into()), "{p}");
    }
    let (balance, _) = h.credits(tenant).await;
    assert_eq!(balance, 10_000 - required);

    // afterwards: nobody left to add
    let (_, again) = h.post(&token, &path, json!({})).await;
    assert_eq!(again["audience"]["recipients"], 0);
    assert_eq!(again["audience"]["alreadyAdded"], 10);
    assert_eq!(again["credits"]["required"], 0);
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn an_unsaved_body_previews_without_saving_and_bad_input_is_refused() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 3).await;
    let (_, other) = h.tenant("Other", 10).await;
    let phones = [phone(1), phone(2), phone(1)];
    let body = json!({ "body": "Party tonight 😀", "messageType": "service",
                       "audience": { "phones": phones } });
    let (status, preview) = h.post(&token, "/api/v1/campaigns/preview", body).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["audience"]["recipients"], 2);
    assert_eq!(preview["audience"]["duplicates"], 1);
    let sample = &preview["samples"][0];
    assert_eq!(sample["text"], "Party tonight 😀");
    assert_eq!(
        (sample["encoding"].as_str(), sample["units"].as_i64()),
        (Some("UCS-2"), Some(16))
    );
    assert_eq!(sample["ucs2Characters"], json!(["😀"]));
    assert_eq!(
        (
            preview["segmentsMin"].as_i64(),
            preview["segmentsMax"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        preview["credits"],
        json!({ "required": 2, "balance": 3, "sufficient": true })
    );
    let (_, list) = h.get(&token, "/api/v1/campaigns").await;
    assert_eq!(list["total"], 0, "nothing saved");

    // a body too long for the enqueue is refused the way the enqueue refuses it
    let long = json!({ "body": "€".repeat(800), "messageType": "service",
                       "audience": { "phones": [phone(1)] } });
    let (status, refused) = h.post(&token, "/api/v1/campaigns/preview", long).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("TEXT_TOO_LONG")),
        "{refused}"
    );
    // credits short: a preview says so, it does not refuse
    let many: Vec<String> = (0..5).map(phone).collect();
    let short = json!({ "body": "Hi", "messageType": "service", "audience": { "phones": many } });
    let (_, preview) = h.post(&token, "/api/v1/campaigns/preview", short).await;
    assert_eq!(
        preview["credits"],
        json!({ "required": 5, "balance": 3, "sufficient": false })
    );

    for (bad, code) in [
        (json!({ "body": "" }), 400),
        (
            json!({ "body": "Hi", "audience": { "listIds": [999] } }),
            400,
        ),
        (json!({ "body": "Hi", "unknownField": 1 }), 400),
    ] {
        let (status, answer) = h
            .post(&token, "/api/v1/campaigns/preview", bad.clone())
            .await;
        assert_eq!(status, code, "{bad}: {answer}");
    }
    let campaign = campaign_of(&h, &token, 2, 0).await;
    let path = format!("/api/v1/campaigns/{campaign}/preview");
    let (status, _) = h.post(&other, &path, json!({})).await;
    assert_eq!(status, 404, "another tenant's campaign");
    let (status, _) = h
        .post(&token, &format!("{path}?samples=21"), json!({}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post(&token, &format!("{path}?samples=x"), json!({}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post(&token, "/api/v1/campaigns/999999/preview", json!({}))
        .await;
    assert_eq!(status, 404);
    h.stop().await;
    db.drop_database().await;
}
