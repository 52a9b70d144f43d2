//! Rows this process just claimed, handed to the DlrActor that receives their `sent` (or
//! `send_failed`), so that event needs no lookup in Postgres.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{CampaignId, Event, RecipientId};
use crate::engine::batch::BatchItem;
use crate::engine::ledger::{Incoming, Lookups, MessageRow};

/// Recipients claimed by this process whose send has not reached a ledger yet, each with the
/// row Postgres holds for it. A claim of a first attempt is the only state such a row has had
/// (queued since enqueue, or released back to the queue before anything left): no message
/// id, report, error or time. Nothing but the event of its send changes it next, and that
/// event takes the entry; a release forgets its entries. So a row handed over is exactly what
/// the lookup would have read. Later attempts (retry-failed) keep their earlier attempt's
/// columns and are looked up as before.
///
/// The DlrActors stay the only writers of message state: an entry is a read they would have
/// made, taken once. Whenever this process is assigned partitions the table is emptied: a
/// `sent` consumed elsewhere left its entry here, and a repeated `sent` arriving after the
/// partition moved must find the real row. Past [`MAX_ENTRIES`] it is emptied too; an entry
/// is only ever a saved lookup.
#[derive(Clone, Default)]
pub struct ClaimedRows(Arc<DashMap<RecipientId, MessageRow>>);

/// Entries held at most (a claim's batches out with the senders, with room to spare).
pub const MAX_ENTRIES: usize = 100_000;

impl ClaimedRows {
    /// Holds the first attempts of a committed claim of `campaign`, as the batch leaves.
    pub fn hold(&self, campaign: CampaignId, items: &[BatchItem]) {
        if self.0.len() + items.len() > MAX_ENTRIES {
            self.0.clear();
        }
        for item in items.iter().filter(|i| i.attempt == 0) {
            let row = MessageRow::claimed(item.recipient, campaign, 0, item.segments);
            self.0.insert(item.recipient, row);
        }
    }

    /// Forgets recipients whose claims go back to the queue (or are cancelled).
    pub fn forget(&self, recipients: &[RecipientId]) {
        for recipient in recipients {
            self.0.remove(recipient);
        }
    }

    /// Forgets every entry: partitions were assigned to this process.
    pub fn clear(&self) {
        self.0.clear();
    }

    /// Takes the entries of the sends in `batch`, and answers the rows of those the ledger
    /// asked to look up (removing them from `lookups`). Entries of rows the ledger already
    /// holds are dropped: memory is newer. So is an entry whose event is of another attempt.
    pub fn take_for(&self, batch: &[Incoming], lookups: &mut Lookups) -> Vec<MessageRow> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let asked: HashSet<RecipientId> = lookups.recipients.iter().copied().collect();
        let mut handed = Vec::new();
        for event in batch.iter().filter_map(|i| i.event.as_ref().ok()) {
            let (Event::Sent {
                recipient_id,
                attempt,
                ..
            }
            | Event::SendFailed {
                recipient_id,
                attempt,
                ..
            }) = event
            else {
                continue;
            };
            if let Some((_, row)) = self.0.remove(recipient_id) {
                if asked.contains(recipient_id) && row.attempt == *attempt {
                    handed.push(row);
                }
            }
        }
        if !handed.is_empty() {
            let taken: HashSet<RecipientId> = handed.iter().map(|r| r.recipient).collect();
            lookups.recipients.retain(|r| !taken.contains(r));
        }
        handed
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, MessageStatus};
    use chrono::Utc;

    fn item(id: i64, attempt: u32) -> BatchItem {
        BatchItem {
            recipient: RecipientId::new(id).unwrap(),
            phone: format!("+3069{id:08}"),
            text: "Sale".into(),
            attempt,
            segments: 2,
        }
    }

    fn sent(offset: i64, recipient: i64, attempt: u32) -> Incoming {
        Incoming {
            offset,
            event: Ok(Event::Sent {
                message_id: MessageId::parse(&format!("M{recipient}")).unwrap(),
                campaign_id: CampaignId::new(1).unwrap(),
                recipient_id: RecipientId::new(recipient).unwrap(),
                bulk_id: None,
                attempt,
                at: Utc::now(),
            }),
        }
    }

    fn ids(ids: &[i64]) -> Vec<RecipientId> {
        ids.iter().map(|i| RecipientId::new(*i).unwrap()).collect()
    }

    fn asking(recipients: &[i64]) -> Lookups {
        Lookups {
            recipients: ids(recipients),
            ..Lookups::default()
        }
    }

    #[test]
    fn a_send_takes_its_claimed_row_once_and_only_first_attempts_are_held() {
        let rows = ClaimedRows::default();
        let campaign = CampaignId::new(1).unwrap();
        rows.hold(campaign, &[item(1, 0), item(2, 0), item(3, 1)]);
        assert_eq!(rows.len(), 2, "a later attempt is looked up");
        let mut lookups = asking(&[1, 3]);
        // recipient 2's row is in the ledger's memory already: its entry is dropped
        let batch = [sent(0, 1, 0), sent(1, 2, 0), sent(2, 3, 1)];
        let handed = rows.take_for(&batch, &mut lookups);
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].recipient, RecipientId::new(1).unwrap());
        assert_eq!(handed[0].status, MessageStatus::Processing);
        assert_eq!(handed[0].segments, 2);
        assert_eq!(
            lookups.recipients,
            ids(&[3]),
            "only what was not handed is looked up"
        );
        assert!(rows.is_empty());
        let mut again = asking(&[1]);
        assert!(
            rows.take_for(&batch[..1], &mut again).is_empty(),
            "a repeated send looks up"
        );
        assert_eq!(again.recipients, ids(&[1]));
    }

    #[test]
    fn released_claims_other_attempts_and_an_assignment_leave_the_lookup_in_place() {
        let rows = ClaimedRows::default();
        let campaign = CampaignId::new(1).unwrap();
        rows.hold(campaign, &[item(1, 0), item(2, 0)]);
        rows.forget(&ids(&[1]));
        let mut lookups = asking(&[1, 2]);
        let handed = rows.take_for(&[sent(0, 1, 0), sent(1, 2, 1)], &mut lookups);
        assert!(
            handed.is_empty(),
            "released, and an event of another attempt"
        );
        assert_eq!(lookups.recipients, ids(&[1, 2]));
        assert!(
            rows.is_empty(),
            "the other attempt's entry is dropped all the same"
        );
        rows.hold(campaign, &[item(3, 0)]);
        rows.clear();
        let mut lookups = asking(&[3]);
        assert!(rows.take_for(&[sent(0, 3, 0)], &mut lookups).is_empty());
        assert_eq!(lookups.recipients, ids(&[3]));
    }

    #[test]
    fn a_full_table_starts_over_instead_of_growing() {
        let rows = ClaimedRows::default();
        let campaign = CampaignId::new(1).unwrap();
        let items: Vec<BatchItem> = (1..=MAX_ENTRIES as i64).map(|i| item(i, 0)).collect();
        rows.hold(campaign, &items);
        assert_eq!(rows.len(), MAX_ENTRIES);
        rows.hold(campaign, &[item(MAX_ENTRIES as i64 + 1, 0)]);
        assert_eq!(rows.len(), 1);
    }
}
