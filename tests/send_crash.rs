//! Crash safety while sending: the service runs as a child process against a `dev-broker`
//! process, a `mitto-sim` process and Postgres, and is killed with SIGKILL five times while a
//! campaign is being sent. After the last restart the campaign completes, the simulator saw
//! every phone exactly once, and the counters agree with the rows and the credits.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{dev_broker, eventually, free_port, mitto_sim, sim_stats, Proc, TestDb};
use rand::Rng;
use serde_json::{json, Value};

const KILLS: usize = 5;
const RECIPIENTS: usize = 12_000;
const SECRET: &str = "crash-test-secret";

fn serve(db: &TestDb, bootstrap: &str, sim: &str, port: u16, log: &std::path::Path) -> Proc {
    let env = [
        ("CAMPAIGND_SENDING__AMBIGUOUS_GRACE_MS", "300"),
        ("CAMPAIGND_RATE_LIMITS__TENANT_PER_SECOND", "1000"),
    ];
    common::serve_against(db, (bootstrap, sim, SECRET), port, log, &env)
}

/// The campaign's stats as the API shows them, or `None` while the service does not answer.
async fn campaign_stats(http: &reqwest::Client, port: u16, token: &str, id: i64) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/api/v1/campaigns/{id}/stats");
    let response = http.get(url).bearer_auth(token).send().await.ok()?;
    response.json().await.ok()
}

#[actix_web::test]
async fn kill_9_five_times_while_sending_messages_every_phone_exactly_once() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (tenant, token) = common::funded_tenant(&pool, "Shop", 1_000_000).await;
    let (_broker, bootstrap) = dev_broker();
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/webhooks/mitto/dlr");
    let (_sim, sim) = mitto_sim(&callback, SECRET, &["--latency-ms", "5..40"]);
    let log = std::env::temp_dir().join(format!("campaignd-send-crash-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    let mut service = serve(&db, &bootstrap, &sim, port, &log);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let phones: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("+3069{:08}", 20_000_000 + i))
        .collect();
    let campaign: Value = eventually(Duration::from_secs(30), "the service to answer", || async {
        let r = http
            .post(url("/api/v1/campaigns"))
            .bearer_auth(&token)
            .json(
                &json!({ "name": "Crash", "body": "Sale today", "sender": "Shop",
                           "audience": { "phones": phones } }),
            )
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    })
    .await;
    let id = campaign["id"].as_i64().expect("campaign created");
    let enqueued: Value = http
        .post(url(&format!("/api/campaigns/{id}/enqueue")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enqueued["queued"], RECIPIENTS);

    let mut rng = rand::rng();
    let mut at_kill = Vec::new();
    for _ in 0..KILLS {
        // once the (re)started service sends again, strike at a random moment
        let before = sim_stats(&http, &sim).await["accepted"].as_u64().unwrap();
        eventually(Duration::from_secs(60), "the service to send", || async {
            let now = sim_stats(&http, &sim).await["accepted"].as_u64().unwrap();
            (now > before).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1_200))).await;
        service.0.kill().unwrap();
        service.0.wait().unwrap();
        at_kill.push(sim_stats(&http, &sim).await["accepted"].as_u64().unwrap());
        service = serve(&db, &bootstrap, &sim, port, &log);
    }
    eprintln!("messages accepted by Mitto at each kill: {at_kill:?} of {RECIPIENTS}");
    assert!(
        (*at_kill.last().unwrap() as usize) < RECIPIENTS,
        "the last kill came while the campaign was still sending"
    );

    let stats: Value = eventually(
        Duration::from_secs(180),
        "the campaign to complete",
        || async {
            let body = campaign_stats(&http, port, &token, id).await?;
            (body["status"] == "completed").then_some(body)
        },
    )
    .await;

    // every phone exactly once at Mitto
    let sim_now = sim_stats(&http, &sim).await;
    assert_eq!(
        sim_now["maxSendsPerMessage"], 1,
        "a phone was messaged twice"
    );
    assert_eq!(sim_now["accepted"], RECIPIENTS, "every phone was messaged");
    assert_eq!(stats["total"], RECIPIENTS);
    assert_eq!(stats["sent"], RECIPIENTS);
    assert_eq!(
        (
            stats["sendFailed"].as_i64(),
            stats["queued"].as_i64(),
            stats["processing"].as_i64()
        ),
        (Some(0), Some(0), Some(0))
    );

    // the rows say the same, and every sent message carries Mitto's id
    let rows: HashMap<String, i64> = eventually(Duration::from_secs(30), "rows to be committed", || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM campaign_recipients
             WHERE campaign_id = $1 AND (status NOT IN ('sent', 'delivered', 'failed') OR provider_message_id IS NOT NULL)
             GROUP BY 1",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .ok()?;
        let rows: HashMap<String, i64> = rows.into_iter().collect();
        let accepted = ["sent", "delivered", "failed"].iter().map(|s| rows.get(*s).copied().unwrap_or(0)).sum::<i64>();
        (accepted == RECIPIENTS as i64).then_some(rows)
    })
    .await;
    assert!(rows.values().sum::<i64>() >= RECIPIENTS as i64);
    // reports keep arriving after completion: memory and committed rows agree once they settle
    eventually(
        Duration::from_secs(30),
        "stats and rows to agree on deliveries",
        || async {
            let now = campaign_stats(&http, port, &token, id).await?;
            let (delivered, failed): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'delivered'),
                    count(*) FILTER (WHERE status = 'failed')
             FROM campaign_recipients WHERE campaign_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .ok()?;
            let agree = now["delivered"].as_i64() == Some(delivered)
                && now["deliveryFailed"].as_i64() == Some(failed)
                && now["sent"].as_i64() == Some(RECIPIENTS as i64);
            agree.then_some(())
        },
    )
    .await;

    // credits: all reserved, all charged, nothing refunded
    let ledger: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, sum(delta)::bigint FROM credit_ledger WHERE tenant_id = $1 GROUP BY 1",
    )
    .bind(tenant.get())
    .fetch_all(&pool)
    .await
    .unwrap();
    let ledger: HashMap<String, i64> = ledger.into_iter().collect();
    assert_eq!(ledger["reserve"], -(RECIPIENTS as i64));
    assert_eq!(ledger["charge"], -(RECIPIENTS as i64));
    assert!(!ledger.contains_key("refund"));
    drop(service);
    pool.close().await;
    db.drop_database().await;
}
