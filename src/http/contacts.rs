//! Contacts (JSON and CSV import) and lists. Phones are normalised to E.164 at the boundary;
//! an unsubscribed contact is kept but never messaged.

use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Authenticated;
use super::error::ApiError;
use super::input::{reject_nul, reject_nul_in_object};
use super::AppState;
use crate::domain::{PhoneE164, TenantId};
use crate::store::contacts::{self, ListError, NewContact};
pub use crate::store::contacts::{Imported, RowError};

/// Contacts upserted per statement.
const CHUNK: usize = 10_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/contacts", web::post().to(create))
        .route("/v1/contacts/import", web::post().to(import))
        .route("/v1/lists", web::post().to(create_list))
        .route("/v1/lists/{id}", web::get().to(get_list))
        .route("/v1/lists/{id}/members", web::post().to(add_members))
        .route("/v1/lists/{id}/members", web::delete().to(remove_members));
}

/// A contact; saving one whose phone exists updates it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ContactInput {
    /// E.164, or a number with a country code (`00…`, spaces and dashes allowed).
    #[schema(example = "+306984303406")]
    phone: String,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    /// Placeholders for texts (`{{city}}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
    /// `true` opts the phone out of marketing, `false` back in.
    #[serde(default)]
    unsubscribed: Option<bool>,
}

/// Contacts saved.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Saved {
    saved: usize,
    contacts: Vec<contacts::Contact>,
}

/// Members added to a list (already members not counted).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Added {
    added: u64,
}

/// Members removed from a list.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    removed: u64,
}

/// One contact or an array of them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    Many(Vec<ContactInput>),
    One(ContactInput),
}

impl ContactInput {
    fn reject_nul(&self) -> Result<(), ApiError> {
        reject_nul("phone", &self.phone)?;
        reject_nul("firstName", self.first_name.as_deref().unwrap_or_default())?;
        reject_nul("lastName", self.last_name.as_deref().unwrap_or_default())?;
        reject_nul_in_object("attributes", &self.attributes)
    }

    fn parse(self) -> Result<NewContact, String> {
        self.reject_nul().map_err(|e| e.to_string())?;
        let phone = PhoneE164::parse(&self.phone).map_err(|e| e.to_string())?;
        Ok(NewContact {
            phone: Some(phone),
            first_name: self.first_name,
            last_name: self.last_name,
            attributes: self.attributes,
            unsubscribed: self.unsubscribed,
        })
    }
}

/// `POST /api/v1/contacts`: one object or an array; all valid or nothing stored.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", request_body = OneOrMany,
    responses((status = 201, description = "Saved (inserted or updated by phone)", body = Saved)))]
pub(super) async fn create(
    auth: Authenticated,
    body: web::Json<OneOrMany>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let inputs = match body.into_inner() {
        OneOrMany::Many(v) => v,
        OneOrMany::One(c) => vec![c],
    };
    let mut good = Vec::with_capacity(inputs.len());
    let mut bad = Vec::new();
    for (index, input) in inputs.into_iter().enumerate() {
        match input.parse() {
            Ok(c) => good.push(c),
            Err(error) => bad.push(format!("item {index}: {error}")),
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::BadRequest(bad.join("; ")));
    }
    if good.is_empty() {
        return Err(ApiError::BadRequest("no contacts given".into()));
    }
    let mut saved = Vec::with_capacity(good.len());
    for chunk in good.chunks(CHUNK) {
        let rows = contacts::upsert(&state.pool, auth.tenant, chunk).await?;
        saved.extend(rows);
    }
    Ok(HttpResponse::Created().json(Saved {
        saved: saved.len(),
        contacts: saved,
    }))
}

const NUL_IN_CSV: &str = "contains a NUL byte, which text may not hold (is the file UTF-16? \
                          save it as UTF-8); nothing was imported";

/// Parses a contacts CSV: a header row with `phone` (required), `first_name`, `last_name`;
/// other columns become attributes. Bad rows are reported by line and skipped; a NUL byte
/// anywhere refuses the whole file, naming its line.
pub fn parse_csv(data: &[u8]) -> Result<(Vec<NewContact>, Vec<RowError>), String> {
    let mut good = Vec::new();
    let bad = parse_csv_rows(data, |contact| {
        good.push(contact);
        true
    })?;
    Ok((good, bad))
}

/// Parses a contacts CSV from `data` row by row, handing each good row to `good` (which
/// answers `false` to stop reading); answers the bad rows by line. A NUL byte anywhere, or a
/// header without `phone`, refuses the whole file.
pub fn parse_csv_rows(
    data: impl std::io::Read,
    mut good: impl FnMut(NewContact) -> bool,
) -> Result<Vec<RowError>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(data);
    let columns = Columns::of(
        reader
            .headers()
            .map_err(|e| format!("the header row cannot be read: {e}"))?,
    )?;
    let mut bad = Vec::new();
    for record in reader.records() {
        let row = match record {
            Ok(record) => columns.contact(&record)?,
            Err(e) => Err(RowError {
                line: e.position().map_or(0, |p| p.line()),
                error: e.to_string(),
            }),
        };
        match row {
            Ok(contact) => {
                if !good(contact) {
                    break;
                }
            }
            Err(e) => bad.push(e),
        }
    }
    Ok(bad)
}

/// Where a contacts CSV keeps each field.
struct Columns {
    headers: Vec<String>,
    phone: usize,
    first: Option<usize>,
    last: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Result<Self, String> {
        let headers: Vec<String> = header
            .iter()
            .map(|h| h.to_ascii_lowercase().replace([' ', '-'], "_"))
            .collect();
        if headers.iter().any(|h| h.contains('\0')) {
            return Err(format!("line 1 (the header row): {NUL_IN_CSV}"));
        }
        let column = |name: &str| headers.iter().position(|h| h == name);
        let phone = column("phone").ok_or("the header row has no \"phone\" column")?;
        let first = column("first_name").or_else(|| column("firstname"));
        let last = column("last_name").or_else(|| column("lastname"));
        Ok(Self {
            phone,
            first,
            last,
            headers,
        })
    }

    /// The row's contact, or why the row is refused; `Err` for a NUL byte, which refuses the
    /// whole file (a binary or UTF-16 file, where every row would fail).
    fn contact(&self, record: &csv::StringRecord) -> Result<Result<NewContact, RowError>, String> {
        let line = record.position().map_or(0, |p| p.line());
        if let Some(column) = nul_column(record, &self.headers) {
            return Err(format!("line {line}, column {column:?}: {NUL_IN_CSV}"));
        }
        let field = |at: Option<usize>| {
            at.and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let phone = match PhoneE164::parse(record.get(self.phone).unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                let error = e.to_string();
                return Ok(Err(RowError { line, error }));
            }
        };
        let attributes = self
            .headers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.phone && Some(*i) != self.first && Some(*i) != self.last)
            .filter_map(|(i, h)| {
                record
                    .get(i)
                    .filter(|v| !v.is_empty())
                    .map(|v| (h.clone(), Value::from(v)))
            })
            .collect();
        Ok(Ok(NewContact {
            phone: Some(phone),
            first_name: field(self.first),
            last_name: field(self.last),
            attributes,
            unsubscribed: None,
        }))
    }
}

/// The header of the first field of `record` that holds a NUL byte (Postgres refuses them).
fn nul_column<'h>(record: &csv::StringRecord, headers: &'h [String]) -> Option<&'h str> {
    let at = record.iter().position(|v| v.contains('\0'))?;
    Some(
        headers
            .get(at)
            .map_or("(beyond the header)", String::as_str),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(super) struct ImportQuery {
    /// A list of the tenant's that every imported contact joins.
    list_id: Option<String>,
}

/// `POST /api/v1/contacts/import[?listId=N]` (text/csv): good rows kept (and added to the
/// list), bad rows reported by line. Bodies above `contacts.max_import_bytes` are 413.
#[utoipa::path(post, path = "/api/v1/contacts/import", tag = "contacts", params(ImportQuery),
    request_body(content = String, content_type = "text/csv",
        description = "A header row with `phone` and optionally `first_name`, `last_name`; other columns become attributes"),
    responses((status = 200, description = "Rows imported; refused rows with their line numbers", body = Imported),
        (status = 404, description = "No such list of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn import(
    auth: Authenticated,
    query: web::Query<ImportQuery>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let into = match &query.list_id {
        Some(id) => ImportInto::List(owned_list(&state, auth, id).await?.id),
        None => ImportInto::Nowhere,
    };
    let limit = state.settings.contacts.max_import_bytes;
    if super::input::declared_length(&req).is_some_and(|n| n > limit) {
        return Err(super::input::BodyError::TooLarge(limit).into());
    }
    let chunks = payload
        .map(|chunk| chunk.map_err(|e| super::input::BodyError::Read(e.to_string()).into()))
        .boxed_local();
    let imported = import_csv(&state, auth.tenant, into, chunks, limit).await?;
    Ok(HttpResponse::Ok().json(imported))
}

/// The list an import's contacts join, if any.
pub(crate) enum ImportInto {
    Nowhere,
    List(i64),
    /// A list created by the import, in its transaction (a refused file leaves none).
    NewList(String),
}

/// An upload's bytes as they arrive.
pub(crate) type Chunks = futures::stream::LocalBoxStream<'static, Result<web::Bytes, ApiError>>;

/// Imports a contacts CSV for the tenant as it arrives (the API's import and the dashboard's).
/// Rows are parsed on a blocking thread and saved in batches of [`CHUNK`] — contacts and list
/// memberships in one statement per batch — so memory holds a few batches, not the file. The
/// whole import is one transaction: a refused file (no `phone` column, a NUL byte, over
/// `limit` bytes) saves nothing. Bad rows are reported by line.
pub(crate) async fn import_csv(
    state: &AppState,
    tenant: TenantId,
    into: ImportInto,
    chunks: Chunks,
    limit: usize,
) -> Result<Imported, ApiError> {
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<web::Bytes>(8);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Vec<NewContact>>(2);
    let parser = tokio::task::spawn_blocking(move || parse_in_batches(bytes_rx, batch_tx));
    let pump = pump(chunks, bytes_tx, limit);
    let save = save_batches(state, tenant, into, batch_rx);
    let (pumped, saved) = futures::join!(pump, save);
    let parsed = parser
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("the CSV parser stopped: {e}")))?;
    let (tx, imported) = saved?;
    pumped?;
    let errors = parsed.map_err(ApiError::BadRequest)?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    Ok(Imported {
        imported: imported as usize,
        failed: errors.len(),
        errors,
    })
}

/// Feeds the upload to the parser, refusing it past `limit` bytes.
async fn pump(
    mut chunks: Chunks,
    bytes: tokio::sync::mpsc::Sender<web::Bytes>,
    limit: usize,
) -> Result<(), ApiError> {
    let mut total = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        total += chunk.len();
        if total > limit {
            return Err(super::input::BodyError::TooLarge(limit).into());
        }
        if bytes.send(chunk).await.is_err() {
            // the parser stopped (a refused file, or the saving failed): its answer says why
            break;
        }
    }
    Ok(())
}

/// Parses the CSV as its bytes arrive, handing good rows on in batches; answers the bad rows.
fn parse_in_batches(
    bytes: tokio::sync::mpsc::Receiver<web::Bytes>,
    batches: tokio::sync::mpsc::Sender<Vec<NewContact>>,
) -> Result<Vec<RowError>, String> {
    let mut batch = Vec::with_capacity(CHUNK);
    let mut open = true;
    let bad = parse_csv_rows(ChannelRead::new(bytes), |contact| {
        batch.push(contact);
        if batch.len() == CHUNK {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(CHUNK));
            open = batches.blocking_send(full).is_ok();
        }
        open
    })?;
    if open && !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok(bad)
}

/// Saves batches as they come, in one transaction that the caller commits.
async fn save_batches(
    state: &AppState,
    tenant: TenantId,
    into: ImportInto,
    mut batches: tokio::sync::mpsc::Receiver<Vec<NewContact>>,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, u64), ApiError> {
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(crate::store::StoreError::from)?;
    let list = match into {
        ImportInto::Nowhere => None,
        ImportInto::List(id) => Some(id),
        ImportInto::NewList(name) => Some(new_list_in(&mut tx, tenant, &name).await?),
    };
    let (mut saved, mut number) = (0, 0);
    while let Some(batch) = batches.recv().await {
        saved += contacts::import_batch(&mut tx, tenant, &batch, (list, number)).await?;
        number += 1;
    }
    Ok((tx, saved))
}

/// A blocking reader over the chunks of an upload (for the CSV parser's thread).
struct ChannelRead {
    chunks: tokio::sync::mpsc::Receiver<web::Bytes>,
    current: web::Bytes,
}

impl ChannelRead {
    fn new(chunks: tokio::sync::mpsc::Receiver<web::Bytes>) -> Self {
        Self {
            chunks,
            current: web::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A new list, optionally with its first members.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ListInput {
    name: String,
    #[serde(default)]
    contact_ids: Vec<i64>,
}

#[utoipa::path(post, path = "/api/v1/lists", tag = "contacts", request_body = ListInput,
    responses((status = 201, description = "Created", body = contacts::List),
        (status = 404, description = "No such list of this tenant, or unknown contacts", body = super::openapi::ErrorBody),
        (status = 409, description = "A list of this name exists", body = super::openapi::ErrorBody)))]
pub(super) async fn create_list(
    auth: Authenticated,
    body: web::Json<ListInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = new_list(&state, auth.tenant, &body.name, &body.contact_ids).await?;
    let list = contacts::find_list(&state.pool, auth.tenant, id).await?;
    Ok(HttpResponse::Created().json(list))
}

/// A list name as given: 1 to 200 characters, no NUL byte.
fn list_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    reject_nul("name", name)?;
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 200 characters".into(),
        ));
    }
    Ok(name)
}

fn name_taken(name: &str) -> impl Fn(ListError) -> ApiError + '_ {
    move |e| match e {
        ListError::NameTaken => ApiError::Conflict(format!("a list named {name:?} already exists")),
        e => e.into(),
    }
}

/// Creates a list (unique name per tenant) with its first members.
pub(crate) async fn new_list(
    state: &AppState,
    tenant: TenantId,
    name: &str,
    members: &[i64],
) -> Result<i64, ApiError> {
    let name = list_name(name)?;
    contacts::create_list(&state.pool, tenant, name, members)
        .await
        .map_err(name_taken(name))
}

/// Creates an empty list in a transaction of the caller's.
async fn new_list_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    name: &str,
) -> Result<i64, ApiError> {
    let name = list_name(name)?;
    contacts::create_list_in(tx, tenant, name, &[])
        .await
        .map_err(name_taken(name))
}

/// A refused list change as the caller sees it: ids that are not theirs are 404 — exactly like
/// ids that do not exist, so another tenant's contacts are never confirmed.
impl From<ListError> for ApiError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::NameTaken => Self::Conflict(e.to_string()),
            ListError::UnknownContacts(ids) => Self::NotFound(unknown_contacts(&ids)),
            ListError::Store(e) => e.into(),
        }
    }
}

/// "contacts not found: 7, 9" — at most the first 20 ids, and how many more.
fn unknown_contacts(ids: &[i64]) -> String {
    const SHOWN: usize = 20;
    let named: Vec<String> = ids.iter().take(SHOWN).map(i64::to_string).collect();
    let more = ids.len().saturating_sub(SHOWN);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "contacts not found: {}{tail}; nothing was changed",
        named.join(", ")
    )
}

/// The tenant's list named in the path, or a 404 (absent, or another tenant's).
async fn owned_list(
    state: &AppState,
    auth: Authenticated,
    id: &str,
) -> Result<contacts::List, ApiError> {
    let not_found = || ApiError::NotFound(format!("list {id} not found"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    contacts::find_list(&state.pool, auth.tenant, id)
        .await?
        .ok_or_else(not_found)
}

#[utoipa::path(get, path = "/api/v1/lists/{id}", tag = "contacts", params(("id" = i64, Path, description = "List id")),
    responses((status = 200, description = "The list and its member count", body = contacts::List), (status = 404, description = "No such list of this tenant, or unknown contacts", body = super::openapi::ErrorBody)))]
pub(super) async fn get_list(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(owned_list(&state, auth, &path).await?))
}

/// Contacts to add or remove.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Members {
    contact_ids: Vec<i64>,
}

#[utoipa::path(post, path = "/api/v1/lists/{id}/members", tag = "contacts", params(("id" = i64, Path, description = "List id")),
    request_body = Members, responses((status = 200, description = "Added", body = Added), (status = 404, description = "No such list of this tenant, or unknown contacts", body = super::openapi::ErrorBody)))]
pub(super) async fn add_members(
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Json<Members>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = owned_list(&state, auth, &path).await?.id;
    let added = contacts::add_members(&state.pool, auth.tenant, id, &body.contact_ids).await?;
    Ok(HttpResponse::Ok().json(Added { added }))
}

#[utoipa::path(delete, path = "/api/v1/lists/{id}/members", tag = "contacts", params(("id" = i64, Path, description = "List id")),
    request_body = Members, responses((status = 200, description = "Removed", body = Removed), (status = 404, description = "No such list of this tenant, or unknown contacts", body = super::openapi::ErrorBody)))]
pub(super) async fn remove_members(
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Json<Members>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = owned_list(&state, auth, &path).await?.id;
    let removed = contacts::remove_members(&state.pool, auth.tenant, id, &body.contact_ids).await?;
    Ok(HttpResponse::Ok().json(Removed { removed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_contacts_and_bad_rows_are_reported_by_line() {
        let csv = "phone,first_name,last_name,city\n\
                   +30 698 430 3406,Ann,Lee,Athens\n\
                   not-a-phone,Bob,,\n\
                   0030 6984303407,,,\n";
        let (good, bad) = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].phone.as_ref().unwrap().as_str(), "+306984303406");
        assert_eq!(good[0].first_name.as_deref(), Some("Ann"));
        assert_eq!(good[0].attributes.get("city"), Some(&Value::from("Athens")));
        assert!(good[1].first_name.is_none() && good[1].attributes.is_empty());
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
    }

    #[test]
    fn a_csv_without_a_phone_column_is_refused() {
        assert!(parse_csv(b"name\nAnn\n").is_err());
    }

    #[test]
    fn a_nul_byte_refuses_the_file_naming_its_line_and_column() {
        let csv = b"phone,city\n+306984303406,Athens\n+306984303407,Ath\0ens\n";
        let refused = parse_csv(csv).unwrap_err();
        assert!(refused.starts_with("line 3, column \"city\""), "{refused}");
        let header = parse_csv(b"phone,ci\0ty\n+306984303406,Athens\n").unwrap_err();
        assert!(header.starts_with("line 1"), "{header}");
    }
}
