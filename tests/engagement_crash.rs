//! Engagement counts are exact after a crash: a 2,000-recipient campaign's recipients open
//! their offer links (some several times), the shop redeems codes (some twice), recipients
//! unsubscribe (some twice), and the service is killed with SIGKILL in the middle — right after
//! acknowledged events that no checkpoint has committed yet. After the restart `visits`,
//! `clicks`, `redemptions`, `unsubscribes` and `conversionRate` equal the ground truth.

mod common;

use std::time::Duration;

use campaignd::domain::{LinkCode, RecipientId, SECRET_LEN};
use common::{dev_broker, eventually, free_port, mitto_sim, Proc, TestDb};
use serde_json::{json, Value};

const RECIPIENTS: usize = 2_000;
const SECRET: &str = "engagement-crash-secret";

fn serve(db: &TestDb, bootstrap: &str, sim: &str, port: u16, log: &std::path::Path) -> Proc {
    let env = [("CAMPAIGND_LINKS__REQUESTS_PER_MINUTE", "10000000")];
    common::serve_against(db, (bootstrap, sim, SECRET), port, log, &env)
}

/// What one recipient does, in order.
#[derive(Clone, Copy, Default)]
struct Plan {
    opens: usize,
    redeems: usize,
    unsubscribes: usize,
}

fn plan_of(i: usize) -> Plan {
    Plan {
        opens: if i < 900 { 1 + i % 3 } else { 0 },
        redeems: if i < 300 {
            1 + usize::from(i % 6 == 0)
        } else {
            0
        },
        unsubscribes: if (1_000..1_200).contains(&i) {
            1 + usize::from(i % 4 == 0)
        } else {
            0
        },
    }
}

struct Client {
    http: reqwest::Client,
    port: u16,
    token: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Retries until the service answers (it may be restarting), then returns status and body.
    async fn until_answered(&self, request: impl Fn() -> reqwest::RequestBuilder) -> (u16, String) {
        eventually(Duration::from_secs(60), "the service to answer", || async {
            let response = request().send().await.ok()?;
            let status = response.status().as_u16();
            (status != 503).then_some(())?;
            Some((status, response.text().await.ok()?))
        })
        .await
    }

    async fn act(&self, code: &str, plan: Plan) {
        for _ in 0..plan.opens {
            let (status, _) = self
                .until_answered(|| self.http.get(self.url(&format!("/o/{code}"))))
                .await;
            assert_eq!(status, 200);
        }
        for n in 0..plan.redeems {
            let (status, body) = self
                .until_answered(|| {
                    self.http
                        .post(self.url("/api/v1/redemptions"))
                        .bearer_auth(&self.token)
                        .json(&json!({ "code": code }))
                })
                .await;
            assert_eq!(status, if n == 0 { 201 } else { 409 }, "{body}");
        }
        if plan.unsubscribes == 0 {
            return;
        }
        // a double tap posts the same form twice
        let page = format!("/s/{code}");
        let (_, html) = self.until_answered(|| self.http.get(self.url(&page))).await;
        let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = html[at..].split('"').next().unwrap().to_owned();
        for _ in 0..plan.unsubscribes {
            let (status, _) = self
                .until_answered(|| {
                    self.http
                        .post(self.url(&page))
                        .form(&[("csrf", csrf.as_str())])
                })
                .await;
            assert_eq!(status, 200);
        }
    }

    async fn stats(&self, id: i64) -> Option<Value> {
        let url = self.url(&format!("/api/v1/campaigns/{id}/stats"));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }
}

#[actix_web::test]
async fn kill_9_between_acknowledged_link_events_keeps_engagement_counts_exact() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (_, token) = common::funded_tenant(&pool, "Shop", 1_000_000).await;
    let (_broker, bootstrap) = dev_broker();
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/webhooks/mitto/dlr");
    let (_sim, sim) = mitto_sim(&callback, SECRET, &["--latency-ms", "1..5"]);
    let log = std::env::temp_dir().join(format!("campaignd-engagement-crash-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    let mut service = serve(&db, &bootstrap, &sim, port, &log);
    let client = Client {
        http: reqwest::Client::new(),
        port,
        token: token.clone(),
    };
    let phones: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("+3069{:08}", 30_000_000 + i))
        .collect();
    let (status, body) = client
        .until_answered(|| {
            client
                .http
                .post(client.url("/api/v1/campaigns"))
                .bearer_auth(&token)
                .json(
                    &json!({ "name": "Crash", "body": "Sale today", "sender": "Shop",
                         "offerTitle": "20% off", "audience": { "phones": phones } }),
                )
        })
        .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, _) = client
        .until_answered(|| {
            client
                .http
                .post(client.url(&format!("/api/campaigns/{id}/enqueue")))
                .bearer_auth(&token)
        })
        .await;
    assert_eq!(status, 200);
    let delivered_all = eventually(
        Duration::from_secs(120),
        "the campaign to complete",
        || async {
            let stats = client.stats(id).await?;
            (stats["status"] == "completed" && stats["pending"] == 0).then_some(stats)
        },
    )
    .await;

    let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, phone_e164, link_secret FROM campaign_recipients WHERE campaign_id = $1 ORDER BY phone_e164",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), RECIPIENTS);
    let codes: Vec<String> = rows
        .into_iter()
        .map(|(r, _, secret)| {
            let secret: [u8; SECRET_LEN] = secret.try_into().unwrap();
            LinkCode::new(RecipientId::new(r).unwrap(), secret).to_string()
        })
        .collect();

    // the first half, then SIGKILL right after the last acknowledged event
    let half = RECIPIENTS / 2 + 100;
    for (i, code) in codes.iter().enumerate().take(half) {
        client.act(code, plan_of(i)).await;
    }
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    service = serve(&db, &bootstrap, &sim, port, &log);
    for (i, code) in codes.iter().enumerate().skip(half) {
        client.act(code, plan_of(i)).await;
    }

    let plans: Vec<Plan> = (0..RECIPIENTS).map(plan_of).collect();
    let visits = plans.iter().filter(|p| p.opens > 0).count() as i64;
    let clicks = plans.iter().map(|p| p.opens).sum::<usize>() as i64;
    let redemptions = plans.iter().filter(|p| p.redeems > 0).count() as i64;
    let unsubscribes = plans.iter().filter(|p| p.unsubscribes > 0).count() as i64;
    let stats = eventually(
        Duration::from_secs(60),
        "engagement to be counted",
        || async {
            let s = client.stats(id).await?;
            let got = (
                s["visits"].as_i64()?,
                s["clicks"].as_i64()?,
                s["redemptions"].as_i64()?,
                s["unsubscribes"].as_i64()?,
            );
            (got == (visits, clicks, redemptions, unsubscribes)).then_some(s)
        },
    )
    .await;
    let delivered = stats["delivered"].as_i64().unwrap();
    assert_eq!(delivered, delivered_all["delivered"].as_i64().unwrap());
    // JSON numbers are read back to within an ulp
    let rate = stats["conversionRate"].as_f64().unwrap();
    assert!(
        (rate - redemptions as f64 / delivered as f64).abs() < 1e-12,
        "{rate}"
    );
    // and after another restart, from the snapshot alone
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    let _service = serve(&db, &bootstrap, &sim, port, &log);
    // the snapshot plus the replay of what it did not cover gives the same figures
    eventually(
        Duration::from_secs(60),
        "the same figures after a restart",
        || async {
            let again = client.stats(id).await?;
            ["visits", "clicks", "redemptions", "unsubscribes"]
                .iter()
                .all(|k| again[*k] == stats[*k])
                .then_some(())
        },
    )
    .await;
    // and the snapshot in Postgres agrees with the recipient rows (what `campaignd verify` checks)
    eventually(
        Duration::from_secs(30),
        "snapshot and rows to agree",
        || async {
            let recount = campaignd::store::campaigns::recount(&pool, None)
                .await
                .ok()?;
            recount
                .iter()
                .all(|r| campaignd::engine::campaign::differences(&r.snapshot, &r.rows).is_empty())
                .then_some(())
        },
    )
    .await;
    eprintln!("visits {visits}, clicks {clicks}, redemptions {redemptions}, unsubscribes {unsubscribes}, delivered {delivered}");
    pool.close().await;
    db.drop_database().await;
}
