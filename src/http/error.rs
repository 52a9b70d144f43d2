//! The JSON error body shared by every route, and the extractor configs that use it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde::Serialize;

/// Errors any route may answer. Resource modules add their own types for their own codes;
/// this one covers the cross-cutting cases.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    /// Also what another tenant's resource looks like: its existence is never confirmed.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged with its cause chain; the client sees a generic message.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Unexpected(e.into())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

/// The `{"error":{"code","message"}}` response every error uses.
pub fn error_response(status: StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(Body {
        error: Detail { code, message },
    })
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Conflict(_) => "CONFLICT",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Unexpected(_) => "INTERNAL",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Unexpected(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "request failed unexpectedly");
        }
        let mut response = error_response(self.status_code(), self.code(), self.to_string());
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Largest JSON body a route accepts unless it says otherwise.
pub const MAX_JSON_BODY: usize = 1 << 20;

pub fn json_config() -> web::JsonConfig {
    json_config_up_to(MAX_JSON_BODY)
}

/// The JSON extractor's settings with a body limit of `limit` bytes: a larger body is a 413
/// in the JSON error shape, naming the limit.
pub fn json_config_up_to(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| {
            let api = match &err {
                actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                | actix_web::error::JsonPayloadError::Overflow { .. } => {
                    ApiError::PayloadTooLarge(err.to_string())
                }
                _ => ApiError::BadRequest(format!("invalid JSON body: {err}")),
            };
            api.into()
        })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid query: {err}")).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _| ApiError::NotFound(format!("invalid path: {err}")).into())
}
