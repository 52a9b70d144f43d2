//! The schema, the `serve` and `migrate` commands, configuration errors and the HTTP skeleton.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use campaignd::app::Application;
use common::{eventually, free_port, settings, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_campaignd");

const TABLES: [&str; 13] = [
    "tenants",
    "api_keys",
    "contacts",
    "lists",
    "list_members",
    "campaigns",
    "campaign_recipients",
    "credit_ledger",
    "redemptions",
    "app_secrets",
    "kafka_offsets",
    "dead_letters",
    "_sqlx_migrations",
];

async fn table_names(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[actix_web::test]
async fn migrations_apply_to_a_fresh_database_and_are_idempotent() {
    let db = TestDb::unique();
    assert!(!db.exists().await);
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let tables = table_names(&pool).await;
    for table in TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    // applying again changes nothing and does not fail
    let again = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&again)
        .await
        .unwrap();
    assert_eq!(applied as usize, campaignd::store::MIGRATOR.iter().count());
    pool.close().await;
    again.close().await;
    db.drop_database().await;
}

/// The test database, migrated, with one tenant ("Shop", no credits).
async fn migrated_with_a_tenant(db: &TestDb) -> (sqlx::PgPool, campaignd::domain::TenantId) {
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let tenant = campaignd::store::tenants::create(&pool, "Shop", 0)
        .await
        .unwrap();
    (pool, tenant)
}

#[actix_web::test]
async fn impossible_statuses_cannot_be_stored() {
    let db = TestDb::unique();
    let (pool, tenant) = migrated_with_a_tenant(&db).await;
    let insert_campaign = |status: &'static str| {
        sqlx::query(
            "INSERT INTO campaigns (tenant_id, name, body, sender, status) VALUES ($1, 'c', 'hi', 'Shop', $2) RETURNING id",
        )
        .bind(tenant.get())
        .bind(status)
    };
    assert!(insert_campaign("bogus").execute(&pool).await.is_err());
    let row = insert_campaign("draft").fetch_one(&pool).await.unwrap();
    let campaign: i64 = sqlx::Row::get(&row, 0);

    let insert_recipient = |status: &'static str, phone: &'static str| {
        sqlx::query("INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164, status) VALUES ($1, $2, $3, $4)")
            .bind(campaign)
            .bind(tenant.get())
            .bind(phone)
            .bind(status)
    };
    assert!(insert_recipient("bounced", "+306900000001")
        .execute(&pool)
        .await
        .is_err());
    // recipient phones come from contacts (or the API's E.164 parser); contacts refuse others
    let contact =
        sqlx::query("INSERT INTO contacts (tenant_id, phone_e164) VALUES ($1, '6900000001')")
            .bind(tenant.get())
            .execute(&pool)
            .await;
    assert!(contact.is_err(), "not E.164");
    // sent without a provider message id is impossible
    assert!(insert_recipient("sent", "+306900000002")
        .execute(&pool)
        .await
        .is_err());
    // processing without a claim token is impossible
    assert!(insert_recipient("processing", "+306900000003")
        .execute(&pool)
        .await
        .is_err());
    insert_recipient("queued", "+306900000004")
        .execute(&pool)
        .await
        .unwrap();
    let duplicate = insert_recipient("queued", "+306900000004")
        .execute(&pool)
        .await;
    assert!(duplicate.is_err(), "one phone appears once per campaign");

    let negative = sqlx::query("UPDATE tenants SET credit_balance = -1 WHERE id = $1")
        .bind(tenant.get())
        .execute(&pool)
        .await;
    assert!(negative.is_err(), "a balance can never go below zero");
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_claimed_first_attempt_is_handed_to_its_partition_exactly_as_a_lookup_would_read_it() {
    use campaignd::actors::claimed::ClaimedRows;
    use campaignd::domain::{CampaignId, Event, MessageId, RecipientId};
    use campaignd::engine::batch::BatchItem;
    use campaignd::engine::ledger::{Incoming, Lookups};
    use campaignd::store::{enqueue, messages};
    // what the send loop holds: the claimed rows as the batch's items
    let items = |claim: &enqueue::Claim| -> Vec<BatchItem> {
        claim
            .rows
            .iter()
            .map(|r| BatchItem {
                recipient: RecipientId::new(r.id).unwrap(),
                phone: r.phone.clone(),
                text: "hi".into(),
                attempt: r.attempt as u32,
                segments: r.segments as u32,
            })
            .collect()
    };
    let db = TestDb::unique();
    let (pool, tenant) = migrated_with_a_tenant(&db).await;
    let campaign: i64 = sqlx::query_scalar(
        "INSERT INTO campaigns (tenant_id, name, body, sender, status, queued)
         VALUES ($1, 'c', 'hi', 'Shop', 'sending', 3) RETURNING id",
    )
    .bind(tenant.get())
    .fetch_one(&pool)
    .await
    .unwrap();
    // two first attempts (one of them two parts), and a retried recipient with its old error
    sqlx::query(
        "INSERT INTO campaign_recipients (campaign_id, tenant_id, phone_e164, segments, retry_count, error)
         VALUES ($1, $2, '+306900000001', 1, 0, NULL), ($1, $2, '+306900000002', 2, 0, NULL),
                ($1, $2, '+306900000003', 1, 1, 'Invalid receiver')",
    )
    .bind(campaign)
    .bind(tenant.get())
    .execute(&pool)
    .await
    .unwrap();
    let id = CampaignId::new(campaign).unwrap();
    let rules = enqueue::ClaimRules {
        tenant,
        marketing: false,
        now: chrono::Utc::now(),
    };
    // a service claim released back to the queue
    let first = enqueue::claim_batch(&pool, id, "", 10, rules)
        .await
        .unwrap();
    let claimed = ClaimedRows::default();
    claimed.hold(id, &items(&first));
    let all: Vec<RecipientId> = first
        .rows
        .iter()
        .map(|r| RecipientId::new(r.id).unwrap())
        .collect();
    claimed.forget(&all);
    enqueue::release_claims(&pool, id, &all).await.unwrap();
    // claimed again by a marketing claim (opt-outs and caps checked; no quiet hours)
    campaignd::store::tenants::set_marketing_rules(
        &pool,
        tenant,
        &campaignd::store::tenants::MarketingRules::none(),
    )
    .await
    .unwrap();
    let marketing = enqueue::ClaimRules {
        marketing: true,
        ..rules
    };
    let again = enqueue::claim_batch(&pool, id, "", 10, marketing)
        .await
        .unwrap();
    assert_eq!(again.rows.len(), 3);
    claimed.hold(id, &items(&again));
    assert_eq!(claimed.len(), 2, "only first attempts are held");

    let batch: Vec<Incoming> = all
        .iter()
        .enumerate()
        .map(|(offset, recipient)| Incoming {
            offset: offset as i64,
            event: Ok(Event::Sent {
                message_id: MessageId::parse(&format!("M{}", recipient.get())).unwrap(),
                campaign_id: id,
                recipient_id: *recipient,
                bulk_id: None,
                attempt: 0,
                at: chrono::Utc::now(),
            }),
        })
        .collect();
    let mut lookups = Lookups {
        recipients: all.clone(),
        ..Lookups::default()
    };
    let mut handed = claimed.take_for(&batch, &mut lookups);
    assert_eq!(handed.len(), 2);
    assert_eq!(
        lookups.recipients.len(),
        1,
        "the retried recipient is looked up"
    );
    let mut read = messages::load_by_recipients(&pool, &all).await.unwrap();
    read.retain(|r| r.attempt == 0);
    handed.sort_by_key(|r| r.recipient);
    read.sort_by_key(|r| r.recipient);
    assert_eq!(handed, read, "what a lookup reads, column for column");
    assert!(claimed.is_empty());
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn postgres_is_reached_over_tls_when_the_url_asks_and_its_certificate_is_verified() {
    let db = TestDb::unique();
    // this machine's Postgres serves TLS with a self-signed certificate (Debian's default)
    let encrypted = format!("{}?sslmode=require", db.url);
    let pool = campaignd::store::connect_and_migrate(&encrypted)
        .await
        .expect("Postgres over TLS (sslmode=require); is `ssl = on` on the server?");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tls, "the connection is encrypted");
    pool.close().await;
    // verify-full checks the certificate against trusted roots: a self-signed one is refused
    let verified = format!("{}?sslmode=verify-full", db.url);
    let error = match sqlx::PgPool::connect(&verified).await {
        Ok(_) => panic!("an unverifiable certificate was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    db.drop_database().await;
}

#[actix_web::test]
async fn serve_creates_a_missing_database_and_becomes_ready() {
    let db = TestDb::unique();
    assert!(!db.exists().await);
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CAMPAIGND_HTTP__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let body: serde_json::Value =
        eventually(Duration::from_secs(60), "serve to become ready", || async {
            let response = http.get(&url).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            response.json().await.ok()
        })
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(body["database"], "ok");
    assert!(db.exists().await, "serve created the database");
    db.drop_database().await;
}

#[actix_web::test]
async fn migrate_command_creates_and_migrates_the_database() {
    let db = TestDb::unique();
    let out = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations applied"
    );
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    assert!(table_names(&pool)
        .await
        .iter()
        .any(|t| t == "campaign_recipients"));
    pool.close().await;
    db.drop_database().await;
}

#[test]
fn invalid_configuration_fails_at_start_up_naming_the_key() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("CAMPAIGND_BATCH_SIZE", "5000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("batch_size"), "{stderr}");

    let out = Command::new(BIN)
        .arg("serve")
        .env("CAMPAIGND_HTTP__BIND", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("bind"), "{stderr}");
}

#[test]
fn every_command_has_help_for_newcomers() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["mitto-sim", "--help"],
        vec!["tenant", "create", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let sim_help = Command::new(BIN)
        .args(["mitto-sim", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sim_help.stdout);
    for flag in [
        "--callback",
        "--duplicate-ratio",
        "--rate-429",
        "--account-rate-limit",
    ] {
        assert!(text.contains(flag), "mitto-sim --help lacks {flag}");
    }
}

#[actix_web::test]
async fn health_readiness_and_json_errors() {
    let db = TestDb::unique();
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let http = reqwest::Client::new();

    let health = http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (&body["database"], &body["broker"], &body["consumer"]),
        (
            &serde_json::json!("ok"),
            &serde_json::json!("ok"),
            &serde_json::json!("consuming")
        ),
        "{body}"
    );

    let missing = http.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert!(body["error"]["message"].is_string());

    // readiness follows the database
    app.state.pool.close().await;
    let not_ready = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: serde_json::Value = not_ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("database"), "{message}");
    assert!(
        !message.contains("broker"),
        "the broker still answers: {message}"
    );

    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_error_bodies_name_it() {
    let db = TestDb::unique();
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let http = reqwest::Client::new();
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();

    // a caller's id is kept, on success and on error
    let health = http
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&health), "trace-42");
    let refused = http
        .get(app.url("/api/v1/me"))
        .header("X-Request-Id", "trace-43")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (refused.status().as_u16(), id_of(&refused)),
        (401, "trace-43".into())
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["requestId"], "trace-43");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");

    // without one (or with an unusable one), a fresh id per request, also in the error body
    let mut seen = std::collections::HashSet::new();
    for header in [None, Some("has spaces"), Some("")] {
        let mut request = http.get(app.url("/no/such/route"));
        if let Some(h) = header {
            request = request.header("X-Request-Id", h);
        }
        let missing = request.send().await.unwrap();
        let id = id_of(&missing);
        assert_eq!(id.len(), 26, "a ULID: {id}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["error"]["requestId"], id.as_str());
        assert!(seen.insert(id));
    }
    // an error raised before routing (a NUL in the query) carries it too
    let nul = http.get(app.url("/healthz?x=%00")).send().await.unwrap();
    assert_eq!(nul.status(), 400);
    let id = id_of(&nul);
    let body: serde_json::Value = nul.json().await.unwrap();
    assert_eq!(body["error"]["requestId"], id.as_str());
    app.stop().await;
    db.drop_database().await;
}
