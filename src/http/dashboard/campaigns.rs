//! Campaign pages and their actions. Actions run the same lifecycle commands as the API, in
//! the campaign's actor; what a page offers comes from the engine (`offered`), what happens
//! from the actor. Figures come from actor memory; the live stream is the campaign actor's
//! publications (never a query per event).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{NaiveDateTime, TimeZone};
use futures::StreamExt;
use serde::Deserialize;

use super::{html, PageError, Signed};
use crate::actors::campaign_messages::{Command, LifecycleReply};
use crate::domain::{CampaignId, CampaignStatus, TenantId};
use crate::engine::campaign::{admit, retry_candidates, Action, Stats};
use crate::engine::reports::{timeseries, Bucket};
use crate::http::auth::Authenticated;
use crate::http::campaigns::{self as api, AudienceInput, CampaignError, CampaignInput};
use crate::http::live::{event_stream, Live, Tick};
use crate::http::AppState;
use crate::reconcile::{BulkStart, BulkTarget};
use crate::store::campaigns::{self, CampaignRecord};
use crate::store::enqueue::{self, StartError};
use crate::store::reports::{self, RecipientFilter, StatusFilter};
use crate::web::dashboard::campaigns as pages;

/// Campaigns per list page.
const PAGE_SIZE: i64 = 20;
/// Failed recipients per page of the detail's table.
const FAILED_PAGE: i64 = 25;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/campaigns", web::get().to(list))
        .route("/campaigns", web::post().to(create))
        .route("/campaigns/live", web::get().to(list_live))
        .route("/campaigns/new", web::get().to(new))
        .route("/campaigns/{id}", web::get().to(detail))
        .route("/campaigns/{id}", web::post().to(update))
        .route("/campaigns/{id}/edit", web::get().to(edit))
        .route("/campaigns/{id}/live", web::get().to(live))
        .route("/campaigns/{id}/reports", web::get().to(report_panels))
        .route("/campaigns/{id}/failed", web::get().to(failed))
        .route(
            "/campaigns/{id}/recipients.csv",
            web::get().to(recipients_csv),
        )
        .route("/campaigns/{id}/report.csv", web::get().to(report_csv))
        .route("/campaigns/{id}/actions/{action}", web::post().to(action))
        .route("/preview", web::post().to(preview));
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    search: String,
    #[serde(default)]
    status: String,
    page: Option<String>,
}

async fn list(
    signed: Signed,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let status = CampaignStatus::parse(&query.status).ok();
    let search = query.search.trim();
    // a page number past the end or not a number shows the last or first page
    let wanted: i64 = query
        .page
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let page = wanted.clamp(1, i64::MAX / PAGE_SIZE);
    let filter = (!search.is_empty()).then_some(search);
    let (records, total) =
        campaigns::list(&state.pool, signed.tenant, status, filter, page, PAGE_SIZE)
            .await
            .map_err(PageError::unexpected)?;
    let with_stats = records.into_iter().map(|r| async {
        let stats = stats_of(&state, signed.tenant, r.id).await;
        (r, stats)
    });
    let rows = futures::future::join_all(with_stats).await;
    let live: Vec<i64> = rows
        .iter()
        .filter(|(_, s)| {
            s.as_ref()
                .is_some_and(|s| !s.settled() && is_moving(s.status))
        })
        .map(|(r, _)| r.id)
        .collect();
    let view = pages::ListView {
        rows: &rows,
        search,
        status,
        page,
        pages: (total + PAGE_SIZE - 1) / PAGE_SIZE,
        total,
        live: &live,
    };
    Ok(html(StatusCode::OK, pages::list(&signed.viewer(), &view)))
}

/// Campaigns whose figures move by themselves (sending, or settling after a pause or the end).
fn is_moving(status: CampaignStatus) -> bool {
    !matches!(status, CampaignStatus::Draft | CampaignStatus::Scheduled)
}

/// The tenant's campaign's figures from its actor; `None` for another tenant's.
async fn stats_of(state: &AppState, tenant: TenantId, id: i64) -> Option<Stats> {
    let id = CampaignId::new(id).ok()?;
    let (owner, stats) = state.events.registry.stats(id).await?;
    let last_refresh_at = state.reconciler.last_refresh_at(id);
    (owner == tenant).then_some(Stats {
        last_refresh_at,
        ..stats
    })
}

#[derive(Deserialize)]
struct LiveQuery {
    #[serde(default)]
    ids: String,
}

/// The list's live rows: one stream for the page, an event `row-{id}` with a row's cells
/// whenever that campaign's figures change.
async fn list_live(
    signed: Signed,
    query: web::Query<LiveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let ids: Vec<CampaignId> = query
        .ids
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .take(PAGE_SIZE as usize)
        .collect();
    let owned = campaigns::owned(&state.pool, signed.tenant, &ids)
        .await
        .map_err(PageError::unexpected)?;
    let mut streams = Vec::new();
    let shared = state.clone().into_inner();
    for id in owned {
        let Some(record) = campaigns::find(&state.pool, signed.tenant, id.get())
            .await
            .map_err(PageError::unexpected)?
        else {
            continue;
        };
        if let Some(((tenant, stats), watch)) = state.events.registry.watch(id).await {
            let live = Live::new(&state, id, tenant, stats, watch);
            streams.push(row_events(live, record, shared.clone(), signed.tenant).boxed_local());
        }
    }
    let events = futures::stream::select_all(streams).map(Ok);
    Ok(event_stream(events))
}

/// A campaign's rows as SSE events. The row's record (its start and finish times) is read
/// again only when the status changes, not on every event.
fn row_events(
    live: Live,
    record: CampaignRecord,
    state: std::sync::Arc<AppState>,
    tenant: TenantId,
) -> impl futures::Stream<Item = web::Bytes> {
    futures::stream::unfold((live, record), move |(mut live, mut record)| {
        let state = state.clone();
        async move {
            let chunk = match live.next().await? {
                Tick::KeepAlive => web::Bytes::from_static(b": keep-alive\n\n"),
                Tick::Figures(stats) => {
                    if stats.status.as_str() != record.status {
                        if let Ok(Some(fresh)) =
                            campaigns::find(&state.pool, tenant, record.id).await
                        {
                            record = fresh;
                        }
                    }
                    let cells = pages::row_cells(&record, Some(&stats));
                    sse_event(&format!("row-{}", record.id), &cells.into_string())
                }
            };
            Some((chunk, (live, record)))
        }
    })
}

/// One Server-Sent Event whose data is HTML (each line of it a `data:` line).
fn sse_event(event: &str, data: &str) -> web::Bytes {
    let mut out = format!("event: {event}\n");
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into()
}

/// The tenant's campaign named in the path, or the 404 page.
async fn owned(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<(CampaignId, CampaignRecord), PageError> {
    let id: CampaignId = raw.parse().map_err(|_| PageError::NotFound)?;
    let record = campaigns::find(&state.pool, tenant, id.get())
        .await
        .map_err(PageError::unexpected)?
        .ok_or(PageError::NotFound)?;
    Ok((id, record))
}

/// Failed sends a retry would queue again; counted only when the status admits a retry.
async fn retryable(state: &AppState, id: CampaignId, stats: &Stats) -> Result<i64, PageError> {
    if admit(stats.status, Action::RetryFailed).is_err() {
        return Ok(0);
    }
    let max_retries = state.settings.sending.max_retries as i32;
    let (refused, retryable) = enqueue::refusals(&state.pool, id, max_retries)
        .await
        .map_err(PageError::unexpected)?;
    Ok(retry_candidates(stats, refused, retryable))
}

async fn time_zone(state: &AppState, tenant: TenantId) -> Result<String, PageError> {
    let rules = crate::store::tenants::marketing_rules(&state.pool, tenant)
        .await
        .map_err(PageError::unexpected)?;
    Ok(rules.time_zone)
}

async fn detail(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, record) = owned(&state, signed.tenant, &path).await?;
    let stats = stats_of(&state, signed.tenant, id.get())
        .await
        .ok_or(PageError::NotFound)?;
    let zone = time_zone(&state, signed.tenant).await?;
    let retryable = retryable(&state, id, &stats).await?;
    let view = pages::DetailView {
        record: &record,
        stats: &stats,
        retryable,
        time_zone: &zone,
    };
    Ok(html(StatusCode::OK, pages::detail(&signed.viewer(), &view)))
}

/// The detail's live figures: an event `figures` with the live panel on every change (at most
/// four a second), and `done` after the figures of a settled campaign.
async fn live(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, record) = owned(&state, signed.tenant, &path).await?;
    let zone = time_zone(&state, signed.tenant).await?;
    let ((tenant, stats), watch) = state
        .events
        .registry
        .watch(id)
        .await
        .filter(|((tenant, _), _)| *tenant == signed.tenant)
        .ok_or(PageError::NotFound)?;
    let live = Live::new(&state, id, tenant, stats, watch);
    let seed = LiveDetail {
        live,
        record,
        zone,
        state: state.into_inner(),
        rows_told: Instant::now(),
        ended: false,
    };
    let events = futures::stream::unfold(seed, move |mut d| async move {
        let chunk = d.next_chunk(id).await?;
        Some((Ok(chunk), d))
    });
    Ok(event_stream(events))
}

/// Rows are read again at most this often while the figures move.
const ROWS_EVERY: Duration = Duration::from_secs(2);

/// One detail page's live stream.
struct LiveDetail {
    live: Live,
    record: CampaignRecord,
    zone: String,
    state: std::sync::Arc<AppState>,
    /// When the page was last told to read the rows again (event `rows`).
    rows_told: Instant,
    ended: bool,
}

impl LiveDetail {
    async fn next_chunk(&mut self, id: CampaignId) -> Option<web::Bytes> {
        if self.ended {
            return None;
        }
        let stats = match self.live.next().await {
            Some(Tick::Figures(stats)) => stats,
            Some(Tick::KeepAlive) => return Some(web::Bytes::from_static(b": keep-alive\n\n")),
            None if !self.live.settled() => return None,
            None => {
                // the rows catch up with the final figures (one checkpoint), then a last read
                self.ended = true;
                self.state
                    .events
                    .applied
                    .settled(Duration::from_secs(10))
                    .await;
                let mut last = sse_event("rows", "final").to_vec();
                last.extend_from_slice(&sse_event("done", "settled"));
                return Some(last.into());
            }
        };
        let retry = retryable(&self.state, id, &stats).await.unwrap_or(0);
        let panel = pages::live_panel(&self.record, &stats, retry, &self.zone);
        let mut chunk = sse_event("figures", &panel.into_string()).to_vec();
        if self.rows_told.elapsed() >= ROWS_EVERY {
            self.rows_told = Instant::now();
            chunk.extend_from_slice(&sse_event("rows", "changed"));
        }
        Some(chunk.into())
    }
}

/// The chart and the row-based breakdowns (loaded by the page, again as figures move).
async fn report_panels(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, _) = owned(&state, signed.tenant, &path).await?;
    let scope = reports::scope(&state.pool, signed.tenant, id)
        .await
        .map_err(PageError::unexpected)?
        .ok_or(PageError::NotFound)?;
    let (campaign, _) = crate::http::reports::figures(&state, signed.tenant, id)
        .await
        .map_err(|_| PageError::NotFound)?;
    let zone: chrono_tz::Tz = scope.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let series = &campaign.figures.series;
    // minutes for a few hours of sending, hours beyond
    let span = match (series.keys().next(), series.keys().next_back()) {
        (Some(first), Some(last)) => *last - *first,
        _ => chrono::Duration::zero(),
    };
    let (bucket, name) = if span <= chrono::Duration::hours(3) {
        (Bucket::Minute, "minute")
    } else {
        (Bucket::Hour, "hour")
    };
    let points = timeseries(series, bucket, zone, None, None).unwrap_or_default();
    let (statuses, errors) = reports::breakdown(&state.pool, &scope)
        .await
        .map_err(PageError::unexpected)?;
    Ok(html(
        StatusCode::OK,
        pages::reports(&points, name, &statuses, &errors),
    ))
}

#[derive(Deserialize)]
struct FailedQuery {
    after: Option<i64>,
}

async fn failed(
    signed: Signed,
    path: web::Path<String>,
    query: web::Query<FailedQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, _) = owned(&state, signed.tenant, &path).await?;
    let scope = reports::scope(&state.pool, signed.tenant, id)
        .await
        .map_err(PageError::unexpected)?
        .ok_or(PageError::NotFound)?;
    let filter = RecipientFilter {
        status: Some(StatusFilter::failed()),
    };
    let mut rows =
        reports::recipients_page(&state.pool, &scope, filter, query.after, FAILED_PAGE + 1)
            .await
            .map_err(PageError::unexpected)?;
    let next = (rows.len() as i64 > FAILED_PAGE).then(|| {
        rows.truncate(FAILED_PAGE as usize);
        rows.last().map(|r| r.id)
    });
    Ok(html(
        StatusCode::OK,
        pages::failed_rows(id.get(), &rows, next.flatten()),
    ))
}

async fn recipients_csv(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, _) = owned(&state, signed.tenant, &path).await?;
    crate::http::reports::recipients_export(&state, signed.tenant, &id.to_string(), None)
        .await
        .map_err(|_| PageError::NotFound)
}

async fn report_csv(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, _) = owned(&state, signed.tenant, &path).await?;
    crate::http::reports::report_export(&state, signed.tenant, &id.to_string(), None)
        .await
        .map_err(|_| PageError::NotFound)
}

/// A refused command's message for people, with the API's status code.
fn refused(e: CampaignError) -> PageError {
    let status = e.status_code();
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        return PageError::Unexpected(anyhow::anyhow!("{e}"));
    }
    let message = match &e {
        CampaignError::Start(StartError::Refused(current)) => {
            format!("Not possible now: the campaign is {current}.")
        }
        CampaignError::Start(StartError::InsufficientCredits {
            required,
            available,
        }) => format!("Not enough credits: {required} required, {available} available."),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            chars.next().map_or(text.clone(), |c| {
                format!(
                    "{}{}.",
                    c.to_uppercase(),
                    chars.as_str().trim_end_matches('.')
                )
            })
        }
    };
    PageError::Refused(status, message)
}

/// Runs an action and answers the live panel with the campaign's new figures.
async fn action(
    signed: Signed,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (raw, name) = path.into_inner();
    let (id, _) = owned(&state, signed.tenant, &raw).await?;
    let zone = time_zone(&state, signed.tenant).await?;
    let command = match name.as_str() {
        "enqueue" => Command::Enqueue {
            idempotency_key: None,
        },
        "schedule" => Command::Schedule(local_time(&field(&body, "at"), &zone)?),
        "unschedule" => Command::Unschedule,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "cancel" => Command::Cancel,
        "retry-failed" => Command::RetryFailed,
        "refresh" => return refresh(&signed, id, &state, &zone).await,
        _ => return Err(PageError::NotFound),
    };
    let auth = Authenticated {
        tenant: signed.tenant,
    };
    let retrying = matches!(command, Command::RetryFailed);
    api::run(&state, auth, id, command)
        .await
        .map_err(|e| match e {
            CampaignError::Start(StartError::NoRecipients) if retrying => PageError::Refused(
                StatusCode::BAD_REQUEST,
                "No failed send can be retried: they were refused for reasons a retry would \
                 not fix, or were retried already."
                    .into(),
            ),
            e => refused(e),
        })?;
    panel(&state, signed.tenant, id, &zone, None).await
}

/// The live panel as it is now.
async fn panel(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
    zone: &str,
    note: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let record = campaigns::find(&state.pool, tenant, id.get())
        .await
        .map_err(PageError::unexpected)?
        .ok_or(PageError::NotFound)?;
    let stats = stats_of(state, tenant, id.get())
        .await
        .ok_or(PageError::NotFound)?;
    let retry = retryable(state, id, &stats).await?;
    // the error slot is cleared (or shows the note) out of band
    let cleared = maud::html! {
        div.alert role="alert" #action-error data-testid="action-error" aria-live="polite" hx-swap-oob="true" {
            @if let Some(note) = note { span.note { (note) } }
        }
    };
    let markup = maud::html! { (pages::live_panel(&record, &stats, retry, zone)) (cleared) };
    Ok(html(StatusCode::OK, markup))
}

async fn refresh(
    signed: &Signed,
    id: CampaignId,
    state: &AppState,
    zone: &str,
) -> Result<HttpResponse, PageError> {
    let started = state
        .reconciler
        .refresh_bulk(signed.tenant, BulkTarget::Campaign(id))
        .await
        .map_err(|e| PageError::Refused(StatusCode::CONFLICT, format!("Refresh refused: {e}.")))?;
    let note = match started {
        BulkStart::Done(report) => format!(
            "Asked the provider about {} messages: {} updated.",
            report.total, report.updated
        ),
        BulkStart::Started { total, .. } => {
            format!("Asking the provider about {total} messages; the figures follow.")
        }
    };
    panel(state, signed.tenant, id, zone, Some(&note)).await
}

/// A form field of a url-encoded body.
fn field(body: &[u8], name: &str) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A `datetime-local` value read in the tenant's time zone.
fn local_time(raw: &str, zone: &str) -> Result<chrono::DateTime<chrono::Utc>, PageError> {
    let bad = |m: &str| PageError::Refused(StatusCode::BAD_REQUEST, m.to_owned());
    let naive = NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| bad("Choose a date and time to send at."))?;
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let at = tz.from_local_datetime(&naive).earliest().ok_or_else(|| {
        bad("That time does not exist in your time zone (a clock change); choose another.")
    })?;
    let at = at.with_timezone(&chrono::Utc);
    if at <= chrono::Utc::now() {
        return Err(bad("Choose a time in the future."));
    }
    Ok(at)
}

/// The compose form's fields (lists may repeat, so the body is read pair by pair).
#[derive(Debug, Default)]
struct ComposeForm {
    name: String,
    message_type: String,
    body: String,
    sender: String,
    phones: String,
    list_ids: Vec<i64>,
    offer_title: String,
    offer_text: String,
}

impl ComposeForm {
    fn parse(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            let value = value.into_owned();
            match key.as_ref() {
                "name" => form.name = value,
                "messageType" => form.message_type = value,
                "body" => form.body = value,
                "sender" => form.sender = value,
                "phones" => form.phones = value,
                "listIds" => form.list_ids.extend(value.parse::<i64>().ok()),
                "offerTitle" => form.offer_title = value,
                "offerText" => form.offer_text = value,
                _ => {}
            }
        }
        form
    }

    fn phones(&self) -> Vec<String> {
        self.phones
            .split(['\n', ',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The API's campaign input for these fields (empty optional fields left out).
    fn input(&self) -> CampaignInput {
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
        let offer_title = text(&self.offer_title);
        CampaignInput {
            name: Some(self.name.clone()),
            body: Some(self.body.clone()),
            sender: text(&self.sender),
            message_type: text(&self.message_type),
            offer_text: Some(offer_title.as_ref().and(text(&self.offer_text))),
            offer_title: Some(offer_title),
            audience: Some(AudienceInput {
                list_id: None,
                list_ids: self.list_ids.clone(),
                phones: self.phones(),
            }),
            ..CampaignInput::default()
        }
    }
}

async fn lists_for(
    state: &AppState,
    tenant: TenantId,
    checked: &[i64],
) -> Result<Vec<(i64, String, i64, bool)>, PageError> {
    let lists = crate::store::contacts::lists(&state.pool, tenant)
        .await
        .map_err(PageError::unexpected)?;
    Ok(lists
        .into_iter()
        .map(|l| (l.id, l.name, l.members, checked.contains(&l.id)))
        .collect())
}

async fn new(signed: Signed, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    let lists = lists_for(&state, signed.tenant, &[]).await?;
    let sender = state.settings.mitto.sender.clone();
    let view = pages::ComposeView {
        id: None,
        name: "",
        message_type: "marketing",
        body: "",
        sender: &sender,
        phones: "",
        lists: &lists,
        offer_title: "",
        offer_text: "",
        error: None,
    };
    Ok(html(
        StatusCode::OK,
        pages::compose(&signed.viewer(), &view),
    ))
}

async fn edit(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (_, record) = owned(&state, signed.tenant, &path).await?;
    let audience = &record.audience;
    let ids: Vec<i64> = audience["listIds"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    let phones: Vec<&str> = audience["phones"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let phones = phones.join("\n");
    let lists = lists_for(&state, signed.tenant, &ids).await?;
    let view = pages::ComposeView {
        id: Some(record.id),
        name: &record.name,
        message_type: &record.message_type,
        body: &record.body,
        sender: &record.sender,
        phones: &phones,
        lists: &lists,
        offer_title: record.offer_title.as_deref().unwrap_or_default(),
        offer_text: record.offer_text.as_deref().unwrap_or_default(),
        error: None,
    };
    Ok(html(
        StatusCode::OK,
        pages::compose(&signed.viewer(), &view),
    ))
}

/// Saves a new draft and goes to its page.
async fn create(
    signed: Signed,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let form = ComposeForm::parse(&body);
    let def = api::definition(&state, signed.tenant, form.input(), None)
        .await
        .map_err(refused)?;
    let record = campaigns::create(&state.pool, signed.tenant, &def)
        .await
        .map_err(PageError::unexpected)?;
    Ok(go_to(&format!("/app/campaigns/{}", record.id)))
}

/// Saves an edit (drafts and scheduled campaigns) through the campaign's actor.
async fn update(
    signed: Signed,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, record) = owned(&state, signed.tenant, &path).await?;
    let form = ComposeForm::parse(&body);
    let mut input = form.input();
    // a cleared offer field removes it
    input.offer_title = Some(input.offer_title.flatten());
    let def = api::definition(&state, signed.tenant, input, Some(&record))
        .await
        .map_err(refused)?;
    let auth = Authenticated {
        tenant: signed.tenant,
    };
    match api::run(&state, auth, id, Command::Edit(Box::new(def)))
        .await
        .map_err(refused)?
    {
        LifecycleReply::Edited(_) => Ok(go_to(&format!("/app/campaigns/{id}"))),
        _ => Err(PageError::unexpected("unexpected reply to an edit")),
    }
}

/// After an htmx form: the browser goes to `path`.
fn go_to(path: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("HX-Redirect", path.to_owned()))
        .finish()
}

/// The compose form's preview: the preview endpoint's numbers for the form as it stands.
async fn preview(
    signed: Signed,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let form = ComposeForm::parse(&body);
    if form.body.trim().is_empty() {
        return Ok(html(
            StatusCode::OK,
            maud::html! { p.note { "Type a text to see its cost." } },
        ));
    }
    let mut input = form.input();
    input.name.get_or_insert_with(|| "preview".into());
    if input.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        input.name = Some("preview".into());
    }
    let problem = |e: CampaignError| {
        let message = match refused(e) {
            PageError::Refused(_, m) => m,
            other => other.to_string(),
        };
        html(StatusCode::OK, maud::html! { p.alert { (message) } })
    };
    let def = match api::definition(&state, signed.tenant, input, None).await {
        Ok(def) => def,
        Err(e) => return Ok(problem(e)),
    };
    let input = crate::store::preview::PreviewInput {
        tenant: signed.tenant,
        campaign: None,
        carried: crate::domain::Carried::of(def.message_type, def.offer.is_some()),
        body: def.body,
        audience: def.audience,
        samples: 3,
    };
    match api::preview(&state, &input).await {
        Ok(p) => Ok(html(StatusCode::OK, pages::preview(&p))),
        Err(e) => Ok(problem(e)),
    }
}
