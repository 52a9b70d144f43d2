//! `GET /healthz` (the process is up), `GET /readyz` (the database answers) and `GET /metrics`
//! (Prometheus text format; operational figures only, no tenant's data).

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text exposition format (see the README's table)",
        body = String, content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let registry = &state.events.registry;
    crate::metrics::campaign_actors(registry.active());
    crate::metrics::stream_subscribers(registry.watchers().1);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

/// `healthz`: the process answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `ok`
    status: &'static str,
}

/// `readyz`: the database answers too.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    /// `ready`
    status: &'static str,
    /// `ok`
    database: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "The database does not answer", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ping = tokio::time::timeout(Duration::from_secs(2), crate::store::ping(&state.pool)).await;
    match ping {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Ready {
            status: "ready",
            database: "ok",
        })),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!("database unreachable: {e}"))),
        Err(_) => Err(ApiError::Unavailable(
            "database did not answer within 2 s".into(),
        )),
    }
}
