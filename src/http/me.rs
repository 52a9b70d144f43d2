//! `GET /api/v1/me`: the authenticated tenant's own record, and its marketing rules:
//! `GET|PUT /api/v1/me/marketing-rules` `{timeZone, quietHours: {start, end} | null,
//! marketingCap24h: n | null}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Authenticated;
use super::error::ApiError;
use super::AppState;
use crate::engine::quiet_hours::QuietHours;
use crate::store::tenants::{self, MarketingRules};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/me", web::get().to(me))
        .route("/v1/me/marketing-rules", web::get().to(rules))
        .route("/v1/me/marketing-rules", web::put().to(set_rules));
}

#[utoipa::path(get, path = "/api/v1/me", tag = "account",
    responses((status = 200, description = "The tenant of the token: subscription and credit balance", body = tenants::Tenant)))]
pub(super) async fn me(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenants::find(&state.pool, auth.tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant not found".into()))?;
    Ok(HttpResponse::Ok().json(tenant))
}

/// The rules as the API shows and takes them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RulesBody {
    /// IANA time zone the quiet hours are in.
    time_zone: String,
    /// `null`: no quiet hours.
    quiet_hours: Option<Window>,
    /// Marketing messages one contact may get in any 24 hours; `null`: no cap.
    marketing_cap_24h: Option<i32>,
}

/// A window may cross midnight (`21:00`–`09:00`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Window {
    /// `HH:MM`, local time.
    #[schema(example = "21:00")]
    start: String,
    #[schema(example = "09:00")]
    end: String,
}

impl From<MarketingRules> for RulesBody {
    fn from(r: MarketingRules) -> Self {
        Self {
            time_zone: r.time_zone,
            quiet_hours: r.quiet.map(|(start, end)| Window {
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
            }),
            marketing_cap_24h: r.cap_24h,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/me/marketing-rules", tag = "account",
    responses((status = 200, description = "The rules in force", body = RulesBody)))]
pub(super) async fn rules(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rules = tenants::marketing_rules(&state.pool, auth.tenant).await?;
    Ok(HttpResponse::Ok().json(RulesBody::from(rules)))
}

/// Replaces the rules (every field: an absent one means none); campaigns already sending
/// follow them from their next batch.
#[utoipa::path(put, path = "/api/v1/me/marketing-rules", tag = "account", request_body = RulesBody,
    responses((status = 200, description = "The rules now in force", body = RulesBody)))]
pub(super) async fn set_rules(
    auth: Authenticated,
    body: web::Json<RulesBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let bad = |e: String| ApiError::BadRequest(e);
    if body.time_zone.len() > 64 {
        return Err(bad("timeZone must be an IANA zone name".into()));
    }
    let (start, end) = body
        .quiet_hours
        .as_ref()
        .map_or(("00:00", "00:00"), |w| (w.start.as_str(), w.end.as_str()));
    // the zone is checked (and stored by its canonical name) even without quiet hours: it is
    // what the rules are read in, by this service and by Postgres at every claim
    let q = QuietHours::parse(&body.time_zone, start, end).map_err(|e| bad(e.to_string()))?;
    if body.quiet_hours.is_some() && q.start == q.end {
        return Err(bad(
            "quietHours start and end are equal: use null for no quiet hours".into(),
        ));
    }
    let quiet = body.quiet_hours.as_ref().map(|_| (q.start, q.end));
    if body.marketing_cap_24h.is_some_and(|n| n < 1) {
        return Err(bad(
            "marketingCap24h must be at least 1, or null for no cap".into(),
        ));
    }
    let rules = MarketingRules {
        time_zone: q.zone.name().to_owned(),
        quiet,
        cap_24h: body.marketing_cap_24h,
    };
    tenants::set_marketing_rules(&state.pool, auth.tenant, &rules).await?;
    Ok(HttpResponse::Ok().json(RulesBody::from(rules)))
}
