//! Campaigns: definition (create, read, list, edit, delete) and lifecycle (enqueue, schedule,
//! unschedule, pause, resume, cancel, retry-failed). Lifecycle commands run in the campaign's
//! actor, which owns its status; a refused transition is a 409 naming the current status.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::Authenticated;
use super::error::{self, error_response, ApiError};
use super::input::reject_nul;
use super::AppState;
use crate::actors::campaign::{Command, LifecycleReply};
use crate::domain::{CampaignId, CampaignStatus, MessageType, PhoneE164, TenantId};
use crate::mitto::wire::valid_sender;
use crate::store::campaigns::{self, CampaignRecord, Definition, Offer};
use crate::store::enqueue::{EnqueueOutcome, Enqueued, StartError};

/// Longest body accepted: ten concatenated GSM-7 parts.
pub const MAX_BODY_CHARS: usize = 1530;
/// Inline phones per campaign; larger audiences belong in a list.
pub const MAX_INLINE_PHONES: usize = 100_000;
/// Body limit of the routes that take a definition with its audience: room for
/// [`MAX_INLINE_PHONES`] phones of the longest E.164 form (`"+" + 15 digits`, quoted, with a
/// comma: 19 bytes) besides the rest of the definition.
pub const MAX_DEFINITION_BODY: usize = MAX_INLINE_PHONES * 19 + error::MAX_JSON_BODY;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let definitions = || error::json_config_up_to(MAX_DEFINITION_BODY);
    cfg.service(
        web::resource("/v1/campaigns")
            .app_data(definitions())
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/v1/campaigns/preview")
            .app_data(definitions())
            .route(web::post().to(preview_unsaved)),
    )
    .service(
        web::resource("/v1/campaigns/{id}")
            .app_data(definitions())
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .route("/v1/campaigns/{id}/enqueue", web::post().to(enqueue))
    .route("/v1/campaigns/{id}/preview", web::post().to(preview_saved))
    .route("/v1/campaigns/{id}/schedule", web::post().to(schedule))
    .route("/v1/campaigns/{id}/unschedule", web::post().to(unschedule))
    .route("/v1/campaigns/{id}/pause", web::post().to(pause))
    .route("/v1/campaigns/{id}/resume", web::post().to(resume))
    .route("/v1/campaigns/{id}/cancel", web::post().to(cancel))
    .route(
        "/v1/campaigns/{id}/retry-failed",
        web::post().to(retry_failed),
    )
    .route("/campaigns/{id}/enqueue", web::post().to(seed_enqueue));
}

/// Errors of campaign routes.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Start(#[from] StartError),
}

impl ResponseError for CampaignError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Api(e) => e.status_code(),
            Self::Start(e) => match e {
                StartError::NotFound => StatusCode::NOT_FOUND,
                StartError::Refused(_) => StatusCode::CONFLICT,
                StartError::SubscriptionRequired => StatusCode::FORBIDDEN,
                StartError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
                StartError::NoRecipients => StatusCode::BAD_REQUEST,
                StartError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
                StartError::TextTooLong { .. } => StatusCode::BAD_REQUEST,
                StartError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let e = match self {
            Self::Api(api) => return api.error_response(),
            Self::Start(e) => e,
        };
        let status = self.status_code();
        let (code, extra) = match e {
            StartError::NotFound => ("NOT_FOUND", json!({})),
            StartError::Refused(current) => ("INVALID_STATE", json!({ "status": current })),
            StartError::SubscriptionRequired => ("SUBSCRIPTION_REQUIRED", json!({})),
            StartError::InsufficientCredits {
                required,
                available,
            } => (
                "INSUFFICIENT_CREDITS",
                json!({ "required": required, "available": available }),
            ),
            StartError::NoRecipients => ("NO_RECIPIENTS", json!({})),
            StartError::KeyReused => ("IDEMPOTENCY_KEY_REUSED", json!({})),
            StartError::TextTooLong {
                recipient,
                too_long,
            } => (
                "TEXT_TOO_LONG",
                json!({ "recipient": recipient, "segments": too_long.parts, "maxSegments": too_long.max }),
            ),
            StartError::Store(cause) => {
                tracing::error!(error = %cause, "campaign command failed unexpectedly");
                return error_response(status, "INTERNAL", "internal error".into());
            }
        };
        let mut error = json!({ "code": code, "message": e.to_string() });
        if let (Value::Object(error), Value::Object(extra)) = (&mut error, extra) {
            error.extend(extra);
        }
        HttpResponse::build(status).json(json!({ "error": error }))
    }
}

fn unexpected(e: impl Into<anyhow::Error>) -> CampaignError {
    CampaignError::Api(ApiError::Unexpected(e.into()))
}

fn bad_request(message: impl Into<String>) -> CampaignError {
    CampaignError::Api(ApiError::BadRequest(message.into()))
}

fn campaign_id(raw: &str) -> Result<CampaignId, CampaignError> {
    raw.parse()
        .map_err(|_| CampaignError::Start(StartError::NotFound))
}

/// Who gets the campaign: the members of lists and phones given inline, de-duplicated.
#[derive(Debug, Deserialize, Default, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AudienceInput {
    #[serde(default)]
    pub(crate) list_id: Option<i64>,
    #[serde(default)]
    pub(crate) list_ids: Vec<i64>,
    #[serde(default)]
    pub(crate) phones: Vec<String>,
}

/// A campaign's definition. Create needs `name` and `body`; an edit changes the fields given.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CampaignInput {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, example = "Winter sale")]
    pub(crate) name: Option<String>,
    /// 1 to 1530 characters; placeholders `{{firstName}}`, `{{lastName}}` and contact
    /// attributes (`{{city}}`). Marketing texts get their offer and unsubscribe links added.
    #[schema(
        min_length = 1,
        max_length = 1530,
        example = "Hi {{firstName}}, 20% off today"
    )]
    pub(crate) body: Option<String>,
    /// 1-16 digits or 1-11 letters, digits, space, '.', '_', '-'.
    #[schema(pattern = r"^([0-9]{1,16}|[A-Za-z0-9 ._-]{1,11})$", example = "MyShop")]
    pub(crate) sender: Option<String>,
    pub(crate) traffic_account_id: Option<uuid::Uuid>,
    /// `marketing` (default: offer and unsubscribe links) or `service`.
    pub(crate) message_type: Option<String>,
    /// The offer the links open (marketing only); `null` in a PATCH removes it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) offer_title: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) offer_text: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub(crate) offer_expires_at: Option<Option<DateTime<Utc>>>,
    pub(crate) offer_self_redeem: Option<bool>,
    pub(crate) audience: Option<AudienceInput>,
    /// `null` in a PATCH unschedules (back to draft).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub(crate) scheduled_at: Option<Option<DateTime<Utc>>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Validates a definition: what every campaign must have, with one message per problem.
pub(crate) async fn definition(
    state: &AppState,
    tenant: TenantId,
    input: CampaignInput,
    base: Option<&CampaignRecord>,
) -> Result<Definition, CampaignError> {
    reject_nul_in_input(&input)?;
    let input_offer = OfferInput {
        title: input.offer_title.clone(),
        text: input.offer_text.clone(),
        expires_at: input.offer_expires_at,
        self_redeem: input.offer_self_redeem,
    };
    let mut problems = Vec::new();
    let name = input
        .name
        .or_else(|| base.map(|b| b.name.clone()))
        .unwrap_or_default();
    if name.trim().is_empty() || name.chars().count() > 200 {
        problems.push("name must be 1 to 200 characters".to_owned());
    }
    let body = input
        .body
        .or_else(|| base.map(|b| b.body.clone()))
        .unwrap_or_default();
    if body.trim().is_empty() || body.chars().count() > MAX_BODY_CHARS {
        problems.push(format!("body must be 1 to {MAX_BODY_CHARS} characters"));
    }
    let sender = input
        .sender
        .or_else(|| base.map(|b| b.sender.clone()))
        .unwrap_or_else(|| state.settings.mitto.sender.clone());
    if !valid_sender(&sender) {
        problems.push(format!(
            "sender {sender:?} must be 1-16 digits or 1-11 letters, digits, space, '.', '_', '-'"
        ));
    }
    let traffic_account_id = input
        .traffic_account_id
        .or_else(|| base.and_then(|b| b.traffic_account_id));
    if traffic_account_id.is_none() && state.default_traffic_account.is_none() {
        problems.push(
            "trafficAccountId is required (no mitto.traffic_account_id is configured)".into(),
        );
    }
    let audience = match input.audience {
        Some(a) => audience(state, tenant, a, &mut problems).await?,
        None => base.map_or_else(
            || json!({ "listIds": [], "phones": [] }),
            |b| b.audience.clone(),
        ),
    };
    let scheduled_at = match input.scheduled_at {
        Some(at) => at,
        None => base.and_then(|b| b.scheduled_at),
    };
    let message_type = match input.message_type.as_deref() {
        Some(raw) => MessageType::parse(raw).unwrap_or_else(|| {
            problems.push(format!(
                "messageType {raw:?} must be \"marketing\" or \"service\""
            ));
            MessageType::default()
        }),
        None => base
            .and_then(|b| MessageType::parse(&b.message_type))
            .unwrap_or_default(),
    };
    let offer = offer(&input_offer, base, message_type, &mut problems);
    if !problems.is_empty() {
        return Err(bad_request(problems.join("; ")));
    }
    Ok(Definition {
        name: name.trim().to_owned(),
        body,
        sender,
        traffic_account_id,
        audience,
        scheduled_at,
        message_type,
        offer,
    })
}

/// The offer fields of an input (absent: as before; `null`: removed).
struct OfferInput {
    title: Option<Option<String>>,
    text: Option<Option<String>>,
    expires_at: Option<Option<DateTime<Utc>>>,
    self_redeem: Option<bool>,
}

fn offer(
    input: &OfferInput,
    base: Option<&CampaignRecord>,
    message_type: MessageType,
    problems: &mut Vec<String>,
) -> Option<Offer> {
    let title = input
        .title
        .clone()
        .unwrap_or_else(|| base.and_then(|b| b.offer_title.clone()));
    let text = input
        .text
        .clone()
        .unwrap_or_else(|| base.and_then(|b| b.offer_text.clone()));
    let expires_at = input
        .expires_at
        .unwrap_or_else(|| base.and_then(|b| b.offer_expires_at));
    let self_redeem = input
        .self_redeem
        .unwrap_or_else(|| base.is_some_and(|b| b.offer_self_redeem));
    let Some(title) = title else {
        if text.is_some() || expires_at.is_some() {
            problems.push("offerText and offerExpiresAt need an offerTitle".into());
        }
        return None;
    };
    if title.trim().is_empty() || title.chars().count() > 200 {
        problems.push("offerTitle must be 1 to 200 characters".into());
    }
    if input
        .expires_at
        .flatten()
        .is_some_and(|at| at <= Utc::now())
    {
        problems.push("offerExpiresAt must be in the future".into());
    }
    if text.as_ref().is_some_and(|t| t.chars().count() > 2000) {
        problems.push("offerText must be at most 2000 characters".into());
    }
    if message_type != MessageType::Marketing {
        problems.push("an offer needs a marketing campaign (messageType \"marketing\")".into());
    }
    Some(Offer {
        title: title.trim().to_owned(),
        text,
        expires_at,
        self_redeem,
    })
}

/// Text that Postgres cannot store is refused before anything else, naming the field.
fn reject_nul_in_input(input: &CampaignInput) -> Result<(), CampaignError> {
    let texts = [
        ("name", input.name.as_deref()),
        ("body", input.body.as_deref()),
        ("sender", input.sender.as_deref()),
        (
            "offerTitle",
            input.offer_title.as_ref().and_then(|t| t.as_deref()),
        ),
        (
            "offerText",
            input.offer_text.as_ref().and_then(|t| t.as_deref()),
        ),
    ];
    for (field, value) in texts {
        reject_nul(field, value.unwrap_or_default())?;
    }
    let phones = input.audience.iter().flat_map(|a| a.phones.iter());
    for (i, phone) in phones.enumerate() {
        reject_nul(&format!("audience.phones[{i}]"), phone)?;
    }
    Ok(())
}

async fn audience(
    state: &AppState,
    tenant: TenantId,
    input: AudienceInput,
    problems: &mut Vec<String>,
) -> Result<Value, CampaignError> {
    let mut lists = input.list_ids;
    lists.extend(input.list_id);
    lists.sort_unstable();
    lists.dedup();
    for id in &lists {
        let found = crate::store::contacts::find_list(&state.pool, tenant, *id)
            .await
            .map_err(unexpected)?;
        if found.is_none() {
            problems.push(format!("list {id} not found"));
        }
    }
    if input.phones.len() > MAX_INLINE_PHONES {
        problems.push(format!(
            "at most {MAX_INLINE_PHONES} inline phones; use a list"
        ));
    }
    let mut phones = Vec::with_capacity(input.phones.len());
    for raw in &input.phones {
        match PhoneE164::parse(raw) {
            Ok(p) => phones.push(p.as_str().to_owned()),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok(json!({ "listIds": lists, "phones": phones }))
}

#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", request_body = CampaignInput,
    responses((status = 201, description = "Created as a draft (or scheduled with `scheduledAt`)", body = CampaignRecord)))]
pub(super) async fn create(
    auth: Authenticated,
    body: web::Json<CampaignInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let def = definition(&state, auth.tenant, body.into_inner(), None).await?;
    let record = campaigns::create(&state.pool, auth.tenant, &def)
        .await
        .map_err(unexpected)?;
    Ok(HttpResponse::Created().json(record))
}

pub(crate) async fn find(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
) -> Result<CampaignRecord, CampaignError> {
    campaigns::find(&state.pool, tenant, id.get())
        .await
        .map_err(unexpected)?
        .ok_or(CampaignError::Start(StartError::NotFound))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(super) struct ShowQuery {
    /// Adds `stats`, from the campaign's actor.
    #[serde(default)]
    with_stats: bool,
}

/// A campaign, with its figures when asked for.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CampaignView {
    #[serde(flatten)]
    record: CampaignRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<crate::engine::campaign::Stats>,
}

async fn view(state: &AppState, record: CampaignRecord, with_stats: bool) -> CampaignView {
    let stats = match (with_stats, CampaignId::new(record.id)) {
        (true, Ok(id)) => state.events.registry.stats(id).await.map(|(_, s)| s),
        _ => None,
    };
    CampaignView { record, stats }
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path, description = "Campaign id"), ShowQuery),
    responses((status = 200, description = "The campaign", body = CampaignView), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn get(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<ShowQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let record = find(&state, auth.tenant, campaign_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(view(&state, record, query.with_stats).await))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(super) struct ListQuery {
    #[serde(default = "one")]
    #[param(minimum = 1, default = 1)]
    page: i64,
    #[serde(default = "ten")]
    #[param(minimum = 1, maximum = 100, default = 10)]
    page_size: i64,
    /// Only campaigns in this status.
    #[param(value_type = Option<CampaignStatus>)]
    status: Option<String>,
    /// Part of the name, any case.
    search: Option<String>,
    /// Adds each campaign's `stats`.
    #[serde(default)]
    with_stats: bool,
}

/// One page of campaigns, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CampaignPage {
    items: Vec<CampaignView>,
    page: i64,
    page_size: i64,
    /// Campaigns matching the filters, on all pages.
    total: i64,
}

fn one() -> i64 {
    1
}

fn ten() -> i64 {
    10
}

#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns", params(ListQuery),
    responses((status = 200, description = "A page of the tenant's campaigns", body = CampaignPage)))]
pub(super) async fn list(
    auth: Authenticated,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let q = query.into_inner();
    if q.page < 1 || !(1..=100).contains(&q.page_size) {
        return Err(bad_request("page must be >= 1 and pageSize 1 to 100"));
    }
    if q.page.checked_mul(q.page_size).is_none() {
        return Err(bad_request("page is past any campaign there can be"));
    }
    let status = q
        .status
        .as_deref()
        .map(CampaignStatus::parse)
        .transpose()
        .map_err(|e| bad_request(e.to_string()))?;
    let search = q.search.as_deref().filter(|s| !s.trim().is_empty());
    let (records, total) = campaigns::list(
        &state.pool,
        auth.tenant,
        status,
        search,
        q.page,
        q.page_size,
    )
    .await
    .map_err(unexpected)?;
    // each campaign's actor answers on its own; ask them all at once
    let views = records.into_iter().map(|r| view(&state, r, q.with_stats));
    let items = futures::future::join_all(views).await;
    Ok(HttpResponse::Ok().json(CampaignPage {
        items,
        page: q.page,
        page_size: q.page_size,
        total,
    }))
}

#[utoipa::path(patch, path = "/api/v1/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path, description = "Campaign id")),
    request_body = CampaignInput,
    responses((status = 200, description = "The edited campaign (draft or scheduled only)", body = CampaignRecord),
        LifecycleErrors))]
pub(super) async fn update(
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Json<CampaignInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let id = campaign_id(&path)?;
    let current = find(&state, auth.tenant, id).await?;
    let def = definition(&state, auth.tenant, body.into_inner(), Some(&current)).await?;
    match run(&state, auth, id, Command::Edit(Box::new(def))).await? {
        LifecycleReply::Edited(record) => Ok(HttpResponse::Ok().json(record)),
        _ => Err(unexpected(anyhow::anyhow!("unexpected reply to an edit"))),
    }
}

#[utoipa::path(delete, path = "/api/v1/campaigns/{id}", tag = "campaigns", params(("id" = i64, Path, description = "Campaign id")),
    responses((status = 204, description = "Deleted (draft, scheduled or cancelled before sending)"),
        LifecycleErrors))]
pub(super) async fn delete(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let id = campaign_id(&path)?;
    match run(&state, auth, id, Command::Delete).await? {
        LifecycleReply::Deleted => Ok(HttpResponse::NoContent().finish()),
        _ => Err(unexpected(anyhow::anyhow!("unexpected reply to a delete"))),
    }
}

/// The new time of a scheduled send.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ScheduleInput {
    /// RFC 3339; the send starts then.
    scheduled_at: DateTime<Utc>,
}

/// A lifecycle command's answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Changed {
    campaign_id: CampaignId,
    status: CampaignStatus,
    /// Recipients the change touched (cancelled, queued again, …).
    affected: i64,
}

/// Runs a lifecycle command in the campaign's actor.
async fn change(
    state: &AppState,
    auth: Authenticated,
    raw_id: &str,
    command: Command,
) -> Result<HttpResponse, CampaignError> {
    let id = campaign_id(raw_id)?;
    match run(state, auth, id, command).await? {
        LifecycleReply::Changed { status, affected } => Ok(HttpResponse::Ok().json(Changed {
            campaign_id: id,
            status,
            affected,
        })),
        _ => Err(unexpected(anyhow::anyhow!(
            "unexpected reply to a lifecycle command"
        ))),
    }
}

#[utoipa::path(post, path = "/api/v1/campaigns/{id}/schedule", tag = "campaigns", params(("id" = i64, Path, description = "Campaign id")),
    request_body = ScheduleInput,
    responses((status = 200, description = "Scheduled (draft or scheduled campaigns)", body = Changed),
        LifecycleErrors))]
pub(super) async fn schedule(
    auth: Authenticated,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let input: ScheduleInput = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("expected {{\"scheduledAt\": RFC 3339}}: {e}")))?;
    change(&state, auth, &path, Command::Schedule(input.scheduled_at)).await
}

/// The answers a lifecycle command may give besides its 200.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation: `CampaignError` writes these
pub(super) enum LifecycleErrors {
    #[response(status = 404, description = "No such campaign of this tenant")]
    NotFound(super::openapi::ErrorBody),
    #[response(
        status = 409,
        description = "`INVALID_STATE`: the campaign's status does not allow it (`status` names it)"
    )]
    Refused(super::openapi::ErrorBody),
    #[response(
        status = 503,
        description = "The campaign's actor is not reachable; try again"
    )]
    Unreachable(super::openapi::ErrorBody),
}

/// A lifecycle command without a body: its own route, documented as its own operation.
macro_rules! lifecycle_command {
    ($(#[doc = $doc:literal])* $handler:ident, $path:literal, $command:ident) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = $path, tag = "campaigns",
            params(("id" = i64, Path, description = "Campaign id")),
            responses((status = 200, description = "The campaign's new status", body = Changed),
                LifecycleErrors))]
        pub(super) async fn $handler(
            auth: Authenticated,
            path: web::Path<String>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, CampaignError> {
            change(&state, auth, &path, Command::$command).await
        }
    };
}

lifecycle_command!(
    /// Back to draft (scheduled campaigns).
    unschedule,
    "/api/v1/campaigns/{id}/unschedule",
    Unschedule
);
lifecycle_command!(
    /// Stops claiming batches; batches already out finish.
    pause,
    "/api/v1/campaigns/{id}/pause",
    Pause
);
lifecycle_command!(
    /// Sends again (paused campaigns).
    resume,
    "/api/v1/campaigns/{id}/resume",
    Resume
);
lifecycle_command!(
    /// Cancels the queued recipients and refunds their credits.
    cancel,
    "/api/v1/campaigns/{id}/cancel",
    Cancel
);
lifecycle_command!(
    /// Queues the retryable failed recipients again (completed or failed campaigns).
    retry_failed,
    "/api/v1/campaigns/{id}/retry-failed",
    RetryFailed
);

pub(crate) async fn run(
    state: &AppState,
    auth: Authenticated,
    id: CampaignId,
    command: Command,
) -> Result<LifecycleReply, CampaignError> {
    let reply = state
        .events
        .registry
        .lifecycle(id, auth.tenant, command)
        .await
        .ok_or_else(|| {
            CampaignError::Api(ApiError::Unavailable(
                "the campaign is not reachable; try again".into(),
            ))
        })?;
    Ok(reply?)
}

/// The answers an enqueue may give besides its 200 (both enqueue paths).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation: `CampaignError` writes these
pub(super) enum EnqueueErrors {
    #[response(
        status = 402,
        description = "`INSUFFICIENT_CREDITS` with `required` and `available`"
    )]
    InsufficientCredits(super::openapi::ErrorBody),
    #[response(status = 403, description = "`SUBSCRIPTION_REQUIRED`")]
    SubscriptionRequired(super::openapi::ErrorBody),
    #[response(status = 404, description = "No such campaign of this tenant")]
    NotFound(super::openapi::ErrorBody),
    #[response(
        status = 409,
        description = "`INVALID_STATE`: the campaign's status does not allow it (`status` names it)"
    )]
    Refused(super::openapi::ErrorBody),
    #[response(
        status = 422,
        description = "`IDEMPOTENCY_KEY_REUSED` for another campaign or request"
    )]
    KeyReused(super::openapi::ErrorBody),
    #[response(
        status = 503,
        description = "The campaign's actor is not reachable; try again"
    )]
    Unreachable(super::openapi::ErrorBody),
}

/// `POST /api/v1/campaigns/{id}/enqueue`: starts sending now.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/enqueue", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id"), ("Idempotency-Key" = Option<String>, Header, description = "A repeated call with the same key answers the first call's answer and does nothing")),
    responses(
        (status = 200, description = "Recipients queued and credits reserved; `Idempotent-Replayed: true` on a replay", body = Enqueued),
        EnqueueErrors,
    ))]
pub(super) async fn enqueue(
    auth: Authenticated,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    enqueued(&state, auth, campaign_id(&path)?, &req).await
}

/// Enqueue: `Idempotency-Key` makes a repeated call return the first answer and do nothing.
async fn enqueued(
    state: &AppState,
    auth: Authenticated,
    id: CampaignId,
    req: &HttpRequest,
) -> Result<HttpResponse, CampaignError> {
    let key = match req.headers().get("Idempotency-Key") {
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| (1..=200).contains(&k.len()))
                .ok_or_else(|| {
                    bad_request("Idempotency-Key must be 1 to 200 visible characters")
                })?;
            Some(key.to_owned())
        }
        None => None,
    };
    let command = Command::Enqueue {
        idempotency_key: key,
    };
    match run(state, auth, id, command).await? {
        LifecycleReply::Enqueued(EnqueueOutcome::Done(answer)) => {
            Ok(HttpResponse::Ok().json(answer))
        }
        LifecycleReply::Enqueued(EnqueueOutcome::Replayed(first)) => Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(first)),
        _ => Err(unexpected(anyhow::anyhow!(
            "unexpected reply to an enqueue"
        ))),
    }
}

/// `POST /api/campaigns/{id}/enqueue`, the replaced system's path.
#[utoipa::path(post, path = "/api/campaigns/{id}/enqueue", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id"), ("Idempotency-Key" = Option<String>, Header, description = "A repeated call with the same key answers the first call's answer and does nothing")),
    responses(
        (status = 200, description = "Recipients queued and credits reserved; `Idempotent-Replayed: true` on a replay", body = Enqueued),
        EnqueueErrors,
    ))]
pub(super) async fn seed_enqueue(
    auth: Authenticated,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    enqueued(&state, auth, campaign_id(&path)?, &req).await
}

/// Recipients whose texts a preview shows unless `?samples=` says otherwise, and the most.
pub const DEFAULT_SAMPLES: usize = 3;
pub const MAX_SAMPLES: usize = 20;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SamplesQuery {
    /// Recipients whose rendered texts are shown: 0 to 20, 3 when left out.
    #[param(minimum = 0, maximum = 20)]
    samples: Option<usize>,
}

fn samples(req: &HttpRequest) -> Result<usize, CampaignError> {
    let query = web::Query::<SamplesQuery>::from_query(req.query_string())
        .map_err(|e| bad_request(format!("invalid query: {e}")))?;
    let n = query.samples.unwrap_or(DEFAULT_SAMPLES);
    if n > MAX_SAMPLES {
        return Err(bad_request(format!("samples must be 0 to {MAX_SAMPLES}")));
    }
    Ok(n)
}

/// Previews an enqueue through the enqueue's own audience query and part counting.
async fn previewed(
    state: &AppState,
    input: crate::store::preview::PreviewInput,
) -> Result<HttpResponse, CampaignError> {
    Ok(HttpResponse::Ok().json(preview(state, &input).await?))
}

/// What an enqueue now would do with `input` (the API's preview and the dashboard's).
pub(crate) async fn preview(
    state: &AppState,
    input: &crate::store::preview::PreviewInput,
) -> Result<crate::store::preview::Preview, CampaignError> {
    let links = state.settings.link_wording();
    let max_segments = state.settings.sending.max_segments;
    Ok(crate::store::preview::preview(&state.pool, input, &links, max_segments).await?)
}

/// `POST /api/v1/campaigns/{id}/preview?samples=`: the saved campaign as an enqueue now would
/// send it.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/preview", tag = "campaigns", params(("id" = i64, Path, description = "Campaign id"), SamplesQuery),
    responses((status = 200, description = "Recipients after de-duplication and opt-outs, encodings, parts, credits against the balance: the numbers enqueue would use", body = crate::store::preview::Preview), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn preview_saved(
    auth: Authenticated,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let id = campaign_id(&path)?;
    let samples = samples(&req)?;
    let record = find(&state, auth.tenant, id).await?;
    let input = crate::store::preview::PreviewInput {
        tenant: auth.tenant,
        campaign: Some(id),
        carried: record.carried(),
        body: record.body,
        audience: record.audience,
        samples,
    };
    previewed(&state, input).await
}

/// `POST /api/v1/campaigns/preview?samples=`: a definition (as for create; `name` may be left
/// out) as an enqueue would send it, without saving anything.
#[utoipa::path(post, path = "/api/v1/campaigns/preview", tag = "campaigns", params(SamplesQuery),
    request_body = CampaignInput, responses((status = 200, description = "Recipients after de-duplication and opt-outs, encodings, parts, credits against the balance: the numbers enqueue would use", body = crate::store::preview::Preview)))]
pub(super) async fn preview_unsaved(
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<CampaignInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CampaignError> {
    let samples = samples(&req)?;
    let mut input = body.into_inner();
    input.name.get_or_insert_with(|| "preview".into());
    let def = definition(&state, auth.tenant, input, None).await?;
    let input = crate::store::preview::PreviewInput {
        tenant: auth.tenant,
        campaign: None,
        carried: crate::domain::Carried::of(def.message_type, def.offer.is_some()),
        body: def.body,
        audience: def.audience,
        samples,
    };
    previewed(&state, input).await
}
