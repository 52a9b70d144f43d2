//! Contacts (CSV import through the API's own import, lists) and the account (balance, API
//! keys issued and revoked; a token is shown once).

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures::{StreamExt, TryStreamExt};

use super::{html, PageError, Signed};
use crate::http::contacts::ImportInto;
use crate::http::AppState;
use crate::store::{api_keys, contacts, tenants};
use crate::web::dashboard::people as pages;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/contacts", web::get().to(contacts_page))
        .route("/contacts/import", web::post().to(import))
        .route("/account", web::get().to(account))
        .route("/account/keys", web::post().to(issue_key))
        .route("/account/keys/{id}/revoke", web::post().to(revoke_key));
}

async fn contacts_page(
    signed: Signed,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let lists = contacts::lists(&state.pool, signed.tenant)
        .await
        .map_err(PageError::unexpected)?;
    Ok(html(
        StatusCode::OK,
        pages::contacts(&signed.viewer(), &lists),
    ))
}

fn bad(message: impl Into<String>) -> PageError {
    PageError::Refused(StatusCode::BAD_REQUEST, message.into())
}

/// The upload's file and list name; the file is capped like the API's import body.
async fn upload(mut form: Multipart, limit: usize) -> Result<(Vec<u8>, String), PageError> {
    let mut file = None;
    let mut list = String::new();
    while let Some(mut field) = form
        .try_next()
        .await
        .map_err(|e| bad(format!("The upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let mut data = Vec::new();
        while let Some(chunk) = field
            .try_next()
            .await
            .map_err(|e| bad(format!("The upload could not be read: {e}")))?
        {
            if data.len() + chunk.len() > limit {
                return Err(PageError::Refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("The file is larger than {} MiB.", limit / (1024 * 1024)),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "file" => file = Some(data),
            "listName" => list = String::from_utf8_lossy(&data).trim().to_owned(),
            _ => {}
        }
    }
    let file = file
        .filter(|f| !f.is_empty())
        .ok_or_else(|| bad("Choose a CSV file."))?;
    Ok((file, list))
}

/// Imports a CSV (into a new list when a name is given) and shows the per-row report.
async fn import(
    signed: Signed,
    form: Multipart,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (file, list_name) = upload(form, state.settings.contacts.max_import_bytes).await?;
    let into = if list_name.is_empty() {
        ImportInto::Nowhere
    } else {
        ImportInto::NewList(list_name.clone())
    };
    let limit = state.settings.contacts.max_import_bytes;
    let chunks = futures::stream::once(async { Ok(web::Bytes::from(file)) }).boxed_local();
    let result =
        crate::http::contacts::import_csv(&state, signed.tenant, into, chunks, limit).await?;
    let lists = contacts::lists(&state.pool, signed.tenant)
        .await
        .map_err(PageError::unexpected)?;
    let named = (!list_name.is_empty()).then_some(list_name.as_str());
    Ok(html(
        StatusCode::OK,
        pages::imported(&result, named, &lists, signed.zone),
    ))
}

async fn account(signed: Signed, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    let tenant = tenants::find(&state.pool, signed.tenant)
        .await
        .map_err(PageError::unexpected)?
        .ok_or(PageError::NotFound)?;
    let keys = api_keys::list(&state.pool, signed.tenant)
        .await
        .map_err(PageError::unexpected)?;
    let view = pages::AccountView {
        tenant: &tenant,
        keys: &keys,
    };
    Ok(html(
        StatusCode::OK,
        pages::account(&signed.viewer(), &view),
    ))
}

async fn keys_fragment(
    state: &AppState,
    signed: &Signed,
    issued: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let keys = api_keys::list(&state.pool, signed.tenant)
        .await
        .map_err(PageError::unexpected)?;
    Ok(html(
        StatusCode::OK,
        pages::keys(&keys, issued, signed.zone),
    ))
}

/// Issues a key; the answer shows its token, this once.
async fn issue_key(
    signed: Signed,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let label = super::form_field(&body, "label").trim().to_owned();
    crate::http::input::reject_nul("label", &label)?;
    if label.chars().count() > 100 {
        return Err(bad("A label is at most 100 characters."));
    }
    let (_, token) = api_keys::issue(&state.pool, signed.tenant, &label)
        .await
        .map_err(PageError::unexpected)?;
    keys_fragment(&state, &signed, Some(token.reveal())).await
}

/// Revokes one of the tenant's keys; every instance stops accepting its token. A key revoked
/// already (say, from another tab) just shows the list as it is.
async fn revoke_key(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    if let Ok(id) = path.parse::<i64>() {
        api_keys::revoke_own(&state.pool, signed.tenant, api_keys::ApiKeyId(id))
            .await
            .map_err(PageError::unexpected)?;
    }
    keys_fragment(&state, &signed, None).await
}
