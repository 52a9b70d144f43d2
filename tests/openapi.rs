//! The OpenAPI document and Swagger UI: every route the service answers is in the document,
//! with its error shape and security, and real answers carry what their schemas require.

mod common;
#[path = "support/harness.rs"]
mod harness;

use common::TestDb;
use harness::*;
use serde_json::{json, Value};

/// Every operation the service routes, as `(method, path)`.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/campaigns/stats"),
    ("get", "/api/v1/campaigns/{id}/stats"),
    ("get", "/api/campaigns/{id}/status"),
    ("get", "/api/v1/campaigns/{id}/stats/stream"),
    ("get", "/api/v1/campaigns/{id}/timeseries"),
    ("get", "/api/v1/campaigns/{id}/breakdown"),
    ("get", "/api/v1/campaigns/{id}/recipients"),
    ("get", "/api/v1/campaigns/{id}/recipients.csv"),
    ("get", "/api/v1/campaigns/{id}/report.csv"),
    ("post", "/api/v1/campaigns"),
    ("get", "/api/v1/campaigns"),
    ("post", "/api/v1/campaigns/preview"),
    ("get", "/api/v1/campaigns/{id}"),
    ("patch", "/api/v1/campaigns/{id}"),
    ("delete", "/api/v1/campaigns/{id}"),
    ("post", "/api/v1/campaigns/{id}/enqueue"),
    ("post", "/api/v1/campaigns/{id}/preview"),
    ("post", "/api/v1/campaigns/{id}/schedule"),
    ("post", "/api/v1/campaigns/{id}/unschedule"),
    ("post", "/api/v1/campaigns/{id}/pause"),
    ("post", "/api/v1/campaigns/{id}/resume"),
    ("post", "/api/v1/campaigns/{id}/cancel"),
    ("post", "/api/v1/campaigns/{id}/retry-failed"),
    ("post", "/api/campaigns/{id}/enqueue"),
    ("post", "/api/v1/contacts"),
    ("post", "/api/v1/contacts/import"),
    ("post", "/api/v1/lists"),
    ("get", "/api/v1/lists/{id}"),
    ("post", "/api/v1/lists/{id}/members"),
    ("delete", "/api/v1/lists/{id}/members"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/me/marketing-rules"),
    ("put", "/api/v1/me/marketing-rules"),
    ("post", "/api/mitto/refresh-status"),
    ("post", "/api/mitto/refresh-status-bulk"),
    ("get", "/api/mitto/refresh-jobs/{id}"),
    ("post", "/api/v1/redemptions"),
    ("get", "/o/{code}"),
    ("head", "/o/{code}"),
    ("post", "/o/{code}/redeem"),
    ("get", "/s/{code}"),
    ("head", "/s/{code}"),
    ("post", "/s/{code}"),
    ("post", "/s/{code}/resubscribe"),
    ("post", "/webhooks/mitto/dlr"),
    ("post", "/webhooks/mitto/inbound"),
];

/// Follows a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The schema of an operation's JSON answer.
fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let content = &doc["paths"][path][method]["responses"][status]["content"];
    resolve(doc, &content["application/json"]["schema"])
}

/// Checks that `value` has every field its schema requires, all the way down (objects, the
/// parts of a flattened `allOf`, array items), and returns how many fields were checked.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> usize {
    let schema = resolve(doc, schema);
    let mut checked = 0;
    for part in schema["allOf"].as_array().into_iter().flatten() {
        checked += conforms(doc, part, value, at);
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            checked += conforms(doc, items, v, &format!("{at}[{i}]"));
        }
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        let inner = value
            .get(field)
            .unwrap_or_else(|| panic!("{at}: {field} missing in {value}"));
        checked += 1 + conforms(
            doc,
            &schema["properties"][field],
            inner,
            &format!("{at}.{field}"),
        );
    }
    checked
}

#[actix_web::test]
async fn the_document_lists_every_route_and_answers_carry_what_their_schemas_require() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let response = h
        .http
        .get(h.app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the document needs no token");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    for (method, path) in OPERATIONS {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let public = !path.starts_with("/api");
        let security = &operation["security"];
        if public {
            assert_eq!(security, &json!([{}]), "{method} {path} needs no token");
        } else {
            assert!(security.is_null(), "{method} {path} uses the bearer token");
            let unauthorized = &operation["responses"]["401"]["content"]["application/json"];
            assert_eq!(
                unauthorized["schema"]["$ref"],
                "#/components/schemas/ErrorBody"
            );
        }
    }
    assert_eq!(
        documented,
        OPERATIONS.len(),
        "an operation the test does not know"
    );
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "INVALID_STATE",
        "INSUFFICIENT_CREDITS",
        "TEXT_TOO_LONG",
        "REPLAYED",
    ] {
        assert!(codes.as_array().unwrap().contains(&json!(code)), "{code}");
    }

    let (_, token) = h.tenant("Shop", 10_000).await;
    let campaign = campaign_of(&h, &token, 3, 0).await;
    let checks = [
        (
            "/api/v1/campaigns/{id}/stats",
            format!("/api/v1/campaigns/{campaign}/stats"),
        ),
        (
            "/api/campaigns/{id}/status",
            format!("/api/campaigns/{campaign}/status"),
        ),
        (
            "/api/v1/campaigns/{id}",
            format!("/api/v1/campaigns/{campaign}?withStats=true"),
        ),
        (
            "/api/v1/campaigns",
            "/api/v1/campaigns?withStats=true".to_owned(),
        ),
        (
            "/api/v1/campaigns/{id}/breakdown",
            format!("/api/v1/campaigns/{campaign}/breakdown"),
        ),
        (
            "/api/v1/campaigns/{id}/timeseries",
            format!("/api/v1/campaigns/{campaign}/timeseries"),
        ),
        ("/api/v1/me", "/api/v1/me".to_owned()),
    ];
    for (path, url) in checks {
        let (status, answer) = h.get(&token, &url).await;
        assert_eq!(status, 200, "{url}: {answer}");
        let checked = conforms(&doc, answer_schema(&doc, "get", path, "200"), &answer, &url);
        assert!(checked > 3, "{url}: only {checked} fields required");
    }
    let (status, answer) = h.get(&token, "/api/v1/campaigns/999999/stats").await;
    assert_eq!(status, 404);
    let schema = answer_schema(&doc, "get", "/api/v1/campaigns/{id}/stats", "404");
    assert_eq!(
        conforms(&doc, schema, &answer, "404"),
        4,
        "error, code, message, requestId"
    );
    h.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn swagger_ui_is_served_from_the_binary() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let docs = no_redirects.get(h.app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 308);
    assert_eq!(docs.headers()["location"], "/docs/");
    let page = h.http.get(h.app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let script = h
        .http
        .get(h.app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.contains("/api/openapi.json"), "{script}");
    h.stop().await;
    db.drop_database().await;
}

/// What `.ci/fuzz` (schemathesis) found, kept as tests.
#[actix_web::test]
async fn what_the_fuzzer_found_is_answered_as_a_client_error() {
    let db = TestDb::unique();
    let h = Harness::start(&db, |_| {}, &[]).await;
    let (_, token) = h.tenant("Shop", 10_000).await;
    // the offset of this page does not fit in 64 bits: it closed the connection
    let (status, body) = h
        .get(
            &token,
            "/api/v1/campaigns?page=9223372036854775806&pageSize=10",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST");
    let (status, body) = h.get(&token, "/api/v1/campaigns?page=1&pageSize=100").await;
    assert_eq!(status, 200, "{body}");
    // contact attributes with numbers at the ends of f64's range and astral-plane keys
    let body: Value = serde_json::from_str(
        r#"{"phone": "+306984303409", "attributes": {"\u00e6\u00e3\udb09\ude3a": {"O": 4.206486809622112e+16, "V": 4896895}, "\u007f": [null], "": [{"'\r\b0/": -85, "": null, "\ud8df\udc0d]": -1.7976931348623157e+308}]}}"#,
    )
    .unwrap();
    let (status, answer) = h.post(&token, "/api/v1/contacts", body).await;
    assert_eq!(status, 201, "{answer}");
    h.stop().await;
    db.drop_database().await;
}
