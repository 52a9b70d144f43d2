//! Shared test harness: a fresh Postgres database per test, settings for it, a webhook
//! receiver that records what the simulator posts, and polling helpers.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use campaignd::config::{Settings, DEFAULTS};
use campaignd::mitto::client::ClientConfig;
use campaignd::mitto::retry::RetryPolicy;
use campaignd::mitto::simulator::SimHandle;
use campaignd::mitto::MittoClient;
use figment::providers::{Format, Toml};
use figment::Figment;
use secrecy::SecretString;

/// The server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A uniquely named database that does not exist yet; dropped by [`TestDb::drop_database`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn unique() -> Self {
        let name = format!("campaignd_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            name,
            url: url.to_string(),
        }
    }

    pub async fn exists(&self) -> bool {
        let mut admin = admin().await;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&self.name)
            .fetch_one(&mut admin)
            .await
            .expect("query pg_database")
    }

    pub async fn drop_database(self) {
        let mut admin = admin().await;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
}

async fn admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test Postgres server")
}

/// Embedded defaults plus a database and a free port; no file or environment layers, so a
/// developer's own settings cannot change what a test sees.
pub fn settings(db: &TestDb) -> Settings {
    let figment = Figment::from(Toml::string(DEFAULTS))
        .merge(("database_url", db.url.as_str()))
        .merge(("http.bind", "127.0.0.1:0"));
    Settings::from_figment(figment).expect("test settings are valid")
}

/// A port that was free a moment ago, for child processes that must be told their port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A client for a simulator, with short retry delays so tests stay quick.
pub fn client_for(sim: &SimHandle, request_timeout: Duration, max_retries: usize) -> MittoClient {
    client(&sim.base_url, &sim_key(), request_timeout, max_retries)
}

/// A client for any base URL and key, with short retry delays.
pub fn client(
    base_url: &url::Url,
    key: &str,
    request_timeout: Duration,
    max_retries: usize,
) -> MittoClient {
    MittoClient::new(ClientConfig {
        base_url: base_url.clone(),
        api_key: SecretString::from(key.to_owned()),
        connect_timeout: Duration::from_millis(500),
        request_timeout,
        retry: RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retries,
        },
        status_lookups_per_second: None,
    })
    .expect("client builds")
}

pub fn sim_key() -> String {
    campaignd::mitto::simulator::SimConfig::default().api_key
}

/// One request as the webhook receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP endpoint on loopback that records every request and answers 200.
pub struct Receiver {
    pub url: url::Url,
    pub requests: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start() -> Self {
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = web::Data::new(requests.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!(
            "http://{}/webhooks/mitto/dlr",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(store.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            requests,
            handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn record(
    req: HttpRequest,
    body: web::Bytes,
    store: web::Data<Arc<Mutex<Vec<Received>>>>,
) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    store.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    HttpResponse::Ok().finish()
}

/// The webhook secret the event-core tests configure.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// [`settings`] plus a webhook secret and consumer timeouts short enough for tests.
pub fn event_settings(db: &TestDb) -> Settings {
    let figment = Figment::from(Toml::string(DEFAULTS))
        .merge(("database_url", db.url.as_str()))
        .merge(("http.bind", "127.0.0.1:0"))
        .merge(("webhook.secrets", vec![WEBHOOK_SECRET]))
        .merge(("kafka.session_timeout_ms", 2000))
        .merge(("kafka.heartbeat_interval_ms", 500));
    Settings::from_figment(figment).expect("test settings are valid")
}

/// A tenant with an API token, created through the store.
pub async fn tenant(pool: &sqlx::PgPool, name: &str) -> (campaignd::domain::TenantId, String) {
    funded_tenant(pool, name, 0).await
}

/// A tenant with `credits` and an API token, created through the store.
pub async fn funded_tenant(
    pool: &sqlx::PgPool,
    name: &str,
    credits: i64,
) -> (campaignd::domain::TenantId, String) {
    let id = campaignd::store::tenants::create(pool, name, credits)
        .await
        .unwrap();
    // tests run at any hour: quiet hours are turned on only by the tests about them
    let rules = campaignd::store::tenants::MarketingRules::none();
    campaignd::store::tenants::set_marketing_rules(pool, id, &rules)
        .await
        .unwrap();
    let (_, token) = campaignd::store::api_keys::issue(pool, id, "test")
        .await
        .unwrap();
    (id, token.reveal().to_owned())
}

/// Every record on the topic, read by a throw-away consumer from the beginning.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<(String, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(1500) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            records.push((key, m.payload().unwrap_or_default().to_vec()));
            idle_since = Instant::now();
        }
    }
    records
}

/// The end offset (high watermark) of every partition.
pub fn end_offsets(bootstrap: &str, topic: &str) -> std::collections::HashMap<i32, i64> {
    campaignd::kafka::end_offsets(&campaignd::kafka::Brokers::plain(bootstrap), topic)
        .expect("read the topic's watermarks")
}

/// Next offsets stored in `kafka_offsets`, per partition (tests use one cluster and group).
pub async fn stored_offsets(pool: &sqlx::PgPool) -> std::collections::HashMap<i32, i64> {
    let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT partition, next_offset FROM kafka_offsets")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter().collect()
}

/// Waits until a committed checkpoint covers the end of every partition, and its rows are folded.
pub async fn wait_until_offsets_reach(
    pool: &sqlx::PgPool,
    ends: &std::collections::HashMap<i32, i64>,
    limit: Duration,
) {
    eventually(
        limit,
        "stored offsets to reach the end of every partition",
        || async {
            let stored = stored_offsets(pool).await;
            // at or past it: events produced after `ends` was read (a campaign still
            // sending, its reports) move the offsets further
            ends.iter()
                .all(|(p, end)| *end == 0 || stored.get(p).is_some_and(|s| s >= end))
                .then_some(())
        },
    )
    .await;
    // the checkpoints' message rows reach campaign_recipients when the log is folded
    eventually(limit, "the message log to be folded", || async {
        let left = campaignd::store::messages::unfolded(pool).await.unwrap();
        (left == 0).then_some(())
    })
    .await;
}

/// Every message row's status.
pub async fn row_statuses(
    pool: &sqlx::PgPool,
) -> std::collections::HashMap<campaignd::domain::RecipientId, campaignd::domain::MessageStatus> {
    let rows: Vec<(i64, String, bool)> =
        sqlx::query_as("SELECT id, status, sent_at IS NOT NULL FROM campaign_recipients")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, s, sent)| {
            (
                campaignd::domain::RecipientId::new(id).unwrap(),
                campaignd::domain::MessageStatus::from_db(&s, sent).unwrap(),
            )
        })
        .collect()
}

/// After an ingest: every message row equals the workload's truth, and each campaign's stats
/// from the service on `port` equal its expected counters.
pub async fn assert_ingest_exact(
    pool: &sqlx::PgPool,
    (port, token): (u16, &str),
    workload: &campaignd::bench::workload::Workload,
    what: &str,
) {
    let rows = row_statuses(pool).await;
    let wrong: Vec<_> = workload
        .expected_status
        .iter()
        .filter(|(r, s)| rows.get(r) != Some(s))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "message rows differ from the truth after {what}, e.g. {wrong:?}"
    );
    let http = reqwest::Client::new();
    for (campaign, expected) in &workload.expected {
        let body: serde_json::Value = eventually(Duration::from_secs(30), "stats", || async {
            let r = http
                .get(format!(
                    "http://127.0.0.1:{port}/api/v1/campaigns/{campaign}/stats"
                ))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            r.json().await.ok()
        })
        .await;
        let got = (
            body["sent"].as_i64(),
            body["delivered"].as_i64(),
            body["failed"].as_i64(),
            body["pending"].as_i64(),
        );
        let want = (
            Some(expected.sent()),
            Some(expected.delivered),
            Some(expected.failed()),
            Some(expected.pending),
        );
        assert_eq!(got, want, "campaign {campaign} counters after {what}");
    }
}

// --- child processes (crash tests) ---

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_campaignd");

/// Kills the process group member on drop, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn dev_broker() -> (Proc, String) {
    dev_broker_with(&[])
}

/// A `dev-broker` process with settings from `env` (e.g. more partitions).
pub fn dev_broker_with(env: &[(&str, &str)]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .arg("dev-broker")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bootstrap = first_line_value(&mut child, "BOOTSTRAP");
    (Proc(child), bootstrap)
}

/// `campaignd serve` as a child process on `db` and `port`, with test consumer timeouts, its
/// log appended to `log`, and `env` on top (broker, Mitto, …).
pub fn serve(db: &TestDb, port: u16, log: &std::path::Path, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CAMPAIGND_HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("CAMPAIGND_KAFKA__SESSION_TIMEOUT_MS", "2000")
        .env("CAMPAIGND_KAFKA__HEARTBEAT_INTERVAL_MS", "500")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

/// `campaignd serve` against a `dev-broker` process and a `mitto-sim` process (the settings
/// every crash test shares: the simulator's traffic account and key, the webhook secret,
/// lookups for unanswered sends), with `env` on top.
pub fn serve_against(
    db: &TestDb,
    (bootstrap, sim, secret): (&str, &str, &str),
    port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Proc {
    let key = sim_key();
    let mut all = vec![
        ("KAFKA_BROKERS", bootstrap),
        ("MITTO_BASE_URL", sim),
        ("MITTO_API_KEY", key.as_str()),
        (
            "CAMPAIGND_MITTO__TRAFFIC_ACCOUNT_ID",
            "e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7",
        ),
        ("CAMPAIGND_WEBHOOK__SECRETS", secret),
        ("CAMPAIGND_SENDING__AMBIGUOUS_OUTCOME", "lookup"),
        // unanswered sends are settled by lookups, which share the lookup pace
        ("CAMPAIGND_MITTO__STATUS_LOOKUPS_PER_SECOND", "5000"),
    ];
    all.extend_from_slice(env);
    serve(db, port, log, &all)
}

/// `GET /_sim/stats` of a simulator process.
pub async fn sim_stats(http: &reqwest::Client, sim: &str) -> serde_json::Value {
    http.get(format!("{sim}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads the first line a child prints, `NAME=value`, and returns the value.
fn first_line_value(child: &mut Child, name: &str) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix(&format!("{name}="))
        .unwrap_or_else(|| panic!("expected {name}=… as the first line, got {line:?}"))
        .to_owned()
}

/// `campaignd mitto-sim` in its own process (it outlives service restarts), reporting
/// deliveries to `callback`; returns it and its base URL.
pub fn mitto_sim(callback: &str, secret: &str, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args([
            "mitto-sim",
            "--port",
            "0",
            "--callback",
            callback,
            "--callback-secret",
            secret,
        ])
        .args(["--dlr-delay-ms", "20..400"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base_url = first_line_value(&mut child, "MITTO_BASE_URL");
    (Proc(child), base_url.trim_end_matches('/').to_owned())
}
