//! Mitto, the SMS provider: wire types, the HTTP client, webhook signatures and a simulator
//! that behaves like Mitto over real HTTP (see `shared/mitto-api.md`).

pub mod client;
pub mod reports;
pub mod retry;
pub mod signature;
pub mod simulator;
pub mod wire;

pub use client::{BulkOutcome, ItemResult, MittoClient, MittoError, Outcome};
