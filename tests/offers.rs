//! Offers and opt-outs, against real Postgres, the embedded broker and the simulator: the
//! message type of a campaign, and a link code for every marketing recipient.

mod common;
#[path = "support/harness.rs"]
mod harness;

use campaignd::domain::{LinkCode, RecipientId, LINK_CODE_LEN, SECRET_LEN};
use common::TestDb;
use harness::*;
use serde_json::{json, Value};

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
    let mut expired = body(None);
    expired["offerTitle"] = json!("Old deal");
    expired["offerExpiresAt"] = json!("2000-01-01T00:00:00Z");
    let (status, refused) = h.post(&token, "/api/v1/campaigns", expired).await;
    assert_eq!(status, 400, "{refused}");
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

/// Every recipient's link code, by phone, read from the rows.
async fn codes(h: &Harness, campaign: i64) -> Vec<(String, String)> {
    let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, phone_e164, link_secret FROM campaign_recipients
         WHERE campaign_id = $1 ORDER BY phone_e164",
    )
    .bind(campaign)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, phone, secret)| {
            let secret: [u8; SECRET_LEN] = secret.try_into().unwrap();
            let code = LinkCode::new(RecipientId::new(id).unwrap(), secret);
            (phone, code.to_string())
        })
        .collect()
}

fn base(h: &Harness) -> String {
    format!("http://127.0.0.1:{}", h.app.port)
}

/// A public page: status and HTML.
async fn page(h: &Harness, method: reqwest::Method, path: &str, agent: &str) -> (u16, String) {
    let response = h
        .http
        .request(method, format!("{}{path}", base(h)))
        .header("User-Agent", agent)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Posts a page's form (with the token the page carried, or `csrf` when given).
async fn submit(h: &Harness, path: &str, csrf: &str) -> (u16, String) {
    let response = h
        .http
        .post(format!("{}{path}", base(h)))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The CSRF token in a page's form.
fn token_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

const BROWSER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";

async fn contact_unsubscribed(h: &Harness, phone: &str) -> bool {
    sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
        "SELECT unsubscribed_at FROM contacts WHERE phone_e164 = $1",
    )
    .bind(phone)
    .fetch_optional(&h.pool)
    .await
    .unwrap()
    .flatten()
    .is_some()
}

async fn figures_become(h: &Harness, token: &str, campaign: i64, want: &[(&str, i64)]) -> Value {
    common::eventually(
        std::time::Duration::from_secs(20),
        &format!("stats {want:?}"),
        || async {
            let stats = h.stats(token, campaign).await;
            want.iter()
                .all(|(k, v)| stats[*k].as_i64() == Some(*v))
                .then_some(stats)
        },
    )
    .await
}

#[actix_web::test]
async fn offer_links_count_visits_redemptions_and_unsubscribes_once_per_recipient() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop & Co", 10_000).await;
    let (_, other) = h.tenant("Other", 10_000).await;
    let phones: Vec<String> = (0..4).map(phone).collect();
    let (status, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Sale", "body": "Sale today", "sender": "Shop",
                    "offerTitle": "<script>alert(1)</script> 20% off",
                    "offerText": "Bring a <b>friend</b>", "offerSelfRedeem": true,
                    "audience": { "phones": phones } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_i64().unwrap();
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(30))
        .await;
    let codes = codes(&h, id).await;
    // each text carries its recipient's two links, with the wording appended
    let texts: std::collections::HashMap<String, String> = h
        .sim
        .stats()
        .sends
        .into_iter()
        .map(|s| (s.destination, s.text))
        .collect();
    for (phone, code) in &codes {
        let text = &texts[phone];
        assert!(text.starts_with("Sale today\nClaim Offer: "), "{text}");
        assert!(text.contains(&format!("{}/o/{code}", base(&h))), "{text}");
        assert!(text.contains(&format!("To unsubscribe, tap: {}/s/{code}", base(&h))));
    }
    let (first, second) = (&codes[0].1, &codes[1].1);

    // the offer page: campaign text escaped; previews and HEAD do not count
    let (status, html) = page(&h, reqwest::Method::GET, &format!("/o/{first}"), BROWSER).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; 20% off"),
        "{html}"
    );
    assert!(
        !html.contains("<script>alert"),
        "campaign text must be escaped"
    );
    assert!(html.contains("Bring a &lt;b&gt;friend&lt;/b&gt;"));
    assert!(html.contains("Shop &amp; Co"));
    assert!(
        html.contains(first.as_str()),
        "the code to show at the till"
    );
    page(&h, reqwest::Method::GET, &format!("/o/{first}"), BROWSER).await;
    for agent in [
        "WhatsApp/2.23.20 A",
        "facebookexternalhit/1.1",
        "Slackbot-LinkExpanding 1.0",
    ] {
        assert_eq!(
            page(&h, reqwest::Method::GET, &format!("/o/{first}"), agent)
                .await
                .0,
            200
        );
    }
    assert_eq!(
        page(&h, reqwest::Method::HEAD, &format!("/o/{first}"), BROWSER)
            .await
            .0,
        200
    );
    page(&h, reqwest::Method::GET, &format!("/o/{second}"), BROWSER).await;
    figures_become(&h, &token, id, &[("visits", 2), ("clicks", 3)]).await;

    // unknown, malformed and wrong-secret codes: a friendly 404 page
    let mut forged = first.clone();
    forged.replace_range(26..27, if first.ends_with('A') { "B" } else { "A" });
    for path in [
        "/o/nope".to_owned(),
        format!("/o/{forged}"),
        format!("/s/{forged}"),
    ] {
        let (status, html) = page(&h, reqwest::Method::GET, &path, BROWSER).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("This link doesn't work"), "{html}");
    }

    // redemption by the shop: once; another tenant's code is not found
    let (status, redeemed) = h
        .post(&token, "/api/v1/redemptions", json!({ "code": first }))
        .await;
    assert_eq!(status, 201, "{redeemed}");
    let (status, again) = h
        .post(&token, "/api/v1/redemptions", json!({ "code": first }))
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("ALREADY_REDEEMED"))
    );
    let (status, _) = h
        .post(&other, "/api/v1/redemptions", json!({ "code": second }))
        .await;
    assert_eq!(status, 404, "tenant B cannot see tenant A's codes");
    let (status, _) = h
        .post(&token, "/api/v1/redemptions", json!({ "code": "x" }))
        .await;
    assert_eq!(status, 404);
    // self-redeem from the offer page: the form's token is required
    let (_, html) = page(&h, reqwest::Method::GET, &format!("/o/{second}"), BROWSER).await;
    let redeem = format!("/o/{second}/redeem");
    assert_eq!(submit(&h, &redeem, "forged").await.0, 403);
    let (status, html) = submit(&h, &redeem, &token_in(&html)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Redeemed"), "{html}");

    // unsubscribe: GET asks and changes nothing; POST opts out; a second POST counts nothing
    let (phone0, _) = &codes[0];
    let (status, html) = page(&h, reqwest::Method::GET, &format!("/s/{first}"), BROWSER).await;
    assert_eq!(status, 200);
    assert!(html.contains("Unsubscribe?"), "{html}");
    assert!(!contact_unsubscribed(&h, phone0).await);
    let path = format!("/s/{first}");
    assert_eq!(submit(&h, &path, "").await.0, 403, "no token, no change");
    let odd = h
        .http
        .post(format!("{}{path}", base(&h)))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status().as_u16(), 403, "not our form: the same page");
    assert!(odd.text().await.unwrap().contains("Please try again"));
    assert!(!contact_unsubscribed(&h, phone0).await);
    let csrf = token_in(&html);
    let (status, html) = submit(&h, &path, &csrf).await;
    assert_eq!(status, 200);
    assert!(html.contains("You are unsubscribed") && html.contains("Resubscribe"));
    assert!(contact_unsubscribed(&h, phone0).await);
    assert_eq!(submit(&h, &path, &csrf).await.0, 200);
    // resubscribing does not take the count back
    let (status, _) = submit(&h, &format!("/s/{first}/resubscribe"), &token_in(&html)).await;
    assert_eq!(status, 200);
    assert!(!contact_unsubscribed(&h, phone0).await);
    let stats = figures_become(
        &h,
        &token,
        id,
        &[
            ("visits", 2),
            ("clicks", 4),
            ("redemptions", 2),
            ("unsubscribes", 1),
        ],
    )
    .await;
    let delivered = stats["delivered"].as_f64().unwrap();
    // JSON numbers are read back to within an ulp
    let rate = stats["conversionRate"].as_f64().unwrap();
    assert!((rate - 2.0 / delivered).abs() < 1e-12, "{rate}");
    // the snapshot in Postgres holds the same counts
    let stored: (i64, i64, i64, i64) = common::eventually(
        std::time::Duration::from_secs(10),
        "the snapshot to catch up",
        || async {
            let row: (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT visits, clicks, redemptions, unsubscribes FROM campaigns WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
            (row == (2, 4, 2, 1)).then_some(row)
        },
    )
    .await;
    assert_eq!(stored, (2, 4, 2, 1));
    // the time series counts each recipient's first visit, redemption and unsubscribe once,
    // and the minutes stored with the snapshot agree with the rows
    let (_, series) = h
        .get(
            &token,
            &format!("/api/v1/campaigns/{id}/timeseries?bucket=day"),
        )
        .await;
    let totals = &series["totals"];
    assert_eq!(
        (
            &totals["visits"],
            &totals["redemptions"],
            &totals["unsubscribes"]
        ),
        (&json!(2), &json!(2), &json!(1)),
        "{series}"
    );
    h.assert_snapshots_match_rows().await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn inbound_stop_in_any_script_unsubscribes_and_is_attributed() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let id = campaign_of(&h, &token, 3, 0).await;
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(30))
        .await;
    h.settled_figures(&token, id).await; // the sends are in the rows
    let post = |body: Value, signed: bool| {
        let raw = serde_json::to_vec(&body).unwrap();
        let secret = if signed {
            common::WEBHOOK_SECRET
        } else {
            "wrong"
        };
        let signature = campaignd::mitto::signature::sign(secret, None, &raw);
        let request = h
            .http
            .post(format!("{}/webhooks/mitto/inbound", base(&h)))
            .header("Content-Type", "application/json")
            .header("X-Webhook-Signature", signature)
            .body(raw);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let stop = json!({ "from": phone(0), "to": "Shop", "text": "Στόπ" });
    let (status, _) = post(stop.clone(), false).await;
    assert_eq!(status, 401, "a bad signature changes nothing");
    assert!(!contact_unsubscribed(&h, &phone(0)).await);
    let (status, outcome) = post(stop.clone(), true).await;
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(
        (
            outcome["unsubscribed"].as_i64(),
            outcome["attributed"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert!(contact_unsubscribed(&h, &phone(0)).await);
    let (status, _) = post(stop, true).await;
    assert_eq!(status, 409, "a replayed request is refused");
    let batch = json!([
        { "msisdn": phone(1), "destination": "Shop", "message": "stop please" },
        { "from": phone(2), "to": "Shop", "text": "When does the sale end?" },
        // bare international digits, as a number: phone 0 again
        { "msisdn": 306910000000_i64, "text": "STOP" },
    ]);
    let (status, outcome) = post(batch, true).await;
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(
        (
            outcome["unsubscribed"].as_i64(),
            outcome["ignored"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert!(contact_unsubscribed(&h, &phone(1)).await);
    assert!(!contact_unsubscribed(&h, &phone(2)).await);
    // phone 0 opted out twice: counted once
    figures_become(&h, &token, id, &[("unsubscribes", 2)]).await;
    let (status, _) = post(json!({ "to": "Shop", "text": "STOP" }), true).await;
    assert_eq!(status, 400, "a message without a sender is refused");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn quiet_hours_hold_marketing_until_they_end_and_an_opt_out_meanwhile_is_skipped_and_refunded(
) {
    use chrono::TimeZone;
    let db = TestDb::unique();
    // 23:30 in Athens (UTC+2 in December): inside 22:00–09:00
    let night = chrono::Utc
        .with_ymd_and_hms(2026, 12, 1, 21, 30, 0)
        .unwrap();
    let clock = std::sync::Arc::new(campaignd::engine::clock::ManualClock::new(night));
    let h = Harness::start_with_clock(&db, |_| {}, &[], clock.clone()).await;
    let (tenant, token) = h.tenant("Shop", 10_000).await;
    let (status, rules) = h
        .call(
            reqwest::Method::PUT,
            &token,
            "/api/v1/me/marketing-rules",
            Some(json!({ "timeZone": "Europe/Athens",
                         "quietHours": { "start": "22:00", "end": "09:00" },
                         "marketingCap24h": null })),
        )
        .await;
    assert_eq!(status, 200, "{rules}");
    let marketing = campaign_of(&h, &token, 5, 0).await;
    let (status, service) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Receipts", "body": "Your order shipped", "sender": "Shop",
                    "messageType": "service", "audience": { "phones": [phone(10), phone(11)] } }),
        )
        .await;
    assert_eq!(status, 201);
    let service = service["id"].as_i64().unwrap();
    for id in [marketing, service] {
        assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    }
    // scheduling into the window is allowed: it starts on time and waits
    let phones: Vec<String> = (20..23).map(phone).collect();
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let (status, scheduled) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Later", "body": "Sale tonight", "sender": "Shop",
                    "scheduledAt": soon, "audience": { "phones": phones } }),
        )
        .await;
    assert_eq!(status, 201, "{scheduled}");
    let scheduled = scheduled["id"].as_i64().unwrap();
    h.wait_for_status(
        &token,
        scheduled,
        "sending",
        std::time::Duration::from_secs(30),
    )
    .await;
    // service messages ignore quiet hours; marketing ones wait
    h.wait_for_status(
        &token,
        service,
        "completed",
        std::time::Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let held = h.stats(&token, marketing).await;
    assert_eq!(
        (held["status"].as_str(), held["queued"].as_i64()),
        (Some("sending"), Some(5))
    );
    assert!(!h.sends().contains_key(&phone(0)), "nothing sent at night");
    assert!(
        !h.sends().contains_key(&phone(20)),
        "the scheduled one waits too"
    );
    // one recipient opts out while the campaign waits (through its link)
    let (phone0, code0) = codes(&h, marketing).await.remove(0);
    let (_, html) = page(&h, reqwest::Method::GET, &format!("/s/{code0}"), BROWSER).await;
    assert_eq!(
        submit(&h, &format!("/s/{code0}"), &token_in(&html)).await.0,
        200
    );
    let (balance_before, _) = h.credits(tenant).await;
    // morning in Athens: the campaign resumes by itself
    clock.set(chrono::Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap());
    let done = h
        .wait_for_status(
            &token,
            marketing,
            "completed",
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        (done["skipped"].as_i64(), done["sent"].as_i64()),
        (Some(1), Some(4))
    );
    let sends = h.sends();
    assert!(
        !sends.contains_key(&phone0),
        "the opted-out phone was never messaged"
    );
    assert!((1..5).all(|i| sends.get(&phone(i)) == Some(&1)));
    let reason: String = sqlx::query_scalar(
        "SELECT error FROM campaign_recipients WHERE campaign_id = $1 AND phone_e164 = $2",
    )
    .bind(marketing)
    .bind(&phone0)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(reason, "unsubscribed");
    // a skipped recipient's links lead nowhere: no SMS carried them
    let (status, _) = page(&h, reqwest::Method::GET, &format!("/s/{code0}"), BROWSER).await;
    assert_eq!(status, 404);
    let (balance_after, _) = h.credits(tenant).await;
    let segments: i64 = sqlx::query_scalar(
        "SELECT segments::bigint FROM campaign_recipients WHERE campaign_id = $1 AND phone_e164 = $2",
    )
    .bind(marketing)
    .bind(&phone0)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        balance_after - balance_before,
        segments,
        "its credits came back"
    );
    let later = h
        .wait_for_status(
            &token,
            scheduled,
            "completed",
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(later["sent"].as_i64(), Some(3));
    h.settled_figures(&token, scheduled).await;
    h.settled_figures(&token, marketing).await;
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_tenants_marketing_cap_skips_and_refunds_contacts_over_it() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 10_000).await;
    let set = |body: Value| {
        h.call(
            reqwest::Method::PUT,
            &token,
            "/api/v1/me/marketing-rules",
            Some(body),
        )
    };
    for bad in [
        json!({ "timeZone": "Mars/Olympus", "quietHours": null, "marketingCap24h": null }),
        json!({ "timeZone": "UTC", "quietHours": { "start": "25:00", "end": "09:00" },
                "marketingCap24h": null }),
        json!({ "timeZone": "UTC", "quietHours": null, "marketingCap24h": 0 }),
        json!({ "timeZone": "UTC", "quietHours": { "start": "22:00", "end": "22:00" },
                "marketingCap24h": null }),
    ] {
        let (status, refused) = set(bad).await;
        assert_eq!(status, 400, "{refused}");
    }
    // a zone is stored by its canonical name, so Postgres reads it the same way
    let (status, rules) = set(json!({ "timeZone": " Europe/Athens ", "quietHours": null,
                                      "marketingCap24h": null }))
    .await;
    assert_eq!(
        (status, rules["timeZone"].as_str()),
        (200, Some("Europe/Athens"))
    );
    let (status, _) =
        set(json!({ "timeZone": "UTC", "quietHours": null, "marketingCap24h": 1 })).await;
    assert_eq!(status, 200);
    let (_, rules) = h.get(&token, "/api/v1/me/marketing-rules").await;
    assert_eq!(
        rules,
        json!({ "timeZone": "UTC", "quietHours": null, "marketingCap24h": 1 })
    );
    let first = campaign_of(&h, &token, 3, 0).await;
    assert_eq!(h.action(&token, first, "enqueue").await.0, 200);
    h.wait_for_status(
        &token,
        first,
        "completed",
        std::time::Duration::from_secs(30),
    )
    .await;
    h.settled_figures(&token, first).await; // the sends are in the rows
                                            // phones 0 and 1 had their one marketing message today; phone 7 had none
    let (status, second) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Again", "body": "Sale again", "sender": "Shop",
                    "audience": { "phones": [phone(0), phone(1), phone(7)] } }),
        )
        .await;
    assert_eq!(status, 201);
    let second = second["id"].as_i64().unwrap();
    let (before, _) = h.credits(tenant).await;
    let (status, enqueued) = h.action(&token, second, "enqueue").await;
    assert_eq!(status, 200, "{enqueued}");
    let done = h
        .wait_for_status(
            &token,
            second,
            "completed",
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        (done["skipped"].as_i64(), done["sent"].as_i64()),
        (Some(2), Some(1))
    );
    let sends = h.sends();
    assert_eq!(
        (sends[&phone(0)], sends[&phone(1)], sends[&phone(7)]),
        (1, 1, 1)
    );
    h.settled_figures(&token, second).await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM campaign_recipients WHERE campaign_id = $1 AND status = 'skipped'",
    )
    .bind(second)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(reasons, vec!["marketing cap reached"; 2]);
    let (after, _) = h.credits(tenant).await;
    let charged: i64 = sqlx::query_scalar(
        "SELECT sum(segments)::bigint FROM campaign_recipients
         WHERE campaign_id = $1 AND status <> 'skipped'",
    )
    .bind(second)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        before - after,
        charged,
        "the two skipped recipients were refunded"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn link_pages_are_limited_per_client_address() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[("links.requests_per_minute", json!(5))]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let id = campaign_of(&h, &token, 1, 0).await;
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    let (_, code) = codes(&h, id).await.remove(0);
    for _ in 0..5 {
        assert_eq!(
            page(&h, reqwest::Method::GET, &format!("/s/{code}"), BROWSER)
                .await
                .0,
            200
        );
    }
    let (status, html) = page(&h, reqwest::Method::GET, &format!("/s/{code}"), BROWSER).await;
    assert_eq!(status, 429);
    assert!(html.contains("Please wait"), "{html}");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn concurrent_redemptions_of_one_code_redeem_it_once_and_agree_on_who() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let (status, campaign) = h
        .post(
            &token,
            "/api/v1/campaigns",
            json!({ "name": "Sale", "body": "Sale", "sender": "Shop", "offerTitle": "20% off",
                    "offerSelfRedeem": true, "audience": { "phones": [phone(0)] } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_i64().unwrap();
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(30))
        .await;
    h.settled_figures(&token, id).await;
    let (_, code) = codes(&h, id).await.remove(0);
    let (_, html) = page(&h, reqwest::Method::GET, &format!("/o/{code}"), BROWSER).await;
    let csrf = token_in(&html);
    let redeem_path = format!("/o/{code}/redeem");
    let shop = (0..8).map(|_| h.post(&token, "/api/v1/redemptions", json!({ "code": code })));
    let shop = futures::future::join_all(shop);
    let customer = futures::future::join_all((0..8).map(|_| submit(&h, &redeem_path, &csrf)));
    let (shop, customer) = futures::future::join(shop, customer).await;
    let created = shop.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = shop.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(created + conflicts, 8, "{shop:?}");
    let self_redeemed = customer
        .iter()
        .filter(|(s, html)| *s == 200 && html.contains("Redeemed. Enjoy!"))
        .count();
    assert_eq!(created + self_redeemed, 1, "exactly one attempt redeems");
    figures_become(&h, &token, id, &[("redemptions", 1)]).await;
    let agree: (String, String, bool) = common::eventually(
        std::time::Duration::from_secs(10),
        "the ledger's row to be committed",
        || async {
            sqlx::query_as(
                "SELECT d.by, r.redeemed_by, d.redeemed_at = r.redeemed_at
                 FROM redemptions d JOIN campaign_recipients r ON r.id = d.recipient_id",
            )
            .fetch_optional(&h.pool)
            .await
            .unwrap()
            .filter(|(_, by, _): &(String, Option<String>, Option<bool>)| by.is_some())
            .map(|(a, b, same)| (a, b.unwrap(), same == Some(true)))
        },
    )
    .await;
    assert_eq!(agree.0, agree.1, "who redeemed");
    assert!(agree.2, "when");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_stop_waits_for_the_sends_to_reach_the_rows_and_asks_for_a_retry_while_they_cannot() {
    use sqlx::Connection;
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    let id = campaign_of(&h, &token, 1, 0).await;
    // the fold is held back: the sends reach the message log, not the recipients' rows
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(campaignd::store::messages::FOLD_LOCK)
        .execute(&mut blocker)
        .await
        .unwrap();
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(30))
        .await;
    let stop =
        serde_json::to_vec(&json!({ "from": phone(0), "to": "Shop", "text": "STOP" })).unwrap();
    let post = || {
        let signature = campaignd::mitto::signature::sign(common::WEBHOOK_SECRET, None, &stop);
        let request = h
            .http
            .post(format!("{}/webhooks/mitto/inbound", base(&h)))
            .header("Content-Type", "application/json")
            .header("X-Webhook-Signature", signature)
            .body(stop.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, answer) = post().await;
    assert_eq!(
        status, 503,
        "not ignored while the send is not in the rows: {answer}"
    );
    assert!(!contact_unsubscribed(&h, &phone(0)).await);

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(campaignd::store::messages::FOLD_LOCK)
        .execute(&mut blocker)
        .await
        .unwrap();
    let (status, outcome) = post().await;
    assert_eq!(status, 202, "the provider's retry goes through: {outcome}");
    assert_eq!(
        (
            outcome["unsubscribed"].as_i64(),
            outcome["attributed"].as_i64()
        ),
        (Some(1), Some(1)),
        "{outcome}"
    );
    assert!(contact_unsubscribed(&h, &phone(0)).await);
    figures_become(&h, &token, id, &[("unsubscribes", 1)]).await;
    blocker.close().await.unwrap();
    h.stop().await;
    db.drop_database().await;
}
