//! Tenants created by the CLI authenticate with their token; wrong or revoked tokens do not.

mod common;

use std::collections::HashMap;
use std::process::Command;

use std::time::Duration;

use campaignd::app::{Application, RunningApplication};
use campaignd::domain::ApiToken;
use common::{eventually, settings, TestDb};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_campaignd");

/// Runs the CLI against the test database and parses its `key=value` lines.
fn cli(db: &TestDb, args: &[&str]) -> HashMap<String, String> {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn get_me(http: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let request = http.get(url);
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    request.send().await.unwrap()
}

/// Polls until `token` is refused (verified keys are answered from memory; a revocation
/// reaches every instance through a Postgres notification), for at most a second.
async fn refused_within_a_second(http: &reqwest::Client, url: &str, token: &str) {
    eventually(
        Duration::from_secs(1),
        "the revoked token to be refused",
        || async { (get_me(http, url, Some(token)).await.status() == 401).then_some(()) },
    )
    .await;
}

async fn assert_refused(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
}

#[actix_web::test]
async fn a_tenant_created_by_the_cli_authenticates_with_its_token() {
    let db = TestDb::unique();
    let created = cli(
        &db,
        &[
            "tenant",
            "create",
            "--name",
            "Corner Shop",
            "--credits",
            "100",
        ],
    );
    let token = &created["token"];
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let http = reqwest::Client::new();

    let response = get_me(&http, &app.url("/api/v1/me"), Some(token)).await;
    assert_eq!(response.status(), 200);
    let me: serde_json::Value = response.json().await.unwrap();
    assert_eq!(me["id"].to_string(), created["tenant_id"]);
    assert_eq!(me["name"], "Corner Shop");
    assert_eq!(me["creditBalance"], 100);

    // only the digest is stored, and the opening credits are in the ledger
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM api_keys")
        .fetch_one(&app.state.pool)
        .await
        .unwrap();
    assert_eq!(stored, Sha256::digest(token.as_bytes()).to_vec());
    let dump: String = sqlx::query_scalar("SELECT string_agg(k::text, ',') FROM api_keys k")
        .fetch_one(&app.state.pool)
        .await
        .unwrap();
    assert!(
        !dump.contains(token.as_str()),
        "the token itself is never stored"
    );
    let ledger: i64 =
        sqlx::query_scalar("SELECT sum(delta)::bigint FROM credit_ledger WHERE reason = 'topup'")
            .fetch_one(&app.state.pool)
            .await
            .unwrap();
    assert_eq!(ledger, 100);

    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn wrong_missing_or_revoked_tokens_are_refused() {
    let db = TestDb::unique();
    let created = cli(&db, &["tenant", "create", "--name", "Shop"]);
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let http = reqwest::Client::new();
    let me = app.url("/api/v1/me");

    assert_refused(get_me(&http, &me, None).await).await;
    assert_refused(get_me(&http, &me, Some("cmpd_not-a-real-token")).await).await;
    let basic = http
        .get(&me)
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_refused(basic).await;

    // a second key works alongside the first; revoking the first leaves the second working
    let second = cli(
        &db,
        &[
            "tenant",
            "issue-key",
            "--tenant-id",
            &created["tenant_id"],
            "--label",
            "ci",
        ],
    );
    assert_eq!(
        get_me(&http, &me, Some(&second["token"])).await.status(),
        200
    );
    cli(
        &db,
        &["tenant", "revoke-key", "--key-id", &created["api_key_id"]],
    );
    refused_within_a_second(&http, &me, &created["token"]).await;
    assert_refused(get_me(&http, &me, Some(&created["token"])).await).await;
    assert_eq!(
        get_me(&http, &me, Some(&second["token"])).await.status(),
        200
    );

    // revoking twice is an error the operator sees
    let again = Command::new(BIN)
        .args(["tenant", "revoke-key", "--key-id", &created["api_key_id"]])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no active API key"));

    app.stop().await;
    db.drop_database().await;
}

/// Waits until the instance hears revocations, so what it verifies is kept in memory.
async fn listening(app: &RunningApplication) {
    let keys = &app.state.keys;
    eventually(
        Duration::from_secs(10),
        "the revocation listener to connect",
        || async { keys.is_listening().then_some(()) },
    )
    .await;
}

#[actix_web::test]
async fn a_revoked_key_is_refused_by_every_instance_within_a_second() {
    let db = TestDb::unique();
    let first = Application::build(settings(&db)).await.unwrap().spawn();
    let second = Application::build(settings(&db)).await.unwrap().spawn();
    let pool = &first.state.pool;
    let tenant = campaignd::store::tenants::create(pool, "Shop", 0)
        .await
        .unwrap();
    let (key, token) = campaignd::store::api_keys::issue(pool, tenant, "ci")
        .await
        .unwrap();
    let (_, other) = campaignd::store::api_keys::issue(pool, tenant, "other")
        .await
        .unwrap();
    let digest = ApiToken::presented(token.reveal()).sha256();
    let http = reqwest::Client::new();
    for app in [&first, &second] {
        listening(app).await;
        let me = app.url("/api/v1/me");
        assert_eq!(get_me(&http, &me, Some(token.reveal())).await.status(), 200);
        assert!(
            app.state.keys.holds(&digest),
            "verified keys are kept in memory"
        );
    }

    assert!(campaignd::store::api_keys::revoke(pool, key).await.unwrap());
    for app in [&first, &second] {
        let me = app.url("/api/v1/me");
        refused_within_a_second(&http, &me, token.reveal()).await;
        assert!(!app.state.keys.holds(&digest));
        // the tenant's other key is untouched
        assert_eq!(get_me(&http, &me, Some(other.reveal())).await.status(), 200);
    }
    first.stop().await;
    second.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_lost_revocation_listener_empties_the_cache_and_revocations_still_reach_it() {
    let db = TestDb::unique();
    let app = Application::build(settings(&db)).await.unwrap().spawn();
    let pool = &app.state.pool;
    let tenant = campaignd::store::tenants::create(pool, "Shop", 0)
        .await
        .unwrap();
    let (key, token) = campaignd::store::api_keys::issue(pool, tenant, "ci")
        .await
        .unwrap();
    let digest = ApiToken::presented(token.reveal()).sha256();
    let (http, me) = (reqwest::Client::new(), app.url("/api/v1/me"));
    listening(&app).await;
    assert_eq!(get_me(&http, &me, Some(token.reveal())).await.status(), 200);
    assert!(app.state.keys.holds(&digest));

    // revocations sent while the listener is away would be missed: nothing kept survives
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    let keys = &app.state.keys;
    eventually(
        Duration::from_secs(10),
        "the cache to be emptied and the listener back",
        || async { (!keys.holds(&digest) && keys.is_listening()).then_some(()) },
    )
    .await;
    assert_eq!(get_me(&http, &me, Some(token.reveal())).await.status(), 200);
    assert!(keys.holds(&digest), "kept again once revocations are heard");
    assert!(campaignd::store::api_keys::revoke(pool, key).await.unwrap());
    refused_within_a_second(&http, &me, token.reveal()).await;
    app.stop().await;
    db.drop_database().await;
}

/// Runs `campaignd user create` with the password on standard input.
fn create_user(db: &TestDb, tenant: &str, email: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["user", "create", "--tenant-id", tenant, "--email", email])
        .env("DATABASE_URL", &db.url)
        .env_remove("CAMPAIGND_USER_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[actix_web::test]
async fn a_dashboard_user_is_created_with_only_a_hash_of_the_password() {
    let db = TestDb::unique();
    let tenant = &cli(&db, &["tenant", "create", "--name", "Shop"])["tenant_id"];
    let created = create_user(&db, tenant, " Ann@Shop.Example ", "correct horse battery");
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    assert!(stdout.contains("email=ann@shop.example"), "{stdout}");

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let email = campaignd::domain::Email::parse("ann@shop.example").unwrap();
    let user = campaignd::store::users::find_by_email(&pool, &email)
        .await
        .unwrap()
        .expect("the user is stored");
    assert_eq!(user.tenant.to_string(), *tenant);
    assert!(user.password.as_str().starts_with("$argon2id$"));
    assert!(!user.password.as_str().contains("correct horse"));
    assert!(user.password.verify("correct horse battery"));
    assert!(!user.password.verify("wrong horse battery"));

    let again = create_user(&db, tenant, "ann@shop.example", "another password!");
    assert!(!again.status.success(), "one account per address");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let short = create_user(&db, tenant, "bob@shop.example", "short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("10 to 256 characters"));
    let nobody = create_user(&db, "999999", "eve@shop.example", "long enough password");
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("does not exist"));
    let bad = create_user(&db, tenant, "not an address", "long enough password");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an e-mail address"));

    // the password may also come from the environment (it is not a setting)
    let from_env = Command::new(BIN)
        .args([
            "user",
            "create",
            "--tenant",
            tenant,
            "--email",
            "cy@shop.example",
        ])
        .env("DATABASE_URL", &db.url)
        .env("CAMPAIGND_USER_PASSWORD", "from the environment")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    let email = campaignd::domain::Email::parse("cy@shop.example").unwrap();
    let cy = campaignd::store::users::find_by_email(&pool, &email)
        .await
        .unwrap()
        .unwrap();
    assert!(cy.password.verify("from the environment"));
    pool.close().await;
    db.drop_database().await;
}
