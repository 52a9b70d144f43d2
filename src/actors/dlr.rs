//! DlrActor: one per partition of `message-events`, the single writer of per-message state.
//!
//! Events of one message arrive in order on one partition (the key is the messageId), so
//! deduplication and ordering are local decisions made through
//! `domain::MessageStatus::advance`. Real status changes go to the campaign's actor.
//!
//! Arrives with the event-core issue; nothing here yet.
