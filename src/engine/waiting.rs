//! Messages Mitto accepted whose `sent` is committed and whose report has not come yet, kept
//! in 64 bytes each: a campaign of a million messages waits minutes to hours for its reports,
//! and the full [`MessageRow`] (strings, options, two maps) cost several hundred bytes per
//! message over that time.
//!
//! Only rows that say nothing beyond their send are kept here: status `sent`, a ULID message
//! id (what Mitto issues), no raw status, error or final time. Anything else stays a full row
//! in the ledger. A kept row is exactly its committed state, so it can be dropped at any time:
//! Postgres holds the same.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ledger::MessageRow;
use crate::domain::{BulkId, CampaignId, MessageId, MessageStatus, RecipientId};

/// A waiting message without its id (the map's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Compact {
    recipient: RecipientId,
    campaign: CampaignId,
    /// The bulk's UUID; 0 for none (Mitto never issues the nil UUID; a row holding it is not
    /// kept here).
    bulk: u128,
    sent_at_ns: i64,
    attempt: u32,
    segments: u32,
}

/// Waiting messages by their ULID.
#[derive(Debug, Default)]
pub struct Waiting {
    messages: HashMap<u128, Compact>,
}

/// The ULID a message id spells, if it spells one exactly as Mitto writes it.
fn ulid_of(id: &MessageId) -> Option<u128> {
    let ulid = ulid::Ulid::from_string(id.as_str()).ok()?;
    (ulid.to_string() == id.as_str()).then_some(ulid.0)
}

impl Waiting {
    /// Keeps `row` if it is a plain accepted message with a ULID; answers whether it did.
    pub fn keep(&mut self, row: &MessageRow) -> bool {
        let Some(compact) = Self::compact(row) else {
            return false;
        };
        let Some(key) = row.message_id.as_ref().and_then(ulid_of) else {
            return false;
        };
        self.messages.insert(key, compact);
        true
    }

    fn compact(row: &MessageRow) -> Option<Compact> {
        let plain = row.status == MessageStatus::Sent
            && row.delivery_status.is_none()
            && row.error.is_none()
            && row.error_retryable.is_none()
            && row.delivered_at.is_none()
            && row.failed_at.is_none();
        let bulk = row.bulk_id.map_or(0, |b| b.as_uuid().as_u128());
        if !plain || (row.bulk_id.is_some() && bulk == 0) {
            return None;
        }
        Some(Compact {
            recipient: row.recipient,
            campaign: row.campaign,
            bulk,
            sent_at_ns: row.sent_at?.timestamp_nanos_opt()?,
            attempt: row.attempt,
            segments: row.segments,
        })
    }

    /// The message's full row, removed from here (it is about to change).
    pub fn take(&mut self, id: &MessageId) -> Option<MessageRow> {
        let c = self.messages.remove(&ulid_of(id)?)?;
        Some(MessageRow {
            recipient: c.recipient,
            campaign: c.campaign,
            status: MessageStatus::Sent,
            message_id: Some(id.clone()),
            bulk_id: (c.bulk != 0).then(|| BulkId::from_uuid(uuid::Uuid::from_u128(c.bulk))),
            delivery_status: None,
            error: None,
            error_retryable: None,
            sent_at: Some(DateTime::<Utc>::from_timestamp_nanos(c.sent_at_ns)),
            delivered_at: None,
            failed_at: None,
            attempt: c.attempt,
            segments: c.segments,
        })
    }

    pub fn contains(&self, id: &MessageId) -> bool {
        ulid_of(id).is_some_and(|key| self.messages.contains_key(&key))
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_row(id: &str) -> MessageRow {
        MessageRow {
            recipient: RecipientId::new(7).unwrap(),
            campaign: CampaignId::new(3).unwrap(),
            status: MessageStatus::Sent,
            message_id: Some(MessageId::parse(id).unwrap()),
            bulk_id: Some(BulkId::new_random()),
            delivery_status: None,
            error: None,
            error_retryable: None,
            sent_at: Some(
                DateTime::parse_from_rfc3339("2026-12-07T10:00:00.123456789Z")
                    .unwrap()
                    .into(),
            ),
            delivered_at: None,
            failed_at: None,
            attempt: 2,
            segments: 3,
        }
    }

    #[test]
    fn a_kept_message_comes_back_exactly_as_it_was() {
        let mut w = Waiting::default();
        let row = sent_row("01KC69MT19BRK5MSXG1V95YPHX");
        assert!(w.keep(&row));
        let id = row.message_id.clone().unwrap();
        assert!(w.contains(&id));
        assert_eq!(w.take(&id), Some(row));
        assert!(!w.contains(&id) && w.is_empty());
    }

    #[test]
    fn a_message_without_a_bulk_comes_back_without_one() {
        let mut w = Waiting::default();
        let row = MessageRow {
            bulk_id: None,
            ..sent_row("01KC69MT19BRK5MSXG1V95YPHX")
        };
        assert!(w.keep(&row));
        assert_eq!(w.take(row.message_id.as_ref().unwrap()), Some(row));
    }

    #[test]
    fn rows_that_say_more_than_their_send_stay_full_rows() {
        let mut w = Waiting::default();
        let base = sent_row("01KC69MT19BRK5MSXG1V95YPHX");
        let refused = [
            MessageRow {
                status: MessageStatus::Delivered,
                ..base.clone()
            },
            MessageRow {
                delivery_status: Some("Enroute".into()),
                ..base.clone()
            },
            MessageRow {
                error: Some("x".into()),
                ..base.clone()
            },
            MessageRow {
                sent_at: None,
                ..base.clone()
            },
            MessageRow {
                bulk_id: Some(BulkId::from_uuid(uuid::Uuid::nil())),
                ..base.clone()
            },
            // not a ULID, and a ULID not written the way Mitto writes it
            sent_row("msg-42"),
            sent_row("01kc69mt19brk5msxg1v95yphx"),
        ];
        for row in refused {
            assert!(!w.keep(&row), "{row:?}");
        }
        assert!(w.is_empty());
    }
}
