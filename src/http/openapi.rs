//! The OpenAPI 3.1 document of every route (`GET /api/openapi.json`) and Swagger UI (`/docs/`).
//!
//! Each operation is described by a `#[utoipa::path]` above its own handler, next to the code
//! it describes; this module lists them once and adds what every operation shares: the bearer
//! scheme, the error body, and the 400/401/413 answers of authenticated routes, query strings
//! and bodies. Routes are registered with `cfg.route` (the order matters: `/v1/campaigns/stats`
//! before `/v1/campaigns/{id}`), so the paths are written out here rather than taken from
//! actix's route macros.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::webhooks;
use super::{campaigns, contacts, health, inbound, links, live, me, refresh, reports, stats};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "campaignd",
        description = "SMS campaigns sent through Mitto, with live, exact figures. Every `/api` \
                       route needs `Authorization: Bearer <token>` and sees only its tenant's \
                       data: another tenant's campaign is a 404. Errors are \
                       `{\"error\":{\"code\",\"message\",\"requestId\"}}`; every response \
                       carries `X-Request-Id`."
    ),
    paths(
        health::healthz, health::readyz, health::metrics,
        stats::many, stats::one, stats::status,
        live::stream,
        reports::series, reports::breakdown, reports::recipients, reports::recipients_csv,
        reports::report_csv,
        campaigns::create, campaigns::preview_unsaved, campaigns::list, campaigns::get,
        campaigns::update, campaigns::delete, campaigns::enqueue, campaigns::schedule,
        campaigns::unschedule, campaigns::pause, campaigns::resume, campaigns::cancel,
        campaigns::retry_failed, campaigns::preview_saved, campaigns::seed_enqueue,
        contacts::create, contacts::import, contacts::create_list, contacts::get_list,
        contacts::add_members, contacts::remove_members,
        me::me, me::rules, me::set_rules,
        refresh::refresh_one, refresh::refresh_bulk, refresh::job,
        links::redeem_by_shop, links::offer, links::self_redeem, links::opt_out_page,
        links::unsubscribe, links::resubscribe,
        webhooks::receive_dlr, inbound::receive_inbound,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&Shared),
    security(("bearer" = [])),
    tags(
        (name = "campaigns", description = "Definition and lifecycle"),
        (name = "stats", description = "Figures from the campaign's actor, live"),
        (name = "reports", description = "Time series, breakdowns, recipients, CSV exports"),
        (name = "contacts", description = "Contacts and lists"),
        (name = "account", description = "The tenant"),
        (name = "refresh", description = "Statuses fetched from Mitto"),
        (name = "links", description = "Offer and unsubscribe links of recipients"),
        (name = "webhooks", description = "Mitto's callbacks: signed, not bearer"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The error every route answers with (`error.rs` and the resource modules build it; the
/// request middleware adds `requestId`). Documentation only: the code paths that write it
/// keep their own types.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The fields after `message` appear with the codes that carry them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The request's `X-Request-Id`, to find its log lines.
    pub request_id: String,
    /// `INVALID_STATE`: the campaign's current status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::domain::CampaignStatus>,
    /// `INSUFFICIENT_CREDITS`: credits the enqueue needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<i64>,
    /// `INSUFFICIENT_CREDITS`: the tenant's balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// `TEXT_TOO_LONG`: the first recipient whose text is too long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// `TEXT_TOO_LONG`: that text's parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    /// `TEXT_TOO_LONG`: the most parts a text may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_segments: Option<u32>,
    /// `ALREADY_REDEEMED`: when the code was redeemed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every error code a route may answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    BadRequest,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    Internal,
    InvalidState,
    SubscriptionRequired,
    InsufficientCredits,
    NoRecipients,
    IdempotencyKeyReused,
    TextTooLong,
    RefreshInProgress,
    ProviderUnavailable,
    ProviderError,
    ProviderTimeout,
    BrokerUnavailable,
    NotAppliedYet,
    AlreadyRedeemed,
    OfferExpired,
    NoOffer,
    InvalidSignature,
    InvalidReport,
    InvalidMessage,
    Replayed,
}

/// What every operation shares, added once instead of on every handler.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `campaignd tenant issue-key`"))
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ];
            for operation in operations.into_iter().flatten() {
                shared_answers(operation);
            }
        }
    }
}

/// 401 where a token is needed, 400 where a query or body can be wrong, 413 for bodies.
fn shared_answers(operation: &mut Operation) {
    // an operation without its own `security` uses the document's bearer token
    let bearer = operation.security.is_none();
    let has_query = operation.parameters.iter().flatten().any(|p| {
        matches!(
            p.parameter_in,
            utoipa::openapi::path::ParameterIn::Query | utoipa::openapi::path::ParameterIn::Header
        )
    });
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    if bearer {
        add("401", "No valid bearer token");
    }
    if has_query || has_body {
        add("400", "A parameter or the body is not valid");
    }
    if has_body {
        add("413", "The body is larger than allowed");
    }
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The document at `/api/openapi.json` and Swagger UI at `/docs/` (assets compiled in).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((actix_web::http::header::LOCATION, "/docs/"))
                .finish()
        }),
    )
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/api/openapi.json", ApiDoc::openapi()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_error_body() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let stats = &doc["paths"]["/api/v1/campaigns/{id}/stats"]["get"];
        assert_eq!(
            stats["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let dlr = &doc["paths"]["/webhooks/mitto/dlr"]["post"];
        assert_eq!(dlr["security"], serde_json::json!([{}]));
        assert!(dlr["responses"].get("401").is_some(), "the signature's 401");
    }
}
