//! The sending harness shared by the sending and lifecycle tests: a service wired to its own
//! Mitto simulator (which reports deliveries to the service's webhook), with request helpers.

#![allow(dead_code)] // each test file uses a different part of it

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use campaignd::app::{Application, RunningApplication};
use campaignd::config::{Settings, DEFAULTS};
use campaignd::mitto::simulator::{self, MsRange, SimConfig, SimHandle};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::{json, Value};

use crate::common::{self, eventually, free_port, TestDb, WEBHOOK_SECRET};

const TRAFFIC_ACCOUNT: &str = "e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7";

/// A service wired to its own simulator (which reports deliveries to the service's webhook).
pub struct Harness {
    pub app: RunningApplication,
    pub sim: SimHandle,
    pub pool: sqlx::PgPool,
    pub http: reqwest::Client,
}

pub fn sim_config(port: u16) -> SimConfig {
    SimConfig {
        port: 0,
        callback: Some(
            url::Url::parse(&format!("http://127.0.0.1:{port}/webhooks/mitto/dlr")).unwrap(),
        ),
        callback_secret: Some(WEBHOOK_SECRET.to_owned()),
        dlr_delay_ms: MsRange { min: 20, max: 300 },
        ..SimConfig::default()
    }
}

pub fn settings(db: &TestDb, port: u16, sim: &SimHandle, extra: &[(&str, Value)]) -> Settings {
    let mut figment = Figment::from(Toml::string(DEFAULTS))
        .merge(("database_url", db.url.as_str()))
        .merge(("http.bind", format!("127.0.0.1:{port}")))
        .merge(("webhook.secrets", vec![WEBHOOK_SECRET]))
        .merge(("kafka.session_timeout_ms", 2000))
        .merge(("kafka.heartbeat_interval_ms", 500))
        .merge(("mitto.base_url", sim.base_url.as_str()))
        .merge(("mitto.api_key", common::sim_key()))
        .merge(("mitto.traffic_account_id", TRAFFIC_ACCOUNT))
        .merge(("mitto.retry_min_delay_ms", 20))
        .merge(("mitto.retry_max_delay_ms", 300))
        .merge(("mitto.max_retries", 8))
        .merge(("sending.ambiguous_outcome", "lookup"))
        .merge(("sending.ambiguous_grace_ms", 200))
        // unanswered sends are settled by lookups, which share the lookup pace
        .merge(("mitto.status_lookups_per_second", 5_000))
        .merge(("batch_size", 200));
    for (key, value) in extra {
        figment = figment.merge((*key, value.clone()));
    }
    Settings::from_figment(figment).expect("test settings are valid")
}

impl Harness {
    pub async fn start(
        db: &TestDb,
        sim: impl FnOnce(&mut SimConfig),
        extra: &[(&str, Value)],
    ) -> Self {
        let clock = std::sync::Arc::new(campaignd::engine::clock::SystemClock);
        Self::start_with_clock(db, sim, extra, clock).await
    }

    /// Like [`Harness::start`], with the clock quiet hours and caps read.
    pub async fn start_with_clock(
        db: &TestDb,
        sim: impl FnOnce(&mut SimConfig),
        extra: &[(&str, Value)],
        clock: std::sync::Arc<dyn campaignd::engine::clock::Clock>,
    ) -> Self {
        let port = free_port();
        let mut config = sim_config(port);
        sim(&mut config);
        let sim = simulator::start(config).unwrap();
        let settings = settings(db, port, &sim, extra);
        let app = Application::build_with_clock(settings, SimConfig::default(), clock)
            .await
            .unwrap()
            .spawn();
        let pool = app.state.pool.clone();
        Self {
            app,
            sim,
            pool,
            http: reqwest::Client::new(),
        }
    }

    pub async fn stop(self) {
        self.app.stop().await;
        self.sim.stop().await;
    }

    /// A tenant with credits and an API token.
    pub async fn tenant(&self, name: &str, credits: i64) -> (i64, String) {
        let id = campaignd::store::tenants::create(&self.pool, name, credits)
            .await
            .unwrap();
        // tests run at any hour: quiet hours are turned on only by the tests about them
        let rules = campaignd::store::tenants::MarketingRules::none();
        campaignd::store::tenants::set_marketing_rules(&self.pool, id, &rules)
            .await
            .unwrap();
        let (_, token) = campaignd::store::api_keys::issue(&self.pool, id, "test")
            .await
            .unwrap();
        (id.get(), token.reveal().to_owned())
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.app.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, token, path, Some(body))
            .await
    }

    /// `POST /api/v1/campaigns/{id}/{action}` with an empty body.
    pub async fn action(&self, token: &str, campaign: i64, action: &str) -> (u16, Value) {
        let path = format!("/api/v1/campaigns/{campaign}/{action}");
        self.post(token, &path, json!({})).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    pub async fn stats(&self, token: &str, campaign: i64) -> Value {
        self.get(token, &format!("/api/v1/campaigns/{campaign}/stats"))
            .await
            .1
    }

    pub async fn wait_for_status(
        &self,
        token: &str,
        campaign: i64,
        status: &str,
        limit: Duration,
    ) -> Value {
        eventually(
            limit,
            &format!("campaign {campaign} to become {status}"),
            || async {
                let stats = self.stats(token, campaign).await;
                (stats["status"] == status).then_some(stats)
            },
        )
        .await
    }

    /// Counts per stored status (send failures and report failures told apart).
    pub async fn row_counts(&self, campaign: i64) -> HashMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT CASE WHEN status = 'failed' AND sent_at IS NULL THEN 'sendFailed'
                         WHEN status = 'failed' THEN 'deliveryFailed'
                         WHEN status = 'sent' THEN 'pending' ELSE status END, count(*)
             FROM campaign_recipients WHERE campaign_id = $1 GROUP BY 1",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    /// Waits until the stats and the committed rows agree on every figure, and returns them.
    pub async fn settled_figures(&self, token: &str, campaign: i64) -> HashMap<String, i64> {
        let figures = eventually(
            Duration::from_secs(60),
            "stats and rows to agree",
            || async {
                let stats = self.stats(token, campaign).await;
                let rows = self.row_counts(campaign).await;
                let keys = [
                    "queued",
                    "processing",
                    "pending",
                    "delivered",
                    "sendFailed",
                    "deliveryFailed",
                    "cancelled",
                    "unknown",
                    "skipped",
                ];
                let figures: HashMap<String, i64> = keys
                    .iter()
                    .map(|k| (k.to_string(), stats[*k].as_i64().unwrap_or(-1)))
                    .collect();
                let agree = keys
                    .iter()
                    .all(|k| figures[*k] == rows.get(*k).copied().unwrap_or(0));
                agree.then_some(figures)
            },
        )
        .await;
        self.assert_snapshots_match_rows().await;
        figures
    }

    /// Every campaign's stored snapshot (what actors are activated from) equals its figures
    /// counted from its rows — what `campaignd verify` checks.
    pub async fn assert_snapshots_match_rows(&self) {
        for r in campaignd::store::campaigns::recount(&self.pool, None)
            .await
            .unwrap()
        {
            let found = campaignd::engine::campaign::differences(&r.snapshot, &r.rows);
            assert!(found.is_empty(), "campaign {}: {found:?}", r.campaign);
        }
    }

    /// The tenant's balance and ledger sums by reason.
    pub async fn credits(&self, tenant: i64) -> (i64, HashMap<String, i64>) {
        let balance: i64 = sqlx::query_scalar("SELECT credit_balance FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reason, sum(delta)::bigint FROM credit_ledger WHERE tenant_id = $1 GROUP BY 1",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        (balance, rows.into_iter().collect())
    }

    /// How often the simulator accepted each destination.
    pub fn sends(&self) -> HashMap<String, u64> {
        let mut by_phone = HashMap::new();
        for s in self.sim.stats().sends {
            *by_phone.entry(s.destination).or_default() += s.count;
        }
        by_phone
    }
}

pub fn phone(i: usize) -> String {
    format!("+3069{:08}", 10_000_000 + i)
}

/// Contacts through the API; returns their ids.
pub async fn contacts(
    h: &Harness,
    token: &str,
    phones: &[String],
    unsubscribed: &HashSet<String>,
) -> Vec<i64> {
    let body: Vec<Value> = phones
        .iter()
        .map(
            |p| json!({ "phone": p, "firstName": "Ann", "unsubscribed": unsubscribed.contains(p) }),
        )
        .collect();
    let (status, saved) = h.post(token, "/api/v1/contacts", Value::Array(body)).await;
    assert_eq!(status, 201, "{saved}");
    saved["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

/// A 2,000-recipient campaign of inline phones.
pub async fn campaign_of(h: &Harness, token: &str, n: usize, offset: usize) -> i64 {
    let phones: Vec<String> = (offset..offset + n).map(phone).collect();
    let (status, campaign) = h
        .post(
            token,
            "/api/v1/campaigns",
            json!({ "name": format!("c{offset}"), "body": "Sale today", "sender": "Shop",
                    "audience": { "phones": phones } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    campaign["id"].as_i64().unwrap()
}
