//! Recipients' links (public, HTML) and the shop's redemption API.
//!
//! - `GET /o/{code}`: the offer page; counts a `visit` unless the request is a HEAD or comes
//!   from a link-preview fetcher. `POST /o/{code}/redeem`: self-redeem (when allowed).
//! - `GET /s/{code}`: asks, changes nothing. `POST /s/{code}`: unsubscribes the phone for the
//!   tenant; `POST /s/{code}/resubscribe` undoes the opt-out (the campaign's count stays).
//! - `POST /api/v1/redemptions {code}`: the shop redeems; 409 `ALREADY_REDEEMED` the second time.
//!
//! What counts is an event on `message-events` (keyed by the recipient), produced before the
//! answer: the DlrActor of that key counts it once per recipient. A redemption's row (which
//! answers "already redeemed") is committed only after its event is on the broker, and only the
//! attempt that inserted it publishes (see [`redeem`]). Forms carry a token bound to the code and the
//! action (HMAC with a key kept in Postgres), so another site cannot post them. Requests are
//! limited per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::auth::Authenticated;
use super::error::{error_response, ApiError};
use super::AppState;
use crate::domain::{EngagementKind, Event, LinkCode, PhoneE164};
use crate::store::contacts::{self, NewContact};
use crate::store::links::{self, LinkTarget};
use crate::web::links as pages;

pub fn public_routes(cfg: &mut web::ServiceConfig) {
    // a form post that is not one of our forms (wrong type, too large, odd fields) gets the
    // same page as a missing token, not a bare text error
    let forms = web::FormConfig::default()
        .limit(4096)
        .error_handler(|_, _| PageError::Refused.into());
    cfg.app_data(forms)
        .route("/o/{code}", web::get().to(offer))
        .route("/o/{code}", web::head().to(offer))
        .route("/o/{code}/redeem", web::post().to(self_redeem))
        .route("/s/{code}", web::get().to(opt_out_page))
        .route("/s/{code}", web::head().to(opt_out_page))
        .route("/s/{code}", web::post().to(unsubscribe))
        .route("/s/{code}/resubscribe", web::post().to(resubscribe));
}

pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/redemptions", web::post().to(redeem_by_shop));
}

/// What the link routes share: the form-token key and the per-address limiter.
pub struct LinkGuard {
    csrf_key: Vec<u8>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Whether the client address comes from the proxy's `X-Forwarded-For`.
    from_proxy: bool,
    /// When idle addresses were last forgotten (unix seconds).
    last_sweep: AtomicI64,
}

impl LinkGuard {
    pub fn new(csrf_key: Vec<u8>, per_minute: NonZeroU32, from_proxy: bool) -> Self {
        Self {
            csrf_key,
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            from_proxy,
            last_sweep: AtomicI64::new(0),
        }
    }

    /// The address a request is limited under: the last `X-Forwarded-For` hop (the one the
    /// proxy itself appended; earlier ones are the client's to choose) when configured, else
    /// — and whenever that is unreadable — the connection's peer. IPv6 clients are limited
    /// per /64, the block one subscriber gets.
    fn client(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = self
            .from_proxy
            .then(|| req.headers().get("x-forwarded-for")?.to_str().ok())
            .flatten()
            .and_then(|list| list.rsplit(',').next())
            .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
        let ip = forwarded.or_else(|| req.peer_addr().map(|a| a.ip()))?;
        Some(match ip {
            IpAddr::V6(v6) => {
                let block = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(block))
            }
            v4 => v4,
        })
    }

    /// The token a form for `action` on `code` carries.
    fn token(&self, action: &str, code: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("any key length");
        mac.update(action.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn token_ok(&self, action: &str, code: &str, presented: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("any key length");
        mac.update(action.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        hex::decode(presented).is_ok_and(|raw| mac.verify_slice(&raw).is_ok())
    }

    /// Whether the client may make one more request now.
    pub(crate) fn admit(&self, req: &HttpRequest) -> bool {
        let Some(ip) = self.client(req) else {
            return true;
        };
        // forgetting idle addresses walks them all: at most once a minute
        let now = Utc::now().timestamp();
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = self.limiter.len() > 100_000 && now - last >= 60;
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).is_ok()
    }
}

/// Fetchers that open links to show a preview (messengers, social networks, crawlers): they
/// see the page but are not people, so they never count as visits.
const PREVIEW_AGENTS: &[&str] = &[
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "slackbot",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
    "googlebot",
    "google-inspectiontool",
    "bingbot",
    "applebot",
    "pinterest",
    "redditbot",
    "embedly",
    "iframely",
    "vkshare",
    "viber",
    "snapchat",
    "mattermost",
    "yandexbot",
    "duckduckbot",
    "bitlybot",
    "outbrain",
    "quora link preview",
    "preview",
    "crawler",
    "spider",
];

/// HEAD, prefetches and preview fetchers look at a link without a person opening it.
fn is_preview(req: &HttpRequest) -> bool {
    if req.method() == Method::HEAD {
        return true;
    }
    let header_has = |name: &str, needle: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains(needle))
    };
    if header_has("sec-purpose", "prefetch")
        || header_has("purpose", "prefetch")
        || header_has("x-purpose", "preview")
        || header_has("x-moz", "prefetch")
    {
        return true;
    }
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    PREVIEW_AGENTS.iter().any(|bot| agent.contains(bot))
}

/// What a public route answers when it cannot go on: always a page, never a 500 body.
#[derive(Debug, thiserror::Error)]
pub(super) enum PageError {
    #[error("no such link")]
    NotFound,
    #[error("too many requests")]
    TooMany,
    #[error("form token missing or wrong")]
    Refused,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooMany => StatusCode::TOO_MANY_REQUESTS,
            Self::Refused => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let page = match self {
            Self::NotFound => pages::not_found(),
            Self::TooMany => pages::slow_down(),
            Self::Refused => pages::refused(),
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "a link request could not be completed");
                pages::unavailable()
            }
        };
        let mut response = html(self.status_code(), page);
        if let Self::TooMany = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        response
    }
}

fn html(status: StatusCode, page: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(page.into_string())
}

/// The recipient behind a code, or `NotFound` for anything that is not exactly one.
async fn resolve(state: &AppState, raw: &str) -> Result<(LinkCode, LinkTarget), PageError> {
    let code = LinkCode::parse(raw).ok_or(PageError::NotFound)?;
    let target = links::target(&state.pool, code.recipient)
        .await?
        .filter(|t| t.link_secret.as_deref().is_some_and(|s| code.matches(s)))
        .filter(|t| !t.never_sent)
        .ok_or(PageError::NotFound)?;
    Ok((code, target))
}

/// Admits the request (rate limit), then resolves its code.
async fn guarded(
    state: &AppState,
    req: &HttpRequest,
    raw: &str,
) -> Result<(LinkCode, LinkTarget), PageError> {
    if !state.link_guard.admit(req) {
        return Err(PageError::TooMany);
    }
    resolve(state, raw).await
}

/// Produces an engagement event; returns once the broker has it.
async fn publish(
    state: &AppState,
    target: &LinkTarget,
    kind: EngagementKind,
    via: Option<&str>,
) -> Result<(), String> {
    publish_at(state, target, kind, via, Utc::now()).await
}

async fn publish_at(
    state: &AppState,
    target: &LinkTarget,
    kind: EngagementKind,
    via: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), String> {
    let ids = (target.campaign_id, target.recipient_id);
    let message = target.provider_message_id.as_deref();
    let event = Event::engagement(kind, ids, message, via, at).map_err(|e| e.to_string())?;
    publish_event(state, event).await
}

/// Produces one engagement event; returns once the broker has it.
pub(super) async fn publish_event(state: &AppState, event: Event) -> Result<(), String> {
    state.events.producer.send_answering(&[event]).await
}

fn expired(target: &LinkTarget, now: DateTime<Utc>) -> bool {
    target.offer_expires_at.is_some_and(|at| at <= now)
}

/// The link pages' forms carry the token their page gave them.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct Form {
    #[serde(default)]
    csrf: String,
}

fn offer_view<'a>(
    state: &AppState,
    raw: &'a str,
    target: &'a LinkTarget,
    title: &'a str,
    message: Option<&'a str>,
) -> pages::OfferView<'a> {
    let can_redeem = target.offer_self_redeem && target.redeemed_at.is_none();
    pages::OfferView {
        shop: &target.shop_name,
        title,
        text: target.offer_text.as_deref(),
        code: raw,
        expires_at: target.offer_expires_at,
        expired: expired(target, Utc::now()),
        redeemed_at: target.redeemed_at,
        redeem: can_redeem.then(|| {
            let token = state.link_guard.token("redeem", raw);
            (format!("/o/{raw}/redeem"), token)
        }),
        message,
    }
}

#[utoipa::path(method(get, head), path = "/o/{code}", tag = "links", security(()), params(("code" = String, Path, description = "The recipient's link code (from its SMS)")),
    responses((status = 200, description = "The offer page (a visit is counted; link previews are not)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 404, description = "No such link", body = String, content_type = "text/html; charset=utf-8"),
        (status = 429, description = "Too many requests from this address (`Retry-After`)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Could not be recorded now; try again", body = String, content_type = "text/html; charset=utf-8")))]
pub(super) async fn offer(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let raw = path.into_inner();
    let (_, target) = guarded(&state, &req, &raw).await?;
    let Some(title) = target.offer_title.clone() else {
        return Err(PageError::NotFound); // no offer: its messages carried no offer link
    };
    if !is_preview(&req) {
        publish(&state, &target, EngagementKind::Visit, None)
            .await
            .map_err(PageError::Unavailable)?;
    }
    let page = pages::offer(&offer_view(&state, &raw, &target, &title, None));
    Ok(html(StatusCode::OK, page))
}

#[utoipa::path(post, path = "/o/{code}/redeem", tag = "links", security(()), params(("code" = String, Path, description = "The recipient's link code (from its SMS)")),
    request_body(content = Form, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The offer page saying whether it was redeemed", body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The form token is missing or wrong", body = String, content_type = "text/html; charset=utf-8"), (status = 404, description = "No such link", body = String, content_type = "text/html; charset=utf-8"),
        (status = 429, description = "Too many requests from this address (`Retry-After`)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Could not be recorded now; try again", body = String, content_type = "text/html; charset=utf-8")))]
pub(super) async fn self_redeem(
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<Form>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let raw = path.into_inner();
    let (_, mut target) = guarded(&state, &req, &raw).await?;
    if !state.link_guard.token_ok("redeem", &raw, &form.csrf) {
        return Err(PageError::Refused);
    }
    let Some(title) = target.offer_title.clone() else {
        return Err(PageError::NotFound);
    };
    if !target.offer_self_redeem {
        return Err(PageError::Refused);
    }
    let message = match redeem(&state, &target, "self").await {
        Ok(at) => {
            target.redeemed_at = Some(at);
            "Redeemed. Enjoy!"
        }
        Err(Redeem::Already(at)) => {
            target.redeemed_at = Some(at);
            "This offer was already redeemed."
        }
        Err(Redeem::Expired) => "This offer has expired.",
        Err(Redeem::NoOffer) => return Err(PageError::NotFound),
        Err(Redeem::Unavailable(cause)) => return Err(PageError::Unavailable(cause)),
    };
    let page = pages::offer(&offer_view(&state, &raw, &target, &title, Some(message)));
    Ok(html(StatusCode::OK, page))
}

/// Why a redemption was not recorded.
#[derive(Debug)]
enum Redeem {
    Already(DateTime<Utc>),
    Expired,
    NoOffer,
    Unavailable(String),
}

/// Redeems a code once. The row that answers "already redeemed" is inserted in a
/// transaction that stays open while the event is produced: a concurrent attempt waits on it
/// and then finds the row (409), so exactly one attempt publishes, and the row and the counted
/// event agree on who redeemed and when. The transaction commits only after the broker has the
/// event; a crash in between leaves the event counted and no row, and a retry inserts the row
/// and publishes again, which the ledger counts once.
async fn redeem(state: &AppState, target: &LinkTarget, by: &str) -> Result<DateTime<Utc>, Redeem> {
    if target.offer_title.is_none() {
        return Err(Redeem::NoOffer);
    }
    if let Some(at) = target.redeemed_at {
        return Err(Redeem::Already(at));
    }
    let now = Utc::now();
    if expired(target, now) {
        return Err(Redeem::Expired);
    }
    let unavailable = |e: crate::store::StoreError| Redeem::Unavailable(e.to_string());
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(|e| Redeem::Unavailable(e.to_string()))?;
    if let Some(first) = links::insert_redemption(&mut tx, target, by, now)
        .await
        .map_err(unavailable)?
    {
        return Err(Redeem::Already(first));
    }
    publish_at(state, target, EngagementKind::Redemption, Some(by), now)
        .await
        .map_err(Redeem::Unavailable)?;
    tx.commit()
        .await
        .map_err(|e| Redeem::Unavailable(e.to_string()))?;
    Ok(now)
}

#[utoipa::path(method(get, head), path = "/s/{code}", tag = "links", security(()), params(("code" = String, Path, description = "The recipient's link code (from its SMS)")),
    responses((status = 200, description = "The unsubscribe confirmation page (changes nothing)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 404, description = "No such link", body = String, content_type = "text/html; charset=utf-8"),
        (status = 429, description = "Too many requests from this address (`Retry-After`)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Could not be recorded now; try again", body = String, content_type = "text/html; charset=utf-8")))]
pub(super) async fn opt_out_page(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let raw = path.into_inner();
    let (_, target) = guarded(&state, &req, &raw).await?;
    Ok(opt_out_view(
        &state,
        &raw,
        &target,
        target.unsubscribed_at.is_some(),
        None,
    ))
}

fn opt_out_view(
    state: &AppState,
    raw: &str,
    target: &LinkTarget,
    unsubscribed: bool,
    message: Option<&str>,
) -> HttpResponse {
    let form = match unsubscribed {
        true => (
            format!("/s/{raw}/resubscribe"),
            state.link_guard.token("resubscribe", raw),
        ),
        false => (
            format!("/s/{raw}"),
            state.link_guard.token("unsubscribe", raw),
        ),
    };
    let page = pages::opt_out(&pages::OptOutView {
        shop: &target.shop_name,
        unsubscribed,
        message,
        form,
    });
    html(StatusCode::OK, page)
}

#[utoipa::path(post, path = "/s/{code}", tag = "links", security(()), params(("code" = String, Path, description = "The recipient's link code (from its SMS)")),
    request_body(content = Form, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Unsubscribed from the tenant's marketing", body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The form token is missing or wrong", body = String, content_type = "text/html; charset=utf-8"), (status = 404, description = "No such link", body = String, content_type = "text/html; charset=utf-8"),
        (status = 429, description = "Too many requests from this address (`Retry-After`)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Could not be recorded now; try again", body = String, content_type = "text/html; charset=utf-8")))]
pub(super) async fn unsubscribe(
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<Form>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    change_opt_out(&req, &path, &form, &state, true).await
}

#[utoipa::path(post, path = "/s/{code}/resubscribe", tag = "links", security(()), params(("code" = String, Path, description = "The recipient's link code (from its SMS)")),
    request_body(content = Form, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Subscribed again", body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The form token is missing or wrong", body = String, content_type = "text/html; charset=utf-8"), (status = 404, description = "No such link", body = String, content_type = "text/html; charset=utf-8"),
        (status = 429, description = "Too many requests from this address (`Retry-After`)", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Could not be recorded now; try again", body = String, content_type = "text/html; charset=utf-8")))]
pub(super) async fn resubscribe(
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<Form>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    change_opt_out(&req, &path, &form, &state, false).await
}

/// The unsubscribe form (`out`) or the resubscribe form: its token checked, the change made,
/// the page of the new state shown. Only an unsubscribe counts (once per recipient, by its
/// event); resubscribing takes nothing back.
async fn change_opt_out(
    req: &HttpRequest,
    raw: &str,
    form: &Form,
    state: &AppState,
    out: bool,
) -> Result<HttpResponse, PageError> {
    let (_, target) = guarded(state, req, raw).await?;
    let action = if out { "unsubscribe" } else { "resubscribe" };
    if !state.link_guard.token_ok(action, raw, &form.csrf) {
        return Err(PageError::Refused);
    }
    if out {
        publish(state, &target, EngagementKind::Unsubscribe, Some("link"))
            .await
            .map_err(PageError::Unavailable)?;
    }
    set_opt_out(state, &target, out).await?;
    let message = match out {
        true => "Done. You will not receive marketing messages from us any more.",
        false => "Welcome back: you will receive our offers again.",
    };
    Ok(opt_out_view(state, raw, &target, out, Some(message)))
}

/// Opts the recipient's phone out of (or back into) the tenant's marketing.
async fn set_opt_out(state: &AppState, target: &LinkTarget, out: bool) -> Result<(), PageError> {
    let phone =
        PhoneE164::parse(&target.phone).map_err(|e| PageError::Unavailable(e.to_string()))?;
    let contact = NewContact {
        phone: Some(phone),
        unsubscribed: Some(out),
        ..NewContact::default()
    };
    contacts::upsert(&state.pool, target.tenant()?, &[contact]).await?;
    Ok(())
}

/// A recipient's code, shown at the till (the offer page shows it).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedemptionInput {
    code: String,
}

/// Errors of the redemption API.
#[derive(Debug, thiserror::Error)]
pub(super) enum RedemptionError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("this code was already redeemed")]
    Already(DateTime<Utc>),
    #[error("this offer has expired")]
    Expired,
    #[error("this code's campaign has no offer")]
    NoOffer,
}

impl ResponseError for RedemptionError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Api(e) => e.status_code(),
            Self::Already(_) => StatusCode::CONFLICT,
            Self::Expired => StatusCode::GONE,
            Self::NoOffer => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::Api(e) => return e.error_response(),
            Self::Already(at) => {
                let body = json!({"error": {"code": "ALREADY_REDEEMED", "message": self.to_string(), "redeemedAt": at}});
                return HttpResponse::Conflict().json(body);
            }
            Self::Expired => "OFFER_EXPIRED",
            Self::NoOffer => "NO_OFFER",
        };
        error_response(self.status_code(), code, self.to_string())
    }
}

/// A redemption recorded.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Redeemed {
    campaign_id: i64,
    redeemed_at: DateTime<Utc>,
    /// `shop`
    by: &'static str,
    offer_title: Option<String>,
}

/// `POST /api/v1/redemptions {code}`: the shop redeems a recipient's offer at the till.
#[utoipa::path(post, path = "/api/v1/redemptions", tag = "links", request_body = RedemptionInput,
    responses((status = 201, description = "Redeemed; counted once in the campaign's redemptions", body = Redeemed),
        (status = 404, description = "No such code of this tenant", body = super::openapi::ErrorBody),
        (status = 409, description = "`ALREADY_REDEEMED` with `redeemedAt`", body = super::openapi::ErrorBody),
        (status = 410, description = "`OFFER_EXPIRED`", body = super::openapi::ErrorBody),
        (status = 422, description = "`NO_OFFER`: the code's campaign has no offer", body = super::openapi::ErrorBody),
        (status = 503, description = "Not recorded; a retry never redeems twice", body = super::openapi::ErrorBody)))]
pub(super) async fn redeem_by_shop(
    auth: Authenticated,
    body: web::Json<RedemptionInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RedemptionError> {
    let raw = body.into_inner().code;
    let not_found = || ApiError::NotFound("no such code".into());
    let target = match resolve(&state, raw.trim()).await {
        Ok((_, target)) => target,
        Err(PageError::Unavailable(cause)) => {
            return Err(ApiError::Unexpected(anyhow::anyhow!(cause)).into())
        }
        Err(_) => return Err(not_found().into()),
    };
    if target.tenant_id != auth.tenant.get() {
        return Err(not_found().into());
    }
    match redeem(&state, &target, "shop").await {
        Ok(at) => Ok(HttpResponse::Created().json(Redeemed {
            campaign_id: target.campaign_id,
            redeemed_at: at,
            by: "shop",
            offer_title: target.offer_title,
        })),
        Err(Redeem::Already(at)) => Err(RedemptionError::Already(at)),
        Err(Redeem::Expired) => Err(RedemptionError::Expired),
        Err(Redeem::NoOffer) => Err(RedemptionError::NoOffer),
        Err(Redeem::Unavailable(cause)) => {
            tracing::warn!(%cause, "a redemption could not be completed");
            let message =
                "the redemption could not be completed; retry (a retry never redeems twice)";
            Err(ApiError::Unavailable(message.into()).into())
        }
    }
}

/// Builds the guard with the form-token key shared through Postgres.
pub async fn guard(
    pool: &sqlx::PgPool,
    settings: &crate::config::LinkSettings,
) -> Result<Arc<LinkGuard>, crate::store::StoreError> {
    let key = links::app_secret(pool, "link_forms").await?;
    let (per_minute, from_proxy) = (
        settings.requests_per_minute,
        settings.client_address_from_proxy,
    );
    Ok(Arc::new(LinkGuard::new(key, per_minute, from_proxy)))
}
