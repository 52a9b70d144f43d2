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
use crate::http::live::{event_stream, Live, Tick, KEEP_ALIVE_FRAME};
use crate::http::reports::{csv_export, CsvExport};
use crate::http::AppState;
use crate::reconcile::{BulkStart, BulkTarget, RefreshError};
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
    let pages = (total + PAGE_SIZE - 1) / PAGE_SIZE;
    if page > pages.max(1) {
        let last = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("search", search)
            .append_pair("status", status.map_or("", CampaignStatus::as_str))
            .append_pair("page", &pages.to_string())
            .finish();
        return Ok(HttpResponse::SeeOther()
            .insert_header((
                actix_web::http::header::LOCATION,
                format!("/app/campaigns?{last}"),
            ))
            .finish());
    }
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
        pages,
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

/// The figures of a campaign known to be the tenant's: its actor did not answer.
fn unreachable_figures() -> PageError {
    PageError::Refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "The campaign's figures are not reachable right now; reload the page in a moment.".into(),
    )
}

/// The figures of the tenant's campaign (ownership checked before).
async fn figures_of(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
) -> Result<Stats, PageError> {
    stats_of(state, tenant, id.get())
        .await
        .ok_or_else(unreachable_figures)
}

#[derive(Deserialize)]
struct LiveQuery {
    #[serde(default)]
    ids: String,
}

/// The list's live rows: one stream for the page, an event `row-{id}` with a row's cells
/// whenever that campaign's figures change, and `done` once every one of them is settled.
async fn list_live(
    signed: Signed,
    query: web::Query<LiveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let ids = query
        .ids
        .split(',')
        .filter_map(|id| id.trim().parse::<CampaignId>().ok())
        .take(PAGE_SIZE as usize);
    let shared = state.clone().into_inner();
    let mut streams = Vec::new();
    for id in ids {
        // another tenant's id finds nothing here and starts no actor
        let found = campaigns::find(&state.pool, signed.tenant, id.get())
            .await
            .map_err(PageError::unexpected)?;
        let Some(record) = found else { continue };
        if let Some(((_, stats), watch)) = state.events.registry.watch(id).await {
            let live = Live::new(&state, id, signed.tenant, stats, watch);
            let rows = RowStream {
                live,
                record,
                state: shared.clone(),
                tenant: signed.tenant,
                zone: signed.zone,
                seen: None,
            };
            streams.push(rows.events().boxed_local());
        }
    }
    let done = futures::stream::once(async { sse_event("done", "settled") });
    let events = futures::stream::select_all(streams).chain(done).map(Ok);
    Ok(event_stream(events))
}

/// One row of the list, following its campaign.
struct RowStream {
    live: Live,
    record: CampaignRecord,
    state: std::sync::Arc<AppState>,
    tenant: TenantId,
    zone: chrono_tz::Tz,
    /// The status of the last event: the record (its start and finish times) is read again
    /// only when it changes, not on every event.
    seen: Option<CampaignStatus>,
}

impl RowStream {
    fn events(self) -> impl futures::Stream<Item = web::Bytes> {
        futures::stream::unfold(self, |mut row| async move {
            let chunk = match row.live.next().await? {
                Tick::KeepAlive => web::Bytes::from_static(KEEP_ALIVE_FRAME),
                Tick::Figures(stats) => row.cells(&stats).await,
            };
            Some((chunk, row))
        })
    }

    async fn cells(&mut self, stats: &Stats) -> web::Bytes {
        if self.seen.is_some_and(|s| s != stats.status) {
            let fresh = campaigns::find(&self.state.pool, self.tenant, self.record.id).await;
            if let Ok(Some(fresh)) = fresh {
                self.record = fresh;
            }
        }
        self.seen = Some(stats.status);
        let cells = pages::row_cells(&self.record, Some(stats), self.zone);
        sse_event(&format!("row-{}", self.record.id), &cells.into_string())
    }
}

/// One Server-Sent Event whose data is HTML (each line of it a `data:` line).
fn sse_event(event: &str, data: &str) -> web::Bytes {
    let mut out = format!("event: {event}\n");
    // SSE ends a line at CR, LF or CRLF; a lone CR in user text must not end one early
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into()
}

/// A 404 for a request that swaps a part of a page: a message where the page shows errors,
/// not a whole page inside a panel.
fn in_place(e: PageError) -> PageError {
    match e {
        PageError::NotFound => PageError::Refused(
            StatusCode::NOT_FOUND,
            "This campaign no longer exists; reload the page.".into(),
        ),
        other => other,
    }
}

/// The tenant's campaign named in the path, or the 404 page.
async fn owned(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<(CampaignId, CampaignRecord), PageError> {
    let id: CampaignId = raw.parse().map_err(|_| PageError::NotFound)?;
    let record = api::find(state, tenant, id).await.map_err(refused)?;
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

async fn detail(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, record) = owned(&state, signed.tenant, &path).await?;
    let stats = figures_of(&state, signed.tenant, id).await?;
    let (retryable, audience) = view_extras(&state, signed.tenant, id, &record, &stats).await?;
    let view = pages::DetailView {
        record: &record,
        stats: &stats,
        retryable,
        audience,
    };
    Ok(html(StatusCode::OK, pages::detail(&signed.viewer(), &view)))
}

/// What the detail shows besides the figures: the retry count, and for drafts and scheduled
/// campaigns what sending now would take.
async fn view_extras(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
    record: &CampaignRecord,
    stats: &Stats,
) -> Result<(i64, Option<pages::Audience>), PageError> {
    let retry = retryable(state, id, stats).await?;
    let audience = match stats.status {
        CampaignStatus::Draft | CampaignStatus::Scheduled => {
            Some(audience(state, tenant, id, record.clone()).await?)
        }
        _ => None,
    };
    Ok((retry, audience))
}

/// Recipients and credits of sending the campaign now: the preview endpoint's computation.
async fn audience(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
    record: CampaignRecord,
) -> Result<pages::Audience, PageError> {
    let input = crate::store::preview::PreviewInput {
        tenant,
        campaign: Some(id),
        carried: record.carried(),
        body: record.body,
        audience: record.audience,
        samples: 0,
    };
    match api::preview(state, &input).await {
        Ok(p) => Ok(Ok((p.audience.recipients, p.credits.required))),
        Err(e) => match refused(e) {
            PageError::Refused(_, message) => Ok(Err(message)),
            other => Err(other),
        },
    }
}

/// The detail's live figures: an event `figures` with the live panel on every change (at most
/// four a second), and `done` after the figures of a settled campaign.
async fn live(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (id, record) = owned(&state, signed.tenant, &path).await?;
    let zone = signed.zone;
    let ((tenant, stats), watch) = state
        .events
        .registry
        .watch(id)
        .await
        .filter(|((tenant, _), _)| *tenant == signed.tenant)
        .ok_or_else(unreachable_figures)?;
    let live = Live::new(&state, id, tenant, stats, watch);
    let seed = LiveDetail {
        live,
        record,
        zone,
        state: state.into_inner(),
        rows_told: Instant::now(),
        retry: None,
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
    zone: chrono_tz::Tz,
    state: std::sync::Arc<AppState>,
    /// When the page was last told to read the rows again (event `rows`).
    rows_told: Instant,
    /// The retry count last shown, and the (status, refused sends) it was counted for.
    retry: Option<((CampaignStatus, i64), i64)>,
    ended: bool,
}

impl LiveDetail {
    async fn next_chunk(&mut self, id: CampaignId) -> Option<web::Bytes> {
        if self.ended {
            return None;
        }
        let stats = match self.live.next().await {
            Some(Tick::Figures(stats)) => stats,
            Some(Tick::KeepAlive) => return Some(web::Bytes::from_static(KEEP_ALIVE_FRAME)),
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
        let rows_due = self.rows_told.elapsed() >= ROWS_EVERY;
        // the rows are counted again only when the figures say something changed for a retry
        let key = (stats.status, stats.send_failed);
        let retry = match self.retry {
            Some((seen, n)) if seen == key && !rows_due => n,
            _ => {
                let n = retryable(&self.state, id, &stats).await.unwrap_or(0);
                self.retry = Some((key, n));
                n
            }
        };
        let panel = pages::live_panel(&self.record, &stats, retry, self.zone);
        let mut chunk = sse_event("figures", &panel.into_string()).to_vec();
        if rows_due {
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
    let (id, scope) = crate::http::reports::scope(&state, signed.tenant, &path).await?;
    let (campaign, _) = crate::http::reports::figures(&state, signed.tenant, id).await?;
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
    let (id, scope) = crate::http::reports::scope(&state, signed.tenant, &path).await?;
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
        pages::failed_rows(id.get(), &rows, next.flatten(), signed.zone),
    ))
}

async fn recipients_csv(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    Ok(csv_export(&state, signed.tenant, &path, None, CsvExport::Recipients).await?)
}

async fn report_csv(
    signed: Signed,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    Ok(csv_export(&state, signed.tenant, &path, None, CsvExport::Report).await?)
}

/// A refused command's message for people, with the API's status code; failures on our side
/// are logged with their cause.
fn refused(e: CampaignError) -> PageError {
    let status = e.status_code();
    let start = match e {
        CampaignError::Api(api) => return api.into(),
        CampaignError::Start(start) => start,
    };
    let message = match start {
        StartError::NotFound => return PageError::NotFound,
        StartError::Store(cause) => return PageError::Unexpected(cause.into()),
        StartError::Refused(current) => format!("Not possible now: the campaign is {current}."),
        StartError::InsufficientCredits {
            required,
            available,
        } => format!("Not enough credits: {required} required, {available} available."),
        other => super::sentence(&other.to_string()),
    };
    PageError::Refused(status, message)
}

/// A refused refresh as the page says it.
fn refresh_refused(e: RefreshError) -> PageError {
    match e {
        RefreshError::NotFound(_) => PageError::NotFound,
        RefreshError::Store(_) | RefreshError::Internal(_) => PageError::Unexpected(e.into()),
        RefreshError::Running { .. } => PageError::Refused(
            StatusCode::CONFLICT,
            "A refresh of this campaign is running already; its figures follow.".into(),
        ),
        other => PageError::Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            super::sentence(&other.to_string()),
        ),
    }
}

/// Runs an action and answers the live panel with the campaign's new figures.
async fn action(
    signed: Signed,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (raw, name) = path.into_inner();
    let (id, _) = owned(&state, signed.tenant, &raw).await.map_err(in_place)?;
    let zone = signed.zone;
    let command = match name.as_str() {
        "enqueue" => Command::Enqueue {
            idempotency_key: None,
        },
        "schedule" => Command::Schedule(local_time(&super::form_field(&body, "at"), zone)?),
        "unschedule" => Command::Unschedule,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "cancel" => Command::Cancel,
        "retry-failed" => Command::RetryFailed,
        "refresh" => return refresh(&signed, id, &state).await,
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
            e => in_place(refused(e)),
        })?;
    panel(&state, &signed, id, None).await.map_err(in_place)
}

/// The live panel as it is now.
async fn panel(
    state: &AppState,
    signed: &Signed,
    id: CampaignId,
    note: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let (tenant, zone) = (signed.tenant, signed.zone);
    let record = api::find(state, tenant, id).await.map_err(refused)?;
    let stats = figures_of(state, tenant, id).await?;
    let (retry, audience) = view_extras(state, tenant, id, &record, &stats).await?;
    let view = pages::DetailView {
        record: &record,
        stats: &stats,
        retryable: retry,
        audience,
    };
    let markup = pages::live_root(&view, zone, note);
    Ok(html(StatusCode::OK, markup))
}

async fn refresh(
    signed: &Signed,
    id: CampaignId,
    state: &AppState,
) -> Result<HttpResponse, PageError> {
    let started = state
        .reconciler
        .refresh_bulk(signed.tenant, BulkTarget::Campaign(id))
        .await
        .map_err(refresh_refused)?;
    let note = match started {
        BulkStart::Done(report) => format!(
            "Asked the provider about {} messages: {} updated.",
            report.total, report.updated
        ),
        BulkStart::Started { total, .. } => {
            format!("Asking the provider about {total} messages; the figures follow.")
        }
    };
    panel(state, signed, id, Some(&note)).await
}

/// A `datetime-local` value read in the tenant's time zone.
fn local_time(raw: &str, tz: chrono_tz::Tz) -> Result<chrono::DateTime<chrono::Utc>, PageError> {
    let bad = |m: &str| PageError::Refused(StatusCode::BAD_REQUEST, m.to_owned());
    let naive = NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| bad("Choose a date and time to send at."))?;
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
) -> Result<Vec<pages::ListChoice>, PageError> {
    let lists = crate::store::contacts::lists(&state.pool, tenant)
        .await
        .map_err(PageError::unexpected)?;
    Ok(lists
        .into_iter()
        .map(|l| pages::ListChoice {
            checked: checked.contains(&l.id),
            id: l.id,
            name: l.name,
            members: l.members,
        })
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
    let (id, record) = owned(&state, signed.tenant, &path)
        .await
        .map_err(in_place)?;
    let form = ComposeForm::parse(&body);
    let mut input = form.input();
    if form.offer_title.trim().is_empty() {
        // no title: no offer (also an expiry set through the API, which the form lacks)
        input.offer_expires_at = Some(None);
    }
    let def = api::definition(&state, signed.tenant, input, Some(&record))
        .await
        .map_err(refused)?;
    let auth = Authenticated {
        tenant: signed.tenant,
    };
    match api::run(&state, auth, id, Command::Edit(Box::new(def)))
        .await
        .map_err(|e| in_place(refused(e)))?
    {
        LifecycleReply::Edited(_) => Ok(go_to(&format!("/app/campaigns/{id}"))),
        _ => Err(PageError::Unexpected(anyhow::anyhow!(
            "unexpected reply to an edit"
        ))),
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
    // a preview needs no name yet
    if input.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        input.name = Some("preview".into());
    }
    let problem = |e: CampaignError| {
        let message = match refused(e) {
            PageError::Refused(_, m) => m,
            other => {
                tracing::error!(error = ?other, "a preview failed");
                "The preview could not be computed; try again.".to_owned()
            }
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
