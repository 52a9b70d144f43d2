//! Campaign figures, served from the campaign actors' memory (DESIGN.md sections 3 and 6).
//! Another tenant's campaign is a 404, exactly like a campaign that does not exist.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Authenticated;
use super::error::ApiError;
use super::AppState;
use crate::domain::CampaignId;
use crate::engine::campaign::Stats;

/// At most this many campaigns per batch stats request.
pub const MAX_IDS: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/campaigns/stats", web::get().to(many))
        .route("/v1/campaigns/{id}/stats", web::get().to(one))
        .route("/campaigns/{id}/status", web::get().to(status));
}

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("campaign {raw} not found")))
}

/// The tenant's own campaign's stats, or `None`.
async fn stats_for(state: &AppState, auth: Authenticated, id: CampaignId) -> Option<Stats> {
    match state.events.registry.stats(id).await {
        Some((tenant, stats)) if tenant == auth.tenant => Some(Stats {
            last_refresh_at: state.reconciler.last_refresh_at(id),
            ..stats
        }),
        _ => None,
    }
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/stats", tag = "stats",
    params(("id" = i64, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign's figures, from its actor's memory", body = Stats),
        (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn one(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(owned_stats(&state, auth, &path).await?))
}

/// The stats of the campaign in the path, or a 404 (missing, or another tenant's).
async fn owned_stats(
    state: &AppState,
    auth: Authenticated,
    raw_id: &str,
) -> Result<Stats, ApiError> {
    let id = campaign_id(raw_id)?;
    stats_for(state, auth, id)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id} not found")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Ids {
    /// Comma-separated campaign ids, at most 100.
    #[param(example = "1,2,3")]
    ids: String,
}

/// `?ids=1,2,3`: the stats of those the tenant owns, in the order asked; others are left out.
#[utoipa::path(get, path = "/api/v1/campaigns/stats", tag = "stats", params(Ids),
    responses((status = 200, description = "The figures of each campaign found", body = Vec<Stats>)))]
pub(super) async fn many(
    auth: Authenticated,
    query: web::Query<Ids>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ids: Vec<CampaignId> = query
        .ids
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| ApiError::BadRequest(format!("{s:?} is not a campaign id")))
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} ids per request"
        )));
    }
    // ownership first, in one query: foreign and unknown ids never activate anything
    let owned = crate::store::campaigns::owned(&state.pool, auth.tenant, &ids).await?;
    let asked = ids.iter().filter(|id| owned.contains(id));
    let found = futures::future::join_all(asked.map(|id| stats_for(&state, auth, *id))).await;
    Ok(HttpResponse::Ok().json(found.into_iter().flatten().collect::<Vec<_>>()))
}

/// The replaced system's status shape: campaign, totals and a per-status breakdown.
/// `GET /api/campaigns/{id}/status`, the replaced system's shape.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusView {
    campaign: CampaignSummary,
    total: i64,
    sent: i64,
    failed: i64,
    /// Recipients no longer queued or being sent.
    processed: i64,
    breakdown: StatusBreakdown,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CampaignSummary {
    id: CampaignId,
    status: crate::domain::CampaignStatus,
    first_sent_at: Option<chrono::DateTime<chrono::Utc>>,
    last_event_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusBreakdown {
    queued: i64,
    processing: i64,
    /// Accepted by Mitto, no final report yet.
    sent: i64,
    delivered: i64,
    failed: i64,
    send_failed: i64,
    delivery_failed: i64,
    cancelled: i64,
    unknown: i64,
}

impl From<&Stats> for StatusView {
    fn from(s: &Stats) -> Self {
        Self {
            campaign: CampaignSummary {
                id: s.campaign_id,
                status: s.status,
                first_sent_at: s.first_sent_at,
                last_event_at: s.last_event_at,
            },
            total: s.total,
            sent: s.sent,
            failed: s.failed,
            processed: s.total - s.queued - s.processing,
            breakdown: StatusBreakdown {
                queued: s.queued,
                processing: s.processing,
                sent: s.pending,
                delivered: s.delivered,
                failed: s.failed,
                send_failed: s.send_failed,
                delivery_failed: s.delivery_failed,
                cancelled: s.cancelled,
                unknown: s.unknown,
            },
        }
    }
}

#[utoipa::path(get, path = "/api/campaigns/{id}/status", tag = "stats",
    params(("id" = i64, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Status and counters in the replaced system's shape", body = StatusView),
        (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn status(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let s = owned_stats(&state, auth, &path).await?;
    Ok(HttpResponse::Ok().json(StatusView::from(&s)))
}
