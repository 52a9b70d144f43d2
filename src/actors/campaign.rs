//! CampaignActor: one per active campaign.
//!
//! Owns the campaign's status (through `domain::CampaignStatus`'s transition table), its
//! counters (total, queued, processing, sent, delivered, failed, redemptions, unsubscribes,
//! first/last sent at, a per-minute series) and its send loop: it claims batches of queued
//! recipients in Postgres before handing them to senders, honours pause and cancel between
//! batches, and decides completion. Stats requests are answered from its memory.
//! Activated on demand from Postgres and passivated when idle; a registry routes to it.
//!
//! Arrives with the event-core issue; nothing here yet.
