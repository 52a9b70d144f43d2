//! The actix-web service. One module per resource; errors are JSON
//! `{"error":{"code":"…","message":"…"}}` everywhere, including unknown routes and bad JSON.
//! Every request passes [`input::reject_nul_in_request`] before any route sees it.

pub mod auth;
pub mod campaigns;
pub mod contacts;
pub mod dashboard;
pub mod error;
pub mod forward;
pub mod health;
pub mod inbound;
pub mod input;
pub mod keys;
pub mod links;
pub mod live;
pub mod me;
pub mod observe;
pub mod openapi;
pub mod refresh;
pub mod reports;
pub mod stats;
pub mod webhooks;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use sqlx::PgPool;

use crate::config::Settings;
use crate::mitto::signature::Verifier;
use crate::pipeline::EventHandles;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub events: EventHandles,
    pub verifier: Arc<Verifier>,
    /// Webhook requests already accepted, to refuse replays without asking Postgres.
    pub replays: webhooks::ReplayGuard,
    /// Verified API keys, so authentication needs no query.
    pub keys: keys::KeyCache,
    /// The traffic account of campaigns created without one (none: they must name one).
    pub default_traffic_account: Option<crate::domain::TrafficAccountId>,
    /// Statuses fetched from Mitto: the refresh API, and each campaign's last refresh time.
    pub reconciler: crate::reconcile::Reconciler,
    /// Recipients' link routes: form tokens and the per-address limit.
    pub link_guard: Arc<links::LinkGuard>,
    /// Inbound texts that opt a phone out.
    pub stop_keywords: Arc<crate::domain::StopKeywords>,
    /// Set when the service begins to stop: long-lived responses (live streams) end, so
    /// that the graceful stop does not wait for them.
    pub stopping: Stopping,
}

pub use crate::stopping::Stopping;

/// Builds the server on an already bound listener (port 0 in tests).
pub fn server(state: AppState, listener: TcpListener) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(forward::to_owner))
            .wrap(middleware::from_fn(input::reject_nul_in_request))
            .wrap(middleware::from_fn(observe::observe))
            .app_data(data.clone())
            .app_data(error::json_config())
            .app_data(error::query_config())
            .app_data(error::path_config())
            .configure(health::routes)
            .configure(webhooks::routes)
            .configure(inbound::routes)
            .configure(links::public_routes)
            .configure(openapi::routes)
            .configure(dashboard::routes)
            .service(
                web::scope("/api")
                    .configure(me::routes)
                    // before campaigns: /v1/campaigns/stats is not a campaign id
                    .configure(stats::routes)
                    .configure(live::routes)
                    .configure(reports::routes)
                    .configure(campaigns::routes)
                    .configure(contacts::routes)
                    .configure(refresh::routes)
                    .configure(links::api_routes),
            )
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such route".into()))
            }))
    })
    // the application owns shutdown: HTTP stops first, then the pipeline checkpoints
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
