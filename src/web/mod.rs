//! Pages for people, rendered on the server with maud (checked at compile time; every value
//! is escaped by the template engine, never concatenated into HTML). Assets are embedded.
//!
//! - [`links`] the public pages behind recipients' links: offer, unsubscribe, not found.

pub mod links;
