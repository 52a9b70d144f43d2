//! The merchant's dashboard, rendered on the server (maud). Pages get their data as plain
//! values from `http::dashboard`; nothing here queries or decides what a user may do (the
//! campaign engine's `offered` does). htmx (vendored) swaps fragments and follows the live
//! figures over Server-Sent Events.
//!
//! - [`campaigns`] the campaign list, detail, actions, chart and compose form.
//! - [`people`] contacts (import, lists) and the account (balance, API keys).

pub mod campaigns;
pub mod people;

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::domain::CampaignStatus;

/// htmx settings: error answers (4xx/5xx) are swapped too, so the server's message reaches the
/// page (the server points them at the error slot).
const HTMX_CONFIG: &str = r#"{"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"[45]..","swap":true,"error":true}],"defaultSwapStyle":"innerHTML","includeIndicatorStyles":false}"#;

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Campaigns,
    Contacts,
    Account,
}

/// Who is signed in, for the page frame.
pub struct Viewer<'a> {
    pub email: &'a str,
    pub csrf: &'a str,
    /// The tenant's time zone, in which every time is shown.
    pub zone: chrono_tz::Tz,
}

fn asset(name: &str) -> String {
    format!("/app/assets/{}/{name}", crate::web::assets::version())
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex, nofollow";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · campaignd" }
            link rel="stylesheet" href=(asset("app.css"));
            script src=(asset("htmx.min.js")) defer {}
            script src=(asset("sse.js")) defer {}
            script src=(asset("app.js")) defer {}
        }
    }
}

/// A signed-in page: navigation, sign-out, and the CSRF token every htmx request carries.
pub fn page(title: &str, section: Section, viewer: &Viewer<'_>, body: Markup) -> Markup {
    let headers = serde_json::json!({ "X-CSRF-Token": viewer.csrf }).to_string();
    let current = |s: Section| (s == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-headers=(headers) {
                a.skip href="#content" style="position:absolute;left:-999px" { "Skip to content" }
                header.top {
                    a.brand href="/app/campaigns" { "campaignd" }
                    nav aria-label="Main" {
                        a href="/app/campaigns" aria-current=[current(Section::Campaigns)] { "Campaigns" }
                        a href="/app/contacts" aria-current=[current(Section::Contacts)] { "Contacts" }
                        a href="/app/account" aria-current=[current(Section::Account)] { "Account" }
                    }
                    span.who { (viewer.email) }
                    button type="button" hx-post="/app/logout" hx-disabled-elt="this" { "Sign out" }
                }
                main #content { (body) }
            }
        }
    }
}

/// A page for a visitor who is not signed in.
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main #content { (body) } }
        }
    }
}

/// What the sign-in form shows.
pub struct SignInView<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub next: &'a str,
    pub error: Option<&'a str>,
}

pub fn sign_in(v: &SignInView<'_>) -> Markup {
    bare(
        "Sign in",
        html! {
            div.panel.narrow {
                h1 { "Sign in" }
                p.note { "The campaignd dashboard of your shop." }
                div.alert role="alert" {
                    @if let Some(error) = v.error { (error) }
                }
                form method="post" action="/app/login" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="next" value=(v.next);
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(v.email) autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    p { button type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// The page for an address that leads nowhere (or to another tenant's data).
pub fn not_found(viewer: Option<&Viewer<'_>>) -> Markup {
    let body = html! {
        div.panel {
            h1 { "Not found" }
            p { "There is nothing at this address in your account." }
            p { a href="/app/campaigns" { "Back to campaigns" } }
        }
    };
    match viewer {
        Some(v) => page("Not found", Section::Campaigns, v, body),
        None => bare("Not found", body),
    }
}

/// A status as a coloured badge (every status has its colour in the stylesheet).
pub fn badge(status: CampaignStatus) -> Markup {
    html! { span class={ "badge badge-" (status.as_str()) } { (status.as_str()) } }
}

/// A time for people, to the minute in the tenant's time zone (with its abbreviation), or a
/// dash.
pub fn when(at: Option<DateTime<Utc>>, zone: chrono_tz::Tz) -> String {
    at.map_or_else(
        || "—".into(),
        |t| {
            t.with_timezone(&zone)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        },
    )
}

/// A share as a percentage with one decimal.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}
