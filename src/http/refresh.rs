//! The refresh API of the replaced system (DESIGN.md section 6): statuses fetched from Mitto
//! on demand, for one message or every waiting message of a campaign or bulk, applied like
//! any report. Tenant-scoped: another tenant's message, campaign or job is a 404.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde::Deserialize;

use super::auth::Authenticated;
use super::error::{error_response, ApiError};
use super::AppState;
use crate::domain::{CampaignId, MessageId};
use crate::mitto::client::MittoError;
use crate::reconcile::{BulkStart, BulkTarget, RefreshError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mitto/refresh-status", web::post().to(refresh_one))
        .route("/mitto/refresh-status-bulk", web::post().to(refresh_bulk))
        .route("/mitto/refresh-jobs/{id}", web::get().to(job));
}

/// The refresh API's errors: codes a client can act on.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct RefreshApiError(RefreshError);

impl From<RefreshError> for RefreshApiError {
    fn from(e: RefreshError) -> Self {
        Self(e)
    }
}

impl RefreshApiError {
    fn code(&self) -> &'static str {
        match &self.0 {
            RefreshError::NotFound(_) => "NOT_FOUND",
            RefreshError::Running { .. } => "REFRESH_IN_PROGRESS",
            RefreshError::Provider(MittoError::Unavailable { .. }) => "PROVIDER_UNAVAILABLE",
            RefreshError::Provider(_) => "PROVIDER_ERROR",
            RefreshError::ProviderTimeout(_) => "PROVIDER_TIMEOUT",
            RefreshError::Internal(_) => "INTERNAL",
            RefreshError::Broker(_) => "BROKER_UNAVAILABLE",
            RefreshError::NotApplied(_) => "NOT_APPLIED_YET",
            RefreshError::Behind(_) => "UNAVAILABLE",
            RefreshError::Store(_) => "INTERNAL",
        }
    }
}

impl ResponseError for RefreshApiError {
    fn status_code(&self) -> StatusCode {
        match &self.0 {
            RefreshError::NotFound(_) => StatusCode::NOT_FOUND,
            RefreshError::Running { .. } => StatusCode::CONFLICT,
            RefreshError::Provider(MittoError::Unavailable { .. })
            | RefreshError::Broker(_)
            | RefreshError::Behind(_) => StatusCode::SERVICE_UNAVAILABLE,
            RefreshError::Provider(_) => StatusCode::BAD_GATEWAY,
            RefreshError::NotApplied(_) | RefreshError::ProviderTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            RefreshError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RefreshError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match &self.0 {
            RefreshError::Store(_) | RefreshError::Internal(_) => {
                tracing::error!(error = %self.0, "refresh failed unexpectedly");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        error_response(self.status_code(), self.code(), message)
    }
}

/// One message to ask Mitto about.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct OneRequest {
    /// Mitto's messageId.
    #[schema(pattern = "^[!-~]{1,64}$", example = "01KC69MT19BRK5MSXG1V95YPHX")]
    provider_message_id: String,
}

#[utoipa::path(post, path = "/api/mitto/refresh-status", tag = "refresh", request_body = OneRequest,
    responses((status = 200, description = "The message's status after asking Mitto", body = crate::reconcile::Refreshed),
        (status = 404, description = "No such message of this tenant", body = super::openapi::ErrorBody),
        (status = 502, description = "`PROVIDER_ERROR`", body = super::openapi::ErrorBody),
        (status = 503, description = "`PROVIDER_UNAVAILABLE`, `BROKER_UNAVAILABLE` or `UNAVAILABLE` (catching up after a start)", body = super::openapi::ErrorBody),
        (status = 504, description = "`PROVIDER_TIMEOUT` or `NOT_APPLIED_YET`", body = super::openapi::ErrorBody)))]
pub(super) async fn refresh_one(
    auth: Authenticated,
    body: web::Json<OneRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let raw = body.provider_message_id.trim();
    MessageId::parse(raw).map_err(|_| {
        ApiError::BadRequest(
            "providerMessageId must be 1 to 64 visible ASCII characters (Mitto's messageId)".into(),
        )
    })?;
    let refreshed = state
        .reconciler
        .refresh_one(auth.tenant, raw)
        .await
        .map_err(RefreshApiError)?;
    Ok(HttpResponse::Ok().json(refreshed))
}

/// `{"campaignId": N}` or `{"bulkId": "…"}`, exactly one.
/// Exactly one of the two.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BulkRequest {
    /// A campaign id, as a number or a numeric string.
    #[schema(value_type = Option<i64>)]
    campaign_id: Option<serde_json::Value>,
    /// Mitto's bulk id (a UUID).
    bulk_id: Option<String>,
}

/// A refresh too large to answer at once: it runs on; follow it at `refresh-jobs/{jobId}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Started {
    job_id: uuid::Uuid,
    total: u64,
}

impl BulkRequest {
    fn target(&self) -> Result<BulkTarget, ApiError> {
        let bad = |m: &str| ApiError::BadRequest(m.to_owned());
        match (&self.campaign_id, &self.bulk_id) {
            (Some(id), None) => {
                // the replaced system's clients send the id as a number or a numeric string
                let raw = match id {
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                        s.clone()
                    }
                    _ => String::new(),
                };
                raw.parse::<CampaignId>()
                    .map(BulkTarget::Campaign)
                    .map_err(|_| bad("campaignId must be a positive campaign id"))
            }
            (None, Some(bulk)) => uuid::Uuid::parse_str(bulk.trim())
                .map(BulkTarget::Bulk)
                .map_err(|_| bad("bulkId must be Mitto's bulk id (a UUID)")),
            _ => Err(bad("give exactly one of campaignId and bulkId")),
        }
    }
}

#[utoipa::path(post, path = "/api/mitto/refresh-status-bulk", tag = "refresh", request_body = BulkRequest,
    responses((status = 200, description = "Every waiting message refreshed: `{total, updated, failed, results}`", body = crate::reconcile::BulkReport),
        (status = 202, description = "Running in the background", body = Started),
        (status = 404, description = "No such campaign or bulk of this tenant", body = super::openapi::ErrorBody),
        (status = 409, description = "`REFRESH_IN_PROGRESS` for this campaign", body = super::openapi::ErrorBody),
        (status = 502, description = "`PROVIDER_ERROR`", body = super::openapi::ErrorBody),
        (status = 503, description = "`PROVIDER_UNAVAILABLE`, `BROKER_UNAVAILABLE` or `UNAVAILABLE` (catching up after a start)", body = super::openapi::ErrorBody),
        (status = 504, description = "`PROVIDER_TIMEOUT` or `NOT_APPLIED_YET`", body = super::openapi::ErrorBody)))]
pub(super) async fn refresh_bulk(
    auth: Authenticated,
    body: web::Json<BulkRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let target = body.target()?;
    let started = state
        .reconciler
        .refresh_bulk(auth.tenant, target)
        .await
        .map_err(RefreshApiError)?;
    Ok(match started {
        BulkStart::Done(report) => HttpResponse::Ok().json(report),
        BulkStart::Started { job_id, total } => {
            HttpResponse::Accepted().json(Started { job_id, total })
        }
    })
}

#[utoipa::path(get, path = "/api/mitto/refresh-jobs/{id}", tag = "refresh",
    params(("id" = uuid::Uuid, Path, description = "The job id a 202 answered")),
    responses((status = 200, description = "The job's progress", body = crate::store::reconcile::Job),
        (status = 404, description = "No such job of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn job(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let not_found = || ApiError::NotFound(format!("refresh job {} not found", path.as_str()));
    let id = uuid::Uuid::parse_str(path.trim()).map_err(|_| not_found())?;
    let job = state
        .reconciler
        .job(auth.tenant, id)
        .await
        .map_err(RefreshApiError)?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(job))
}
