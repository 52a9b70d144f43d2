//! Live stats: `GET /api/v1/campaigns/{id}/stats/stream`, Server-Sent Events fed by the
//! campaign's actor (every publication it makes, through a watch channel; never a query). At
//! most one event per [`MIN_GAP`], the newest figures at that moment; a comment line every
//! [`KEEP_ALIVE`] when nothing changes; the stream ends after the figures of a finished,
//! settled campaign.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::time::Instant;

use super::auth::Authenticated;
use super::error::ApiError;
use super::AppState;
use crate::actors::campaign::StatsWatch;
use crate::domain::{CampaignId, TenantId};
use crate::engine::campaign::Stats;

/// Events are coalesced to at most four a second.
pub const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A comment line: keeps a quiet stream open.
pub(crate) const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";
/// What `EventSource` clients wait before reconnecting, in milliseconds.
const RETRY_MS: u32 = 3000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/campaigns/{id}/stats/stream", web::get().to(stream));
}

/// One Server-Sent Event of the stream (documentation of the wire format): `id` counts up,
/// `event` is `stats`, `data` is the campaign's [`Stats`] as JSON. The first event is
/// preceded by `retry: 3000`; comment lines (`: keep-alive`) come when nothing changes.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct StatsEvent {
    id: u64,
    /// `stats`
    event: String,
    data: Stats,
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/stats/stream", tag = "stats",
    params(
        ("id" = i64, Path, description = "Campaign id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Sent by reconnecting `EventSource` clients"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: an event on every change, at most four a second; \
            ends after the figures of a finished, settled campaign", body = StatsEvent, content_type = "text/event-stream"),
        (status = 204, description = "A reconnecting client of a settled campaign: nothing more will come"),
        (status = 404, description = "No such campaign of this tenant", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn stream(
    auth: Authenticated,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("campaign {path} not found"));
    let id: CampaignId = path.parse().map_err(|_| not_found())?;
    // ownership first: another tenant's id activates nothing
    let owned = crate::store::campaigns::owned(&state.pool, auth.tenant, &[id]).await?;
    if owned.is_empty() {
        return Err(not_found());
    }
    let ((tenant, stats), watch) = state
        .events
        .registry
        .watch(id)
        .await
        .filter(|((tenant, _), _)| *tenant == auth.tenant)
        .ok_or_else(not_found)?;
    // a client reconnecting after the end of a finished campaign's stream: 204 tells
    // `EventSource` not to come back
    if req.headers().contains_key("Last-Event-ID") && stats.settled() {
        return Ok(HttpResponse::NoContent().finish());
    }
    let live = Live::new(&state, id, tenant, stats, watch);
    let events = futures::stream::unfold((live, 0u64), |(mut live, mut seq)| async move {
        let chunk = match live.next().await? {
            Tick::KeepAlive => web::Bytes::from_static(KEEP_ALIVE_FRAME),
            Tick::Figures(stats) => {
                seq += 1;
                let data = serde_json::to_string(&stats).unwrap_or_else(|_| "{}".into());
                let retry = if seq == 1 {
                    format!("retry: {RETRY_MS}\n")
                } else {
                    String::new()
                };
                format!("{retry}id: {seq}\nevent: stats\ndata: {data}\n\n").into()
            }
        };
        Some((Ok::<_, std::convert::Infallible>(chunk), (live, seq)))
    });
    Ok(event_stream(events))
}

/// A `text/event-stream` response of `events`.
pub(crate) fn event_stream<S>(events: S) -> HttpResponse
where
    S: futures::Stream<Item = Result<web::Bytes, std::convert::Infallible>> + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // proxies such as nginx must pass events on as they come
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events)
}

/// What a subscriber's stream yields next.
pub(crate) enum Tick {
    /// The newest figures (the first ones at once, then at most one per [`MIN_GAP`]).
    Figures(Box<Stats>),
    /// Nothing changed for [`KEEP_ALIVE`].
    KeepAlive,
}

/// One subscriber's view of a campaign's figures, fed by its actor's watch channel.
pub(crate) struct Live {
    watch: StatsWatch,
    tenant: TenantId,
    first: Option<Stats>,
    last_sent: Instant,
    done: bool,
    last_refresh_at: crate::reconcile::Reconciler,
    id: CampaignId,
    stopping: super::Stopping,
}

impl Live {
    /// Starts from the figures the watch was taken with.
    pub(crate) fn new(
        state: &AppState,
        id: CampaignId,
        tenant: TenantId,
        first: Stats,
        watch: StatsWatch,
    ) -> Self {
        Self {
            watch,
            tenant,
            first: Some(first),
            last_sent: Instant::now(),
            done: false,
            last_refresh_at: state.reconciler.clone(),
            id,
            stopping: state.stopping.clone(),
        }
    }

    /// The next figures or keep-alive; `None` once the figures of a finished, settled campaign
    /// were given, the campaign is gone, or the service is stopping.
    pub(crate) async fn next(&mut self) -> Option<Tick> {
        if self.done {
            return None;
        }
        if let Some(stats) = self.first.take() {
            return Some(self.figures(stats));
        }
        let stopping = self.stopping.clone();
        let next = async {
            tokio::time::sleep_until(self.last_sent + MIN_GAP).await;
            tokio::time::timeout(KEEP_ALIVE, self.watch.changed()).await
        };
        let next = tokio::select! {
            next = next => next,
            _ = stopping.wait() => return None,
        };
        match next {
            Err(_) => Some(Tick::KeepAlive),
            Ok(Some((tenant, stats))) if tenant == self.tenant => Some(self.figures(stats)),
            // the campaign is gone (deleted)
            Ok(_) => None,
        }
    }

    /// Whether the stream ended because the campaign is finished and settled (not because it
    /// is gone or the service is stopping).
    pub(crate) fn settled(&self) -> bool {
        self.done
    }

    fn figures(&mut self, stats: Stats) -> Tick {
        self.last_sent = Instant::now();
        self.done = stats.settled();
        Tick::Figures(Box::new(Stats {
            last_refresh_at: self.last_refresh_at.last_refresh_at(self.id),
            ..stats
        }))
    }
}
