//! Input an outside user or an attacker might send: NUL bytes anywhere, contact ids that are
//! not the caller's, oversize imports. Each is refused with a JSON error naming the problem,
//! and leaves nothing behind.

mod common;

use campaignd::app::{Application, RunningApplication};
use campaignd::config::Settings;
use common::{settings, TestDb};
use serde_json::{json, Value};

async fn start(settings: Settings) -> RunningApplication {
    Application::build(settings).await.unwrap().spawn()
}

/// Status, error code and message of a response (code and message empty on success).
async fn answer(response: reqwest::Response) -> (u16, String, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, message, body)
}

async fn get(app: &RunningApplication, token: &str, path: &str) -> (u16, String, String, Value) {
    let request = reqwest::Client::new().get(app.url(path)).bearer_auth(token);
    answer(request.send().await.unwrap()).await
}

async fn post(
    app: &RunningApplication,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, String, String, Value) {
    let request = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body);
    answer(request.send().await.unwrap()).await
}

async fn import(
    app: &RunningApplication,
    token: &str,
    body: reqwest::Body,
) -> (u16, String, String, Value) {
    let request = reqwest::Client::new()
        .post(app.url("/api/v1/contacts/import"))
        .bearer_auth(token)
        .header("Content-Type", "text/csv")
        .body(body);
    answer(request.send().await.unwrap()).await
}

async fn contact_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Asserts a 400 whose message names `what`.
fn assert_names(seen: (u16, String, String, Value), what: &str) {
    assert_eq!((seen.0, seen.1.as_str()), (400, "BAD_REQUEST"), "{seen:?}");
    assert!(seen.2.contains(what), "{what} not named in {:?}", seen.2);
    assert!(seen.2.contains("NUL"), "{:?}", seen.2);
}

#[actix_web::test]
async fn nul_bytes_in_queries_json_bodies_and_csv_rows_are_400_naming_where() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (_, token) = common::tenant(&pool, "Shop").await;

    assert_names(
        get(&app, &token, "/api/v1/campaigns?search=%00").await,
        "\"search\"",
    );
    assert_names(
        get(&app, &token, "/api/v1/campaigns?page=1&status=sent%00x").await,
        "\"status\"",
    );
    assert_names(get(&app, &token, "/api/v1/lists/1%00").await, "path");
    assert_eq!(
        get(&app, &token, "/api/v1/campaigns?search=%2500").await.0,
        200
    );

    let phone = "+306984303406";
    let nul_name = json!({"phone": phone, "firstName": "An\u{0}n"});
    assert_names(
        post(&app, &token, "/api/v1/contacts", nul_name).await,
        "firstName",
    );
    let nul_attribute = json!([{"phone": phone, "attributes": {"city": {"name": "Ath\u{0}ens"}}}]);
    assert_names(
        post(&app, &token, "/api/v1/contacts", nul_attribute).await,
        "attributes.city.name",
    );
    let nul_list = json!({"name": "V\u{0}IP"});
    assert_names(post(&app, &token, "/api/v1/lists", nul_list).await, "name");
    let campaign = |field: &str, value: Value| {
        let mut body = json!({"name": "Sale", "body": "Hi", "sender": "Shop",
                              "trafficAccountId": "e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7",
                              "audience": {"phones": [phone]}});
        body[field] = value;
        body
    };
    for (field, value, named) in [
        ("name", json!("Sa\u{0}le"), "name"),
        ("body", json!("Hi\u{0}"), "body"),
        (
            "audience",
            json!({"phones": ["+30698\u{0}4303406"]}),
            "audience.phones[0]",
        ),
    ] {
        assert_names(
            post(&app, &token, "/api/v1/campaigns", campaign(field, value)).await,
            named,
        );
    }

    let csv = "phone,first_name,city\n+306984303406,Ann,Athens\n+306984303407,Bob,Pat\0ras\n";
    assert_names(
        import(&app, &token, csv.into()).await,
        "line 3, column \"city\"",
    );
    assert_eq!(contact_count(&pool).await, 0, "nothing was stored");
    let utf16: Vec<u8> = "phone\n+306984303406\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_names(import(&app, &token, utf16.into()).await, "line 1");

    app.stop().await;
    db.drop_database().await;
}

/// Creates contacts for a tenant and returns their ids.
async fn contacts(app: &RunningApplication, token: &str, phones: &[&str]) -> Vec<i64> {
    let body: Vec<Value> = phones.iter().map(|p| json!({ "phone": p })).collect();
    let (status, _, _, saved) = post(app, token, "/api/v1/contacts", Value::Array(body)).await;
    assert_eq!(status, 201);
    saved["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[actix_web::test]
async fn lists_refuse_contacts_that_are_not_the_callers_with_404_naming_them_and_add_nothing() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (_, mine) = common::tenant(&pool, "Shop").await;
    let (_, theirs) = common::tenant(&pool, "Other shop").await;
    let own = contacts(&app, &mine, &["+306984303406", "+306984303407"]).await;
    let foreign = contacts(&app, &theirs, &["+306984303408"]).await[0];
    let unknown = foreign + 1000;

    let refused = post(
        &app,
        &mine,
        "/api/v1/lists",
        json!({"name": "VIP", "contactIds": [own[0], unknown, foreign, foreign]}),
    )
    .await;
    assert_eq!(
        (refused.0, refused.1.as_str()),
        (404, "NOT_FOUND"),
        "{refused:?}"
    );
    let named = format!("contacts not found: {foreign}, {unknown};");
    assert!(refused.2.starts_with(&named), "{:?}", refused.2);
    let lists: i64 = sqlx::query_scalar("SELECT count(*) FROM lists")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lists, 0, "no list was left behind");

    let (status, _, _, list) = post(
        &app,
        &mine,
        "/api/v1/lists",
        json!({"name": "VIP", "contactIds": [own[0]]}),
    )
    .await;
    assert_eq!((status, list["members"].as_i64()), (201, Some(1)));
    let members = format!("/api/v1/lists/{}/members", list["id"]);
    let refused = post(
        &app,
        &mine,
        &members,
        json!({"contactIds": [own[1], foreign]}),
    )
    .await;
    assert_eq!(refused.0, 404);
    assert!(refused.2.contains(&foreign.to_string()) && !refused.2.contains(&own[1].to_string()));
    let list_path = format!("/api/v1/lists/{}", list["id"]);
    assert_eq!(
        get(&app, &mine, &list_path).await.3["members"],
        1,
        "nothing was added"
    );
    let added = post(&app, &mine, &members, json!({"contactIds": [own[1]]})).await;
    assert_eq!((added.0, &added.3["added"]), (200, &json!(1)));

    app.stop().await;
    db.drop_database().await;
}

/// A CSV of `rows` contacts.
fn csv(rows: usize) -> String {
    let mut csv = String::from("phone,first_name\n");
    for i in 0..rows {
        csv.push_str(&format!("+3069{i:08},Name{i}\n"));
    }
    csv
}

#[actix_web::test]
async fn an_import_above_its_own_limit_is_413_with_the_json_error_shape() {
    let db = TestDb::unique();
    let mut settings = settings(&db);
    let small = csv(10);
    settings.contacts.max_import_bytes = small.len();
    let app = start(settings).await;
    let pool = app.state.pool.clone();
    let (_, token) = common::tenant(&pool, "Shop").await;

    let at_limit = import(&app, &token, small.clone().into()).await;
    assert_eq!((at_limit.0, &at_limit.3["imported"]), (200, &json!(10)));

    let over = csv(11);
    let declared = import(&app, &token, over.clone().into()).await;
    assert_eq!(
        (declared.0, declared.1.as_str()),
        (413, "PAYLOAD_TOO_LARGE")
    );
    assert!(
        declared.2.contains(&small.len().to_string()),
        "{:?}",
        declared.2
    );

    // streamed without a Content-Length: refused once it grows past the limit
    let (status, body) = chunked_import(&app, &token, &over).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("PAYLOAD_TOO_LARGE"), "{body}");
    assert_eq!(
        contact_count(&pool).await,
        10,
        "only the import within the limit stored"
    );

    app.stop().await;
    db.drop_database().await;
}

/// Posts `csv` with `Transfer-Encoding: chunked` (no Content-Length), one chunk per line, over
/// a plain socket; returns the status and the raw response text.
async fn chunked_import(app: &RunningApplication, token: &str, csv: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/contacts/import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for line in csv.lines() {
        let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
        // the server may answer and close before the last chunk
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn imports_are_capped_at_64_mib_by_default() {
    let db = TestDb::unique();
    assert_eq!(settings(&db).contacts.max_import_bytes, 64 << 20);
}

/// Waits until a checkpoint covers every record on the topic.
async fn checkpointed(app: &RunningApplication) {
    let ends = common::end_offsets(&app.pipeline.broker.brokers.bootstrap, "message-events");
    let limit = std::time::Duration::from_secs(20);
    common::wait_until_offsets_reach(&app.state.pool, &ends, limit).await;
}

#[actix_web::test]
async fn a_topic_record_with_a_nul_byte_is_dead_lettered_and_checkpoints_go_on() {
    use campaignd::domain::{Event, MessageId};
    let db = TestDb::unique();
    let app = start(common::event_settings(&db)).await;
    let pool = app.state.pool.clone();
    let (tenant, token) = common::tenant(&pool, "Shop").await;
    let (campaign, recipients) = campaignd::store::fixtures::claimed_campaign(&pool, tenant, 1)
        .await
        .unwrap();
    let message = MessageId::generate();
    let sent = Event::Sent {
        message_id: message.clone(),
        campaign_id: campaign,
        recipient_id: recipients[0],
        bulk_id: None,
        attempt: 0,
        at: chrono::Utc::now(),
    };
    let producer = &app.pipeline.handles.producer;
    producer.send(&[sent]).await.unwrap();
    // what an upstream producer might write: valid JSON, a text Postgres cannot store
    let poison = json!({"v": 1, "type": "dlr", "messageId": message.to_string(),
        "deliveryStatus": "Deliv\u{0}ered", "at": "2026-11-20T10:00:05Z"});
    let record = (message.to_string(), serde_json::to_vec(&poison).unwrap());
    producer.send_raw(&[record]).await.unwrap();
    // stored as the row's last report, it would fail this checkpoint and every later one
    checkpointed(&app).await;
    let letters: Vec<String> = sqlx::query_scalar("SELECT error FROM dead_letters")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].contains("deliveryStatus contains a NUL byte"),
        "{letters:?}"
    );
    let delivered = json!({"v": 1, "type": "dlr", "messageId": message.to_string(),
        "deliveryStatus": "Delivered", "at": "2026-11-20T10:00:06Z"});
    let record = (message.to_string(), serde_json::to_vec(&delivered).unwrap());
    producer.send_raw(&[record]).await.unwrap();
    checkpointed(&app).await;
    let status: String = sqlx::query_scalar("SELECT status FROM campaign_recipients")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "delivered");
    let stats = get(&app, &token, &format!("/api/v1/campaigns/{campaign}/stats")).await;
    assert_eq!(stats.3["delivered"], 1);
    app.stop().await;
    db.drop_database().await;
}

/// A CSV of `rows` good rows (phones from `first`), with a bad row every `bad_every` rows.
fn csv_with_bad_rows(rows: usize, bad_every: usize) -> (String, Vec<u64>) {
    let mut csv = String::from("phone,first_name,city\n");
    let mut bad_lines = Vec::new();
    let mut line = 1u64;
    for i in 0..rows {
        if i % bad_every == bad_every - 1 {
            line += 1;
            csv.push_str("not-a-phone,Bob,Nowhere\n");
            bad_lines.push(line);
        }
        line += 1;
        // a quoted field over two lines counts as two lines, as the parser numbers them
        if i == 15_000 {
            csv.push_str(&format!(
                "+3069{:08},\"Ann\nMarie\",Athens\n",
                20_000_000 + i
            ));
            line += 1;
        } else {
            csv.push_str(&format!("+3069{:08},Ann,Athens\n", 20_000_000 + i));
        }
    }
    (csv, bad_lines)
}

#[actix_web::test]
async fn a_streamed_import_reports_bad_rows_by_line_across_batches_and_fills_the_list() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (tenant, token) = common::tenant(&pool, "Shop").await;
    let list = campaignd::store::contacts::create_list(&pool, tenant, "All", &[])
        .await
        .unwrap();
    // three batches of 10,000, and bad rows on both sides of each batch's end
    let (csv, bad_lines) = csv_with_bad_rows(25_000, 997);
    let expected = campaignd::http::contacts::parse_csv(csv.as_bytes()).unwrap();
    let answer = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/contacts/import?listId={list}")))
        .bearer_auth(&token)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["imported"], 25_000);
    let lines: Vec<u64> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, bad_lines, "every bad row, by its line");
    let parsed_lines: Vec<u64> = expected.1.iter().map(|e| e.line).collect();
    assert_eq!(
        lines, parsed_lines,
        "the same lines as parsing the whole file"
    );
    assert_eq!(contact_count(&pool).await, 25_000);
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM list_members WHERE list_id = $1")
        .bind(list)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(members, 25_000);
    let two_lines: String =
        sqlx::query_scalar("SELECT first_name FROM contacts WHERE phone_e164 = '+306920015000'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(two_lines, "Ann\nMarie");
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_nul_byte_after_the_first_batches_refuses_the_whole_import() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (_, token) = common::tenant(&pool, "Shop").await;
    let (mut csv, _) = csv_with_bad_rows(22_000, 1_000_000);
    csv.push_str("+306984303406,Eve\0,Athens\n");
    let seen = import(&app, &token, csv.into()).await;
    // a header, 22,000 rows (one of them over two lines), then the NUL row
    assert_names(seen, "line 22003");
    assert_eq!(contact_count(&pool).await, 0, "nothing of the file is kept");
    app.stop().await;
    db.drop_database().await;
}

/// A definition body of `phones` inline phones (`+3069` and eight digits each).
fn inline_campaign(phones: usize) -> Value {
    let phones: Vec<String> = (0..phones).map(|i| format!("+3069{i:08}")).collect();
    json!({ "name": "Inline", "body": "Sale today", "sender": "Shop",
            "audience": { "phones": phones } })
}

#[actix_web::test]
async fn a_campaign_takes_its_documented_maximum_of_inline_phones_and_refuses_more_by_name() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (_, token) = common::tenant(&pool, "Shop").await;
    let most = campaignd::http::campaigns::MAX_INLINE_PHONES;

    // 100,000 phones make a body of about 1.6 MB, above the 1 MiB other JSON routes take
    let (status, _, message, created) =
        post(&app, &token, "/api/v1/campaigns", inline_campaign(most)).await;
    assert_eq!(status, 201, "{message}");
    let id = created["id"].as_i64().unwrap();
    let edit = reqwest::Client::new()
        .patch(app.url(&format!("/api/v1/campaigns/{id}")))
        .bearer_auth(&token)
        .json(&json!({ "audience": inline_campaign(most)["audience"] }));
    let (status, _, message, _) = answer(edit.send().await.unwrap()).await;
    assert_eq!(status, 200, "{message}");

    let (status, code, message, _) =
        post(&app, &token, "/api/v1/campaigns", inline_campaign(most + 1)).await;
    assert_eq!((status, code.as_str()), (400, "BAD_REQUEST"), "{message}");
    assert!(
        message.contains("at most 100000 inline phones"),
        "{message}"
    );

    // past the definition routes' own limit: 413 naming it, in the JSON error shape
    let mut huge = inline_campaign(1);
    huge["body"] = json!("x".repeat(campaignd::http::campaigns::MAX_DEFINITION_BODY));
    let (status, code, message, _) = post(&app, &token, "/api/v1/campaigns", huge).await;
    assert_eq!(
        (status, code.as_str()),
        (413, "PAYLOAD_TOO_LARGE"),
        "{message}"
    );
    let limit = campaignd::http::campaigns::MAX_DEFINITION_BODY.to_string();
    assert!(message.contains(&limit), "{message}");

    app.stop().await;
    db.drop_database().await;
}

/// Imports `csv` into list `list` and answers the JSON reply.
async fn import_into(app: &RunningApplication, token: &str, list: i64, csv: &str) -> Value {
    let answer = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/contacts/import?listId={list}")))
        .bearer_auth(token)
        .header("Content-Type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// Name, attributes and whether it opted out, of the contact with `phone`.
async fn contact(pool: &sqlx::PgPool, phone: &str) -> (Option<String>, Value, bool) {
    sqlx::query_as(
        "SELECT first_name, attributes, unsubscribed_at IS NOT NULL FROM contacts
         WHERE phone_e164 = $1",
    )
    .bind(phone)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn members(pool: &sqlx::PgPool, list: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.phone_e164 FROM list_members m JOIN contacts c ON c.id = m.contact_id
         WHERE m.list_id = $1 ORDER BY 1",
    )
    .bind(list)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[actix_web::test]
async fn a_second_import_updates_known_contacts_in_place_and_adds_only_missing_members() {
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (tenant, token) = common::tenant(&pool, "Shop").await;
    let create =
        |name: &'static str| campaignd::store::contacts::create_list(&pool, tenant, name, &[]);
    let (vip, other) = (create("VIP").await.unwrap(), create("Other").await.unwrap());
    let first = "phone,first_name,tier\n+306900000001,Ann,gold\n+306900000002,Bob,silver\n";
    assert_eq!(import_into(&app, &token, vip, first).await["imported"], 2);
    sqlx::query("UPDATE contacts SET unsubscribed_at = now() WHERE phone_e164 = '+306900000002'")
        .execute(&pool)
        .await
        .unwrap();

    // Bob again without a name, a new contact given twice (the last row wins), Ann renamed
    let second = "phone,first_name,city\n+306900000002,,Athens\n+306900000003,Cy,Patras\n\
                  +306900000003,Dora,Volos\n+306900000001,Anna,\n";
    let answer = import_into(&app, &token, vip, second).await;
    assert_eq!(
        (answer["imported"].as_u64(), answer["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        contact_count(&pool).await,
        3,
        "known phones are not added again"
    );
    let bob = contact(&pool, "+306900000002").await;
    assert_eq!(
        bob.0.as_deref(),
        Some("Bob"),
        "a name the file lacks is kept"
    );
    assert_eq!(
        bob.1,
        json!({ "tier": "silver", "city": "Athens" }),
        "attributes merged"
    );
    assert!(bob.2, "an opt-out is never undone by an import");
    let dora = contact(&pool, "+306900000003").await;
    assert_eq!(
        (dora.0.as_deref(), dora.1),
        (Some("Dora"), json!({ "city": "Volos" }))
    );
    assert_eq!(
        contact(&pool, "+306900000001").await.0.as_deref(),
        Some("Anna")
    );
    let all = ["+306900000001", "+306900000002", "+306900000003"];
    assert_eq!(members(&pool, vip).await, all, "each member once");

    // known contacts join another list
    let third = "phone\n+306900000001\n+306900000004\n";
    assert_eq!(import_into(&app, &token, other, third).await["imported"], 2);
    assert_eq!(
        members(&pool, other).await,
        ["+306900000001", "+306900000004"]
    );
    assert_eq!(members(&pool, vip).await, all);
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn an_import_racing_another_writer_of_the_same_phone_saves_the_batch_once_all_the_same() {
    // an early batch (written apart, under a savepoint) and one past the savepoints (upserted)
    race_an_import_batch(0).await;
    race_an_import_batch(campaignd::store::contacts::MAX_SAVEPOINTS).await;
}

async fn race_an_import_batch(number: usize) {
    use campaignd::domain::PhoneE164;
    use campaignd::store::contacts::{create_list, import_batch, NewContact};
    let db = TestDb::unique();
    let app = start(settings(&db)).await;
    let pool = app.state.pool.clone();
    let (tenant, _) = common::tenant(&pool, "Shop").await;
    let list = create_list(&pool, tenant, "VIP", &[]).await.unwrap();
    // another writer adds one of the batch's phones and has not committed yet
    let mut other = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO contacts (tenant_id, phone_e164, first_name) VALUES ($1, '+306900000001', 'Ann')")
        .bind(tenant.get())
        .execute(&mut *other)
        .await
        .unwrap();
    let batch: Vec<NewContact> = ["+306900000001", "+306900000002"]
        .iter()
        .map(|p| NewContact {
            phone: Some(PhoneE164::parse(p).unwrap()),
            last_name: Some("Lee".into()),
            ..Default::default()
        })
        .collect();
    let importing = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let saved = import_batch(&mut tx, tenant, &batch, (Some(list), number)).await;
            tx.commit().await.unwrap();
            saved.unwrap()
        })
    };
    // the import waits on the other writer's phone, then that writer commits
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let since = std::time::Instant::now();
    while waiting().await == 0 {
        assert!(
            since.elapsed().as_secs() < 10,
            "the import never waited on the phone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    other.commit().await.unwrap();
    assert_eq!(importing.await.unwrap(), 2);
    assert_eq!(contact_count(&pool).await, 2);
    let ann: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT first_name, last_name FROM contacts WHERE phone_e164 = '+306900000001'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        ann,
        (Some("Ann".into()), Some("Lee".into())),
        "the other writer's row, updated"
    );
    assert_eq!(
        members(&pool, list).await,
        ["+306900000001", "+306900000002"]
    );
    app.stop().await;
    db.drop_database().await;
}
