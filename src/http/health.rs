//! `GET /healthz` (the process is up), `GET /readyz` (the database and the broker answer and
//! the consumer is alive) and `GET /metrics` (Prometheus text format; operational figures
//! only, no tenant's data).

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;
use crate::kafka::consumer::ConsumerState;

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

/// `readyz`: the database and the broker answer, and the consumer is alive.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    /// `ready`
    status: &'static str,
    /// `ok`
    database: &'static str,
    /// `ok`
    broker: &'static str,
    /// `consuming`, or `held back` while back-pressure (the database behind) holds it
    consumer: &'static str,
}

/// How long readiness waits for the database and for the broker.
const PROBE_WITHIN: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "`UNAVAILABLE`: the message names what is not ready (database, broker, consumer)", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (database, broker) = futures::join!(
        database(&state),
        state.events.producer.reachable(PROBE_WITHIN)
    );
    let consumer = match state.events.consumer.state() {
        ConsumerState::Consuming => Ok("consuming"),
        ConsumerState::HeldBack => Ok("held back"),
        ConsumerState::Stalled(quiet) => Err(format!(
            "consumer has taken no turn for {} s",
            quiet.as_secs()
        )),
    };
    let problems: Vec<String> = [
        database.as_ref().err().map(|e| format!("database: {e}")),
        broker.as_ref().err().map(|e| format!("broker: {e}")),
        consumer.as_ref().err().cloned(),
    ]
    .into_iter()
    .flatten()
    .collect();
    match consumer {
        Ok(consumer) if problems.is_empty() => Ok(HttpResponse::Ok().json(Ready {
            status: "ready",
            database: "ok",
            broker: "ok",
            consumer,
        })),
        _ => Err(ApiError::Unavailable(format!(
            "not ready: {}",
            problems.join("; ")
        ))),
    }
}

async fn database(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_WITHIN, crate::store::ping(&state.pool)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {} s", PROBE_WITHIN.as_secs())),
    }
}
