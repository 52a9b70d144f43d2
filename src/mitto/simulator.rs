//! A Mitto simulator over real HTTP: the three Messaging API endpoints with Mitto's shapes,
//! signed delivery-report callbacks, and configurable faults (mitto-api.md, "The simulator").
//!
//! Started by `campaignd mitto-sim`, and in-process (port 0) by tests, `serve` and `demo`.
//! It counts sends per (destination, text) so tests can prove nobody was messaged twice.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use backon::Retryable;
use chrono::Utc;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use super::retry::RetryPolicy;
use super::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::wire::{
    format_timestamp, valid_sender, BulkRequest, ItemError, MessageStatusResponse, ProblemDetails,
    SendMessage, SendResponse, SendResponseItem, SenderInfo, API_KEY_HEADER, BULK_SEND_PATH,
    MAX_BULK_MESSAGES, MESSAGE_PATH, SINGLE_SEND_PATH,
};
use crate::domain::{MessageId, PhoneE164, Segments};

/// An inclusive range of milliseconds, written `A..B` or `A` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsRange {
    pub min: u64,
    pub max: u64,
}

impl FromStr for MsRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number of milliseconds"))
        };
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if min > max {
            return Err(format!("range {s:?} has its minimum above its maximum"));
        }
        Ok(Self { min, max })
    }
}

impl MsRange {
    fn sample(self) -> Duration {
        Duration::from_millis(rand::rng().random_range(self.min..=self.max))
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// Everything the simulator can be told. Defaults are realistic: most messages delivered,
/// reports after 0.2–2 s, no injected faults.
///
/// Every accepted message reaches its final status after a `dlr_delay_ms` sample whether or
/// not its reports are posted, so lookups can reconcile what callbacks never told.
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// The API key clients must send in X-Mitto-API-Key.
    #[arg(
        long,
        env = "MITTO_SIM_API_KEY",
        default_value = "sim-key",
        hide_env_values = true
    )]
    pub api_key: String,
    /// Where delivery reports are POSTed (campaignd's /webhooks/mitto/dlr); none = no reports
    /// (messages still reach their final status, which lookups answer).
    #[arg(long)]
    pub callback: Option<url::Url>,
    /// HMAC secret used to sign reports (X-Webhook-Signature).
    #[arg(long, env = "MITTO_SIM_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Sign "{timestamp}.{body}" and send X-Webhook-Timestamp (false: sign the body alone).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sign_with_timestamp: bool,
    /// A static token sent in --callback-token-header instead of a signature.
    #[arg(long, hide_env_values = true)]
    pub callback_token: Option<String>,
    #[arg(long, default_value = "X-Webhook-Token")]
    pub callback_token_header: String,
    /// Reports per callback request (1 = one object; more = a JSON array).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub dlr_batch: u16,
    /// Share of messages that end Delivered; the rest get a status from --failure-statuses.
    #[arg(long, default_value_t = 0.95, value_parser = ratio)]
    pub delivery_ratio: f64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Undelivered,Expired,Rejected,Failure"
    )]
    pub failure_statuses: Vec<String>,
    /// Delay between acceptance and the delivery report, uniformly drawn.
    #[arg(long, default_value = "200..2000")]
    pub dlr_delay_ms: MsRange,
    /// Share of reports sent twice.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub duplicate_ratio: f64,
    /// Share of messages whose intermediate "Sent" report arrives after the final one.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub out_of_order_ratio: f64,
    /// Share of messages whose report is delivered before the send request is answered.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub dlr_before_response_ratio: f64,
    /// Share of messages none of whose reports are ever posted (final, duplicate or late
    /// intermediate), as when a provider loses callbacks; lookups still answer the final
    /// status, which is what reconciliation must recover.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub drop_dlr_ratio: f64,
    /// Share of send requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub rate_429: f64,
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Share of send requests answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub rate_5xx: f64,
    /// Added latency per send request.
    #[arg(long, default_value = "0")]
    pub latency_ms: MsRange,
    /// Share of send requests that are accepted but never answered in time.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub timeout_ratio: f64,
    /// How long an unanswered request hangs before the simulator gives up on it.
    #[arg(long, default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Added latency per status lookup (by id or by reference).
    #[arg(long, default_value = "0")]
    pub lookup_latency_ms: MsRange,
    /// Share of status lookups (by id or by reference) answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub lookup_5xx_ratio: f64,
    /// Share of messages refused individually (a per-item error).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub item_error_ratio: f64,
    /// Messages per second per traffic account; more is answered 429.
    #[arg(long)]
    pub account_rate_limit: Option<NonZeroU32>,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

impl Default for SimConfig {
    /// The command line's defaults, so there is one source for them.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: SimConfig,
        }
        <Defaults as clap::Parser>::parse_from(["mitto-sim"]).config
    }
}

/// A fault scripted for the next send request, ahead of the random ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and a ProblemDetails body; nothing is accepted.
    Status { status: u16 },
    /// Answer 429 with this `Retry-After` value (seconds or an HTTP-date).
    TooManyRequests { retry_after: String },
    /// Accept the messages, then leave the request unanswered for `hang_ms`.
    Timeout,
    /// Answer normally after this many milliseconds.
    Latency { ms: u64 },
}

/// One message the simulator accepted.
#[derive(Debug, Clone)]
struct SimMessage {
    request: SendMessage,
    parts: u32,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
    delivery_status: String,
    /// What `delivery_status` means, kept beside it so the stats never re-interpret the raw
    /// text (a configured failure status may be any word).
    fate: Fate,
}

/// Where a message stands in the simulator's truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Accepted, status "Sent", final status not reached yet.
    InFlight,
    Delivered,
    /// Ended with one of the configured failure statuses.
    Failed,
}

/// The final status decided for a message when it is accepted.
#[derive(Debug, Clone)]
struct Verdict {
    status: String,
    fate: Fate,
}

/// Where a message's reports go, decided when it is accepted.
#[derive(Debug, Clone, Copy)]
enum Reports {
    /// None are posted: no callback is configured, or they are dropped (`drop_dlr_ratio`).
    Withheld,
    /// The final report is posted before the send request is answered.
    BeforeResponse,
    /// Posted after the delay: the final report (twice when `duplicate`), then, when
    /// `out_of_order`, a stale "Sent".
    Later { duplicate: bool, out_of_order: bool },
}

/// A count per calendar second (UTC epoch second): lookups, or one traffic account's
/// accepted segments. Only the current second and the highest count seen are kept, so memory
/// stays constant however long the simulator runs.
#[derive(Debug, Default)]
struct PerSecond {
    second: i64,
    count: u64,
    max: u64,
}

impl PerSecond {
    fn record(&mut self, second: i64, n: u64) {
        if second != self.second {
            self.second = second;
            self.count = 0;
        }
        self.count += n;
        self.max = self.max.max(self.count);
    }
}

#[derive(Debug, Default)]
struct Counters {
    bulk_requests: AtomicU64,
    single_requests: AtomicU64,
    lookups: AtomicU64,
    accepted: AtomicU64,
    item_errors: AtomicU64,
    dlrs_sent: AtomicU64,
    dlrs_failed: AtomicU64,
    /// Messages whose reports were all withheld by `drop_dlr_ratio`.
    dlrs_dropped: AtomicU64,
}

/// Send counts for one (destination, text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCount {
    pub destination: String,
    pub text: String,
    pub count: u64,
}

/// `GET /_sim/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    pub bulk_requests: u64,
    pub single_requests: u64,
    pub lookups: u64,
    pub accepted: u64,
    pub item_errors: u64,
    pub dlrs_sent: u64,
    pub dlrs_failed: u64,
    /// Messages whose reports were never posted (`drop_dlr_ratio`); each still reached its
    /// final status. Counted per message, unlike `dlrs_sent`, which counts reports.
    pub dlrs_dropped: u64,
    /// Accepted messages whose current status is "Delivered".
    pub delivered: u64,
    /// Accepted messages whose current status is one of the failure statuses.
    pub failed: u64,
    /// Accepted messages not final yet (status "Sent"); 0 once every report delay has passed.
    pub in_flight: u64,
    /// The most lookups (both endpoints, authorised) that arrived within one UTC second.
    pub max_lookups_per_second: u64,
    /// The most segments sent to one traffic account within one UTC second, counted as the
    /// send requests arrive, refused or not: what a provider's per-second rate limit sees.
    pub max_segments_per_second: u64,
    /// The highest number of times one (destination, text) was accepted; 1 means no double send.
    pub max_sends_per_message: u64,
    pub sends: Vec<SendCount>,
}

/// Shared state of one running simulator.
pub struct SimState {
    config: SimConfig,
    messages: DashMap<String, SimMessage>,
    /// Message id by the sender's reference.
    references: DashMap<String, String>,
    sends: DashMap<(String, String), u64>,
    counters: Counters,
    lookup_rate: Mutex<PerSecond>,
    /// Segments received per second, by traffic account.
    send_rate: DashMap<String, PerSecond>,
    script: Mutex<VecDeque<Fault>>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// One entry per message: its reports, in the order they are to arrive.
    reports: mpsc::UnboundedSender<Vec<MessageStatusResponse>>,
    http: reqwest::Client,
    sender_ids: DashMap<String, uuid::Uuid>,
    /// Set when the simulator stops: reports not posted yet are dropped.
    stopping: std::sync::atomic::AtomicBool,
}

/// A running simulator; dropping it does not stop it, [`SimHandle::stop`] does.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub base_url: url::Url,
    pub state: Arc<SimState>,
    server: actix_web::dev::ServerHandle,
}

impl SimHandle {
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Messages accepted so far (cheap: one counter, unlike [`SimHandle::stats`]).
    pub fn accepted(&self) -> u64 {
        self.state.counters.accepted.load(Ordering::Relaxed)
    }

    /// Queues faults for the next send requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock_script().extend(faults);
    }

    /// The simulator's current view of a message, as the status endpoint shows it.
    pub fn message(&self, id: &str) -> Option<MessageStatusResponse> {
        self.state.lookup(id)
    }

    /// Stops posting delivery reports: those not posted yet are dropped, quietly (the service
    /// they were for is stopping).
    pub fn begin_stop(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    pub async fn stop(self) {
        self.begin_stop();
        self.server.stop(true).await;
    }
}

/// Starts the simulator on `config.host:config.port` (port 0 picks a free one).
pub fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((config.host, config.port))?;
    let addr = listener.local_addr()?;
    let base_url =
        url::Url::parse(&format!("http://{addr}")).expect("a socket address is a valid URL");
    let (reports, queue) = mpsc::unbounded_channel();
    let limiter = config
        .account_rate_limit
        .map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(std::io::Error::other)?;
    let workers = config.workers.max(1);
    let state = Arc::new(SimState {
        config,
        messages: DashMap::new(),
        references: DashMap::new(),
        sends: DashMap::new(),
        counters: Counters::default(),
        lookup_rate: Mutex::new(PerSecond::default()),
        send_rate: DashMap::new(),
        script: Mutex::new(VecDeque::new()),
        limiter,
        reports,
        http,
        sender_ids: DashMap::new(),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    actix_web::rt::spawn(dispatch_reports(state.clone(), queue));
    let data = web::Data::from(state.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(8 << 20)
                    .error_handler(|err, _| {
                        let body = problem(400, &format!("invalid JSON: {err}"));
                        actix_web::error::InternalError::from_response(err, body).into()
                    }),
            )
            .route(BULK_SEND_PATH, web::post().to(bulk_send))
            .route(SINGLE_SEND_PATH, web::post().to(single_send))
            .route("/api/v1.1/Messages/{id}", web::get().to(lookup))
            .route(MESSAGE_PATH, web::get().to(lookup_by_reference))
            .route("/_sim/stats", web::get().to(stats))
            .route("/_sim/script", web::post().to(script))
    })
    .workers(workers)
    .keep_alive(Duration::from_secs(75))
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%base_url, "Mitto simulator listening");
    Ok(SimHandle {
        addr,
        base_url,
        state,
        server: handle,
    })
}

fn problem(status: u16, title: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(ProblemDetails {
        kind: Some("https://tools.ietf.org/html/rfc9110".into()),
        title: Some(title.to_owned()),
        status: Some(status),
        errors: None,
    })
}

impl SimState {
    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Fault>> {
        self.script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn authorised(&self, req: &HttpRequest) -> bool {
        req.headers()
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|key| key == self.config.api_key)
    }

    /// The scripted fault for this request, else one drawn from the configured rates.
    fn next_fault(&self) -> Option<Fault> {
        if let Some(fault) = self.lock_script().pop_front() {
            return Some(fault);
        }
        let c = &self.config;
        let mut rng = rand::rng();
        if rng.random_bool(c.timeout_ratio) {
            Some(Fault::Timeout)
        } else if rng.random_bool(c.rate_429) {
            Some(Fault::TooManyRequests {
                retry_after: c.retry_after_secs.to_string(),
            })
        } else if rng.random_bool(c.rate_5xx) {
            Some(Fault::Status { status: 503 })
        } else {
            None
        }
    }

    /// Takes `n` messages from a traffic account's budget, all or none: a refused request
    /// consumes nothing.
    fn take_rate(&self, account: &str, n: u32) -> Result<(), RateRefusal> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&account.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(RateRefusal::Wait(wait.as_secs_f64().ceil().max(1.0) as u64))
            }
            Err(_) => Err(RateRefusal::NeverFits(n.get())),
        }
    }

    /// Accepts one message (or refuses it individually) and schedules its delivery report.
    fn accept(
        self: &Arc<Self>,
        message: &SendMessage,
        before_response: &mut Vec<MessageStatusResponse>,
    ) -> SendResponseItem {
        let account = Some(message.traffic_account_id.to_string());
        if let Some(error) = self.item_error(message) {
            self.counters.item_errors.fetch_add(1, Ordering::Relaxed);
            return SendResponseItem {
                traffic_account_id: account,
                message_id: None,
                error: Some(error),
            };
        }
        let id = MessageId::generate().to_string();
        let now = Utc::now();
        let sim = SimMessage {
            request: message.clone(),
            parts: Segments::count(&message.sms.text).parts,
            created_at: now,
            updated_at: now,
            delivery_status: "Sent".to_owned(),
            fate: Fate::InFlight,
        };
        if let Some(reference) = &message.reference {
            self.references.insert(reference.clone(), id.clone());
        }
        self.messages.insert(id.clone(), sim);
        *self
            .sends
            .entry((message.destination.clone(), message.sms.text.clone()))
            .or_insert(0) += 1;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.schedule_report(id.clone(), before_response);
        SendResponseItem {
            traffic_account_id: account,
            message_id: Some(id),
            error: None,
        }
    }

    fn item_error(&self, message: &SendMessage) -> Option<ItemError> {
        let error = |code: &str, text: String| {
            Some(ItemError {
                code: code.to_owned(),
                message: text,
            })
        };
        let canonical = PhoneE164::parse(&message.destination).ok();
        if canonical.as_ref().map(PhoneE164::as_str) != Some(message.destination.as_str()) {
            return error(
                "InvalidDestination",
                format!("{:?} is not an E.164 number", message.destination),
            );
        }
        if !valid_sender(&message.sms.sender) {
            return error(
                "InvalidSender",
                format!(
                    "sender {:?} is not 1-16 digits or 1-11 alphanumerics",
                    message.sms.sender
                ),
            );
        }
        if message.sms.text.is_empty() {
            return error("EmptyText", "text must not be empty".to_owned());
        }
        if rand::rng().random_bool(self.config.item_error_ratio) {
            return error("Rejected", "message rejected by the simulator".to_owned());
        }
        None
    }

    /// Decides the message's fate now; it becomes final after a `dlr_delay_ms` sample (or
    /// before the response, reported then), whether or not its reports are posted.
    fn schedule_report(
        self: &Arc<Self>,
        id: String,
        before_response: &mut Vec<MessageStatusResponse>,
    ) {
        let verdict = self.decide_verdict();
        match self.decide_reports() {
            Reports::BeforeResponse => {
                if let Some(report) = self.finalise(&id, &verdict) {
                    before_response.push(report);
                }
            }
            reports => self.finalise_later(id, verdict, reports),
        }
    }

    /// Delivered with `delivery_ratio`, else a failure status drawn from the configured mix.
    fn decide_verdict(&self) -> Verdict {
        let c = &self.config;
        let mut rng = rand::rng();
        if rng.random_bool(c.delivery_ratio) || c.failure_statuses.is_empty() {
            return Verdict {
                status: "Delivered".to_owned(),
                fate: Fate::Delivered,
            };
        }
        Verdict {
            status: c.failure_statuses[rng.random_range(0..c.failure_statuses.len())].clone(),
            fate: Fate::Failed,
        }
    }

    /// Without a callback there is nothing to drop, so `dlrs_dropped` counts only messages
    /// whose reports would otherwise have been posted.
    fn decide_reports(&self) -> Reports {
        let c = &self.config;
        if c.callback.is_none() {
            return Reports::Withheld;
        }
        let mut rng = rand::rng();
        let duplicate = rng.random_bool(c.duplicate_ratio);
        let out_of_order = rng.random_bool(c.out_of_order_ratio);
        if rng.random_bool(c.drop_dlr_ratio) {
            self.counters.dlrs_dropped.fetch_add(1, Ordering::Relaxed);
            Reports::Withheld
        } else if rng.random_bool(c.dlr_before_response_ratio) {
            Reports::BeforeResponse
        } else {
            Reports::Later {
                duplicate,
                out_of_order,
            }
        }
    }

    /// Finalises the message after a `dlr_delay_ms` sample, then queues its reports if any.
    fn finalise_later(self: &Arc<Self>, id: String, verdict: Verdict, reports: Reports) {
        let delay = self.config.dlr_delay_ms.sample();
        let state = self.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(report) = state.finalise(&id, &verdict) else {
                return;
            };
            if let Reports::Later {
                duplicate,
                out_of_order,
            } = reports
            {
                // the dispatcher lives as long as the state; a closed queue means shutdown
                let _ = state
                    .reports
                    .send(report_sequence(report, duplicate, out_of_order));
            }
        });
    }

    /// Moves a message to its final status and returns the report describing it.
    fn finalise(&self, id: &str, verdict: &Verdict) -> Option<MessageStatusResponse> {
        {
            let mut message = self.messages.get_mut(id)?;
            message.delivery_status = verdict.status.clone();
            message.fate = verdict.fate;
            message.updated_at = Utc::now();
        }
        self.lookup(id)
    }

    fn lookup(&self, id: &str) -> Option<MessageStatusResponse> {
        let m = self.messages.get(id)?;
        let sender_id = *self
            .sender_ids
            .entry(m.request.sms.sender.clone())
            .or_insert_with(uuid::Uuid::new_v4);
        Some(MessageStatusResponse {
            message_id: id.to_owned(),
            text: Some(m.request.sms.text.clone()),
            sender: Some(SenderInfo {
                id: sender_id.to_string(),
                name: m.request.sms.sender.clone(),
            }),
            delivery_status: m.delivery_status.clone(),
            description: None,
            message_parts: Some(m.parts),
            created_at: Some(format_timestamp(m.created_at)),
            updated_at: Some(format_timestamp(m.updated_at)),
            traffic_account_id: Some(m.request.traffic_account_id.to_string()),
            reference: m.request.reference.clone(),
        })
    }

    fn stats(&self) -> SimStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut sends: Vec<SendCount> = self
            .sends
            .iter()
            .map(|e| SendCount {
                destination: e.key().0.clone(),
                text: e.key().1.clone(),
                count: *e.value(),
            })
            .collect();
        sends.sort_by(|a, b| (&a.destination, &a.text).cmp(&(&b.destination, &b.text)));
        let fates = self.fates();
        SimStats {
            bulk_requests: load(&self.counters.bulk_requests),
            single_requests: load(&self.counters.single_requests),
            lookups: load(&self.counters.lookups),
            accepted: load(&self.counters.accepted),
            item_errors: load(&self.counters.item_errors),
            dlrs_sent: load(&self.counters.dlrs_sent),
            dlrs_failed: load(&self.counters.dlrs_failed),
            dlrs_dropped: load(&self.counters.dlrs_dropped),
            delivered: fates.delivered,
            failed: fates.failed,
            in_flight: fates.in_flight,
            max_lookups_per_second: self.lock_lookup_rate().max,
            max_segments_per_second: self.send_rate.iter().map(|r| r.max).max().unwrap_or(0),
            max_sends_per_message: sends.iter().map(|s| s.count).max().unwrap_or(0),
            sends,
        }
    }

    /// Counts accepted messages by fate; one pass over the messages, so the three add up to
    /// the messages held at that moment.
    fn fates(&self) -> FateCounts {
        let mut counts = FateCounts::default();
        for message in self.messages.iter() {
            match message.fate {
                Fate::InFlight => counts.in_flight += 1,
                Fate::Delivered => counts.delivered += 1,
                Fate::Failed => counts.failed += 1,
            }
        }
        counts
    }

    /// Counts an authorised lookup, overall and in its second. The clock is read under the
    /// lock so that concurrent lookups record their seconds in order.
    fn count_lookup(&self) {
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let mut rate = self.lock_lookup_rate();
        rate.record(Utc::now().timestamp(), 1);
    }

    /// Counts a message's segments in its account's second as its request arrives (refused
    /// or not: a provider's limit counts what it receives); the clock is read under the
    /// account's entry lock, so concurrent requests record their seconds in order.
    fn count_send(&self, account: &str, parts: u32) {
        let mut rate = self.send_rate.entry(account.to_owned()).or_default();
        rate.record(Utc::now().timestamp(), u64::from(parts));
    }

    fn lock_lookup_rate(&self) -> std::sync::MutexGuard<'_, PerSecond> {
        self.lookup_rate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts reports in order, `dlr_batch` per request.
    async fn deliver_all(&self, reports: &[MessageStatusResponse]) {
        for chunk in reports.chunks(usize::from(self.config.dlr_batch)) {
            self.deliver(chunk).await;
        }
    }

    /// Posts one request to the callback, signed, with retries: a JSON object when
    /// `dlr_batch` is 1, else a JSON array.
    async fn deliver(&self, reports: &[MessageStatusResponse]) {
        let Some(url) = &self.config.callback else {
            return;
        };
        let body = if self.config.dlr_batch == 1 {
            serde_json::to_vec(&reports[0])
        } else {
            serde_json::to_vec(reports)
        }
        .expect("status objects always serialise");
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retries: 5,
        };
        let post = || async {
            let response = self.signed_post(url, &body).send().await?;
            response.error_for_status().map(drop)
        };
        let stopping = || self.stopping.load(Ordering::Relaxed);
        let delivered = if stopping() {
            Err(None)
        } else {
            post.retry(policy.backoff())
                .sleep(tokio::time::sleep)
                .when(|_| !stopping())
                .await
                .map_err(Some)
        };
        let counter = match &delivered {
            Ok(()) => &self.counters.dlrs_sent,
            Err(Some(e)) if !stopping() => {
                tracing::warn!(error = %e, "delivery report callback failed; report dropped");
                &self.counters.dlrs_failed
            }
            Err(_) => {
                tracing::debug!("simulator stopping: a delivery report was not posted");
                &self.counters.dlrs_failed
            }
        };
        counter.fetch_add(reports.len() as u64, Ordering::Relaxed);
    }

    fn signed_post(&self, url: &url::Url, body: &[u8]) -> reqwest::RequestBuilder {
        let c = &self.config;
        let mut request = self
            .http
            .post(url.clone())
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = &c.callback_secret {
            let ts = c.sign_with_timestamp.then(|| Utc::now().timestamp());
            if let Some(ts) = ts {
                request = request.header(TIMESTAMP_HEADER, ts.to_string());
            }
            request = request.header(SIGNATURE_HEADER, sign(secret, ts, body));
        }
        if let Some(token) = &c.callback_token {
            request = request.header(&c.callback_token_header, token);
        }
        request
    }
}

#[derive(Debug, Default)]
struct FateCounts {
    delivered: u64,
    failed: u64,
    in_flight: u64,
}

/// A message's reports in the order they are to arrive: the final one (twice when
/// `duplicate`), then, when `out_of_order`, a "Sent" describing the moment of acceptance.
fn report_sequence(
    report: MessageStatusResponse,
    duplicate: bool,
    out_of_order: bool,
) -> Vec<MessageStatusResponse> {
    let intermediate = out_of_order.then(|| MessageStatusResponse {
        delivery_status: "Sent".to_owned(),
        updated_at: report.created_at.clone(),
        ..report.clone()
    });
    let copies = if duplicate { 2 } else { 1 };
    std::iter::repeat_n(report, copies)
        .chain(intermediate)
        .collect()
}

/// Forwards queued reports to the callback, at most 16 requests at once. The reports of one
/// message stay in one task and are posted in order, so "out of order" is exactly what the
/// configuration asked for; up to `dlr_batch` reports share a request (a JSON array).
async fn dispatch_reports(
    state: Arc<SimState>,
    mut queue: mpsc::UnboundedReceiver<Vec<MessageStatusResponse>>,
) {
    let in_flight = Arc::new(Semaphore::new(16));
    let batch = usize::from(state.config.dlr_batch);
    let mut sequences = Vec::with_capacity(batch);
    while queue.recv_many(&mut sequences, batch).await > 0 {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        let reports: Vec<_> = sequences.drain(..).flatten().collect();
        actix_web::rt::spawn(async move {
            state.deliver_all(&reports).await;
            drop(permit);
        });
    }
}

/// Why a traffic account's budget refused a request.
enum RateRefusal {
    /// Over budget: 429 with `Retry-After` in seconds.
    Wait(u64),
    /// More messages than a whole second of the budget: it could never pass, so 400.
    NeverFits(u32),
}

impl RateRefusal {
    fn response(self) -> HttpResponse {
        match self {
            Self::Wait(secs) => {
                let mut response = problem(429, "traffic account rate exceeded");
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(secs),
                );
                response
            }
            Self::NeverFits(n) => problem(
                400,
                &format!("{n} messages exceed the traffic account's rate per second"),
            ),
        }
    }
}

/// What a fault does to the request.
enum FaultEffect {
    /// Answer now with this response; nothing is accepted.
    Answer(HttpResponse),
    /// Accept the messages, then hang instead of answering.
    Hang,
    Proceed,
}

async fn apply_fault(fault: Option<Fault>) -> FaultEffect {
    match fault {
        None => FaultEffect::Proceed,
        Some(Fault::Status { status }) => {
            FaultEffect::Answer(problem(status, "simulated provider error"))
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut response = problem(429, "too many requests");
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&retry_after) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            FaultEffect::Answer(response)
        }
        Some(Fault::Latency { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            FaultEffect::Proceed
        }
        Some(Fault::Timeout) => FaultEffect::Hang,
    }
}

/// The shared path of both send endpoints: auth, faults, limits, acceptance, reports.
async fn handle_send(
    state: &Arc<SimState>,
    req: &HttpRequest,
    messages: &[SendMessage],
) -> Result<SendResponse, HttpResponse> {
    if !state.authorised(req) {
        return Err(problem(401, "missing or invalid X-Mitto-API-Key"));
    }
    for message in messages {
        let parts = Segments::count(&message.sms.text).parts;
        state.count_send(&message.traffic_account_id.to_string(), parts);
    }
    let hang = match apply_fault(state.next_fault()).await {
        FaultEffect::Answer(response) => return Err(response),
        FaultEffect::Hang => true,
        FaultEffect::Proceed => false,
    };
    if messages.is_empty() || messages.len() > MAX_BULK_MESSAGES {
        return Err(problem(
            400,
            &format!(
                "a request carries 1 to {MAX_BULK_MESSAGES} messages, not {}",
                messages.len()
            ),
        ));
    }
    let mut per_account: HashMap<String, u32> = HashMap::new();
    for message in messages {
        *per_account
            .entry(message.traffic_account_id.to_string())
            .or_default() += 1;
    }
    for (account, n) in per_account {
        state
            .take_rate(&account, n)
            .map_err(RateRefusal::response)?;
    }
    tokio::time::sleep(state.config.latency_ms.sample()).await;
    let mut before_response = Vec::new();
    let items = messages
        .iter()
        .map(|m| state.accept(m, &mut before_response))
        .collect();
    state.deliver_all(&before_response).await;
    if hang {
        tokio::time::sleep(Duration::from_millis(state.config.hang_ms)).await;
    }
    Ok(SendResponse {
        bulk_id: None,
        messages: items,
    })
}

async fn bulk_send(
    state: web::Data<SimState>,
    req: HttpRequest,
    body: web::Json<BulkRequest>,
) -> HttpResponse {
    let state = state.into_inner();
    state.counters.bulk_requests.fetch_add(1, Ordering::Relaxed);
    match handle_send(&state, &req, &body.messages).await {
        Ok(mut response) => {
            response.bulk_id = Some(uuid::Uuid::new_v4().to_string());
            HttpResponse::Ok().json(response)
        }
        Err(response) => response,
    }
}

async fn single_send(
    state: web::Data<SimState>,
    req: HttpRequest,
    body: web::Json<SendMessage>,
) -> HttpResponse {
    let state = state.into_inner();
    state
        .counters
        .single_requests
        .fetch_add(1, Ordering::Relaxed);
    match handle_send(&state, &req, std::slice::from_ref(&body)).await {
        Ok(response) => HttpResponse::Ok().json(response),
        Err(response) => response,
    }
}

/// The shared path of both lookup endpoints: auth, counting, then the configured latency and
/// 5xx faults. A lookup is counted once authorised, whatever it is answered.
async fn admit_lookup(state: &SimState, req: &HttpRequest) -> Result<(), HttpResponse> {
    if !state.authorised(req) {
        return Err(problem(401, "missing or invalid X-Mitto-API-Key"));
    }
    state.count_lookup();
    tokio::time::sleep(state.config.lookup_latency_ms.sample()).await;
    if rand::rng().random_bool(state.config.lookup_5xx_ratio) {
        return Err(problem(503, "simulated provider error"));
    }
    Ok(())
}

async fn lookup(
    state: web::Data<SimState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if let Err(response) = admit_lookup(&state, &req).await {
        return response;
    }
    match state.lookup(&id) {
        Some(message) => HttpResponse::Ok().json(message),
        None => problem(404, "message not found"),
    }
}

#[derive(Deserialize)]
struct ReferenceQuery {
    reference: String,
}

/// `GET /api/v1.1/Messages?reference=…` [ours]: the message sent with that reference.
async fn lookup_by_reference(
    state: web::Data<SimState>,
    req: HttpRequest,
    query: web::Query<ReferenceQuery>,
) -> HttpResponse {
    if let Err(response) = admit_lookup(&state, &req).await {
        return response;
    }
    let id = state.references.get(&query.reference).map(|id| id.clone());
    match id.and_then(|id| state.lookup(&id)) {
        Some(message) => HttpResponse::Ok().json(message),
        None => problem(404, "no message with that reference"),
    }
}

async fn stats(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}

async fn script(state: web::Data<SimState>, faults: web::Json<Vec<Fault>>) -> HttpResponse {
    state.lock_script().extend(faults.into_inner());
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_command_line_definition() {
        let c = SimConfig::default();
        assert_eq!(c.port, 8090);
        assert_eq!(
            c.dlr_delay_ms,
            MsRange {
                min: 200,
                max: 2000
            }
        );
        assert_eq!(c.failure_statuses.len(), 4);
        assert!(c.sign_with_timestamp);
    }

    #[test]
    fn ranges_and_ratios_refuse_nonsense() {
        assert_eq!("5".parse::<MsRange>(), Ok(MsRange { min: 5, max: 5 }));
        assert!("9..3".parse::<MsRange>().is_err());
        assert!("x".parse::<MsRange>().is_err());
        assert!(ratio("1.5").is_err());
        assert_eq!(ratio("0.25"), Ok(0.25));
    }

    #[test]
    fn reconciliation_flags_parse_and_default_to_no_faults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: SimConfig,
        }
        let defaults = SimConfig::default();
        assert_eq!(defaults.drop_dlr_ratio, 0.0);
        assert_eq!(defaults.lookup_latency_ms, MsRange { min: 0, max: 0 });
        assert_eq!(defaults.lookup_5xx_ratio, 0.0);
        let c = <Cli as clap::Parser>::parse_from([
            "mitto-sim",
            "--drop-dlr-ratio",
            "0.3",
            "--lookup-latency-ms",
            "5..9",
            "--lookup-5xx-ratio",
            "1",
        ])
        .config;
        assert_eq!(c.drop_dlr_ratio, 0.3);
        assert_eq!(c.lookup_latency_ms, MsRange { min: 5, max: 9 });
        assert_eq!(c.lookup_5xx_ratio, 1.0);
        let bad = ["mitto-sim", "--drop-dlr-ratio", "2"];
        assert!(<Cli as clap::Parser>::try_parse_from(bad).is_err());
    }

    #[test]
    fn a_rate_keeps_the_busiest_second_and_only_the_current_one() {
        let mut rate = PerSecond::default();
        for second in [10, 10, 10, 11, 12, 12] {
            rate.record(second, 1);
        }
        assert_eq!(rate.max, 3);
        assert_eq!((rate.second, rate.count), (12, 2));
        rate.record(13, 4);
        assert_eq!(rate.max, 4);
        rate.record(13, 2);
        assert_eq!(rate.max, 6, "counts within a second add up");
    }

    #[test]
    fn report_sequences_put_duplicates_first_and_the_stale_sent_last() {
        // built from JSON so that a new optional wire field does not break this test
        let report: MessageStatusResponse = serde_json::from_value(serde_json::json!({
            "messageId": "01A", "deliveryStatus": "Delivered",
            "createdAt": "t0", "updatedAt": "t1",
        }))
        .unwrap();
        let statuses = |d, o| {
            report_sequence(report.clone(), d, o)
                .into_iter()
                .map(|r| (r.delivery_status, r.updated_at.unwrap()))
                .collect::<Vec<_>>()
        };
        let fin = ("Delivered".to_owned(), "t1".to_owned());
        let sent = ("Sent".to_owned(), "t0".to_owned());
        assert_eq!(statuses(false, false), vec![fin.clone()]);
        assert_eq!(statuses(true, true), vec![fin.clone(), fin.clone(), sent]);
    }

    #[test]
    fn senders_follow_mittos_rule() {
        assert!(valid_sender("Sendly"));
        assert!(valid_sender("3069843034061234"));
        assert!(!valid_sender("TwelveLetter"));
        assert!(!valid_sender(""));
    }
}
