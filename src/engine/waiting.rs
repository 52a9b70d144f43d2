//! Messages Mitto accepted whose last change is committed and whose final report has not come
//! yet, kept in 64 bytes each: a campaign of a million messages waits minutes to hours for its
//! reports, and the full [`MessageRow`] (strings, options, two map entries) costs several
//! hundred bytes per message over that time.
//!
//! Only rows that say nothing beyond their send are kept here: status `sent`, a ULID message
//! id (what Mitto issues), at most an in-flight raw status from the fixed list Mitto uses, no
//! error or final time. Anything else stays a full row in the ledger. A kept row is exactly its
//! committed state, so it can be dropped at any time: Postgres holds the same.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ledger::MessageRow;
use crate::domain::{BulkId, CampaignId, MessageId, MessageStatus, RecipientId};

/// In-flight raw statuses a waiting message may carry, stored as their index + 1 (0: none).
/// Kept verbatim: a raw status spelled any other way keeps its row a full row.
const IN_FLIGHT_RAW: [&str; 7] = [
    "Sent",
    "Pending",
    "Queued",
    "Accepted",
    "Submitted",
    "Enroute",
    "Unknown",
];

/// A waiting message without its id (the key it is stored under).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Compact {
    recipient: RecipientId,
    campaign: CampaignId,
    /// The bulk's UUID; 0 for none (Mitto never issues the nil UUID; a row holding it is not
    /// kept here).
    bulk: u128,
    /// `TAKEN` marks a message taken out of the sorted array (a hole until the next merge).
    sent_at_ns: i64,
    attempt: u16,
    segments: u16,
    raw: u8,
}

const TAKEN: i64 = i64::MIN;

/// Waiting messages by their ULID: a sorted array, exactly as large as it needs to be, plus
/// a small map of the messages kept since it was last merged. A hash map of everything would
/// sit between 44 % and 87 % full (it doubles as it grows), i.e. up to 150 bytes a message;
/// the array costs the 64 bytes of an entry, and the map at most an eighth of the array more.
#[derive(Debug, Default)]
pub struct Waiting {
    sorted: Vec<(u128, Compact)>,
    holes: usize,
    recent: HashMap<u128, Compact>,
}

/// The ULID a message id spells, if it spells one exactly as Mitto writes it (decoding alone
/// accepts lowercase and wraps an overlong first character).
fn ulid_of(id: &MessageId) -> Option<u128> {
    let ulid = ulid::Ulid::from_string(id.as_str()).ok()?;
    let mut canonical = [0u8; ulid::ULID_LEN];
    (ulid.array_to_str(&mut canonical) == id.as_str()).then_some(ulid.0)
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
        self.take_key(key);
        self.recent.insert(key, compact);
        if self.recent.len() > (self.sorted.len() / 8).max(4096) {
            self.merge();
        }
        true
    }

    fn compact(row: &MessageRow) -> Option<Compact> {
        // every column named, so that a new one cannot be forgotten here and lost by `take`
        let MessageRow {
            recipient,
            campaign,
            status,
            message_id: _,
            bulk_id,
            delivery_status,
            error,
            error_retryable,
            sent_at,
            delivered_at,
            failed_at,
            attempt,
            segments,
        } = row;
        let plain = *status == MessageStatus::Sent
            && error.is_none()
            && error_retryable.is_none()
            && delivered_at.is_none()
            && failed_at.is_none();
        let raw = match delivery_status.as_deref() {
            None => 0,
            Some(raw) => IN_FLIGHT_RAW.iter().position(|r| *r == raw)? as u8 + 1,
        };
        let bulk = bulk_id.map_or(0, |b| b.as_uuid().as_u128());
        let sent_at_ns = sent_at.as_ref()?.timestamp_nanos_opt()?;
        if !plain || (bulk_id.is_some() && bulk == 0) || sent_at_ns == TAKEN {
            return None;
        }
        Some(Compact {
            recipient: *recipient,
            campaign: *campaign,
            bulk,
            sent_at_ns,
            attempt: u16::try_from(*attempt).ok()?,
            segments: u16::try_from(*segments).ok()?,
            raw,
        })
    }

    /// The message's full row, removed from here (it is about to change).
    pub fn take(&mut self, id: &MessageId) -> Option<MessageRow> {
        let c = self.take_key(ulid_of(id)?)?;
        Some(MessageRow {
            recipient: c.recipient,
            campaign: c.campaign,
            status: MessageStatus::Sent,
            message_id: Some(id.clone()),
            bulk_id: (c.bulk != 0).then(|| BulkId::from_uuid(uuid::Uuid::from_u128(c.bulk))),
            delivery_status: c
                .raw
                .checked_sub(1)
                .map(|i| IN_FLIGHT_RAW[usize::from(i)].to_owned()),
            error: None,
            error_retryable: None,
            sent_at: Some(DateTime::<Utc>::from_timestamp_nanos(c.sent_at_ns)),
            delivered_at: None,
            failed_at: None,
            attempt: u32::from(c.attempt),
            segments: u32::from(c.segments),
        })
    }

    /// The recipient a waiting message was sent to.
    pub fn recipient_of(&self, id: &MessageId) -> Option<RecipientId> {
        let key = ulid_of(id)?;
        match self.recent.get(&key) {
            Some(c) => Some(c.recipient),
            None => self.find(key).map(|at| self.sorted[at].1.recipient),
        }
    }

    fn take_key(&mut self, key: u128) -> Option<Compact> {
        if let Some(c) = self.recent.remove(&key) {
            return Some(c);
        }
        let at = self.find(key)?;
        let entry = self.sorted[at].1;
        self.sorted[at].1.sent_at_ns = TAKEN;
        self.holes += 1;
        if self.holes > self.sorted.len() / 2 {
            self.merge();
        }
        Some(entry)
    }

    /// Where `key` sits in the sorted array, if it is there and not taken.
    fn find(&self, key: u128) -> Option<usize> {
        let at = self.sorted.binary_search_by_key(&key, |e| e.0).ok()?;
        (self.sorted[at].1.sent_at_ns != TAKEN).then_some(at)
    }

    /// Folds the recent map into the sorted array and drops its holes; the new array is
    /// allocated at its exact size. A key in both (which `keep` prevents) keeps the recent one.
    fn merge(&mut self) {
        let mut recent: Vec<(u128, Compact)> = self.recent.drain().collect();
        recent.sort_unstable_by_key(|e| e.0);
        let live = self.sorted.iter().filter(|e| e.1.sent_at_ns != TAKEN);
        let mut merged = Vec::with_capacity(self.sorted.len() - self.holes + recent.len());
        let (mut a, mut b) = (live.peekable(), recent.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 < y.0 => a.next().copied(),
                (Some(x), Some(y)) if x.0 == y.0 => {
                    a.next();
                    b.next()
                }
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next().copied(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.sorted = merged;
        self.holes = 0;
        self.recent = HashMap::new();
    }

    pub fn contains(&self, id: &MessageId) -> bool {
        self.recipient_of(id).is_some()
    }

    /// Forgets the oldest waiting messages (a ULID begins with its send time) beyond `max`,
    /// answering how many. Each is exactly its committed row, so a report for one is looked
    /// up in Postgres instead: reports that take hours cost lookups, not memory.
    pub fn keep_at_most(&mut self, max: usize) -> usize {
        if self.len() <= max {
            return 0;
        }
        self.merge();
        let excess = self.sorted.len() - max;
        self.sorted.drain(..excess);
        self.sorted.shrink_to_fit();
        excess
    }

    pub fn len(&self) -> usize {
        self.recent.len() + self.sorted.len() - self.holes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the book takes: the array's capacity and the map's table.
    pub fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u128, Compact)>();
        self.sorted.capacity() * entry + super::ledger::table_bytes(self.recent.capacity(), entry)
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

    fn ulid_row(n: u128, recipient: i64) -> MessageRow {
        MessageRow {
            recipient: RecipientId::new(recipient).unwrap(),
            ..sent_row(&ulid::Ulid(n).to_string())
        }
    }

    #[test]
    fn thousands_kept_and_taken_in_any_order_come_back_each_once() {
        let mut w = Waiting::default();
        // scattered keys, kept in three waves so that the array is merged several times
        let key = |i: u128| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..20_000u128 {
            assert!(w.keep(&ulid_row(key(i), i as i64 + 1)));
        }
        assert_eq!(w.len(), 20_000);
        for i in (0..20_000u128).step_by(3) {
            let row = w.take(&ulid_row(key(i), 1).message_id.unwrap()).unwrap();
            assert_eq!(row.recipient.get(), i as i64 + 1);
        }
        for i in 20_000..30_000u128 {
            w.keep(&ulid_row(key(i), i as i64 + 1));
        }
        for i in 0..30_000u128 {
            let id = ulid_row(key(i), 1).message_id.unwrap();
            let taken_before = i < 20_000 && i % 3 == 0;
            assert_eq!(w.contains(&id), !taken_before, "{i}");
            assert_eq!(w.take(&id).is_some(), !taken_before, "{i}");
            assert!(!w.contains(&id) && w.take(&id).is_none(), "taken once: {i}");
        }
        assert!(w.is_empty());
    }

    #[test]
    fn an_in_flight_raw_status_comes_back_verbatim() {
        let mut w = Waiting::default();
        let row = MessageRow {
            delivery_status: Some("Enroute".into()),
            ..sent_row("01KC69MT19BRK5MSXG1V95YPHX")
        };
        assert!(w.keep(&row));
        assert_eq!(
            w.recipient_of(row.message_id.as_ref().unwrap()),
            Some(row.recipient)
        );
        assert_eq!(w.take(row.message_id.as_ref().unwrap()), Some(row));
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
                delivery_status: Some("enroute".into()),
                ..base.clone()
            },
            MessageRow {
                attempt: 70_000,
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

    #[test]
    fn past_its_bound_the_book_forgets_the_oldest_messages_first() {
        let mut book = Waiting::default();
        let id = |n: u128| ulid_row(n, 1).message_id.unwrap();
        for n in 1..=100u128 {
            assert!(book.keep(&ulid_row(n, n as i64)));
        }
        assert_eq!(book.keep_at_most(100), 0);
        assert_eq!(book.keep_at_most(30), 70);
        assert_eq!(book.len(), 30);
        assert!(!book.contains(&id(70)), "the oldest went first");
        assert!(book.contains(&id(71)) && book.contains(&id(100)));
        assert_eq!(book.take(&id(71)).map(|r| r.recipient.get()), Some(71));
        assert!(book.bytes() <= 30 * std::mem::size_of::<(u128, Compact)>());
    }
}
