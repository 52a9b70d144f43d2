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

/// A reachable broker: its bootstrap address, its cluster id (the key of stored offsets), and
/// the embedded broker when campaignd runs one.
pub struct BrokerConnection {
    pub bootstrap: String,
    pub cluster_id: String,
    pub embedded: Option<EmbeddedBroker>,
}

/// Connects to the configured brokers (creating the topic when absent), or starts the
/// embedded broker when none are configured.
pub async fn connect(settings: &KafkaSettings) -> Result<BrokerConnection, KafkaSetupError> {
    let (bootstrap, embedded) = match &settings.brokers {
        Some(brokers) => {
            create_topic(brokers, settings).await?;
            (brokers.clone(), None)
        }
        None => {
            let broker = EmbeddedBroker::start(&settings.topic, settings.partitions)?;
            tracing::warn!(
                bootstrap = %broker.bootstrap(),
                "no kafka.brokers configured: running the embedded broker (in memory; not for production)"
            );
            (broker.bootstrap().to_owned(), Some(broker))
        }
    };
    let cluster_id = fetch_cluster_id(&bootstrap).await?;
    Ok(BrokerConnection {
        bootstrap,
        cluster_id,
        embedded,
    })
}

async fn fetch_cluster_id(bootstrap: &str) -> Result<String, KafkaSetupError> {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        client
            .client()
            .fetch_cluster_id(Duration::from_secs(15))
            .ok_or(KafkaSetupError::NoClusterId(bootstrap))
    })
    .await
    .map_err(|e| KafkaSetupError::Task(e.to_string()))?
}

/// Whether the topic exists, by a metadata request that may not auto-create it.
async fn topic_exists(brokers: &str, topic: &str) -> Result<bool, KafkaSetupError> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
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
async fn create_topic(brokers: &str, settings: &KafkaSettings) -> Result<(), KafkaSetupError> {
    if topic_exists(brokers, &settings.topic).await? {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
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
    bootstrap: &str,
    topic: &str,
) -> Result<std::collections::HashMap<i32, i64>, KafkaError> {
    Ok(watermarks(bootstrap, topic)?
        .into_iter()
        .map(|(p, (_, high))| (p, high))
        .collect())
}

/// Records no longer on the topic (the sum of low watermarks): retention removed them.
pub fn dropped_by_retention(bootstrap: &str, topic: &str) -> Result<i64, KafkaError> {
    Ok(watermarks(bootstrap, topic)?
        .values()
        .map(|(low, _)| low)
        .sum())
}

fn watermarks(
    bootstrap: &str,
    topic: &str,
) -> Result<std::collections::HashMap<i32, (i64, i64)>, KafkaError> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
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
