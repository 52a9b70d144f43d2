//! Bearer-token authentication: every `/api` handler takes an [`Authenticated`] argument.
//!
//! Verified keys are answered from memory ([`super::keys::KeyCache`]), so a request with a known token
//! touches no database; revocations reach every instance through Postgres notifications.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::domain::{ApiToken, TenantId};
use crate::store::api_keys;

/// The tenant a request acts for. Existing only after the token matched an active key.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub tenant: TenantId,
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token?;
            let state =
                state.ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("AppState missing")))?;
            let lookup = || api_keys::authenticate(&state.pool, &token);
            let tenant = state
                .keys
                .tenant(token.sha256(), lookup)
                .await
                .map_err(|e| ApiError::Unexpected(e.into()))?;
            tenant
                .map(|tenant| Self { tenant })
                .ok_or_else(|| ApiError::Unauthorized("the token is unknown or revoked".into()))
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Result<ApiToken, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(ApiToken::presented(token.trim()))
}
