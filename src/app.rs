//! Start-up wiring shared by `campaignd serve` and the integration tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::actors::campaign::Command;
use crate::actors::registry::CampaignRegistry;
use crate::config::AmbiguousOutcome;
use crate::config::Settings;
use crate::domain::TrafficAccountId;
use crate::engine::clock::{Clock, SystemClock};
use crate::http::keys::{spawn_revocation_listener, KeyCache};
use crate::http::webhooks::ReplayGuard;
use crate::http::{self, AppState};
use crate::mitto::client::{ClientConfig, MittoClient};
use crate::mitto::retry::RetryPolicy;
use crate::mitto::signature::Verifier;
use crate::mitto::simulator::{self, SimConfig, SimHandle};
use crate::pipeline::{Pipeline, SendingSetup};
use crate::reconcile::Reconciler;

/// How long start-up waits for the consumer group's first assignment.
const FIRST_ASSIGNMENT: Duration = Duration::from_secs(60);

/// A started service: its HTTP port, the event pipeline, and the in-process simulator when
/// it serves as Mitto.
pub struct Application {
    pub port: u16,
    pub state: AppState,
    pub mitto: ClientConfig,
    pub simulator: Option<SimHandle>,
    pub pipeline: Pipeline,
    server: actix_web::dev::Server,
}

impl Application {
    /// Connects (creating and migrating the database), resolves Mitto and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_simulator(settings, SimConfig::default()).await
    }

    /// Like [`Application::build`]; `simulator` configures the built-in Mitto simulator
    /// (used when no `mitto.base_url` is set; its address and callback are filled in here).
    pub async fn build_with_simulator(
        settings: Settings,
        simulator: SimConfig,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, simulator, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build_with_simulator`], with the clock quiet hours and caps read
    /// (tests set it instead of waiting for the time of day).
    pub async fn build_with_clock(
        mut settings: Settings,
        simulator: SimConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        // installed first, so that everything from start-up on is counted
        crate::metrics::handle();
        let pool = crate::store::connect_and_migrate(settings.database_url.expose_secret())
            .await
            .context("connecting to Postgres")?;
        let listener = TcpListener::bind(settings.http.bind)
            .with_context(|| format!("binding the HTTP listener on {}", settings.http.bind))?;
        let port = listener.local_addr()?.port();
        if settings.links.public_base_url.is_none() {
            // links point at this listener (a real deployment names its public address)
            let local = format!("http://{}", listener.local_addr()?);
            settings.links.public_base_url = url::Url::parse(&local).ok();
            tracing::warn!(base = %local, "links.public_base_url is not set: recipients' links point at this listener");
        }
        let (mitto, simulator) = resolve_mitto(&mut settings, port, simulator)?;
        let mut pipeline = Pipeline::start(&settings, pool.clone()).await?;
        let advertised = match &settings.http.advertised_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        crate::store::cluster::advertise(&pool, pipeline.handles.registry.member(), &advertised)
            .await
            .context("advertising this member's address")?;
        let ambiguous = settings
            .sending
            .ambiguous_outcome
            .unwrap_or(match simulator {
                Some(_) => AmbiguousOutcome::Lookup,
                None => AmbiguousOutcome::Fail,
            });
        let default_traffic_account = settings.mitto.traffic_account_id.or_else(|| {
            simulator
                .as_ref()
                .map(|_| TrafficAccountId::from_uuid(SIMULATOR_TRAFFIC_ACCOUNT))
        });
        let client = MittoClient::new(mitto.clone()).context("building the Mitto client")?;
        pipeline.start_sending(
            &settings,
            SendingSetup {
                client: client.clone(),
                ambiguous,
                default_traffic_account,
                clock,
            },
        )?;
        // which campaigns this member owns is known once the group has assigned partitions
        if !pipeline.partitions.until_assigned(FIRST_ASSIGNMENT).await {
            tracing::warn!(
                limit = ?FIRST_ASSIGNMENT,
                "no partitions assigned yet; requests for campaigns are forwarded or refused until they are"
            );
        }
        let reconciler = Reconciler::new(
            pool.clone(),
            client,
            pipeline.handles.producer.clone(),
            (pipeline.handles.applied.clone(), pipeline.replay(&settings)),
            settings.reconcile.clone(),
            settings.mitto.status_lookups_per_second.get(),
        )
        .await
        .context("starting the reconciler")?;
        let stopping = http::Stopping::default();
        reconciler.spawn_background(pipeline.handles.registry.clone(), &stopping);
        let sending = crate::store::campaigns::sending(&pool)
            .await
            .context("finding campaigns to resume")?;
        if !sending.is_empty() {
            tracing::info!(
                campaigns = sending.len(),
                "resuming campaigns that were sending"
            );
        }
        pipeline.handles.registry.activate(&sending);
        spawn_scheduler(
            pool.clone(),
            pipeline.handles.registry.clone(),
            Duration::from_millis(settings.sending.scheduler_interval_ms),
            &stopping,
        );
        if settings.webhook.secrets.is_empty() && settings.webhook.tokens.is_empty() {
            tracing::warn!("no webhook.secrets or webhook.tokens configured: the DLR webhook refuses every request");
        }
        let verifier = Verifier {
            secrets: settings.webhook.secrets.clone(),
            tokens: settings.webhook.tokens.clone(),
            tolerance_secs: settings.webhook.timestamp_tolerance_secs,
        };
        let link_guard = http::links::guard(&pool, &settings.links)
            .await
            .context("reading the link forms' key")?;
        let stop_keywords = Arc::new(crate::domain::StopKeywords::new(
            &settings.links.stop_keywords,
        ));
        let state = AppState {
            link_guard,
            stop_keywords,
            pool,
            replays: replay_guard(&settings),
            keys: key_cache(&settings, &stopping),
            settings: Arc::new(settings),
            events: pipeline.handles.clone(),
            verifier: Arc::new(verifier),
            default_traffic_account,
            reconciler,
            stopping,
        };
        let server = http::server(state.clone(), listener).context("starting the HTTP server")?;
        tracing::info!(port, "campaignd listening");
        Ok(Self {
            port,
            state,
            mitto,
            simulator,
            pipeline,
            server,
        })
    }

    /// Serves until SIGINT or SIGTERM, then stops in order (see [`stop_in_order`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let http = Http {
            handle: self.server.handle(),
            running: actix_web::rt::spawn(self.server),
        };
        shutdown_signal().await?;
        tracing::info!("shutting down: HTTP first, then a final checkpoint");
        stop_in_order(self.state, http, self.pipeline, self.simulator).await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Runs the server in the background and returns, for tests and embedded use.
    pub fn spawn(self) -> RunningApplication {
        let http = Http {
            handle: self.server.handle(),
            running: actix_web::rt::spawn(self.server),
        };
        RunningApplication {
            port: self.port,
            state: self.state,
            mitto: self.mitto,
            simulator: self.simulator,
            pipeline: self.pipeline,
            http,
        }
    }
}

/// The HTTP server running in the background.
struct Http {
    handle: actix_web::dev::ServerHandle,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// An application serving in the background.
pub struct RunningApplication {
    pub port: u16,
    pub state: AppState,
    pub mitto: ClientConfig,
    pub simulator: Option<SimHandle>,
    pub pipeline: Pipeline,
    http: Http,
}

impl RunningApplication {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn stop(self) {
        stop_in_order(self.state, self.http, self.pipeline, self.simulator).await;
    }
}

/// Stops everything in the order that loses nothing and leaves nothing talking to what is
/// gone: the stop signal (live streams and background loops end; the built-in simulator drops
/// the reports it has not posted), HTTP (in-flight requests finish), the service's handles,
/// the pipeline (consumer, final checkpoint, senders, actors, then the broker connections and
/// the embedded broker itself), and last the simulator.
async fn stop_in_order(
    state: AppState,
    http: Http,
    pipeline: Pipeline,
    simulator: Option<SimHandle>,
) {
    state.stopping.begin();
    if let Some(sim) = &simulator {
        sim.begin_stop();
    }
    http.handle.stop(true).await;
    // the server's workers hold the service's state (and through it the producer)
    let _ = http.running.await;
    drop(state);
    pipeline.stop().await;
    if let Some(sim) = simulator {
        sim.stop().await;
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

/// Verified API keys in memory, kept true by a listener for revocations.
fn key_cache(settings: &Settings, stopping: &http::Stopping) -> KeyCache {
    let auth = &settings.auth;
    let keys = KeyCache::new(
        Duration::from_secs(auth.cache_ttl_secs),
        auth.cache_max_entries,
    );
    spawn_revocation_listener(
        settings.database_url.clone(),
        keys.clone(),
        stopping.clone(),
    );
    keys
}

/// Accepted webhook requests, remembered for as long as the verifier would take a replay.
fn replay_guard(settings: &Settings) -> ReplayGuard {
    let webhook = &settings.webhook;
    ReplayGuard::new(
        Duration::from_secs(webhook.timestamp_tolerance_secs),
        webhook.replay_cache_max_entries,
    )
}

/// The traffic account campaigns use with the built-in simulator when none is configured.
pub const SIMULATOR_TRAFFIC_ACCOUNT: uuid::Uuid =
    uuid::uuid!("5a7c0b1e-0000-4000-8000-00000000c0de");

/// Starts due scheduled campaigns (through the same enqueue as the API: its row lock and status
/// check start each exactly once, however many instances run this) and keeps sending campaigns
/// active.
fn spawn_scheduler(
    pool: sqlx::PgPool,
    registry: CampaignRegistry,
    every: Duration,
    stopping: &http::Stopping,
) {
    actix_web::rt::spawn(stopping.until_stopped(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match crate::store::enqueue::due_scheduled(&pool).await {
                Ok(due) => {
                    for (id, tenant) in due {
                        let command = Command::Enqueue {
                            idempotency_key: None,
                        };
                        match registry.lifecycle(id, tenant, command).await {
                            Some(Ok(_)) => {
                                tracing::info!(campaign_id = %id, "scheduled campaign started")
                            }
                            Some(Err(e)) => {
                                tracing::warn!(campaign_id = %id, error = %e, "scheduled campaign could not start")
                            }
                            None => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking scheduled campaigns failed"),
            }
            if let Ok(sending) = crate::store::campaigns::sending(&pool).await {
                registry.activate(&sending);
            }
        }
    }));
}

/// The configured Mitto, or — with no `mitto.base_url` — a simulator started on loopback that
/// reports deliveries to this service's webhook (signed with a configured secret, or a fresh
/// one added for it).
fn resolve_mitto(
    settings: &mut Settings,
    port: u16,
    simulator: SimConfig,
) -> anyhow::Result<(ClientConfig, Option<SimHandle>)> {
    let m = &settings.mitto;
    let retry = RetryPolicy {
        min_delay: Duration::from_millis(m.retry_min_delay_ms),
        max_delay: Duration::from_millis(m.retry_max_delay_ms),
        max_retries: m.max_retries,
    };
    let client = |base_url, api_key| ClientConfig {
        base_url,
        api_key,
        connect_timeout: Duration::from_millis(m.connect_timeout_ms),
        request_timeout: Duration::from_millis(m.request_timeout_ms),
        retry,
        status_lookups_per_second: Some(m.status_lookups_per_second),
    };
    if let (Some(url), Some(key)) = (&m.base_url, &m.api_key) {
        return Ok((client(url.clone(), key.clone()), None));
    }
    if settings.webhook.secrets.is_empty() {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        settings.webhook.secrets.push(SecretString::from(secret));
    }
    let callback = url::Url::parse(&format!("http://127.0.0.1:{port}/webhooks/mitto/dlr"))?;
    let sim_config = SimConfig {
        port: 0,
        callback: Some(callback),
        callback_secret: Some(settings.webhook.secrets[0].expose_secret().to_owned()),
        ..simulator
    };
    let key = SecretString::from(sim_config.api_key.clone());
    let sim = simulator::start(sim_config).context("starting the built-in Mitto simulator")?;
    tracing::info!(base_url = %sim.base_url, "no mitto.base_url configured: the built-in simulator serves as Mitto");
    Ok((client(sim.base_url.clone(), key), Some(sim)))
}
