//! Campaign pages: the list (rows follow active campaigns live), the detail (figures, actions,
//! chart, breakdowns, failed recipients), and the compose form with its preview.

use maud::{html, Markup};

use super::{badge, page, percent, when, Section, Viewer};
use crate::domain::CampaignStatus;
use crate::engine::campaign::{offered, refresh_offered, Action, MinuteCounts, Stats};
use crate::engine::reports::Point;
use crate::store::campaigns::CampaignRecord;
use crate::store::preview::Preview;
use crate::store::reports::{DeliveryStatusCount, ErrorCount, RecipientRow};

/// A campaign's status as the page shows it: its actor's when it has figures, else the row's.
fn status_of(record: &CampaignRecord, stats: Option<&Stats>) -> CampaignStatus {
    stats
        .map(|s| s.status)
        .or_else(|| CampaignStatus::parse(&record.status).ok())
        .unwrap_or(CampaignStatus::Draft)
}

/// What the list page shows.
pub struct ListView<'a> {
    pub rows: &'a [(CampaignRecord, Option<Stats>)],
    pub search: &'a str,
    pub status: Option<CampaignStatus>,
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    /// The campaigns whose rows follow their figures (sending or paused).
    pub live: &'a [i64],
}

pub fn list(viewer: &Viewer<'_>, v: &ListView<'_>) -> Markup {
    let live_url = (!v.live.is_empty()).then(|| {
        let ids: Vec<String> = v.live.iter().map(i64::to_string).collect();
        format!("/app/campaigns/live?ids={}", ids.join(","))
    });
    let body = html! {
        div.pagehead {
            h1 { "Campaigns" }
            a.button href="/app/campaigns/new" { "New campaign" }
        }
        form.panel method="get" action="/app/campaigns" {
            div.row {
                div {
                    label for="search" { "Search" }
                    input #search type="search" name="search" value=(v.search) placeholder="Part of a name";
                }
                div {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" selected[v.status.is_none()] { "All" }
                        @for s in CampaignStatus::ALL {
                            option value=(s.as_str()) selected[v.status == Some(s)] { (s.as_str()) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
        }
        div.scroll hx-ext=[live_url.as_ref().map(|_| "sse")] sse-connect=[live_url.as_ref()]
            sse-close=[live_url.as_ref().map(|_| "done")] {
            table {
                caption.note style="text-align:left" { (v.total) " campaigns" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Status" }
                    th.num scope="col" { "Sent" } th.num scope="col" { "Delivered" }
                    th.num scope="col" { "Failed" } th.num scope="col" { "Total" }
                    th.num scope="col" { "Progress" }
                    th.opt scope="col" { "Created" } th.opt scope="col" { "Started" } th.opt scope="col" { "Finished" }
                } }
                tbody {
                    @for (record, stats) in v.rows {
                        @let live = v.live.contains(&record.id);
                        tr data-campaign-id=(record.id) sse-swap=[live.then(|| format!("row-{}", record.id))] {
                            (row_cells(record, stats.as_ref(), viewer.zone))
                        }
                    }
                    @if v.rows.is_empty() {
                        tr { td colspan="10" { "No campaigns match." } }
                    }
                }
            }
        }
        (pager(v))
    };
    page("Campaigns", Section::Campaigns, viewer, body)
}

fn pager(v: &ListView<'_>) -> Markup {
    let link = |page: i64| {
        let status = v.status.map_or("", CampaignStatus::as_str);
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("search", v.search)
            .append_pair("status", status)
            .append_pair("page", &page.to_string())
            .finish();
        format!("/app/campaigns?{query}")
    };
    html! {
        nav.pager aria-label="Pages" {
            @if v.page > 1 { a href=(link(v.page - 1)) rel="prev" { "Previous" } }
            span { "Page " (v.page) " of " (v.pages.max(1)) }
            @if v.page < v.pages { a href=(link(v.page + 1)) rel="next" { "Next" } }
        }
    }
}

/// One campaign's cells in the list (also what the live stream swaps in).
pub fn row_cells(record: &CampaignRecord, stats: Option<&Stats>, zone: chrono_tz::Tz) -> Markup {
    let figure = |f: fn(&Stats) -> i64| stats.map_or_else(|| "—".to_owned(), |s| f(s).to_string());
    html! {
        td { a href={ "/app/campaigns/" (record.id) } { (record.name) } }
        td { (badge(status_of(record, stats))) }
        td.num data-col="sent" { (figure(|s| s.sent)) }
        td.num data-col="delivered" { (figure(|s| s.delivered)) }
        td.num data-col="failed" { (figure(|s| s.failed)) }
        td.num data-col="total" { (figure(|s| s.total)) }
        td.num data-col="progress" { (stats.map_or_else(|| "—".to_owned(), |s| format!("{:.0}%", s.progress * 100.0))) }
        td.opt { (when(Some(record.created_at), zone)) }
        td.opt { (when(record.started_at, zone)) }
        td.opt { (when(record.finished_at, zone)) }
    }
}

/// What the detail page shows.
pub struct DetailView<'a> {
    pub record: &'a CampaignRecord,
    pub stats: &'a Stats,
    /// Failed sends a retry would queue again.
    pub retryable: i64,
    /// Drafts and scheduled campaigns: what sending now would take.
    pub audience: Option<Audience>,
}

/// What sending a draft or scheduled campaign now would take: recipients and credits (the
/// preview's numbers), or why it would be refused.
pub type Audience = Result<(i64, i64), String>;

pub fn detail(viewer: &Viewer<'_>, v: &DetailView<'_>) -> Markup {
    let body = html! {
        p { a href="/app/campaigns" { "← Campaigns" } }
        h1 { (v.record.name) }
        (live_root(v, viewer.zone, None))
        section.panel {
            h2 { "Message" }
            p.sample { (v.record.body) }
            p.note { "Sender " (v.record.sender) " · " (v.record.message_type)
                @if let Some(title) = &v.record.offer_title { " · offer: " (title) } }
        }
    };
    page(&v.record.name, Section::Campaigns, viewer, body)
}

/// Everything on the detail page that changes: the error slot (or `note`), the live panel,
/// the row-based reports and the failed recipients, inside the live stream's connection while
/// the campaign is not settled. Actions answer it whole, so a campaign that starts moving
/// again (a retry) is followed again.
pub fn live_root(v: &DetailView<'_>, zone: chrono_tz::Tz, note: Option<&str>) -> Markup {
    let id = v.record.id;
    let live_url = (!v.stats.settled()).then(|| format!("/app/campaigns/{id}/live"));
    // row-based parts are read again when the stream says the rows changed (`rows`: at most
    // every 2 s while the figures move, and once the final figures are in the rows)
    let trigger = if live_url.is_some() {
        "load, sse:rows"
    } else {
        "load"
    };
    html! {
        div #live-root hx-ext=[live_url.as_ref().map(|_| "sse")] sse-connect=[live_url.as_ref()]
            sse-close=[live_url.as_ref().map(|_| "done")] {
            div.alert role="alert" #action-error data-testid="action-error" aria-live="polite" {
                @if let Some(note) = note { span.note { (note) } }
            }
            @match &v.audience {
                Some(Ok((recipients, credits))) => p.panel data-testid="audience" {
                    "Sent now, it would go to " strong { (recipients) " recipients" }
                    " (after de-duplication and opt-outs) for " strong { (credits) " credits" } "."
                },
                Some(Err(why)) => p.panel data-testid="audience" { (why) },
                None => {},
            }
            section #live sse-swap=[live_url.as_ref().map(|_| "figures")] {
                (live_panel(v.record, v.stats, v.retryable, zone))
            }
            section #reports hx-get={ "/app/campaigns/" (id) "/reports" }
                hx-trigger=(trigger) {
                p.note { "Loading the chart and breakdowns…" }
            }
            section.panel {
                h2 #failed-heading { "Failed recipients" }
                div.scroll {
                    table data-testid="failed-recipients" aria-labelledby="failed-heading" {
                        thead { tr { th scope="col" { "Phone" } th scope="col" { "Status" } th scope="col" { "Delivery status" } th scope="col" { "Error" } th.opt scope="col" { "Failed at" } } }
                        tbody hx-get={ "/app/campaigns/" (id) "/failed" } hx-trigger=(trigger) {}
                    }
                }
                p {
                    a.button.secondary href={ "/app/campaigns/" (id) "/recipients.csv" } download { "Recipients CSV" }
                    " "
                    a.button.secondary href={ "/app/campaigns/" (id) "/report.csv" } download { "Report CSV" }
                }
            }
        }
    }
}

/// The part of the detail page that follows the figures: status, progress, cards, actions and
/// the status breakdown. Sent whole on every live event and after every action.
pub fn live_panel(
    record: &CampaignRecord,
    stats: &Stats,
    retryable: i64,
    zone: chrono_tz::Tz,
) -> Markup {
    let progress = (stats.progress * 100.0).round().clamp(0.0, 100.0);
    html! {
        div.panel {
            p { "Status " span data-testid="status" { (badge(stats.status)) }
                @if let Some(at) = record.scheduled_at { @if stats.status == CampaignStatus::Scheduled {
                    span.note { " · starts " (when(Some(at), zone)) }
                } } }
            label for="progress" { "Progress " span data-testid="progress-text" { (format!("{progress:.0}%")) } }
            progress #progress data-testid="progress" max="100" value=(format!("{progress:.0}")) {}
        }
        div.cards {
            (card("sent", "Sent", stats.sent.to_string()))
            (card("delivered", "Delivered", stats.delivered.to_string()))
            (card("failed", "Failed", stats.failed.to_string()))
            (card("pending", "Awaiting report", stats.pending.to_string()))
            (card("total", "Recipients", stats.total.to_string()))
            (card("deliveredRate", "Delivered rate", percent(stats.delivered_rate)))
            (card("redemptions", "Redemptions", stats.redemptions.to_string()))
            (card("unsubscribes", "Unsubscribes", stats.unsubscribes.to_string()))
            (card("conversionRate", "Conversion rate", percent(stats.conversion_rate)))
        }
        div.panel { (actions(record.id, stats, retryable, zone)) }
        div.panel {
            h2 #status-heading { "By status" }
            table data-testid="status-breakdown" aria-labelledby="status-heading" {
                tbody {
                    @for (label, n) in status_rows(stats) {
                        tr { th scope="row" { (label) } td.num { (n) } }
                    }
                }
            }
        }
    }
}

fn status_rows(s: &Stats) -> [(&'static str, i64); 9] {
    [
        ("Queued", s.queued),
        ("Being sent", s.processing),
        ("Awaiting report", s.pending),
        ("Delivered", s.delivered),
        ("Refused before sending", s.send_failed),
        ("Delivery failed", s.delivery_failed),
        ("Cancelled", s.cancelled),
        ("Outcome unknown", s.unknown),
        ("Skipped (opted out or capped)", s.skipped),
    ]
}

fn card(key: &str, label: &str, value: String) -> Markup {
    html! {
        div.card data-figure=(key) {
            div.label { (label) }
            div.value { (value) }
        }
    }
}

/// One action button: enabled when the engine offers the action for these figures.
fn action_button(
    id: i64,
    offers: (&Stats, i64),
    action: Action,
    path: &str,
    label: &str,
) -> Markup {
    let (stats, retryable) = offers;
    let danger = action == Action::Cancel;
    let confirm = danger.then_some(
        "Cancel this campaign? Messages not sent yet will not be sent, and their credits are refunded.",
    );
    html! {
        button type="button" class=[danger.then_some("danger")]
            hx-post={ "/app/campaigns/" (id) "/actions/" (path) } hx-target="#live-root"
            hx-swap="outerHTML" hx-disabled-elt="this" hx-confirm=[confirm]
            disabled[!offered(stats, retryable, action)] { (label) }
    }
}

fn actions(id: i64, stats: &Stats, retryable: i64, zone: chrono_tz::Tz) -> Markup {
    let can_schedule = offered(stats, retryable, Action::Schedule);
    let can_edit = offered(stats, retryable, Action::Edit { scheduled: false });
    let offers = (stats, retryable);
    let refreshable = refresh_offered(stats);
    html! {
        h2 { "Actions" }
        div.actions {
            (action_button(id, offers, Action::Enqueue, "enqueue", "Send now"))
            form hx-post={ "/app/campaigns/" (id) "/actions/schedule" } hx-target="#live-root" hx-swap="outerHTML" hx-disabled-elt="find button" {
                div {
                    label for="send-at" { "Send at" }
                    input #send-at type="datetime-local" name="at" required disabled[!can_schedule];
                    span.note { (zone.name()) }
                }
                button type="submit" disabled[!can_schedule] { "Schedule" }
            }
            (action_button(id, offers, Action::Unschedule, "unschedule", "Unschedule"))
            (action_button(id, offers, Action::Pause, "pause", "Pause"))
            (action_button(id, offers, Action::Resume, "resume", "Resume"))
            (action_button(id, offers, Action::RetryFailed, "retry-failed", "Retry failed"))
            button type="button" hx-post={ "/app/campaigns/" (id) "/actions/refresh" } hx-target="#live-root"
                hx-swap="outerHTML" hx-disabled-elt="this" disabled[!refreshable] { "Refresh statuses" }
            (action_button(id, offers, Action::Cancel, "cancel", "Cancel campaign"))
            @if can_edit { a.button.secondary href={ "/app/campaigns/" (id) "/edit" } { "Edit" } }
            span.busy { "Working…" }
        }
    }
}

/// The row-based reports: the chart and the delivery-status and error breakdowns.
pub fn reports(
    points: &[Point],
    bucket: &str,
    statuses: &[DeliveryStatusCount],
    errors: &[ErrorCount],
) -> Markup {
    html! {
        div.panel {
            h2 { "Sent, delivered and failed per " (bucket) }
            (chart(points, bucket))
        }
        div.grid2 {
            div.panel {
                h2 #delivery-heading { "Provider delivery status" }
                table data-testid="delivery-breakdown" aria-labelledby="delivery-heading" {
                    thead { tr { th scope="col" { "deliveryStatus" } th.num scope="col" { "Messages" } } }
                    tbody {
                        @for s in statuses { tr { td { (s.delivery_status) } td.num { (s.count) } } }
                        @if statuses.is_empty() { tr { td colspan="2" { "No reports yet." } } }
                    }
                }
            }
            div.panel {
                h2 #error-heading { "Errors" }
                table data-testid="error-breakdown" aria-labelledby="error-heading" {
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Error" } th.num scope="col" { "Messages" } } }
                    tbody {
                        @for e in errors { tr { td { (e.kind) } td { (e.error) } td.num { (e.count) } } }
                        @if errors.is_empty() { tr { td colspan="3" { "No errors." } } }
                    }
                }
            }
        }
    }
}

/// A chart series: its name, colour and figure.
type Series = (&'static str, &'static str, fn(&MinuteCounts) -> i64);

const SERIES: [Series; 3] = [
    ("Sent", "#1a4fd6", |c| c.sent),
    ("Delivered", "#15803d", |c| c.delivered),
    ("Failed", "#b42318", |c| c.failed),
];

/// Sent, delivered and failed per bucket as SVG bars, three per bucket (drawn here, no
/// script; a single bucket shows as well as many).
pub fn chart(points: &[Point], bucket: &str) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 180.0;
    const PAD: f64 = 24.0;
    let top = points
        .iter()
        .flat_map(|p| SERIES.iter().map(move |(_, _, f)| f(&p.counts)))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (W - 2.0 * PAD) / points.len().max(1) as f64;
    let bar = (slot / 4.0).min(24.0);
    let height = |n: i64| (H - 2.0 * PAD) * n as f64 / top as f64;
    let label = match (points.first(), points.last()) {
        (Some(first), Some(last)) => format!(
            "{} per {bucket} from {} to {}, at most {top} in one {bucket}",
            SERIES.map(|s| s.0).join(", "),
            first.start.format("%Y-%m-%d %H:%M"),
            last.start.format("%Y-%m-%d %H:%M")
        ),
        _ => String::new(),
    };
    if points.is_empty() {
        return html! { p.note data-testid="chart" { "No messages sent yet." } };
    }
    html! {
        svg.chart data-testid="chart" role="img" aria-label=(label) viewBox={ "0 0 " (W) " " (H) } {
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#9ca3af" {}
            text x=(PAD) y="14" font-size="11" fill="#4f5868" { (top) }
            text x=(PAD) y=(H - 6.0) font-size="11" fill="#4f5868" {
                (points.first().map(|p| p.start.format("%H:%M").to_string()).unwrap_or_default())
            }
            text x=(W - PAD) y=(H - 6.0) font-size="11" fill="#4f5868" text-anchor="end" {
                (points.last().map(|p| p.start.format("%H:%M").to_string()).unwrap_or_default())
            }
            @for (i, p) in points.iter().enumerate() {
                @for (k, (name, colour, f)) in SERIES.iter().enumerate() {
                    @let n = f(&p.counts);
                    @let h = height(n);
                    rect x=(format!("{:.1}", PAD + slot * i as f64 + bar * (k as f64 + 0.5)))
                        y=(format!("{:.1}", H - PAD - h)) width=(format!("{bar:.1}"))
                        height=(format!("{h:.1}")) fill=(colour) {
                        title { (name) " " (p.start.format("%H:%M")) ": " (n) }
                    }
                }
            }
        }
        div.legend aria-hidden="true" {
            @for (name, colour, _) in SERIES {
                span { span.key style={ "background:" (colour) } {} (name) }
            }
        }
    }
}

/// Rows of failed recipients, and a button that loads the next page in their place.
pub fn failed_rows(
    id: i64,
    rows: &[RecipientRow],
    next: Option<i64>,
    zone: chrono_tz::Tz,
) -> Markup {
    html! {
        @for r in rows {
            tr {
                td { (r.phone_e164) }
                td { (r.message_status().map(|s| s.name()).unwrap_or("failed")) }
                td { (r.delivery_status.as_deref().unwrap_or("—")) }
                td { (r.error.as_deref().unwrap_or("—")) }
                td.opt { (when(r.failed_at, zone)) }
            }
        }
        @if rows.is_empty() && next.is_none() {
            tr { td colspan="5" { "No failed recipients." } }
        }
        @if let Some(after) = next {
            tr {
                td colspan="5" {
                    button.secondary type="button" hx-get={ "/app/campaigns/" (id) "/failed?after=" (after) }
                        hx-target="closest tr" hx-swap="outerHTML" { "More failed recipients" }
                }
            }
        }
    }
}

/// A list the compose form offers, ticked when the campaign has it.
pub struct ListChoice {
    pub id: i64,
    pub name: String,
    pub members: i64,
    pub checked: bool,
}

/// The compose form's values (a new campaign, or an existing one to edit).
pub struct ComposeView<'a> {
    /// `None` for a new campaign.
    pub id: Option<i64>,
    pub name: &'a str,
    pub message_type: &'a str,
    pub body: &'a str,
    pub sender: &'a str,
    pub phones: &'a str,
    pub lists: &'a [ListChoice],
    pub offer_title: &'a str,
    pub offer_text: &'a str,
    pub error: Option<&'a str>,
}

pub fn compose(viewer: &Viewer<'_>, v: &ComposeView<'_>) -> Markup {
    let (title, action) = match v.id {
        Some(id) => ("Edit campaign".to_owned(), format!("/app/campaigns/{id}")),
        None => ("New campaign".to_owned(), "/app/campaigns".to_owned()),
    };
    let body = html! {
        p { a href="/app/campaigns" { "← Campaigns" } }
        h1 { (title) }
        div.grid2 {
            form.panel #compose hx-post=(action) hx-target="#compose-error" hx-disabled-elt="find button[type=submit]" {
                div.alert role="alert" #compose-error {
                    @if let Some(e) = v.error { (e) }
                }
                label for="name" { "Name" }
                input #name name="name" value=(v.name) maxlength="200" required;
                label for="message-type" { "Message type" }
                select #message-type name="messageType" {
                    option value="marketing" selected[v.message_type != "service"] { "marketing" }
                    option value="service" selected[v.message_type == "service"] { "service" }
                }
                label for="text" { "Text" }
                textarea #text name="body" maxlength="1530" required
                    hx-post="/app/preview" hx-trigger="input changed delay:500ms, load"
                    hx-target="#preview" hx-include="#compose" { (v.body) }
                p.note { "Placeholders: {{firstName}}, {{lastName}} and contact attributes such as {{city}}." }
                label for="sender" { "Sender" }
                input #sender name="sender" value=(v.sender) maxlength="16";
                fieldset hx-post="/app/preview" hx-trigger="change" hx-target="#preview" hx-include="#compose" {
                    legend { "Lists" }
                    @for l in v.lists {
                        div.row {
                            label { input type="checkbox" name="listIds" value=(l.id) checked[l.checked]; (l.name) }
                            span.note { (l.members) " contacts" }
                        }
                    }
                    @if v.lists.is_empty() { p.note { "No lists yet: import contacts first, or enter phones." } }
                }
                label for="phones" { "Phones" }
                textarea #phones name="phones" placeholder="+306984303406 (one per line)"
                    hx-post="/app/preview" hx-trigger="input changed delay:500ms" hx-target="#preview" hx-include="#compose" { (v.phones) }
                label for="offer-title" { "Offer title" }
                input #offer-title name="offerTitle" value=(v.offer_title) maxlength="200";
                label for="offer-text" { "Offer text" }
                textarea #offer-text name="offerText" maxlength="2000" { (v.offer_text) }
                p { button type="submit" { "Save draft" } span.busy { "Saving…" } }
            }
            section.panel.preview aria-live="polite" {
                h2 { "Preview" }
                div #preview data-testid="preview" { p.note { "Type a text to see its cost." } }
            }
        }
    };
    page(&title, Section::Campaigns, viewer, body)
}

/// The preview's numbers: exactly what an enqueue now would use.
pub fn preview(p: &Preview) -> Markup {
    let encoding = p
        .samples
        .iter()
        .map(|s| s.encoding)
        .max_by_key(|e| *e == crate::domain::Encoding::Ucs2);
    let ucs2: Vec<&str> = p
        .samples
        .iter()
        .flat_map(|s| s.ucs2_characters.iter().map(String::as_str))
        .collect();
    let segments = if p.segments_min == p.segments_max {
        p.segments_max.to_string()
    } else {
        format!("{} to {}", p.segments_min, p.segments_max)
    };
    html! {
        dl {
            dt { "Encoding" } dd data-preview="encoding" { (encoding.map_or("—", encoding_name)) }
            @if !ucs2.is_empty() { dt { "UCS-2 because of" } dd { (ucs2.join(" ")) } }
            dt { "Parts per message" } dd data-preview="segments" { (segments) }
            dt { "Recipients" } dd data-preview="recipients" { (p.audience.recipients) }
            dt { "Left out" } dd { (p.audience.duplicates) " duplicates, " (p.audience.opted_out) " opted out" }
            dt { "Cost" } dd data-preview="cost" { (p.credits.required) " credits" }
            dt { "Balance" } dd data-preview="balance" { (p.credits.balance) " credits" }
        }
        @if !p.credits.sufficient { p.alert { "The balance does not cover this campaign." } }
        @if !p.subscription_active { p.alert { "The subscription is not active: sending is refused." } }
        @for s in &p.samples {
            div.sample { span.note { (s.phone) ": " } (s.text) }
        }
    }
}

fn encoding_name(e: crate::domain::Encoding) -> &'static str {
    match e {
        crate::domain::Encoding::Gsm7 => "GSM-7",
        crate::domain::Encoding::Ucs2 => "UCS-2",
    }
}
