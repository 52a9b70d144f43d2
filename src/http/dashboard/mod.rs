//! The merchant's dashboard under `/app`: server-rendered pages (`crate::web::dashboard`),
//! signed in with a session cookie (the API keeps bearer tokens).
//!
//! Sessions: a random cookie value (HttpOnly, SameSite=Strict, Secure over HTTPS) whose SHA-256
//! names a row in `dashboard_sessions`. Every state-changing request must echo the session's
//! form token in `X-CSRF-Token` (htmx sends it from the page's `hx-headers`); the sign-in form,
//! which has no session yet, uses a double-submit cookie. Another tenant's campaign is a 404
//! page, exactly like one that does not exist.
//!
//! - [`sign_in`] the sign-in form, lockout, sign-out.
//! - [`campaigns`] list, detail, live figures, actions, compose and preview, downloads.
//! - [`people`] contacts import and lists, account and API keys.

pub mod campaigns;
pub mod people;
pub mod sign_in;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use maud::Markup;

use super::error::ApiError;
use super::AppState;
use crate::domain::{same_secret, SessionToken, TenantId};
use crate::web::dashboard as pages;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "campaignd_session";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/app", web::get().to(sign_in::home)).service(
        web::scope("/app")
            .route("/", web::get().to(sign_in::home))
            .service(
                web::resource("/assets/{version}/{name}")
                    // pages and streams are not compressed (events must not wait in a
                    // compressor's buffer); the scripts and stylesheet are
                    .wrap(actix_web::middleware::Compress::default())
                    .route(web::get().to(asset)),
            )
            .configure(sign_in::routes)
            .configure(campaigns::routes)
            .configure(people::routes)
            .default_service(web::to(not_found)),
    );
}

/// A browser with an unexpired session: the tenant it acts for. Extracted only after the
/// session cookie matched a live session and, for any request but a GET, the request echoed
/// the session's form token.
#[derive(Debug, Clone)]
pub struct Signed {
    pub tenant: TenantId,
    pub email: String,
    pub csrf: String,
    /// The tenant's time zone: times are shown, and schedules read, in it.
    pub zone: chrono_tz::Tz,
    digest: [u8; 32],
}

impl Signed {
    pub fn viewer(&self) -> pages::Viewer<'_> {
        pages::Viewer {
            email: &self.email,
            csrf: &self.csrf,
            zone: self.zone,
        }
    }
}

impl FromRequest for Signed {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let next = req.uri().path_and_query().map(|p| p.to_string());
        let writes = req.method() != actix_web::http::Method::GET;
        let htmx = req.headers().contains_key("HX-Request");
        let echoed = req
            .headers()
            .get("X-CSRF-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            let sign_in = || PageError::SignIn {
                next: next.clone().unwrap_or_default(),
                htmx,
            };
            let state =
                state.ok_or_else(|| PageError::Unexpected(anyhow::anyhow!("AppState missing")))?;
            let token = SessionToken::presented(&cookie.ok_or_else(sign_in)?);
            let digest = token.sha256();
            let session = crate::store::users::session(&state.pool, &digest)
                .await
                .map_err(PageError::unexpected)?
                .ok_or_else(sign_in)?;
            // a write must carry the session's form token: another site cannot read it
            if writes && !echoed.is_some_and(|t| same_secret(&t, &session.csrf)) {
                return Err(PageError::Forbidden);
            }
            Ok(Self {
                tenant: session.tenant,
                zone: session.time_zone.parse().unwrap_or(chrono_tz::UTC),
                email: session.email,
                csrf: session.csrf,
                digest,
            })
        })
    }
}

/// Why a dashboard request got no page of its own.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No session (or an expired one): to the sign-in form, then back to this path.
    #[error("sign in first")]
    SignIn { next: String, htmx: bool },
    /// A write without the session's form token.
    #[error("this form has expired; reload the page and try again")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// A refused request whose message is shown where the page shows errors.
    #[error("{1}")]
    Refused(StatusCode, String),
    #[error("unexpected: {0}")]
    Unexpected(anyhow::Error),
}

impl PageError {
    pub fn unexpected(e: impl Into<anyhow::Error>) -> Self {
        Self::Unexpected(e.into())
    }
}

/// An API error as a page shows it: the same status and message; failures on our side are
/// logged with their cause and shown as a generic message.
impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unexpected(cause) => Self::Unexpected(cause),
            ApiError::NotFound(_) => Self::NotFound,
            other => Self::Refused(other.status_code(), sentence(&other.to_string())),
        }
    }
}

/// A field of a url-encoded form body (empty when absent).
pub fn form_field(body: &[u8], name: &str) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A message as a sentence: capital first letter, one full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| {
        format!(
            "{}{}.",
            c.to_uppercase(),
            chars.as_str().trim_end_matches('.')
        )
    })
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { htmx: false, .. } => StatusCode::SEE_OTHER,
            Self::SignIn { htmx: true, .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Refused(status, _) => *status,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn { next, htmx } => {
                let to = sign_in::login_url(next);
                if *htmx {
                    // htmx leaves the page for the sign-in form instead of swapping it in
                    let to = sign_in::login_url("");
                    return HttpResponse::Unauthorized()
                        .insert_header(("HX-Redirect", to))
                        .finish();
                }
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, to))
                    .finish()
            }
            Self::NotFound => html(StatusCode::NOT_FOUND, pages::not_found(None)),
            Self::Unexpected(e) => {
                tracing::error!(error = %e, "dashboard request failed");
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side; try again.",
                )
            }
            other => message(other.status_code(), &other.to_string()),
        }
    }
}

/// A page or fragment.
pub fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'",
        ))
        .body(markup.into_string())
}

/// A message for the element that asked (htmx swaps error answers into the page's error slot).
fn message(status: StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // each page's first alert in <main> is its error slot
        .insert_header(("HX-Retarget", "main [role=alert]"))
        .insert_header(("HX-Reswap", "innerHTML"))
        .body(maud::html! { (text) }.into_string())
}

async fn asset(path: web::Path<(String, String)>) -> HttpResponse {
    let (version, name) = path.into_inner();
    match crate::web::assets::find(&name) {
        Some(a) => {
            // a fingerprinted URL never changes its content
            let cache = if version == crate::web::assets::version() {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            HttpResponse::Ok()
                .content_type(a.content_type)
                .insert_header((header::CACHE_CONTROL, cache))
                .body(a.body)
        }
        None => html(StatusCode::NOT_FOUND, pages::not_found(None)),
    }
}

async fn not_found(signed: Option<Signed>) -> HttpResponse {
    let viewer = signed.as_ref().map(Signed::viewer);
    html(StatusCode::NOT_FOUND, pages::not_found(viewer.as_ref()))
}
