//! Kafka plumbing for the `message-events` topic: idempotent producer, partition-aware
//! consumer seeking to offsets stored in Postgres, topic admin, and the embedded broker used
//! when no brokers are configured (shared/KAFKA.md).
//!
//! Arrives with the event-core issue; nothing here yet.
