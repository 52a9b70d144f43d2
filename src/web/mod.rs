//! Pages for people, rendered on the server with maud (checked at compile time; every value
//! is escaped by the template engine, never concatenated into HTML). Assets are embedded.
//!
//! - [`links`] the public pages behind recipients' links: offer, unsubscribe, not found.
//! - [`dashboard`] the merchant's dashboard under `/app`: sign-in, campaigns, contacts, account.
//! - [`assets`] the dashboard's vendored scripts and stylesheet, compiled into the binary.

pub mod assets;
pub mod dashboard;
pub mod links;
