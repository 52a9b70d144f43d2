//! The plain logic the actors run: no actix, no I/O, unit-tested on its own.
//!
//! - [`batch`]     a claimed batch and the events its send's resolution becomes.
//! - [`campaign`]  a campaign's figures (counters, series, first/last times), the transitions
//!   that change them, the lifecycle table (which action is allowed in which status), stats.
//! - [`send_loop`] the send loop's decisions: settle earlier claims, claim, finish.
//! - [`clock`]     where "now" comes from for time-of-day rules (settable in tests).
//! - [`quiet_hours`] the local-time window in which marketing messages wait.
//! - [`engagement`] one partition's engagement rows (visits, redemptions, unsubscribes) and
//!   what counts once per recipient.
//! - [`ledger`]    one partition's per-message state and the forward-only rules applied to it.
//! - [`waiting`]   accepted messages awaiting their report, kept compactly by the ledger.
//! - [`reports`]   a campaign's series regrouped into minutes, hours or days of a time zone.
//! - [`reconcile`] what a status lookup at Mitto becomes, and the periodic pass's cursors.

pub mod batch;
pub mod campaign;
pub mod clock;
pub mod engagement;
pub mod ledger;
pub mod quiet_hours;
pub mod reconcile;
pub mod reports;
pub mod send_loop;
pub mod waiting;
