//! Layered settings: embedded defaults < optional `campaignd.toml` < environment.
//!
//! Environment: `CAMPAIGND_<SECTION>__<KEY>` (e.g. `CAMPAIGND_HTTP__BIND`), plus the
//! conventional names `DATABASE_URL`, `KAFKA_BROKERS`, `MITTO_BASE_URL` and `MITTO_API_KEY`.
//! The `CAMPAIGND_*` form wins when both are set. Secrets are `SecretString`s: their `Debug`
//! output is redacted, so a logged `Settings` never shows them.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::TrafficAccountId;

/// The defaults every layer starts from; also the reference for every key.
pub const DEFAULTS: &str = include_str!("config/defaults.toml");

/// The file read when it exists in the working directory and no `--config` is given.
pub const DEFAULT_FILE: &str = "campaignd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// figment's message names the key and the layer it came from.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database_url: SecretString,
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub mitto: MittoSettings,
    pub webhook: WebhookSettings,
    pub auth: AuthSettings,
    pub contacts: ContactSettings,
    /// How often actors' dirty state is written to Postgres with the Kafka offsets.
    pub checkpoint_interval_ms: u64,
    /// Records applied since the last checkpoint that trigger one early.
    pub checkpoint_max_records: u64,
    /// Message rows committed to the message log but not yet folded into
    /// `campaign_recipients` beyond which the consumer takes no records until the fold catches
    /// up (back-pressure: it bounds how long a reader that needs the rows in place can wait,
    /// while checkpoints, and with them the ledgers' compaction, go on).
    pub checkpoint_max_unfolded_rows: u64,
    /// How long a delivery report waits for its `sent` event before it is dead-lettered.
    pub park_ttl_secs: u64,
    /// Full message rows the process keeps in memory, split evenly between the topic's
    /// partitions; past its share, a partition drops final rows whose state is folded (a late
    /// report of one is looked up again). Engagement rows have a budget of the same size.
    /// Messages awaiting a report are not counted: they sit in the compact book.
    pub max_resident_rows: usize,
    /// Messages awaiting their report kept in memory per process (64 bytes each), split over
    /// the topic's partitions; past a partition's share the oldest are forgotten at a
    /// checkpoint, and a report for one is looked up in Postgres.
    pub max_waiting_messages: usize,
    /// An active campaign actor idle this long is passivated.
    pub campaign_idle_secs: u64,
    /// Messages per Mitto bulk request (Mitto accepts at most 1000).
    pub batch_size: usize,
    pub rate_limits: RateLimits,
    pub sending: SendingSettings,
    pub reconcile: ReconcileSettings,
    pub links: LinkSettings,
}

impl Settings {
    /// What enqueue, preview and the senders put in marketing texts: one source for all.
    pub fn link_wording(&self) -> crate::domain::LinkWording {
        self.links.wording(self.http.bind)
    }
}

/// Offer and unsubscribe links, inbound opt-outs, quiet hours (issue "offers and opt-outs").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Where recipients' links point (this service's public address); no trailing slash.
    /// Unset: `http://<http.bind>`.
    pub public_base_url: Option<url::Url>,
    /// Appended to a marketing text whose template has no `{{offerLink}}` (campaigns with an
    /// offer only); must contain that marker.
    pub offer_wording: String,
    /// Appended to a marketing text whose template has no `{{unsubscribeLink}}`; must contain
    /// that marker.
    pub unsubscribe_wording: String,
    /// Requests per minute one client address may make to the public link routes.
    pub requests_per_minute: NonZeroU32,
    /// Take the client address from `Forwarded` / `X-Forwarded-For` (set it only behind a
    /// reverse proxy that writes them; otherwise clients could choose their own address).
    pub client_address_from_proxy: bool,
    /// Inbound texts that opt a phone out (case, accents and full-width forms ignored).
    pub stop_keywords: Vec<String>,
    /// An inbound STOP counts against the latest campaign that messaged the phone this
    /// many days ago at most.
    pub attribution_days: u32,
}

impl LinkSettings {
    /// What enqueue and the senders put in marketing texts.
    pub fn wording(&self, bind: SocketAddr) -> crate::domain::LinkWording {
        crate::domain::LinkWording {
            base_url: self.base_url(bind),
            offer_wording: self.offer_wording.clone(),
            unsubscribe_wording: self.unsubscribe_wording.clone(),
        }
    }

    /// The base URL links start with, without a trailing slash.
    pub fn base_url(&self, bind: SocketAddr) -> String {
        match &self.public_base_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bind}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    /// Where other instances reach this one; unset: `http://<bound address>`.
    pub advertised_url: Option<url::Url>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated bootstrap servers; absent means the embedded broker.
    pub brokers: Option<String>,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub consumer_group: String,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How clients talk to the brokers: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// Required with a `sasl_*` protocol.
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<SecretString>,
    /// PEM file of the CA(s) that verify the brokers' certificates; unset: the system's.
    pub ssl_ca_location: Option<std::path::PathBuf>,
    /// Any other librdkafka property, given to every client as is (e.g.
    /// `"ssl.endpoint.identification.algorithm" = "https"`). Values may be secrets (a client
    /// key's password): they are never shown. Properties campaignd sets itself are refused.
    #[serde(deserialize_with = "secret_map")]
    pub properties: std::collections::BTreeMap<String, SecretString>,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka expects.
    pub fn as_property(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`: the ones a managed Kafka offers with a user and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The value librdkafka expects.
    pub fn as_property(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties that `kafka.properties` may not set: the connection's own settings
/// (named keys exist for them) and those campaignd's exactness depends on.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MittoSettings {
    /// Absent means the built-in simulator serves as Mitto.
    pub base_url: Option<url::Url>,
    pub api_key: Option<SecretString>,
    pub traffic_account_id: Option<TrafficAccountId>,
    pub sender: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_retries: usize,
    pub retry_min_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    /// Status lookups per second across every caller, evenly spaced.
    pub status_lookups_per_second: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// HMAC secrets; several are active at once during a rotation.
    #[serde(deserialize_with = "secret_list")]
    pub secrets: Vec<SecretString>,
    /// Static tokens accepted in `token_header` when a signature cannot be sent.
    #[serde(deserialize_with = "secret_list")]
    pub tokens: Vec<SecretString>,
    pub token_header: String,
    pub timestamp_tolerance_secs: u64,
    pub max_body_bytes: usize,
    /// Accepted requests remembered to refuse replays (each for twice the timestamp
    /// tolerance); past this count the least recently seen are forgotten.
    pub replay_cache_max_entries: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a verified API key is served from memory at most. Revocations reach every
    /// instance within moments through Postgres notifications; this is the backstop.
    pub cache_ttl_secs: u64,
    /// Verified API keys kept in memory at most.
    pub cache_max_entries: u64,
    /// How long a dashboard session lasts.
    pub session_hours: u32,
    /// Wrong passwords in a row before a dashboard account is locked.
    pub max_failed_sign_ins: u32,
    /// The first lock's length; each further failure doubles it, up to `lockout_max_secs`.
    pub lockout_secs: u64,
    /// The longest lock (at most a day).
    pub lockout_max_secs: u64,
    /// `true`: session cookies are always `Secure` (behind a proxy that ends TLS). `false`:
    /// `Secure` when the request came over HTTPS (as the connection or `Forwarded` says).
    pub secure_cookies: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactSettings {
    /// The largest CSV body `POST /api/v1/contacts/import` accepts (413 above it).
    pub max_import_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// SMS segments per second per Mitto traffic account; absent means unlimited.
    pub traffic_account_per_second: Option<NonZeroU32>,
    /// SMS segments per second per tenant; absent means unlimited.
    pub tenant_per_second: Option<NonZeroU32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendingSettings {
    /// Sender actors (concurrent Mitto requests across campaigns).
    pub senders: usize,
    /// Batches one campaign may have out with senders at once.
    pub max_in_flight_batches: usize,
    /// How often retry-failed may resend one recipient.
    pub max_retries: u32,
    /// SMS parts one recipient's rendered text may take; enqueue refuses longer texts
    /// (`TEXT_TOO_LONG`, naming the recipient).
    pub max_segments: u32,
    /// Rounds of (already retried) provider unavailability before a batch's messages are
    /// failed as retryable.
    pub unavailable_rounds: u32,
    /// What to do with a send whose answer was lost: `lookup` asks Mitto by our reference
    /// (sent → recorded, absent → queued again), `fail` marks the messages failed with
    /// `outcome_unknown`. Unset: `lookup` with the built-in simulator, `fail` otherwise.
    pub ambiguous_outcome: Option<AmbiguousOutcome>,
    /// How long after a lost answer the lookup waits, so a request still being processed is
    /// seen.
    pub ambiguous_grace_ms: u64,
    /// How often due scheduled campaigns are started.
    pub scheduler_interval_ms: u64,
}

/// Fetching statuses whose reports never came (DESIGN.md section 4, issue "reconciliation").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Messages sent this long ago without a final report are looked up.
    pub after_secs: u64,
    /// How often the periodic pass runs.
    pub interval_secs: u64,
    /// After this long the message is recorded `unknown` and no longer asked about.
    pub give_up_after_hours: f64,
    /// Bulk refreshes of up to this many messages answer when done; larger ones run as jobs.
    pub sync_limit: u64,
    /// Lookups in flight at once for one refresh.
    pub concurrency: usize,
    /// How long a refresh waits for its answers to be applied and committed.
    pub apply_timeout_ms: u64,
    /// How long a refresh request may wait for Mitto: a single refresh answers 504 past it,
    /// a bulk refresh under the sync limit answers 202 and goes on as a job.
    pub answer_within_ms: u64,
    /// How often campaigns that say `sending` are checked for a live actor.
    pub stuck_sweep_secs: u64,
}

impl ReconcileSettings {
    pub fn give_up_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.give_up_after_hours * 3600.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousOutcome {
    Lookup,
    Fail,
}

/// A table of strings whose values are kept as secrets.
fn secret_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, SecretString>, D::Error> {
    let raw = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, SecretString::from(v)))
        .collect())
}

/// Accepts a list, or one comma-separated string (the only form an environment variable has).
fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(str::to_owned).collect(),
        Raw::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect())
}

impl Settings {
    /// Loads every layer and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The layers, in order of precedence (last wins).
    pub fn figment(file: Option<&Path>) -> Figment {
        let file = file.unwrap_or(Path::new(DEFAULT_FILE));
        Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::file(file))
            .merge(conventional_env())
            .merge(
                Env::prefixed("CAMPAIGND_")
                    // a command's input (`user create`), not a setting
                    .ignore(&["USER_PASSWORD"])
                    .split("__"),
            )
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if url::Url::parse(self.database_url.expose_secret()).is_err() {
            return invalid(
                "database_url",
                "is not a URL (postgres://user@host:port/db)",
            );
        }
        if !(1..=1000).contains(&self.batch_size) {
            return invalid("batch_size", "must be between 1 and 1000 (Mitto's maximum)");
        }
        if !(1..=100).contains(&self.sending.max_segments) {
            return invalid("sending.max_segments", "must be between 1 and 100");
        }
        if self.checkpoint_interval_ms == 0 {
            return invalid("checkpoint_interval_ms", "must be greater than 0");
        }
        let a = &self.auth;
        if !(1..=24 * 366).contains(&a.session_hours) {
            return invalid("auth.session_hours", "must be between 1 and 8784 (a year)");
        }
        if a.max_failed_sign_ins == 0 {
            return invalid("auth.max_failed_sign_ins", "must be greater than 0");
        }
        if a.lockout_secs == 0 || a.lockout_secs > a.lockout_max_secs || a.lockout_max_secs > 86_400
        {
            return invalid(
                "auth.lockout_secs",
                "must be above 0 and at most auth.lockout_max_secs, which is at most 86400 (a day)",
            );
        }
        let r = &self.reconcile;
        if !(r.give_up_after_hours.is_finite() && r.give_up_after_hours > 0.0) {
            return invalid("reconcile.give_up_after_hours", "must be a number above 0");
        }
        if r.interval_secs == 0 || r.stuck_sweep_secs == 0 || r.concurrency == 0 {
            return invalid(
                "reconcile.interval_secs",
                "intervals and concurrency must be greater than 0",
            );
        }
        if self.checkpoint_max_records == 0 {
            return invalid("checkpoint_max_records", "must be greater than 0");
        }
        if self.max_resident_rows == 0 {
            return invalid("max_resident_rows", "must be greater than 0");
        }
        if self.max_waiting_messages == 0 {
            return invalid("max_waiting_messages", "must be greater than 0");
        }
        if self.checkpoint_max_unfolded_rows == 0 {
            return invalid("checkpoint_max_unfolded_rows", "must be greater than 0");
        }
        if self.kafka.heartbeat_interval_ms == 0
            || self.kafka.heartbeat_interval_ms >= self.kafka.session_timeout_ms
        {
            return invalid(
                "kafka.heartbeat_interval_ms",
                "must be above 0 and below kafka.session_timeout_ms",
            );
        }
        if self.kafka.partitions < 1 {
            return invalid("kafka.partitions", "must be at least 1");
        }
        if self.kafka.topic.trim().is_empty() {
            return invalid("kafka.topic", "must not be empty");
        }
        self.kafka.validate_security()?;
        if self.mitto.base_url.is_some() && self.mitto.api_key.is_none() {
            return invalid("mitto.api_key", "is required when mitto.base_url is set");
        }
        if self.mitto.request_timeout_ms == 0 || self.mitto.connect_timeout_ms == 0 {
            return invalid(
                "mitto.request_timeout_ms",
                "timeouts must be greater than 0",
            );
        }
        if self.mitto.retry_min_delay_ms > self.mitto.retry_max_delay_ms {
            return invalid(
                "mitto.retry_min_delay_ms",
                "must not exceed mitto.retry_max_delay_ms",
            );
        }
        if self.webhook.max_body_bytes == 0 {
            return invalid("webhook.max_body_bytes", "must be greater than 0");
        }
        if self.auth.cache_ttl_secs == 0 {
            return invalid("auth.cache_ttl_secs", "must be greater than 0");
        }
        if let Some(url) = &self.links.public_base_url {
            let web = matches!(url.scheme(), "http" | "https") && url.host().is_some();
            if !web || url.query().is_some() || url.fragment().is_some() {
                return invalid(
                    "links.public_base_url",
                    "must be an http(s) URL with a host and no query or fragment",
                );
            }
        }
        if !self
            .links
            .offer_wording
            .contains(crate::domain::links::OFFER_LINK)
        {
            return invalid("links.offer_wording", "must contain {{offerLink}}");
        }
        if !self
            .links
            .unsubscribe_wording
            .contains(crate::domain::links::UNSUBSCRIBE_LINK)
        {
            return invalid(
                "links.unsubscribe_wording",
                "must contain {{unsubscribeLink}}",
            );
        }
        if self.contacts.max_import_bytes == 0 {
            return invalid("contacts.max_import_bytes", "must be greater than 0");
        }
        Ok(())
    }
}

impl KafkaSettings {
    fn validate_security(&self) -> Result<(), ConfigError> {
        let sasl = self.security_protocol.uses_sasl();
        let secured = self.security_protocol != SecurityProtocol::Plaintext;
        if self.brokers.is_none() && (secured || !self.properties.is_empty()) {
            return refuse(
                "kafka.security_protocol",
                "and kafka.properties need kafka.brokers (the embedded broker is plaintext)",
            );
        }
        if sasl
            && (self.sasl_mechanism.is_none()
                || self.sasl_username.is_none()
                || self.sasl_password.is_none())
        {
            return refuse(
                "kafka.sasl_mechanism",
                "kafka.sasl_username and kafka.sasl_password are required with a sasl_* protocol",
            );
        }
        if !sasl && (self.sasl_mechanism.is_some() || self.sasl_username.is_some()) {
            return refuse(
                "kafka.sasl_mechanism",
                "is set but kafka.security_protocol is not sasl_plaintext or sasl_ssl",
            );
        }
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| RESERVED_KAFKA_PROPERTIES.contains(&k.trim().to_ascii_lowercase().as_str()))
        {
            return refuse(
                "kafka.properties",
                format!("may not set `{key}` (campaignd sets it, or a kafka.* key does)"),
            );
        }
        Ok(())
    }
}

fn refuse(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

/// The unprefixed names that deployment tooling conventionally sets.
fn conventional_env() -> Env {
    Env::raw()
        .only(&[
            "DATABASE_URL",
            "KAFKA_BROKERS",
            "MITTO_BASE_URL",
            "MITTO_API_KEY",
        ])
        .map(|key| match key.as_str().to_ascii_lowercase().as_str() {
            "kafka_brokers" => "kafka.brokers".into(),
            "mitto_base_url" => "mitto.base_url".into(),
            "mitto_api_key" => "mitto.api_key".into(),
            _ => key.into(),
        })
}

// figment's Jail fixes the closure's error type (figment::Error, which is large).
#[allow(clippy::result_large_err)]
#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn embedded_defaults_are_valid() {
        Jail::expect_with(|_| {
            let s = Settings::load(None).expect("defaults load");
            assert_eq!(s.batch_size, 500);
            assert_eq!(s.checkpoint_interval_ms, 250);
            assert!(s.kafka.brokers.is_none(), "embedded broker by default");
            assert!(s.mitto.base_url.is_none(), "simulator by default");
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "campaignd.toml",
                "batch_size = 100\n[http]\nbind = \"127.0.0.1:9000\"",
            )?;
            jail.set_env("CAMPAIGND_BATCH_SIZE", "200");
            jail.set_env("KAFKA_BROKERS", "10.0.0.1:9092");
            let s = Settings::load(None).expect("layers load");
            assert_eq!(s.batch_size, 200);
            assert_eq!(s.http.bind.port(), 9000);
            assert_eq!(s.kafka.brokers.as_deref(), Some("10.0.0.1:9092"));
            Ok(())
        });
    }

    #[test]
    fn prefixed_environment_wins_over_conventional_names() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://a@h/one");
            jail.set_env("CAMPAIGND_DATABASE_URL", "postgres://a@h/two");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.database_url.expose_secret(), "postgres://a@h/two");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_fails_with_a_message_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("CAMPAIGND_CHECKPOINT_INTERVAL_MS", "soon");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("CHECKPOINT_INTERVAL_MS") && err.contains("CAMPAIGND_"),
                "{err}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("CAMPAIGND_BATCH_SIZE", "5000");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("`batch_size`"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("MITTO_BASE_URL", "https://messaging.mittoapi.com");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("mitto.api_key"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("CAMPAIGND_CONTACTS__MAX_IMPORT_BYTES", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("`contacts.max_import_bytes`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@h/db");
            jail.set_env("MITTO_API_KEY", "mitto-key-value");
            jail.set_env("CAMPAIGND_WEBHOOK__SECRETS", "s3cr3t-one, s3cr3t-two");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.webhook.secrets.len(), 2);
            let shown = format!("{s:?}");
            for secret in ["hunter2", "mitto-key-value", "s3cr3t-one", "s3cr3t-two"] {
                assert!(!shown.contains(secret), "{secret} leaked: {shown}");
            }
            Ok(())
        });
    }

    #[test]
    fn kafka_security_is_configured_from_the_environment_and_checked_whole() {
        Jail::expect_with(|jail| {
            jail.set_env("KAFKA_BROKERS", "b-1.example:9096");
            jail.set_env("CAMPAIGND_KAFKA__SECURITY_PROTOCOL", "sasl_ssl");
            jail.set_env("CAMPAIGND_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256");
            jail.set_env("CAMPAIGND_KAFKA__SASL_USERNAME", "campaignd");
            jail.set_env("CAMPAIGND_KAFKA__SASL_PASSWORD", "kafka-pa55");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.kafka.security_protocol, SecurityProtocol::SaslSsl);
            assert_eq!(s.kafka.sasl_mechanism, Some(SaslMechanism::ScramSha256));
            assert!(!format!("{s:?}").contains("kafka-pa55"));
            Ok(())
        });
        let refused = |env: &[(&str, &str)], file: &str| {
            let mut error = String::new();
            Jail::expect_with(|jail| {
                jail.create_file("campaignd.toml", file)?;
                for (k, v) in env {
                    jail.set_env(k, v);
                }
                error = Settings::load(None).unwrap_err().to_string();
                Ok(())
            });
            error
        };
        let sasl_without_password = refused(
            &[
                ("KAFKA_BROKERS", "b:9096"),
                ("CAMPAIGND_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("CAMPAIGND_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("CAMPAIGND_KAFKA__SASL_USERNAME", "u"),
            ],
            "",
        );
        assert!(
            sasl_without_password.contains("sasl_password"),
            "{sasl_without_password}"
        );
        let tls_to_the_embedded_broker =
            refused(&[("CAMPAIGND_KAFKA__SECURITY_PROTOCOL", "ssl")], "");
        assert!(tls_to_the_embedded_broker.contains("kafka.brokers"));
        let reserved = refused(
            &[("KAFKA_BROKERS", "b:9092")],
            "[kafka.properties]\n\"enable.auto.commit\" = \"true\"",
        );
        assert!(reserved.contains("enable.auto.commit"), "{reserved}");
        let unknown_mechanism = refused(
            &[
                ("KAFKA_BROKERS", "b:9092"),
                ("CAMPAIGND_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("CAMPAIGND_KAFKA__SASL_MECHANISM", "GSSAPI"),
            ],
            "",
        );
        assert!(
            unknown_mechanism.contains("SASL_MECHANISM"),
            "{unknown_mechanism}"
        );
    }
}
