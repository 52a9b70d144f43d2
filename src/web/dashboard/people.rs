//! Contacts (CSV import with its per-row report, lists) and the account (balance, API keys).

use maud::{html, Markup};

use super::{page, when, Section, Viewer};
use crate::store::api_keys::KeyInfo;
use crate::store::contacts::{Imported, List};
use crate::store::tenants::Tenant;

pub fn contacts(viewer: &Viewer<'_>, lists: &[List]) -> Markup {
    let body = html! {
        h1 { "Contacts" }
        div.alert role="alert" data-testid="contacts-error" {}
        section.panel {
            h2 { "Import a CSV file" }
            p.note { "A header row with " code { "phone" } " (required), " code { "first_name" } ", "
                code { "last_name" } "; other columns become attributes for placeholders. Good rows are
                saved; bad rows are listed with their line." }
            form hx-post="/app/contacts/import" hx-encoding="multipart/form-data"
                hx-target="#import-result" hx-disabled-elt="find button" {
                label for="csv" { "CSV file" }
                input #csv type="file" name="file" accept=".csv,text/csv" required;
                label for="list-name" { "New list name" }
                input #list-name name="listName" maxlength="200" placeholder="Optional: the imported contacts join it";
                p { button type="submit" { "Import" } span.busy { "Importing…" } }
            }
            div #import-result data-testid="import-result" aria-live="polite" {}
        }
        section.panel {
            h2 #lists-heading { "Lists" }
            (lists_table(lists, viewer.zone))
        }
    };
    page("Contacts", Section::Contacts, viewer, body)
}

pub fn lists_table(lists: &[List], zone: chrono_tz::Tz) -> Markup {
    html! {
        table #lists data-testid="lists" aria-labelledby="lists-heading" {
            thead { tr { th scope="col" { "Name" } th.num scope="col" { "Members" } th.opt scope="col" { "Created" } } }
            tbody {
                @for l in lists { tr { td { (l.name) } td.num { (l.members) } td.opt { (when(Some(l.created_at), zone)) } } }
                @if lists.is_empty() { tr { td colspan="3" { "No lists yet." } } }
            }
        }
    }
}

/// An import's outcome, and the lists again (out of band) so the new list shows.
pub fn imported(
    result: &Imported,
    list: Option<&str>,
    lists: &[List],
    zone: chrono_tz::Tz,
) -> Markup {
    html! {
        p role="status" {
            "Imported " (result.imported) " contacts"
            @if let Some(name) = list { " into the list " strong { (name) } }
            "."
            @if result.failed == 1 { " 1 row was refused:" }
            @if result.failed > 1 { " " (result.failed) " rows were refused:" }
        }
        @if !result.errors.is_empty() {
            table data-testid="import-errors" {
                thead { tr { th scope="col" { "Line" } th scope="col" { "Why" } } }
                tbody {
                    @for e in &result.errors { tr { td { "line " (e.line) } td { (e.error) } } }
                }
            }
        }
        div hx-swap-oob="outerHTML:#lists" { (lists_table(lists, zone)) }
    }
}

/// What the account page shows.
pub struct AccountView<'a> {
    pub tenant: &'a Tenant,
    pub keys: &'a [KeyInfo],
}

pub fn account(viewer: &Viewer<'_>, v: &AccountView<'_>) -> Markup {
    let t = v.tenant;
    let body = html! {
        h1 { "Account" }
        div.cards {
            div.card { div.label { "Credit balance" } div.value data-testid="balance" { (t.credit_balance) } }
            div.card { div.label { "Subscription" } div.value data-testid="subscription" {
                (if t.subscription_active { "active" } else { "inactive" }) } }
        }
        section.panel {
            p { "Shop " strong { (t.name) } " · time zone " (viewer.zone.name())
                @if let Some(until) = t.subscription_until { " · subscription until " (when(Some(until), viewer.zone)) } }
        }
        section.panel {
            h2 #keys-heading { "API keys" }
            p.note { "Integrations call the API with " code { "Authorization: Bearer <token>" } ". A token is shown once, when it is issued." }
            form hx-post="/app/account/keys" hx-target="#keys" hx-disabled-elt="find button" {
                div.row {
                    div { label for="label" { "Label" } input #label name="label" maxlength="100" placeholder="e.g. shop backend"; }
                    button type="submit" { "Issue key" }
                }
            }
            div #keys { (keys(v.keys, None, viewer.zone)) }
        }
    };
    page("Account", Section::Account, viewer, body)
}

/// The keys table, with a token just issued shown above it (once).
pub fn keys(keys: &[KeyInfo], issued: Option<&str>, zone: chrono_tz::Tz) -> Markup {
    html! {
        div.alert role="alert" data-testid="keys-error" {}
        @if let Some(token) = issued {
            div.panel {
                p { strong { "Copy the new token now: it is not shown again." } }
                p.token data-testid="new-token" { (token) }
            }
        }
        div.scroll {
            table data-testid="api-keys" aria-labelledby="keys-heading" {
                thead { tr { th scope="col" { "Label" } th scope="col" { "Created" } th scope="col" { "Status" } th scope="col" { span.note { "Action" } } } }
                tbody {
                    @for k in keys {
                        tr data-key-id=(k.id) {
                            td { (if k.label.is_empty() { "(no label)" } else { &k.label }) }
                            td { (when(Some(k.created_at), zone)) }
                            td { @match k.revoked_at { Some(at) => { "revoked " (when(Some(at), zone)) }, None => "active" } }
                            td { @if k.revoked_at.is_none() {
                                button.danger type="button" hx-post={ "/app/account/keys/" (k.id) "/revoke" }
                                    hx-target="#keys" hx-disabled-elt="this"
                                    hx-confirm="Revoke this key? Requests with its token are refused from now on." { "Revoke" }
                            } }
                        }
                    }
                    @if keys.is_empty() { tr { td colspan="4" { "No keys." } } }
                }
            }
        }
    }
}
