//! `POST /webhooks/mitto/dlr`: delivery reports from Mitto into `message-events`.
//!
//! Order of work: cap the body, verify the signature over the raw bytes, parse, record the
//! receipt (replays refused), produce one `dlr` event per report, and answer 202 only after
//! the broker acknowledged them — so a 202 means nothing can be lost. The receipt commits only
//! after that acknowledgement, so a request that failed may be retried.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::error::error_response;
use super::AppState;
use crate::mitto::reports::{parse_reports, ReportError};
use crate::mitto::signature::{Presented, SignatureError, SIGNATURE_HEADER, TIMESTAMP_HEADER};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/mitto/dlr", web::post().to(receive_dlr));
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed: {0}")]
    Body(String),
    #[error("{0}")]
    Unauthorized(#[from] SignatureError),
    #[error("{0}")]
    BadReport(#[from] ReportError),
    #[error("this request was already received")]
    Replayed,
    #[error("reports could not be stored, retry later: {0}")]
    Unavailable(String),
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::BadReport(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Replayed => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::Body(_) => "BAD_REQUEST",
            Self::Unauthorized(_) => "INVALID_SIGNATURE",
            Self::BadReport(_) => "INVALID_REPORT",
            Self::Replayed => "REPLAYED",
            Self::Unavailable(e) => {
                tracing::error!(error = %e, "webhook reports not stored");
                "UNAVAILABLE"
            }
        };
        error_response(self.status_code(), code, self.to_string())
    }
}

/// Reads the body up to `limit` bytes, refusing larger ones without reading them whole.
async fn read_capped(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, WebhookError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| WebhookError::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tracing::instrument(skip_all)]
async fn receive_dlr(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let webhook = &state.settings.webhook;
    if req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > webhook.max_body_bytes)
    {
        return Err(WebhookError::TooLarge(webhook.max_body_bytes));
    }
    let body = read_capped(payload, webhook.max_body_bytes).await?;
    let presented = Presented {
        signature: header(&req, SIGNATURE_HEADER),
        timestamp: header(&req, TIMESTAMP_HEADER),
        token: header(&req, &webhook.token_header),
    };
    let now = chrono::Utc::now();
    state.verifier.verify(presented, &body, now.timestamp())?;
    let events = parse_reports(&body, now)?;
    // a signature covers body and timestamp, so it identifies the request; token-authenticated
    // requests are identified by their body
    let dedup_key = match presented.signature {
        Some(signature) => format!("sig:{}", signature.trim().to_ascii_lowercase()),
        None => format!("body:{}", hex::encode(Sha256::digest(&body))),
    };
    let unavailable = |e: &dyn std::fmt::Display| WebhookError::Unavailable(e.to_string());
    let mut tx = state.pool.begin().await.map_err(|e| unavailable(&e))?;
    if !crate::store::webhooks::record_receipt(&mut tx, &dedup_key)
        .await
        .map_err(|e| unavailable(&e))?
    {
        return Err(WebhookError::Replayed);
    }
    state
        .events
        .producer
        .send(&events)
        .await
        .map_err(|e| unavailable(&e))?;
    tx.commit().await.map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "accepted": events.len() })))
}
