//! Tenants created by the CLI authenticate with their token; wrong or revoked tokens do not.

mod common;

use std::collections::HashMap;
use std::process::Command;

use campaignd::app::Application;
use common::{settings, TestDb};
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
