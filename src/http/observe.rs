//! What every request passes through first: its request id (taken from `X-Request-Id` when the
//! caller sent a usable one, else a new ULID), a tracing span carrying it, one log line when it
//! ends, its metrics (by route pattern, never by raw path, so ids do not multiply series), the
//! `X-Request-Id` response header, and the id inside JSON error bodies
//! (`{"error":{…,"requestId":"…"}}`), so a report from a client names the log line.

use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller.
const MAX_ID_LEN: usize = 128;
/// Error bodies larger than this are passed on as they are.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The request's id, in its extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller's id is kept if it is 1 to 128 visible ASCII characters; anything else is
/// replaced (never refused: an id must not make a request fail).
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=MAX_ID_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned)
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let span = tracing::info_span!("http", request_id = %id, %method, %path);
    // handlers' and middlewares' errors arrive as responses; an `Err` is the framework's own
    let response = next
        .call(req)
        .instrument(span.clone())
        .await?
        .map_into_boxed_body();
    let status = response.status();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let took = started.elapsed();
    crate::metrics::http_request(method.as_str(), &route, status.as_u16(), took);
    if let Some(webhook) = route.strip_prefix("/webhooks/mitto/") {
        crate::metrics::webhook(webhook_name(webhook), webhook_outcome(status.as_u16()));
    }
    // one line per request only where it helps: server errors always, the rest at debug (a
    // provider posting thousands of reports a second must not become thousands of lines)
    span.in_scope(|| {
        let (code, ms) = (status.as_u16(), took.as_millis() as u64);
        if status.is_server_error() {
            tracing::warn!(status = code, %route, ms, "request failed");
        } else {
            tracing::debug!(status = code, %route, ms, "request");
        }
    });
    Ok(with_request_id(response, &id).await)
}

fn webhook_name(route: &str) -> &'static str {
    match route {
        "dlr" => "dlr",
        "inbound" => "inbound",
        _ => "other",
    }
}

fn webhook_outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "accepted",
        401 => "unauthorized",
        409 => "replay",
        413 => "too_large",
        400..=499 => "bad_request",
        503 => "unavailable",
        _ => "error",
    }
}

/// Adds the id to the response headers and, for a JSON error body, inside its `error` object.
async fn with_request_id(response: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let header = HeaderValue::from_str(id).ok();
    let is_json_error = response.status().as_u16() >= 400
        && response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
        && matches!(response.response().body().size(), BodySize::Sized(n) if n <= MAX_ERROR_BODY);
    let mut response = if is_json_error {
        let (req, res) = response.into_parts();
        let (mut head, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
        let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut value) => {
                if let Some(error) = value.get_mut("error").and_then(|e| e.as_object_mut()) {
                    error.insert("requestId".into(), id.into());
                }
                serde_json::to_vec(&value).map_or(bytes, Into::into)
            }
            Err(_) => bytes,
        };
        head.headers_mut().remove(CONTENT_LENGTH);
        ServiceResponse::new(req, head.set_body(BoxBody::new(bytes)))
    } else {
        response
    };
    if let Some(header) = header {
        response.headers_mut().insert(REQUEST_ID, header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_usable_caller_id_is_kept_and_anything_else_replaced() {
        let with = |v: &str| {
            request_id(
                &TestRequest::default()
                    .insert_header((REQUEST_ID, v))
                    .to_srv_request(),
            )
        };
        assert_eq!(with("abc-123"), "abc-123");
        assert_eq!(with(&"x".repeat(128)), "x".repeat(128));
        assert_eq!(with(&"x".repeat(129)).len(), 26);
        assert_eq!(with("two words").len(), 26);
        assert_eq!(
            request_id(&TestRequest::default().to_srv_request()).len(),
            26
        );
    }
}
