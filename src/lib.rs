//! campaignd — an actor-based SMS campaign engine.
//!
//! Module map:
//! - [`cli`]       command-line interface (clap): `serve`, `demo`, `migrate`, `mitto-sim`, `tenant …`.
//! - [`config`]    layered settings: defaults < `campaignd.toml` < `CAMPAIGND_*` environment.
//! - [`telemetry`] tracing subscriber (pretty for humans, JSON for machines).
//! - [`domain`]    value types parsed at the boundary: phones, ids, statuses, the one Mitto
//!   status mapping, SMS segment counting.
//! - [`engine`]    the plain logic actors run: campaign figures and lifecycle table, send-loop
//!   decisions, the message ledger (no actix, no I/O).
//! - [`actors`]    shells over the engine: CampaignActor, SenderActor pool, DlrActor per
//!   partition, registry, checkpointer.
//! - [`kafka`]     producer, consumer, offsets and the embedded broker for `message-events`.
//! - [`mitto`]     Mitto wire types, the HTTP client, webhook signatures and the simulator.
//! - [`http`]      the actix-web service: health, readiness, authenticated `/api` routes,
//!   webhooks, recipients' public link routes.
//! - [`web`]       pages for people (maud templates, compiled in): the link pages.
//! - [`store`]     every SQL statement, behind functions named for what they do; migrations.
//! - [`pipeline`]  the event pipeline wired: broker, producer, consumer, actors, checkpointer.
//! - [`reconcile`] statuses fetched from Mitto (refresh API, periodic pass, give-up) and the
//!   sweep that keeps no campaign stuck in `sending`.
//! - [`app`]       start-up wiring shared by `serve` and the integration tests.
//! - [`stopping`]  the stop signal that ends live streams and background loops.
//! - [`bench`]     load generators and benchmarks (`campaignd bench …`).
//! - [`demo`]      `campaignd demo`: one campaign end to end on the embedded defaults.

pub mod actors;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod mitto;
pub mod pipeline;
pub mod reconcile;
pub mod stopping;
pub mod store;
pub mod telemetry;
pub mod web;
