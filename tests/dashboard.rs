//! The dashboard's HTTP contract, against the real service: sign-in with its cookies and
//! lockout, CSRF on every write, another tenant's campaign as a 404 page, escaped user text,
//! refused actions answered with their message. The pages in a real browser are tested by
//! `tests/browser` (`.ci/browser`).

mod common;
#[path = "support/harness.rs"]
mod harness;

use common::TestDb;
use harness::*;
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// A browser without JavaScript: cookies kept by hand, redirects not followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl Browser {
    fn new(h: &Harness) -> Self {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            http,
            base: h.app.url(""),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for raw in headers.get_all(SET_COOKIE) {
            let raw = raw.to_str().unwrap();
            let (pair, _) = raw.split_once(';').unwrap_or((raw, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (u16, HeaderMap, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        self.keep(&headers);
        let body = response.text().await.unwrap();
        if let Some(csrf) = hidden(&body, "csrf").or_else(|| page_token(&body)) {
            self.csrf = csrf;
        }
        (status, headers, body)
    }

    /// A form post; `token` goes in `X-CSRF-Token` as htmx sends it.
    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        token: Option<&str>,
    ) -> (u16, HeaderMap, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form);
        if let Some(token) = token {
            request = request
                .header("X-CSRF-Token", token)
                .header("HX-Request", "true");
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        self.keep(&headers);
        (status, headers, response.text().await.unwrap())
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> (u16, HeaderMap, String) {
        self.get("/app/login").await;
        let csrf = self.csrf.clone();
        self.post(
            "/app/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", ""),
            ],
            None,
        )
        .await
    }
}

/// The value of a hidden form field.
fn hidden(body: &str, name: &str) -> Option<String> {
    let at = body.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &body[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The form token a signed-in page gives htmx (`hx-headers` on the body).
fn page_token(body: &str) -> Option<String> {
    let at = body.find("X-CSRF-Token&quot;:&quot;")?;
    let rest = &body[at + 25..];
    Some(rest[..rest.find("&quot;")?].to_owned())
}

async fn user(h: &Harness, tenant: i64, email: &str) {
    let tenant = campaignd::domain::TenantId::new(tenant).unwrap();
    let email = campaignd::domain::Email::parse(email).unwrap();
    let digest = campaignd::domain::PasswordDigest::of(PASSWORD).unwrap();
    campaignd::store::users::create(&h.pool, tenant, &email, &digest)
        .await
        .unwrap();
}

async fn draft(h: &Harness, token: &str, name: &str) -> i64 {
    let body = json!({"name": name, "messageType": "service", "body": "Hello {{firstName}}",
        "audience": {"phones": [phone(1), phone(2), phone(3)]}});
    let (status, created) = h.post(token, "/api/v1/campaigns", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().unwrap()
}

#[actix_web::test]
async fn signing_in_opens_a_strict_http_only_session_and_a_wrong_password_is_refused() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, _) = h.tenant("Shop", 100).await;
    user(&h, tenant, "ann@shop.test").await;
    let mut b = Browser::new(&h);

    let (status, headers, _) = b.get("/app/campaigns").await;
    assert_eq!(status, 303, "no session: to the sign-in form");
    assert_eq!(headers[LOCATION], "/app/login?next=%2Fapp%2Fcampaigns");
    let (status, _, body) = b.get("/app/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Sign in</h1>"), "{body}");

    let (status, _, body) = b.sign_in("ann@shop.test", "wrong horse battery").await;
    assert_eq!(status, 401);
    assert!(body.contains("Email or password is wrong."));
    let (status, _, body) = b.sign_in("nobody@shop.test", PASSWORD).await;
    assert_eq!(status, 401, "an unknown address reads the same");
    assert!(body.contains("Email or password is wrong."));

    let (status, headers, _) = b.sign_in("Ann@Shop.test", PASSWORD).await;
    assert_eq!(status, 303);
    assert_eq!(headers[LOCATION], "/app/campaigns");
    let set: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("campaignd_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/app"] {
        assert!(session.contains(attribute), "{session}");
    }
    let (status, _, body) = b.get("/app/campaigns").await;
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Campaigns</h1>"));
    assert!(body.contains("ann@shop.test"));

    // sign-out ends the session for good
    let csrf = b.csrf.clone();
    let kept = b.cookies.clone();
    let (status, headers, _) = b.post("/app/logout", &[], Some(&csrf)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["HX-Redirect"], "/app/login");
    b.cookies = kept;
    let (status, _, _) = b.get("/app/campaigns").await;
    assert_eq!(status, 303, "the old cookie opens nothing");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn repeated_wrong_passwords_lock_an_address_known_or_not_even_against_the_right_one() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[("auth.lockout_secs", json!(60))]).await;
    let (tenant, _) = h.tenant("Shop", 100).await;
    user(&h, tenant, "ann@shop.test").await;
    let mut b = Browser::new(&h);
    // an address without an account reads exactly like one with an account
    for email in ["ann@shop.test", "nobody@shop.test"] {
        for attempt in 1..=4 {
            let (status, _, _) = b.sign_in(email, "wrong horse battery").await;
            assert_eq!(status, 401, "{email} attempt {attempt}");
        }
        let (status, _, body) = b.sign_in(email, "wrong horse battery").await;
        assert_eq!(status, 429, "{email}");
        assert!(body.contains("Too many failed sign-ins"), "{body}");
    }
    let (status, _, body) = b.sign_in("ANN@shop.test", PASSWORD).await;
    assert_eq!(status, 429, "locked: the password is not even checked");
    assert!(body.contains("Too many failed sign-ins"));

    // once the lock has passed, the right password works and the count starts again
    sqlx::query("UPDATE sign_in_failures SET locked_until = now() - interval '1 second'")
        .execute(&h.pool)
        .await
        .unwrap();
    let (status, _, _) = b.sign_in("ann@shop.test", PASSWORD).await;
    assert_eq!(status, 303);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM sign_in_failures")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "only the unknown address's failures remain");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn every_write_needs_the_form_token_of_its_session() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 100).await;
    user(&h, tenant, "ann@shop.test").await;
    let campaign = draft(&h, &token, "Draft").await;
    let mut b = Browser::new(&h);

    // the sign-in form checks its double-submit cookie
    b.get("/app/login").await;
    b.cookies.clear();
    let csrf = b.csrf.clone();
    let form = [
        ("email", "ann@shop.test"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
    ];
    let (status, _, _) = b.post("/app/login", &form, None).await;
    assert_eq!(status, 403, "no login cookie, no sign-in");

    assert_eq!(b.sign_in("ann@shop.test", PASSWORD).await.0, 303);
    b.get(&format!("/app/campaigns/{campaign}")).await;
    let path = format!("/app/campaigns/{campaign}/actions/enqueue");
    let (status, _, _) = b.post(&path, &[], None).await;
    assert_eq!(status, 403, "no token");
    let (status, _, _) = b.post(&path, &[], Some("forged")).await;
    assert_eq!(status, 403, "a wrong token");
    let (_, stats) = h
        .get(&token, &format!("/api/v1/campaigns/{campaign}/stats"))
        .await;
    assert_eq!(stats["status"], "draft", "nothing happened");

    // every write of the dashboard, without a token and with a wrong one
    let writes = [
        "/app/campaigns".to_owned(),
        format!("/app/campaigns/{campaign}"),
        format!("/app/campaigns/{campaign}/actions/cancel"),
        "/app/preview".to_owned(),
        "/app/contacts/import".to_owned(),
        "/app/account/keys".to_owned(),
        "/app/account/keys/1/revoke".to_owned(),
        "/app/logout".to_owned(),
    ];
    for write in &writes {
        assert_eq!(
            b.post(write, &[("name", "x")], None).await.0,
            403,
            "{write}"
        );
        assert_eq!(b.post(write, &[], Some("forged")).await.0, 403, "{write}");
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "no key issued or revoked");

    let csrf = b.csrf.clone();
    let (status, _, body) = b.post(&path, &[], Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("data-testid=\"status\""),
        "the live panel answers"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn another_tenants_campaign_is_a_not_found_page_and_user_text_is_escaped() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 100).await;
    let (_, other_token) = h.tenant("Other", 100).await;
    user(&h, tenant, "ann@shop.test").await;
    let theirs = draft(&h, &other_token, "Theirs").await;
    let markup = "<img src=x onerror=alert(1)>";
    let ours = draft(&h, &token, markup).await;
    let mut b = Browser::new(&h);
    assert_eq!(b.sign_in("ann@shop.test", PASSWORD).await.0, 303);

    for path in [
        format!("/app/campaigns/{theirs}"),
        format!("/app/campaigns/{theirs}/edit"),
        format!("/app/campaigns/{theirs}/report.csv"),
        "/app/campaigns/999999".to_owned(),
        "/app/campaigns/not-a-number".to_owned(),
    ] {
        let (status, _, body) = b.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
    }
    for path in [
        format!("/app/campaigns/{theirs}/live"),
        format!("/app/campaigns/{theirs}/reports"),
        format!("/app/campaigns/{theirs}/failed"),
        format!("/app/campaigns/{theirs}/recipients.csv"),
    ] {
        assert_eq!(b.get(&path).await.0, 404, "{path}");
    }
    // the list's stream names none of their campaigns: it only says it is done
    let (status, _, body) = b.get(&format!("/app/campaigns/live?ids={theirs}")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "event: done\ndata: settled\n\n");

    b.get("/app/campaigns").await;
    let csrf = b.csrf.clone();
    let path = format!("/app/campaigns/{theirs}/actions/enqueue");
    assert_eq!(b.post(&path, &[], Some(&csrf)).await.0, 404);
    let edit = [("name", "Mine now"), ("body", "Hi")];
    let (status, _, _) = b
        .post(&format!("/app/campaigns/{theirs}"), &edit, Some(&csrf))
        .await;
    assert_eq!(status, 404);
    // their key is not ours to revoke, and their list not ours to preview
    let their_key: i64 = sqlx::query_scalar(
        "SELECT k.id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.name = 'Other'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    b.post(
        &format!("/app/account/keys/{their_key}/revoke"),
        &[],
        Some(&csrf),
    )
    .await;
    let (status, _) = h.get(&other_token, "/api/v1/me").await;
    assert_eq!(status, 200, "their key still works");
    let (_, list) = h
        .post(
            &other_token,
            "/api/v1/lists",
            json!({"name": "Theirs", "contactIds": []}),
        )
        .await;
    let their_list = list["id"].as_i64().unwrap().to_string();
    let preview = [("body", "Hi"), ("listIds", their_list.as_str())];
    let (status, _, body) = b.post("/app/preview", &preview, Some(&csrf)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("List {their_list} not found")),
        "{body}"
    );
    let (_, stats) = h
        .get(&other_token, &format!("/api/v1/campaigns/{theirs}/stats"))
        .await;
    assert_eq!(stats["status"], "draft", "their campaign is untouched");

    for path in [
        "/app/campaigns".to_owned(),
        format!("/app/campaigns/{ours}"),
    ] {
        let (status, _, body) = b.get(&path).await;
        assert_eq!(status, 200);
        assert!(!body.contains(markup), "{path} holds the raw markup");
        assert!(
            body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}"
        );
    }
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn an_action_the_status_refuses_answers_the_servers_message_for_the_error_slot() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 1).await;
    user(&h, tenant, "ann@shop.test").await;
    let campaign = draft(&h, &token, "Three phones").await;
    let mut b = Browser::new(&h);
    assert_eq!(b.sign_in("ann@shop.test", PASSWORD).await.0, 303);
    let (_, _, page) = b.get(&format!("/app/campaigns/{campaign}")).await;
    // what sending it would take, as the preview computes it
    assert!(
        page.contains("it would go to <strong>3 recipients</strong>"),
        "{page}"
    );
    assert!(page.contains("<strong>3 credits</strong>"));
    // the page offers what the status allows
    assert!(
        page.contains("disabled>Pause</button>"),
        "a draft cannot pause"
    );
    assert!(
        !page.contains("disabled>Send now</button>"),
        "a draft can be sent"
    );

    let csrf = b.csrf.clone();
    let pause = format!("/app/campaigns/{campaign}/actions/pause");
    let (status, headers, body) = b.post(&pause, &[], Some(&csrf)).await;
    assert_eq!(status, 409);
    assert_eq!(body, "Not possible now: the campaign is draft.");
    assert_eq!(headers["HX-Retarget"], "main [role=alert]");

    let send = format!("/app/campaigns/{campaign}/actions/enqueue");
    let (status, _, body) = b.post(&send, &[], Some(&csrf)).await;
    assert_eq!(status, 402);
    assert_eq!(body, "Not enough credits: 3 required, 1 available.");
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn retry_failed_is_offered_only_while_there_are_failed_sends_to_retry() {
    let db = TestDb::unique();
    let extra = [
        ("mitto.max_retries", json!(1)),
        ("sending.unavailable_rounds", json!(1)),
        ("sending.max_in_flight_batches", json!(1)),
    ];
    let h = Harness::start(&db, |_| {}, &extra).await;
    let (tenant, token) = h.tenant("Shop", 1_000).await;
    user(&h, tenant, "ann@shop.test").await;
    let id = campaign_of(&h, &token, 300, 0).await;
    let mut b = Browser::new(&h);
    assert_eq!(b.sign_in("ann@shop.test", PASSWORD).await.0, 303);
    let page = format!("/app/campaigns/{id}");
    let retry_disabled = "disabled>Retry failed</button>";
    assert!(b.get(&page).await.2.contains(retry_disabled), "a draft");

    // the first batch meets a provider outage longer than every retry: retryable failures
    h.sim.script([
        campaignd::mitto::simulator::Fault::Status { status: 503 },
        campaignd::mitto::simulator::Fault::Status { status: 503 },
    ]);
    assert_eq!(h.action(&token, id, "enqueue").await.0, 200);
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(60))
        .await;
    let (_, _, body) = b.get(&page).await;
    assert!(body.contains(">Retry failed</button>"));
    assert!(!body.contains(retry_disabled), "200 sends to retry");

    let csrf = b.csrf.clone();
    let retry = format!("/app/campaigns/{id}/actions/retry-failed");
    let (status, _, body) = b.post(&retry, &[], Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    h.wait_for_status(&token, id, "completed", std::time::Duration::from_secs(60))
        .await;
    let (_, _, body) = b.get(&page).await;
    assert!(body.contains(retry_disabled), "nothing left to retry");
    assert!(
        h.sends().values().all(|n| *n == 1),
        "nobody is messaged twice"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_draft_is_edited_and_an_issued_key_works_until_it_is_revoked() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (tenant, token) = h.tenant("Shop", 100).await;
    user(&h, tenant, "ann@shop.test").await;
    let campaign = draft(&h, &token, "Before").await;
    let mut b = Browser::new(&h);
    assert_eq!(b.sign_in("ann@shop.test", PASSWORD).await.0, 303);
    b.get(&format!("/app/campaigns/{campaign}/edit")).await;
    let csrf = b.csrf.clone();

    let edit = [
        ("name", "After"),
        ("messageType", "service"),
        ("body", "Hello again"),
        ("phones", "+306984303401\n+306984303402"),
    ];
    let path = format!("/app/campaigns/{campaign}");
    let (status, headers, _) = b.post(&path, &edit, Some(&csrf)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["HX-Redirect"], path.as_str());
    let (_, record) = h
        .get(&token, &format!("/api/v1/campaigns/{campaign}"))
        .await;
    assert_eq!(
        (record["name"].as_str(), record["body"].as_str()),
        (Some("After"), Some("Hello again"))
    );
    assert_eq!(record["audience"]["phones"].as_array().unwrap().len(), 2);
    let refused = [("name", ""), ("body", "Hi")];
    let (status, _, body) = b.post(&path, &refused, Some(&csrf)).await;
    assert_eq!(status, 400);
    assert!(body.contains("Name must be 1 to 200 characters"), "{body}");

    b.get("/app/account").await;
    let (status, _, body) = b
        .post(
            "/app/account/keys",
            &[("label", "shop backend")],
            Some(&csrf),
        )
        .await;
    assert_eq!(status, 200);
    let at = body
        .find("data-testid=\"new-token\">")
        .expect("the token is shown once")
        + 24;
    let issued = body[at..at + body[at..].find('<').unwrap()].to_owned();
    assert_eq!(
        h.get(&issued, "/api/v1/me").await.0,
        200,
        "the new token works"
    );
    let (_, _, page) = b.get("/app/account").await;
    assert!(!page.contains(&issued), "and is never shown again");

    let key: i64 = sqlx::query_scalar("SELECT id FROM api_keys WHERE label = 'shop backend'")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    let (status, _, _) = b
        .post(&format!("/app/account/keys/{key}/revoke"), &[], Some(&csrf))
        .await;
    assert_eq!(status, 200);
    common::eventually(
        std::time::Duration::from_secs(2),
        "the revoked token is refused",
        || async { (h.get(&issued, "/api/v1/me").await.0 == 401).then_some(()) },
    )
    .await;
    assert_eq!(
        h.get(&token, "/api/v1/me").await.0,
        200,
        "the other key still works"
    );
    h.stop().await;
    db.drop_database().await;
}
