//! Signing in and out. Wrong passwords are counted per account; after
//! `auth.max_failed_sign_ins` in a row the account is locked for a while (doubling, capped),
//! and a locked account is refused without checking the password. An unknown address costs
//! the same hashing work as a known one, so timing does not tell which addresses exist.

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
    let ok = next.starts_with("/app/") && !next.starts_with("//") && !next.contains('\\');
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
    req.connection_info().scheme() == "https"
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
    let csrf = random_text();
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
    let account = match Email::parse(&form.email) {
        Ok(email) => users::account(&state.pool, &email)
            .await
            .map_err(PageError::unexpected)?,
        Err(_) => None,
    };
    if let Some(until) = account
        .as_ref()
        .and_then(|a| a.locked_until)
        .filter(|u| *u > Utc::now())
    {
        return Ok(refuse(
            &locked_message(until),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let digest = account
        .as_ref()
        .map_or_else(|| decoy().clone(), |a| a.user.password.clone());
    let password = form.password.clone();
    let matches = web::block(move || digest.verify(&password))
        .await
        .map_err(PageError::unexpected)?;
    let Some(account) = account else {
        return Ok(refuse(WRONG, StatusCode::UNAUTHORIZED));
    };
    if !matches {
        let lock = users::failed_sign_in(&state.pool, account.user.id, &lockout(&state))
            .await
            .map_err(PageError::unexpected)?;
        if let Some(until) = lock {
            tracing::warn!(
                user_id = account.user.id,
                "dashboard account locked after failed sign-ins"
            );
            return Ok(refuse(
                &locked_message(until),
                StatusCode::TOO_MANY_REQUESTS,
            ));
        }
        return Ok(refuse(WRONG, StatusCode::UNAUTHORIZED));
    }
    users::signed_in(&state.pool, account.user.id)
        .await
        .map_err(PageError::unexpected)?;
    let token = SessionToken::generate();
    let hours = state.settings.auth.session_hours;
    users::open_session(
        &state.pool,
        &token.sha256(),
        &account.user,
        &random_text(),
        hours,
    )
    .await
    .map_err(PageError::unexpected)?;
    let mut session = cookie(&req, SESSION_COOKIE, token.reveal().to_owned(), "/app");
    session.set_max_age(CookieAge::hours(i64::from(hours)));
    let mut gone = cookie(&req, LOGIN_COOKIE, String::new(), "/app");
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
