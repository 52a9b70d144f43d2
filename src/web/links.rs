//! The pages a recipient sees after tapping a link in an SMS: the offer (with the code to show
//! at the till and, when the shop allows it, a button to redeem it), the unsubscribe
//! confirmation and its outcomes, and a friendly page for links that lead nowhere.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// Small, readable, phone-first styling; embedded in every page (no asset requests).
const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:28rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{font-size:1.4rem;margin:0 0 .75rem}
p{line-height:1.5}
.shop{color:#5b6475;font-size:.9rem;text-transform:uppercase;letter-spacing:.04em}
.code{font-family:ui-monospace,Menlo,monospace;font-size:1.05rem;background:#eef1f6;padding:.6rem;border-radius:8px;word-break:break-all;text-align:center}
.note{color:#5b6475;font-size:.9rem}
.ok{color:#17663a}.warn{color:#9a3412}
button{width:100%;font-size:1rem;padding:.8rem;border:0;border-radius:8px;background:#1f5eff;color:#fff;cursor:pointer}
button.secondary{background:#e4e7ee;color:#1d2330}
button[disabled]{opacity:.6}
form{margin-top:1rem}
";

/// The same frame around every page.
fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

/// A POST form with its CSRF token and one button, disabled while the request is in flight.
fn action(path: &str, csrf: &str, label: &str, secondary: bool) -> Markup {
    html! {
        form method="post" action=(path) onsubmit="this.querySelector('button').disabled=true" {
            input type="hidden" name="csrf" value=(csrf);
            @if secondary {
                button.secondary type="submit" { (label) }
            } @else {
                button type="submit" { (label) }
            }
        }
    }
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y").to_string()
}

/// What the offer page shows.
pub struct OfferView<'a> {
    pub shop: &'a str,
    pub title: &'a str,
    pub text: Option<&'a str>,
    pub code: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
    pub redeemed_at: Option<DateTime<Utc>>,
    /// The self-redeem form's path and CSRF token, when the shop allows it.
    pub redeem: Option<(String, String)>,
    /// Set after a redemption attempt from this page.
    pub message: Option<&'a str>,
}

pub fn offer(v: &OfferView<'_>) -> Markup {
    page(
        v.title,
        html! {
            p.shop { (v.shop) }
            h1 { (v.title) }
            @if let Some(text) = v.text { p { (text) } }
            @if let Some(message) = v.message { p.ok role="status" { (message) } }
            @if let Some(at) = v.redeemed_at {
                p.note { "Redeemed on " (day(at)) "." }
            } @else if v.expired {
                p.warn { "This offer has expired." }
            } @else {
                p { "Show this code at the till:" }
                p.code { (v.code) }
                @if let Some(at) = v.expires_at { p.note { "Valid until " (day(at)) "." } }
                @if let Some((path, csrf)) = &v.redeem {
                    (action(path, csrf, "Redeem now", false))
                    p.note { "Only tap this at the till: the offer can be redeemed once." }
                }
            }
        },
    )
}

/// The unsubscribe page: a question (GET changes nothing), or the state after a POST.
pub struct OptOutView<'a> {
    pub shop: &'a str,
    pub unsubscribed: bool,
    /// Set right after a change.
    pub message: Option<&'a str>,
    /// The path and CSRF token of the form this state offers.
    pub form: (String, String),
}

pub fn opt_out(v: &OptOutView<'_>) -> Markup {
    let (path, csrf) = &v.form;
    page(
        "Marketing messages",
        html! {
            p.shop { (v.shop) }
            @if let Some(message) = v.message { p.ok role="status" { (message) } }
            @if v.unsubscribed {
                h1 { "You are unsubscribed" }
                p { "You will no longer receive marketing messages from " (v.shop) "." }
                (action(path, csrf, "Resubscribe", true))
            } @else {
                h1 { "Unsubscribe?" }
                p { "Stop receiving marketing messages from " (v.shop) "?" }
                (action(path, csrf, "Unsubscribe", false))
            }
        },
    )
}

/// A link that leads nowhere (unknown or mistyped code).
pub fn not_found() -> Markup {
    page(
        "Link not found",
        html! {
            h1 { "This link doesn't work" }
            p { "It may be incomplete or mistyped. Please check the link in your message." }
        },
    )
}

/// Too many requests from one address.
pub fn slow_down() -> Markup {
    page(
        "Please wait",
        html! {
            h1 { "Please wait a moment" }
            p { "Too many requests came from your connection. Try again in a minute." }
        },
    )
}

/// A form that did not come from our own page (missing or wrong token).
pub fn refused() -> Markup {
    page(
        "Please try again",
        html! {
            h1 { "Please try again" }
            p { "This page expired. Open the link from your message again." }
        },
    )
}

/// Something on our side failed; nothing was changed.
pub fn unavailable() -> Markup {
    page(
        "Please try again",
        html! {
            h1 { "Please try again shortly" }
            p.warn { "We could not complete this just now. Nothing was changed." }
        },
    )
}
