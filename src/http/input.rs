//! Checks every route applies to what arrives from outside, before it can reach Postgres.
//!
//! Postgres refuses NUL (U+0000) in `text` and `jsonb`, so a NUL that got through would be a
//! 500 far from its cause. Each check here answers 400 naming the field instead.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::error::ApiError;

/// 400 when `value` contains a NUL byte, naming `field`. For every text field of a JSON body.
pub fn reject_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(nul_in(field));
    }
    Ok(())
}

/// [`reject_nul`] for a JSON value: every object key and string inside it, at any depth.
/// The error names the path (`attributes.city`, `tags[2]`).
pub fn reject_nul_in_json(field: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(s) => reject_nul(field, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| reject_nul_in_json(&format!("{field}[{i}]"), item)),
        Value::Object(map) => reject_nul_in_object(field, map),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// [`reject_nul_in_json`] for a JSON object held as a map.
pub fn reject_nul_in_object(field: &str, map: &Map<String, Value>) -> Result<(), ApiError> {
    map.iter().try_for_each(|(key, item)| {
        reject_nul(&format!("a key of {field}"), key)?;
        reject_nul_in_json(&format!("{field}.{key}"), item)
    })
}

fn nul_in(field: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{field} contains a NUL byte, which text may not hold"
    ))
}

/// Middleware: 400 for a request whose query string holds a NUL byte in any parameter (name
/// or decoded value) or whose path holds an encoded one, before any route sees it.
pub async fn reject_nul_in_request<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let mut refused = check_query(req.query_string()).err();
    // the raw path: a `%00` in it decodes to NUL in any path parameter
    if req.path().to_ascii_lowercase().contains("%00") {
        refused = Some(nul_in("the path"));
    }
    // answered here rather than as an `Err`, so the outer middleware sees a response
    match refused {
        Some(e) => Ok(req.error_response(e).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// Decodes the query string the way `web::Query` does and checks every name and value.
fn check_query(query: &str) -> Result<(), ApiError> {
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        reject_nul("a query parameter name", &name)?;
        reject_nul(&format!("query parameter {name:?}"), &value)?;
    }
    Ok(())
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed: {0}")]
    Read(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => Self::PayloadTooLarge(e.to_string()),
            BodyError::Read(_) => Self::BadRequest(e.to_string()),
        }
    }
}

/// Reads a body of at most `limit` bytes. A declared `Content-Length` above it is refused
/// before anything is read, and a body without one (chunked) is refused as soon as it
/// grows past the limit, so an oversize body is never held whole.
pub async fn read_capped(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, BodyError> {
    if declared_length(req).is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The body length a request declares (`Content-Length`), if any.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(result: Result<(), ApiError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn text_with_a_nul_is_refused_naming_the_field() {
        assert!(reject_nul("name", "Spring sale").is_ok());
        let refused = message(reject_nul("name", "Spring\0sale"));
        assert!(refused.starts_with("name contains a NUL byte"), "{refused}");
    }

    #[test]
    fn json_is_checked_at_every_depth_and_in_keys() {
        assert!(reject_nul_in_json("attributes", &json!({"city": "Athens", "n": 1})).is_ok());
        let deep = json!({"tags": ["ok", "b\u{0}d"]});
        assert!(message(reject_nul_in_json("attributes", &deep)).starts_with("attributes.tags[1]"));
        let key = json!({"ci\u{0}ty": "Athens"});
        assert!(message(reject_nul_in_json("attributes", &key)).starts_with("a key of attributes"));
    }

    #[test]
    fn query_strings_are_checked_decoded() {
        assert!(check_query("search=spring&page=1").is_ok());
        assert!(
            check_query("search=%2500").is_ok(),
            "an encoded percent sign is no NUL"
        );
        let refused = message(check_query("page=1&search=a%00b"));
        assert!(
            refused.starts_with("query parameter \"search\""),
            "{refused}"
        );
        assert!(check_query("se%00arch=1").is_err());
    }
}
