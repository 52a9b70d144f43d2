//! `GET /api/v1/me`: the authenticated tenant's own record.

use actix_web::{web, HttpResponse};

use super::auth::Authenticated;
use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/me", web::get().to(me));
}

async fn me(auth: Authenticated, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tenant = crate::store::tenants::find(&state.pool, auth.tenant)
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))?;
    Ok(HttpResponse::Ok().json(tenant))
}
