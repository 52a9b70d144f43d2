//! SenderActor pool: calls Mitto's bulk endpoint through `mitto::MittoClient`, one batch per
//! call, under a token bucket per traffic account and per tenant that counts SMS segments.
//! Results become `sent` / `send_failed` events on `message-events` before a batch is
//! reported done; an ambiguous outcome is never resent blindly.
//!
//! Arrives with the sending issue; nothing here yet.
