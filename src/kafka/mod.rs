//! Kafka plumbing for the `message-events` topic (shared/KAFKA.md): an idempotent producer, a
//! partition-aware consumer that seeks to the offsets stored in Postgres, topic creation, and
//! the embedded broker used when no brokers are configured — so the same producer/consumer
//! code runs in every mode.

pub mod consumer;
pub mod embedded;
pub mod producer;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use secrecy::{ExposeSecret, SecretString};

use crate::config::KafkaSettings;
pub use embedded::EmbeddedBroker;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("Kafka client error: {0}")]
    Client(#[from] KafkaError),
    #[error("the broker at {0} did not report a cluster id")]
    NoClusterId(String),
    #[error("creating topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("a Kafka set-up task failed: {0}")]
    Task(String),
}

/// How every client of this process reaches the brokers: where, and with which security
/// settings. Every client's configuration starts from [`Brokers::client_config`], so none can
/// connect without the TLS and SASL settings. `Debug` shows property names, never values.
#[derive(Clone)]
pub struct Brokers {
    pub bootstrap: String,
    properties: std::sync::Arc<Vec<(String, SecretString)>>,
}

impl Brokers {
    /// Plaintext, no authentication: the embedded broker, the dev broker, tests.
    pub fn plain(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            properties: Default::default(),
        }
    }

    /// The configured brokers with the configured security settings and extra properties.
    pub fn configured(bootstrap: &str, settings: &KafkaSettings) -> Self {
        let text = |v: &str| SecretString::from(v.to_owned());
        let mut properties: Vec<(String, SecretString)> = settings
            .properties
            .iter()
            .map(|(k, v)| (k.trim().to_owned(), v.clone()))
            .collect();
        let protocol = settings.security_protocol;
        properties.push(("security.protocol".into(), text(protocol.as_property())));
        if let Some(mechanism) = settings.sasl_mechanism {
            properties.push(("sasl.mechanism".into(), text(mechanism.as_property())));
        }
        if let Some(user) = &settings.sasl_username {
            properties.push(("sasl.username".into(), text(user)));
        }
        if let Some(password) = &settings.sasl_password {
            properties.push(("sasl.password".into(), password.clone()));
        }
        if let Some(ca) = &settings.ssl_ca_location {
            properties.push(("ssl.ca.location".into(), text(&ca.to_string_lossy())));
        }
        Self {
            bootstrap: bootstrap.to_owned(),
            properties: std::sync::Arc::new(properties),
        }
    }

    /// A client configuration reaching these brokers; the caller adds its own properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in self.properties.iter() {
            config.set(key, value.expose_secret());
        }
        config
    }
}

impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Brokers")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &keys)
            .finish()
    }
}

/// A reachable broker: how to reach it, its cluster id (the key of stored offsets), and the
/// embedded broker when campaignd runs one.
pub struct BrokerConnection {
    pub brokers: Brokers,
    pub cluster_id: String,
    pub embedded: Option<EmbeddedBroker>,
}

/// Connects to the configured brokers (creating the topic when absent), or starts the
/// embedded broker when none are configured.
pub async fn connect(settings: &KafkaSettings) -> Result<BrokerConnection, KafkaSetupError> {
    let (brokers, embedded) = match &settings.brokers {
        Some(bootstrap) => {
            let brokers = Brokers::configured(bootstrap, settings);
            create_topic(&brokers, settings).await?;
            (brokers, None)
        }
        None => {
            let broker = EmbeddedBroker::start(&settings.topic, settings.partitions)?;
            tracing::warn!(
                bootstrap = %broker.bootstrap(),
                "no kafka.brokers configured: running the embedded broker (in memory; not for production)"
            );
            (Brokers::plain(broker.bootstrap()), Some(broker))
        }
    };
    let cluster_id = fetch_cluster_id(&brokers).await?;
    Ok(BrokerConnection {
        brokers,
        cluster_id,
        embedded,
    })
}

async fn fetch_cluster_id(brokers: &Brokers) -> Result<String, KafkaSetupError> {
    let brokers = brokers.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = brokers.client_config().create()?;
        client
            .client()
            .fetch_cluster_id(Duration::from_secs(15))
            .ok_or(KafkaSetupError::NoClusterId(brokers.bootstrap))
    })
    .await
    .map_err(|e| KafkaSetupError::Task(e.to_string()))?
}

/// Whether the topic exists, by a metadata request that may not auto-create it.
async fn topic_exists(brokers: &Brokers, topic: &str) -> Result<bool, KafkaSetupError> {
    let (brokers, topic) = (brokers.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = brokers
            .client_config()
            .set("allow.auto.create.topics", "false")
            .create()?;
        let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(15))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    })
    .await
    .map_err(|e| KafkaSetupError::Task(e.to_string()))?
}

/// Creates the topic when absent. Checking first matters: some Kafka-protocol brokers (the
/// embedded one among them) do not implement CreateTopics.
async fn create_topic(brokers: &Brokers, settings: &KafkaSettings) -> Result<(), KafkaSetupError> {
    if topic_exists(brokers, &settings.topic).await? {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = brokers.client_config().create()?;
    let topic = NewTopic::new(
        &settings.topic,
        settings.partitions,
        TopicReplication::Fixed(settings.replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = %settings.topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// The end offset (high watermark) of every partition of a topic.
pub fn end_offsets(
    brokers: &Brokers,
    topic: &str,
) -> Result<std::collections::HashMap<i32, i64>, KafkaError> {
    Ok(watermarks(brokers, topic)?
        .into_iter()
        .map(|(p, (_, high))| (p, high))
        .collect())
}

/// Records no longer on the topic (the sum of low watermarks): retention removed them.
pub fn dropped_by_retention(brokers: &Brokers, topic: &str) -> Result<i64, KafkaError> {
    Ok(watermarks(brokers, topic)?
        .values()
        .map(|(low, _)| low)
        .sum())
}

fn watermarks(
    brokers: &Brokers,
    topic: &str,
) -> Result<std::collections::HashMap<i32, (i64, i64)>, KafkaError> {
    let client: BaseConsumer = brokers
        .client_config()
        .set("allow.auto.create.topics", "false")
        .create()?;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = std::collections::HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            ends.insert(
                p.id(),
                client.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?,
            );
        }
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslMechanism, SecurityProtocol};

    fn secured(protocol: SecurityProtocol) -> KafkaSettings {
        let mut settings = crate::config::Settings::load(None).unwrap().kafka;
        settings.brokers = Some("127.0.0.1:1".into());
        settings.security_protocol = protocol;
        settings.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        settings.sasl_username = Some("campaignd".into());
        settings.sasl_password = Some(SecretString::from("pa55-w0rd".to_owned()));
        settings
    }

    #[test]
    fn a_managed_cluster_s_settings_reach_the_client_and_its_password_is_never_shown() {
        let mut settings = secured(SecurityProtocol::SaslSsl);
        settings.ssl_ca_location = Some("/etc/ssl/certs/ca-certificates.crt".into());
        settings.properties.insert(
            "ssl.endpoint.identification.algorithm".into(),
            SecretString::from("https".to_owned()),
        );
        let brokers = Brokers::configured("broker-1.example:9096", &settings);
        let config = brokers.client_config();
        for (key, value) in [
            ("bootstrap.servers", "broker-1.example:9096"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "campaignd"),
            ("sasl.password", "pa55-w0rd"),
            ("ssl.ca.location", "/etc/ssl/certs/ca-certificates.crt"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        // librdkafka accepts SASL_SSL with SCRAM only when built with TLS
        let producer: Result<rdkafka::producer::BaseProducer, _> = config.create();
        assert!(producer.is_ok(), "{:?}", producer.err());
        let shown = format!("{brokers:?}");
        assert!(
            shown.contains("sasl.password") && !shown.contains("pa55-w0rd"),
            "{shown}"
        );
    }

    #[test]
    fn a_property_librdkafka_does_not_know_is_refused_when_the_client_is_created() {
        let mut settings = secured(SecurityProtocol::SaslSsl);
        settings.properties.insert(
            "ssl.no.such.thing".into(),
            SecretString::from("1".to_owned()),
        );
        let created: Result<BaseConsumer, _> = Brokers::configured("127.0.0.1:1", &settings)
            .client_config()
            .create();
        let error = created.err().expect("refused").to_string();
        assert!(error.contains("ssl.no.such.thing"), "{error}");
    }

    #[test]
    fn a_tls_client_does_not_talk_plaintext_to_a_broker_that_offers_no_tls() {
        let broker = EmbeddedBroker::start("tls-probe", 1).unwrap();
        let metadata = |brokers: Brokers| {
            let client: BaseConsumer = brokers.client_config().create().unwrap();
            client
                .fetch_metadata(Some("tls-probe"), Duration::from_secs(3))
                .map(|m| m.topics().len())
        };
        assert_eq!(metadata(Brokers::plain(broker.bootstrap())).ok(), Some(1));
        let mut settings = secured(SecurityProtocol::Ssl);
        (
            settings.sasl_mechanism,
            settings.sasl_username,
            settings.sasl_password,
        ) = (None, None, None);
        assert!(metadata(Brokers::configured(broker.bootstrap(), &settings)).is_err());
    }
}
