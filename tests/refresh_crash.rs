//! A bulk refresh job killed with SIGKILL half way: the service runs as a child process
//! against a `dev-broker` process, a `mitto-sim` process that posts no report at all, and
//! Postgres. After the restart the job reads `interrupted`, a new job finishes the messages
//! still waiting, and the counters equal the simulator's truth and the rows.

mod common;

use std::time::Duration;

use common::{dev_broker, eventually, free_port, mitto_sim, sim_stats, Proc, TestDb};
use serde_json::{json, Value};

const RECIPIENTS: usize = 3_000;
const SECRET: &str = "refresh-crash-secret";

fn serve(db: &TestDb, bootstrap: &str, sim: &str, port: u16, log: &std::path::Path) -> Proc {
    let env = [
        ("CAMPAIGND_MITTO__STATUS_LOOKUPS_PER_SECOND", "300"),
        ("CAMPAIGND_RECONCILE__SYNC_LIMIT", "100"),
        // no periodic pass: only the jobs refresh
        ("CAMPAIGND_RECONCILE__AFTER_SECS", "86400"),
    ];
    common::serve_against(db, (bootstrap, sim, SECRET), port, log, &env)
}

struct Api<'a> {
    http: reqwest::Client,
    port: u16,
    token: &'a str,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `None` while the service does not answer.
    async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(self.token)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    async fn post(&self, path: &str, body: Value) -> Option<(u16, Value)> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(self.token)
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }
}

#[actix_web::test]
async fn kill_9_during_a_bulk_refresh_job_then_a_new_job_finishes_it_exactly() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (_, token) = common::funded_tenant(&pool, "Shop", 100_000).await;
    let (_broker, bootstrap) = dev_broker();
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/webhooks/mitto/dlr");
    let (_sim, sim) = mitto_sim(&callback, SECRET, &["--drop-dlr-ratio", "1"]);
    let log = std::env::temp_dir().join(format!("campaignd-refresh-crash-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    let mut service = serve(&db, &bootstrap, &sim, port, &log);
    let api = Api {
        http: reqwest::Client::new(),
        port,
        token: &token,
    };

    let phones: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("+3069{:08}", 30_000_000 + i))
        .collect();
    let body = json!({ "name": "Refresh", "body": "Sale today", "sender": "Shop",
                       "audience": { "phones": phones } });
    let (_, campaign) = eventually(Duration::from_secs(30), "the service to answer", || {
        api.post("/api/v1/campaigns", body.clone())
    })
    .await;
    let id = campaign["id"].as_i64().expect("campaign created");
    let (status, _) = api
        .post(&format!("/api/campaigns/{id}/enqueue"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let stats_path = format!("/api/v1/campaigns/{id}/stats");
    eventually(
        Duration::from_secs(120),
        "every message to be sent",
        || async {
            let s = api.get(&stats_path).await?;
            (s["status"] == "completed" && s["awaitingReport"] == RECIPIENTS).then_some(())
        },
    )
    .await;

    let bulk = json!({ "campaignId": id });
    let (status, first) = api
        .post("/api/mitto/refresh-status-bulk", bulk.clone())
        .await
        .unwrap();
    assert_eq!(status, 202, "{first}");
    let first_job = format!(
        "/api/mitto/refresh-jobs/{}",
        first["jobId"].as_str().unwrap()
    );
    eventually(
        Duration::from_secs(60),
        "the job to make progress",
        || async {
            let job = api.get(&first_job).await?;
            (job["processed"].as_u64()? >= 1_000).then_some(())
        },
    )
    .await;
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    service = serve(&db, &bootstrap, &sim, port, &log);

    let interrupted = eventually(Duration::from_secs(60), "the service to restart", || {
        api.get(&first_job)
    })
    .await;
    assert_eq!(interrupted["state"], "interrupted", "{interrupted}");
    let done_before = interrupted["processed"].as_u64().unwrap();
    assert!(
        done_before < RECIPIENTS as u64,
        "killed before the job ended"
    );

    let (status, second) = eventually(Duration::from_secs(30), "a new job", || async {
        let (status, body) = api
            .post("/api/mitto/refresh-status-bulk", bulk.clone())
            .await?;
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 202, "{second}");
    let remaining = second["total"].as_u64().unwrap();
    assert!(
        remaining > 0 && remaining + done_before <= RECIPIENTS as u64,
        "{second}"
    );
    let second_job = format!(
        "/api/mitto/refresh-jobs/{}",
        second["jobId"].as_str().unwrap()
    );
    let finished = eventually(
        Duration::from_secs(120),
        "the new job to finish",
        || async {
            let job = api.get(&second_job).await?;
            (job["state"] != "running").then_some(job)
        },
    )
    .await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["failed"], 0);
    eprintln!(
        "first job refreshed {done_before} before the kill; the second found {remaining} still waiting"
    );

    // counters: nothing waits, and they equal the simulator's truth
    let truth = sim_stats(&api.http, &sim).await;
    let stats = eventually(Duration::from_secs(30), "every report to count", || async {
        let s = api.get(&stats_path).await?;
        (s["pending"] == 0).then_some(s)
    })
    .await;
    assert_eq!(truth["dlrsSent"], 0, "the simulator posted no report");
    assert_eq!(truth["maxSendsPerMessage"], 1);
    assert_eq!(stats["sent"], truth["accepted"]);
    assert_eq!(stats["delivered"], truth["delivered"]);
    assert_eq!(stats["deliveryFailed"], truth["failed"]);

    // the rows and the stored snapshot say the same
    eventually(Duration::from_secs(30), "rows to agree", || async {
        let (delivered, failed, sent): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'delivered'),
                    count(*) FILTER (WHERE status = 'failed'),
                    count(*) FILTER (WHERE status = 'sent')
             FROM campaign_recipients WHERE campaign_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .ok()?;
        let agree = stats["delivered"].as_i64() == Some(delivered)
            && stats["deliveryFailed"].as_i64() == Some(failed)
            && sent == 0;
        agree.then_some(())
    })
    .await;
    let campaign = campaignd::domain::CampaignId::new(id).unwrap();
    for r in campaignd::store::campaigns::recount(&pool, Some(campaign))
        .await
        .unwrap()
    {
        let found = campaignd::engine::campaign::differences(&r.snapshot, &r.rows);
        assert!(found.is_empty(), "{found:?}");
    }
    drop(service);
    pool.close().await;
    db.drop_database().await;
}
