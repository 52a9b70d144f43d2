//! Signing in and out. Wrong passwords are counted per address typed, whether or not an
//! account has it: after `auth.max_failed_sign_ins` in a row the address is locked for a while
//! (doubling, capped), and a locked address is refused without checking the password. Known
//! and unknown addresses get the same answers and cost the same work (a decoy hash, the same
//! writes), so the form does not tell which addresses have accounts. Password hashing runs at
//! most one per core at a time, and each client address is held to the link routes' rate.

use actix_web::cookie::{time::Duration as CookieAge, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::{html, PageError, Signed, SESSION_COOKIE};
use crate::domain::{random_text, same_secret, Email, Lockout, PasswordDigest, SessionToken};
use crate::http::AppState;
use crate::store::users;
use crate::web::dashboard as pages;

/// The sign-in form's double-submit cookie (there is no session to hold its token yet).
const LOGIN_COOKIE: &str = "campaignd_login";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(form))
        .route("/login", web::post().to(sign_in))
        .route("/logout", web::post().to(sign_out));
}

/// Where the sign-in form sends a visitor afterwards: a dashboard path only (never another
/// site).
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/app/")
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic());
    if ok {
        next
    } else {
        "/app/campaigns"
    }
}

/// The sign-in form's address, coming back to `next` afterwards.
pub fn login_url(next: &str) -> String {
    if next.is_empty() || safe_next(next) != next {
        return "/app/login".into();
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    format!("/app/login?{query}")
}

fn secure(req: &HttpRequest) -> bool {
    let always = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.auth.secure_cookies);
    always || req.connection_info().scheme() == "https"
}

fn cookie<'c>(req: &HttpRequest, name: &'c str, value: String, path: &'c str) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req))
        .finish()
}

/// `/app/`: the campaigns for a signed-in browser, the sign-in form for anyone else.
pub async fn home(req: HttpRequest, signed: Option<Signed>) -> HttpResponse {
    match signed {
        Some(_) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/app/campaigns"))
            .finish(),
        None => form_page(&req, "", "/app/campaigns", None, StatusCode::OK),
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn form(req: HttpRequest, query: web::Query<NextQuery>) -> HttpResponse {
    let next = query.next.as_deref().unwrap_or("/app/campaigns");
    form_page(&req, "", safe_next(next), None, StatusCode::OK)
}

/// The sign-in form with a fresh double-submit token.
fn form_page(
    req: &HttpRequest,
    email: &str,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    // another tab's form stays valid: the cookie is kept while it looks like one of ours
    let csrf = req
        .cookie(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 43)
        .unwrap_or_else(random_text);
    let view = pages::SignInView {
        csrf: &csrf,
        email,
        next,
        error,
    };
    let mut response = html(status, pages::sign_in(&view));
    let _ = response
        .add_cookie(&cookie(req, LOGIN_COOKIE, csrf.clone(), "/app"))
        .map_err(|e| tracing::warn!(error = %e, "setting the sign-in cookie failed"));
    response
}

#[derive(Deserialize)]
struct SignInForm {
    email: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: String,
}

const WRONG: &str = "Email or password is wrong.";

/// A digest nobody's password matches, verified for unknown addresses so that they cost the
/// same time as known ones.
fn decoy() -> &'static PasswordDigest {
    static DECOY: std::sync::OnceLock<PasswordDigest> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        PasswordDigest::of(&random_text()).unwrap_or_else(|_| PasswordDigest::stored(String::new()))
    })
}

fn lockout(state: &AppState) -> Lockout {
    let auth = &state.settings.auth;
    Lockout {
        after: auth.max_failed_sign_ins,
        first: std::time::Duration::from_secs(auth.lockout_secs),
        longest: std::time::Duration::from_secs(auth.lockout_max_secs),
    }
}

fn locked_message(until: chrono::DateTime<Utc>) -> String {
    let secs = (until - Utc::now()).num_seconds().max(1);
    format!("Too many failed sign-ins. Try again in {secs} seconds.")
}

/// Password checks at once: one per core (each takes about 19 MiB and a core for a moment).
fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// The key wrong passwords are counted under: the typed address, normalised when it parses.
fn address_key(raw: &str) -> [u8; 32] {
    use sha2::Digest;
    let normal = Email::parse(raw).map_or_else(|_| raw.trim().to_lowercase(), |e| e.to_string());
    sha2::Sha256::digest(normal.as_bytes()).into()
}

/// Why a sign-in was refused, as the form says it.
enum Refusal {
    Wrong,
    Locked(chrono::DateTime<Utc>),
    Busy,
}

#[tracing::instrument(skip_all)]
async fn sign_in(
    req: HttpRequest,
    form: web::Form<SignInForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let next = safe_next(&form.next).to_owned();
    let refuse = |message: &str, status| form_page(&req, &form.email, &next, Some(message), status);
    let echoed = req.cookie(LOGIN_COOKIE);
    if !echoed.is_some_and(|c| same_secret(c.value(), &form.csrf)) {
        return Ok(refuse(
            "The form expired. Please sign in again.",
            StatusCode::FORBIDDEN,
        ));
    }
    if !state.link_guard.admit(&req) {
        return Ok(refuse(
            "Too many attempts from your address. Wait a minute and try again.",
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    match authenticate(&state, &form.email, &form.password).await? {
        Ok(user) => open_session(&req, &state, &user, next).await,
        Err(Refusal::Wrong) => Ok(refuse(WRONG, StatusCode::UNAUTHORIZED)),
        Err(Refusal::Locked(until)) => Ok(refuse(
            &locked_message(until),
            StatusCode::TOO_MANY_REQUESTS,
        )),
        Err(Refusal::Busy) => Ok(refuse(
            "Signing in is busy right now. Try again in a moment.",
            StatusCode::SERVICE_UNAVAILABLE,
        )),
    }
}

/// The account whose password this is, unless the address is locked or the password wrong.
async fn authenticate(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<Result<users::User, Refusal>, PageError> {
    let key = address_key(email);
    let lock = users::lock(&state.pool, &key)
        .await
        .map_err(PageError::unexpected)?;
    if let Some(until) = lock {
        return Ok(Err(Refusal::Locked(until)));
    }
    let account = match Email::parse(email) {
        Ok(email) => users::find_by_email(&state.pool, &email)
            .await
            .map_err(PageError::unexpected)?,
        Err(_) => None,
    };
    let digest = account
        .as_ref()
        .map_or_else(|| decoy().clone(), |a| a.password.clone());
    let Ok(permit) =
        tokio::time::timeout(std::time::Duration::from_secs(5), hashing().acquire()).await
    else {
        return Ok(Err(Refusal::Busy));
    };
    let password = password.to_owned();
    let matches = web::block(move || digest.verify(&password))
        .await
        .map_err(PageError::unexpected)?;
    drop(permit);
    match account.filter(|_| matches) {
        Some(user) => {
            users::signed_in(&state.pool, &key)
                .await
                .map_err(PageError::unexpected)?;
            Ok(Ok(user))
        }
        None => {
            let lock = users::failed_sign_in(&state.pool, &key, &lockout(state))
                .await
                .map_err(PageError::unexpected)?;
            if lock.is_some() {
                tracing::warn!("a sign-in address was locked after repeated wrong passwords");
            }
            Ok(Err(lock.map_or(Refusal::Wrong, Refusal::Locked)))
        }
    }
}

/// A new session for `user` (any session the browser presented ends), then to `next`.
async fn open_session(
    req: &HttpRequest,
    state: &AppState,
    user: &users::User,
    next: String,
) -> Result<HttpResponse, PageError> {
    if let Some(old) = req.cookie(SESSION_COOKIE) {
        let old = SessionToken::presented(old.value());
        users::close_session(&state.pool, &old.sha256())
            .await
            .map_err(PageError::unexpected)?;
    }
    let token = SessionToken::generate();
    let hours = state.settings.auth.session_hours;
    users::open_session(&state.pool, &token.sha256(), user, &random_text(), hours)
        .await
        .map_err(PageError::unexpected)?;
    let mut session = cookie(req, SESSION_COOKIE, token.reveal().to_owned(), "/app");
    session.set_max_age(CookieAge::hours(i64::from(hours)));
    let mut gone = cookie(req, LOGIN_COOKIE, String::new(), "/app");
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .cookie(session)
        .cookie(gone)
        .finish())
}

async fn sign_out(
    req: HttpRequest,
    signed: Signed,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    users::close_session(&state.pool, &signed.digest)
        .await
        .map_err(PageError::unexpected)?;
    let mut gone = cookie(&req, SESSION_COOKIE, String::new(), "/app");
    gone.make_removal();
    Ok(HttpResponse::Ok()
        .insert_header(("HX-Redirect", "/app/login"))
        .cookie(gone)
        .finish())
}
