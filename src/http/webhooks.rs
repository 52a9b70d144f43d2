//! `POST /webhooks/mitto/dlr`: delivery reports from Mitto into `message-events`.
//!
//! Order of work: cap the body, verify the signature over the raw bytes, parse, refuse a
//! replay of a request already accepted, produce one `dlr` event per report, and answer 202
//! only after the broker acknowledged them — so a 202 means nothing can be lost. No Postgres
//! on this path: replays are recognised from memory ([`ReplayGuard`]), and a request is
//! remembered only after the acknowledgement, so a request that failed may be retried.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};

use super::error::error_response;
use super::input::{read_capped, BodyError};
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
    #[error("{0}")]
    BadInbound(String),
    #[error("this request was already received")]
    Replayed,
    #[error("reports could not be stored, retry later: {0}")]
    Unavailable(String),
}

impl From<BodyError> for WebhookError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => Self::TooLarge(limit),
            BodyError::Read(reason) => Self::Body(reason),
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::BadReport(_) | Self::BadInbound(_) => StatusCode::BAD_REQUEST,
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
            Self::BadInbound(_) => "INVALID_MESSAGE",
            Self::Replayed => "REPLAYED",
            Self::Unavailable(e) => {
                tracing::error!(error = %e, "webhook reports not stored");
                "UNAVAILABLE"
            }
        };
        error_response(self.status_code(), code, self.to_string())
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A webhook request's body, capped and verified (signature, timestamp or token), with the key
/// that names the request for replay refusal: what every webhook route does first.
pub(super) struct Verified {
    pub body: web::Bytes,
    pub key: [u8; 32],
    pub at: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn verified(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Verified, WebhookError> {
    let webhook = &state.settings.webhook;
    let body = read_capped(req, payload, webhook.max_body_bytes).await?;
    let presented = Presented {
        signature: header(req, SIGNATURE_HEADER),
        timestamp: header(req, TIMESTAMP_HEADER),
        token: header(req, &webhook.token_header),
    };
    let at = chrono::Utc::now();
    state.verifier.verify(presented, &body, at.timestamp())?;
    let key = dedup_key(presented, &body);
    Ok(Verified {
        body: body.freeze(),
        key,
        at,
    })
}

/// One delivery report as Mitto's status lookup writes it. Also accepted: the aliases
/// integrations use (`message_id`, `id`, `status`, `dlr_status`, `timestamp`, `description`,
/// …; see the README) and one object instead of an array.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // documentation: reports are read field by field, by alias
pub(super) struct DeliveryReport {
    message_id: String,
    /// Mitto's status, e.g. `Delivered`, `Undelivered`, `Expired`, `Sent`.
    delivery_status: String,
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
    error: Option<String>,
    /// The sender's id for the report, to drop duplicates.
    event_id: Option<String>,
}

/// How many reports the request carried, now on the event topic.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Accepted {
    accepted: usize,
}

/// The headers that authenticate a webhook: a signature (HMAC-SHA256, hex) over the raw
/// body, or over `"{timestamp}.{body}"` with the timestamp header, or the static token
/// header configured as `webhook.token_header` (default `X-Webhook-Token`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation: `verified` reads the headers
pub(super) struct WebhookHeaders {
    #[param(rename = "X-Webhook-Signature")]
    signature: Option<String>,
    /// Unix seconds; requests older than the tolerance (300 s) are refused.
    #[param(rename = "X-Webhook-Timestamp")]
    timestamp: Option<i64>,
    #[param(rename = "X-Webhook-Token")]
    token: Option<String>,
}

#[utoipa::path(post, path = "/webhooks/mitto/dlr", tag = "webhooks", security(()), params(WebhookHeaders),
    request_body(content = Vec<DeliveryReport>, description = "One report or an array (at most 1,000)"),
    responses((status = 202, description = "On the event topic (acknowledged by the broker)", body = Accepted),
        (status = 400, description = "`INVALID_REPORT` or `BAD_REQUEST`: nothing was stored", body = super::openapi::ErrorBody),
        (status = 401, description = "`INVALID_SIGNATURE`: nothing was stored", body = super::openapi::ErrorBody),
        (status = 409, description = "`REPLAYED`: this request was already received", body = super::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = super::openapi::ErrorBody),
        (status = 503, description = "The broker did not take the reports; retry", body = super::openapi::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub(super) async fn receive_dlr(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let Verified { body, key, at } = verified(&req, payload, &state).await?;
    let events = parse_reports(&body, at)?;
    let produce = state.events.producer.send_answering(&events);
    state.replays.accept_once(key, produce).await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        accepted: events.len(),
    }))
}

/// What identifies a request: a signature covers body and timestamp, so it names the request;
/// a token-authenticated request is named by its body.
fn dedup_key(presented: Presented<'_>, body: &[u8]) -> [u8; 32] {
    let mut key = Sha256::new();
    match presented.signature {
        Some(signature) => {
            key.update(b"sig:");
            key.update(signature.trim().to_ascii_lowercase().as_bytes());
        }
        None => {
            key.update(b"body:");
            key.update(body);
        }
    }
    key.finalize().into()
}

/// The requests this instance accepted, remembered for as long as a replay of them could
/// still pass the verifier, so replays are refused without a Postgres round trip.
///
/// Invariant: a request is remembered only once the broker acknowledged its reports (a request
/// that failed may be retried by the provider). Forgetting is always safe: a replay that slips
/// past (after a restart, at another instance, beyond `replay_cache_max_entries`) produces
/// reports the ledger already applied, and applying a report twice changes nothing.
#[derive(Clone)]
pub struct ReplayGuard {
    accepted: Cache<[u8; 32], ()>,
}

impl ReplayGuard {
    /// `tolerance` is the verifier's: a request accepted at `t` carries a timestamp within
    /// `t ± tolerance`, so a replay of it is fresh until `t + 2 × tolerance` at the latest.
    pub fn new(tolerance: Duration, max_entries: u64) -> Self {
        let window = (tolerance * 2).max(Duration::from_secs(1));
        let accepted = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(window)
            // the newest requests are the ones a provider retries: keep them over old ones
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self { accepted }
    }

    /// Runs `produce` for a request not accepted before, and remembers it once `produce`
    /// succeeded; a request already accepted is [`WebhookError::Replayed`].
    ///
    /// A duplicate that arrives while the first is still producing waits for it (moka
    /// coalesces concurrent inserts of one key) rather than being refused at once: a provider
    /// retries a request whose answer is slow, and abandons the first connection, so refusing
    /// the retry while the first attempt might still fail could lose the reports. Waiting,
    /// the retry gets 409 when the first succeeded and the same 503 when it failed (and is
    /// retried again), never a 409 for reports that are not on the broker.
    pub async fn accept_once(
        &self,
        key: [u8; 32],
        produce: impl std::future::Future<Output = Result<(), String>>,
    ) -> Result<(), WebhookError> {
        let entry = self
            .accepted
            .entry(key)
            .or_try_insert_with(produce)
            .await
            .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
        entry.is_fresh().then_some(()).ok_or(WebhookError::Replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn guard() -> ReplayGuard {
        ReplayGuard::new(Duration::from_secs(300), 1000)
    }

    #[tokio::test]
    async fn a_request_is_accepted_once_and_its_replay_refused() {
        let guard = guard();
        assert!(guard.accept_once([1; 32], async { Ok(()) }).await.is_ok());
        let replay = guard.accept_once([1; 32], async { Ok(()) }).await;
        assert!(matches!(replay, Err(WebhookError::Replayed)));
        assert!(guard.accept_once([2; 32], async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn a_request_that_failed_to_produce_may_be_retried() {
        let guard = guard();
        let failed = guard.accept_once([1; 32], async { Err("broker away".into()) });
        assert!(matches!(failed.await, Err(WebhookError::Unavailable(_))));
        assert!(guard.accept_once([1; 32], async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn a_duplicate_in_flight_waits_and_produces_nothing_itself() {
        let guard = guard();
        let produced = AtomicUsize::new(0);
        let produce = || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            produced.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let (first, second) = tokio::join!(
            guard.accept_once([7; 32], produce()),
            guard.accept_once([7; 32], produce())
        );
        assert_eq!(produced.load(Ordering::SeqCst), 1);
        let refused = [&first, &second]
            .iter()
            .filter(|r| matches!(r, Err(WebhookError::Replayed)))
            .count();
        assert_eq!((first.is_ok() || second.is_ok(), refused), (true, 1));
    }

    #[test]
    fn a_signature_names_the_request_whatever_its_case_and_a_token_request_its_body() {
        let signed = |sig| Presented {
            signature: Some(sig),
            ..Default::default()
        };
        assert_eq!(
            dedup_key(signed("AB12"), b"x"),
            dedup_key(signed("ab12 "), b"y")
        );
        let token = Presented {
            token: Some("t"),
            ..Default::default()
        };
        assert_ne!(dedup_key(token, b"x"), dedup_key(token, b"y"));
    }
}
