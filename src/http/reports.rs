//! Campaign reports: the time series, the breakdowns, recipients page by page and the CSV
//! exports. Figures (counters and series) come from the campaign's actor when it is active and
//! from its snapshot otherwise (`"source"` says which); both are the same figures once the
//! actor's changes are checkpointed. Raw delivery statuses, errors and recipients are read
//! from the rows (as of the last checkpoint, at most `checkpoint_interval` behind).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::auth::Authenticated;
use super::error::ApiError;
use super::AppState;
use crate::domain::{CampaignId, MessageStatus, TenantId};
use crate::engine::campaign::{Campaign, MinuteCounts};
use crate::engine::reports::{timeseries, Bucket};
use crate::store::reports::{
    self, RecipientFilter, RecipientRow, ReportRow, ReportScope, StatusFilter,
};

/// Recipients per page unless `limit` says otherwise, and the most a page may hold.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/campaigns/{id}/timeseries", web::get().to(series))
        .route("/v1/campaigns/{id}/breakdown", web::get().to(breakdown))
        .route("/v1/campaigns/{id}/recipients", web::get().to(recipients))
        .route(
            "/v1/campaigns/{id}/recipients.csv",
            web::get().to(recipients_csv),
        )
        .route("/v1/campaigns/{id}/report.csv", web::get().to(report_csv));
}

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("campaign {raw} not found")))
}

fn not_found(id: CampaignId) -> ApiError {
    ApiError::NotFound(format!("campaign {id} not found"))
}

/// Where a report's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The active campaign actor's memory: up to the last event applied.
    Memory,
    /// The checkpointed snapshot: the campaign has no active actor.
    Snapshot,
}

/// The tenant's campaign with its figures: from its actor if active, else its snapshot.
pub(crate) async fn figures(
    state: &AppState,
    tenant: TenantId,
    id: CampaignId,
) -> Result<(Campaign, Source), ApiError> {
    let (campaign, source) = match state.events.registry.campaign_if_active(id).await {
        Some(c) => (*c, Source::Memory),
        None => {
            let loaded = crate::store::campaigns::load_for_activation(
                &state.pool,
                id,
                state.events.registry.member(),
            )
            .await?;
            (loaded.ok_or_else(|| not_found(id))?, Source::Snapshot)
        }
    };
    if campaign.tenant != tenant {
        return Err(not_found(id));
    }
    Ok((campaign, source))
}

/// The tenant's campaign named in the path and where its rows are, or a 404.
pub(crate) async fn scope(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<(CampaignId, ReportScope), ApiError> {
    let id = campaign_id(raw)?;
    let scope = reports::scope(&state.pool, tenant, id).await?;
    Ok((id, scope.ok_or_else(|| not_found(id))?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SeriesQuery {
    /// `day` buckets are calendar days of the tenant's time zone.
    #[serde(default = "minute")]
    #[param(inline, default = "minute")]
    bucket: Bucket,
    /// First point at or after this instant (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Points before this instant (RFC 3339).
    to: Option<DateTime<Utc>>,
}

/// A campaign's time series.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Timeseries {
    campaign_id: CampaignId,
    bucket: Bucket,
    /// The tenant's IANA time zone; points carry its offset.
    time_zone: String,
    /// `memory`: the active actor's figures; `snapshot`: the last checkpoint's.
    source: Source,
    points: Vec<crate::engine::reports::Point>,
    totals: MinuteCounts,
}

/// Counts by our status, by Mitto's raw status and by error.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Breakdown {
    campaign_id: CampaignId,
    source: Source,
    by_status: crate::engine::campaign::Counters,
    by_delivery_status: Vec<reports::DeliveryStatusCount>,
    /// The most frequent errors of failed messages (at most 100).
    errors: Vec<reports::ErrorCount>,
}

/// One page of recipients, in id order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecipientsPage {
    items: Vec<RecipientView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

fn minute() -> Bucket {
    Bucket::Minute
}

/// `GET /api/v1/campaigns/{id}/timeseries?bucket=minute|hour|day&from=&to=`.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/timeseries", tag = "reports",
    params(("id" = i64, Path, description = "Campaign id"), SeriesQuery),
    responses(
        (status = 200, description = "Sent, delivered, failed, visits, redemptions and unsubscribes per bucket", body = Timeseries),
        (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn series(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<SeriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, scope) = scope(&state, auth.tenant, &path).await?;
    let (campaign, source) = figures(&state, auth.tenant, id).await?;
    let zone: chrono_tz::Tz = scope.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let q = query.into_inner();
    let points = timeseries(&campaign.figures.series, q.bucket, zone, q.from, q.to)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut totals = MinuteCounts::default();
    points.iter().for_each(|p| totals.merge(&p.counts));
    Ok(HttpResponse::Ok().json(Timeseries {
        campaign_id: id,
        bucket: q.bucket,
        time_zone: zone.name().to_owned(),
        source,
        points,
        totals,
    }))
}

/// `GET /api/v1/campaigns/{id}/breakdown`: by status (the figures), by raw delivery status
/// and by failure text (the rows).
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/breakdown", tag = "reports",
    params(("id" = i64, Path, description = "Campaign id")),
    responses((status = 200, description = "Counts by status, raw delivery status and error", body = Breakdown), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn breakdown(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, scope) = scope(&state, auth.tenant, &path).await?;
    let (campaign, source) = figures(&state, auth.tenant, id).await?;
    let (statuses, errors) = reports::breakdown(&state.pool, &scope).await?;
    Ok(HttpResponse::Ok().json(Breakdown {
        campaign_id: id,
        source,
        by_status: campaign.figures.counters,
        by_delivery_status: statuses,
        errors,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RecipientsQuery {
    /// `failed` (both kinds) or one status: queued, processing, sent, delivered, send_failed,
    /// delivery_failed, cancelled, unknown, skipped.
    status: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000; 50 when left out.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// As for `recipients`: `failed` or one status.
    status: Option<String>,
}

/// A status as the API names it: a message status (`send_failed` or `sendFailed`) or
/// `failed` for both kinds of failure.
fn status_filter(raw: Option<&str>) -> Result<RecipientFilter, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(RecipientFilter::default());
    };
    if raw == "failed" {
        return Ok(RecipientFilter {
            status: Some(StatusFilter::failed()),
        });
    }
    let wanted = raw.replace('_', "").to_ascii_lowercase();
    MessageStatus::ALL
        .into_iter()
        .find(|s| s.name().replace('_', "") == wanted)
        .map(|s| RecipientFilter {
            status: Some(StatusFilter::of(s)),
        })
        .ok_or_else(|| {
            let names: Vec<&str> = MessageStatus::ALL
                .into_iter()
                .map(MessageStatus::name)
                .collect();
            ApiError::BadRequest(format!(
                "status {raw:?} must be failed or one of {}",
                names.join(", ")
            ))
        })
}

/// One recipient in a page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecipientView {
    id: i64,
    phone: String,
    status: MessageStatus,
    delivery_status: Option<String>,
    provider_message_id: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    error: Option<String>,
    retry_count: i32,
}

impl RecipientView {
    fn of(row: RecipientRow) -> Result<Self, ApiError> {
        Ok(Self {
            status: row.message_status()?,
            id: row.id,
            phone: row.phone_e164,
            delivery_status: row.delivery_status,
            provider_message_id: row.provider_message_id,
            sent_at: row.sent_at,
            delivered_at: row.delivered_at,
            failed_at: row.failed_at,
            error: row.error,
            retry_count: row.retry_count,
        })
    }
}

/// `GET /api/v1/campaigns/{id}/recipients?status=&cursor=&limit=`: keyset pages in id order;
/// `nextCursor` is `null` on the last page.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/recipients", tag = "reports",
    params(("id" = i64, Path, description = "Campaign id"), RecipientsQuery),
    responses((status = 200, description = "A page of recipients (keyset pagination)", body = RecipientsPage), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn recipients(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<RecipientsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let filter = status_filter(q.status.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest(format!("cursor {c:?} is not one we gave")))?,
        ),
        None => None,
    };
    let (_, scope) = scope(&state, auth.tenant, &path).await?;
    let rows = reports::recipients_page(&state.pool, &scope, filter, after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let items = rows
        .into_iter()
        .map(RecipientView::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(RecipientsPage {
        items,
        next_cursor: next,
    }))
}

/// Rows per chunk of a CSV body.
const CSV_CHUNK_ROWS: usize = 512;

/// The columns of `recipients.csv` (and the first of `report.csv`).
pub const RECIPIENT_HEADER: [&str; 10] = [
    "recipient_id",
    "phone",
    "status",
    "delivery_status",
    "provider_message_id",
    "sent_at",
    "delivered_at",
    "failed_at",
    "error",
    "retry_count",
];

const REPORT_EXTRA_HEADER: [&str; 8] = [
    "first_name",
    "last_name",
    "visited_at",
    "clicks",
    "redeemed_at",
    "redeemed_by",
    "unsubscribed_at",
    "unsubscribed_via",
];

/// `GET /api/v1/campaigns/{id}/recipients.csv?status=`: every recipient, streamed.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/recipients.csv", tag = "reports",
    params(("id" = i64, Path, description = "Campaign id"), ExportQuery),
    responses((status = 200, description = "UTF-8 with BOM, CRLF, RFC 4180 quoting; columns: recipient_id, phone, \
        status, delivery_status, provider_message_id, sent_at, delivered_at, failed_at, error, retry_count",
        body = String, content_type = "text/csv; charset=utf-8"), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn recipients_csv(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = query.status.as_deref();
    csv_export(&state, auth.tenant, &path, status, CsvExport::Recipients).await
}

/// The two CSV downloads of a campaign.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CsvExport {
    /// The recipients' own columns.
    Recipients,
    /// The recipients' columns, their engagement and their contact's name.
    Report,
}

/// A CSV download of the tenant's campaign, streamed (the API's and the dashboard's).
pub(crate) async fn csv_export(
    state: &AppState,
    tenant: TenantId,
    raw_id: &str,
    status: Option<&str>,
    which: CsvExport,
) -> Result<HttpResponse, ApiError> {
    let filter = status_filter(status)?;
    let (_, scope) = scope(state, tenant, raw_id).await?;
    let pool = state.pool.clone();
    let campaign = scope.campaign_id;
    Ok(match which {
        CsvExport::Recipients => csv_response(
            &format!("campaign-{campaign}-recipients.csv"),
            &RECIPIENT_HEADER,
            reports::stream_recipients(pool, scope, filter),
            recipient_record,
        ),
        CsvExport::Report => {
            let header: Vec<&str> = RECIPIENT_HEADER
                .iter()
                .chain(REPORT_EXTRA_HEADER.iter())
                .copied()
                .collect();
            csv_response(
                &format!("campaign-{campaign}-report.csv"),
                &header,
                reports::stream_report(pool, scope, filter),
                report_record,
            )
        }
    })
}

/// `GET /api/v1/campaigns/{id}/report.csv?status=`: every recipient with its outcome, what it
/// did with its links and its contact's name, streamed.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/report.csv", tag = "reports",
    params(("id" = i64, Path, description = "Campaign id"), ExportQuery),
    responses((status = 200, description = "The recipients' columns and first_name, last_name, visited_at, clicks, \
        redeemed_at, redeemed_by, unsubscribed_at, unsubscribed_via", body = String, content_type = "text/csv; charset=utf-8"), (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody)))]
pub(super) async fn report_csv(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = query.status.as_deref();
    csv_export(&state, auth.tenant, &path, status, CsvExport::Report).await
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A cell from outside text, made inert for spreadsheets: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return would make it a formula, so it gets a leading apostrophe.
fn text(value: Option<&str>) -> String {
    let value = value.unwrap_or_default();
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

fn recipient_record(row: &RecipientRow) -> Vec<String> {
    let status = row
        .message_status()
        .map(MessageStatus::name)
        .unwrap_or("unreadable");
    vec![
        row.id.to_string(),
        // validated E.164 (`+` and digits): a spreadsheet reads it as text or a number, never
        // a formula
        row.phone_e164.clone(),
        status.to_owned(),
        text(row.delivery_status.as_deref()),
        text(row.provider_message_id.as_deref()),
        time(row.sent_at),
        time(row.delivered_at),
        time(row.failed_at),
        text(row.error.as_deref()),
        row.retry_count.to_string(),
    ]
}

fn report_record(row: &ReportRow) -> Vec<String> {
    let mut record = recipient_record(&row.recipient);
    record.extend([
        text(row.first_name.as_deref()),
        text(row.last_name.as_deref()),
        time(row.visited_at),
        row.clicks.to_string(),
        time(row.redeemed_at),
        text(row.redeemed_by.as_deref()),
        time(row.unsubscribed_at),
        text(row.unsubscribed_via.as_deref()),
    ]);
    record
}

/// A CSV download streamed chunk by chunk as rows arrive: UTF-8 with a byte-order mark (so
/// spreadsheets read accents and Greek right), CRLF line ends, RFC 4180 quoting.
fn csv_response<T, F>(
    file_name: &str,
    header: &[&str],
    rows: futures::stream::BoxStream<'static, Result<T, crate::store::StoreError>>,
    record: F,
) -> HttpResponse
where
    T: Send + 'static,
    F: Fn(&T) -> Vec<String> + Send + 'static,
{
    let mut first = b"\xEF\xBB\xBF".to_vec();
    first.extend(csv_lines(std::iter::once(
        header.iter().map(|h| (*h).to_owned()).collect(),
    )));
    let head = futures::stream::once(async move { Ok(web::Bytes::from(first)) });
    let body = rows.chunks(CSV_CHUNK_ROWS).map(move |chunk| {
        let records = chunk
            .into_iter()
            .map(|row| row.map(|r| record(&r)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                tracing::error!(error = %e, "export stopped: reading rows failed");
                std::io::Error::other("export stopped")
            })?;
        Ok::<_, std::io::Error>(web::Bytes::from(csv_lines(records.into_iter())))
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(head.chain(body))
}

fn csv_lines(records: impl Iterator<Item = Vec<String>>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for record in records {
        // writing to memory cannot fail
        let _ = writer.write_record(&record);
    }
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_from_outside_are_made_inert_and_quotes_escaped() {
        assert_eq!(text(Some("=HYPERLINK(\"x\")")), "'=HYPERLINK(\"x\")");
        assert_eq!(text(Some("-2+3")), "'-2+3");
        assert_eq!(text(Some("Νίκος")), "Νίκος");
        let out = String::from_utf8(csv_lines(
            [vec![
                "a,b".to_owned(),
                "say \"hi\"".into(),
                "line\nbreak".into(),
            ]]
            .into_iter(),
        ))
        .unwrap();
        assert_eq!(out, "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\r\n");
    }

    #[test]
    fn status_filters_accept_both_spellings_and_name_the_choices() {
        let f = status_filter(Some("sendFailed")).unwrap().status.unwrap();
        assert_eq!((f.db_status, f.was_sent), ("failed", Some(false)));
        let f = status_filter(Some("delivery_failed"))
            .unwrap()
            .status
            .unwrap();
        assert_eq!((f.db_status, f.was_sent), ("failed", Some(true)));
        assert!(status_filter(Some("failed"))
            .unwrap()
            .status
            .unwrap()
            .was_sent
            .is_none());
        assert!(status_filter(None).unwrap().status.is_none());
        let e = status_filter(Some("nope")).unwrap_err().to_string();
        assert!(e.contains("queued") && e.contains("skipped"), "{e}");
    }
}
