//! The embedded broker: librdkafka's Kafka-protocol mock cluster, reachable over real TCP on
//! loopback. In memory only — for `demo`, development, tests and benches, never production.
//! It keeps at most 5 MiB or 100k batches per partition (shared/KAFKA.md), so producers
//! compress with lz4.

use rdkafka::bindings;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// A running mock cluster; it lives as long as this value.
pub struct EmbeddedBroker {
    handle: BaseProducer,
    bootstrap: String,
}

impl EmbeddedBroker {
    /// Starts one mock broker and creates the topic explicitly (a metadata request would
    /// otherwise auto-create it with 4 partitions). Group joins start without the usual
    /// initial rebalance delay.
    pub fn start(topic: &str, partitions: i32) -> Result<Self, KafkaError> {
        let handle: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()?;
        // SAFETY: the pointer comes from this live client and is used while it lives.
        unsafe {
            let cluster = bindings::rd_kafka_handle_mock_cluster(handle.client().native_ptr());
            if cluster.is_null() {
                return Err(KafkaError::MockCluster(RDKafkaErrorCode::Fail));
            }
            bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        let cluster = handle
            .client()
            .mock_cluster()
            .ok_or(KafkaError::MockCluster(RDKafkaErrorCode::Fail))?;
        cluster.create_topic(topic, partitions, 1)?;
        let bootstrap = cluster.bootstrap_servers();
        drop(cluster);
        Ok(Self { handle, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates another topic on this broker.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        let cluster = self
            .handle
            .client()
            .mock_cluster()
            .ok_or(KafkaError::MockCluster(RDKafkaErrorCode::Fail))?;
        cluster.create_topic(topic, partitions, 1)
    }
}
