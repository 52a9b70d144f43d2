//! Rows this process just claimed, handed to the DlrActor that receives their `sent` (or
//! `send_failed`), so that event needs no lookup in Postgres.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::{CampaignId, Event, MessageStatus, RecipientId};
use crate::engine::ledger::{Incoming, Lookups, MessageRow};
use crate::store::enqueue::Claimed;

/// Recipients claimed by this process whose send has not reached a ledger yet, each with the
/// row Postgres holds for it. A claim of a first attempt is the only state such a row has had
/// (queued since enqueue, or released back to the queue before anything left): no message
/// id, report, error or time. Nothing but the event of its send changes it next, and that
/// event takes the entry; a release forgets its entries. So a row handed over is exactly what
/// the lookup would have read. Later attempts (retry-failed) keep their earlier attempt's
/// columns and are looked up as before.
///
/// Entries a ledger never takes (another process consumed the partition, or a send that never
/// produced its event) are bounded: past [`MAX_ENTRIES`] the ones older than [`MAX_AGE`] go,
/// and past that nothing new is held (those sends are looked up).
#[derive(Clone, Default)]
pub struct ClaimedRows(Arc<DashMap<RecipientId, (MessageRow, Instant)>>);

/// Entries held at most.
pub const MAX_ENTRIES: usize = 200_000;
/// How long an entry not taken may stay once the table is full.
pub const MAX_AGE: Duration = Duration::from_secs(300);

impl ClaimedRows {
    /// Holds the rows of a committed claim of `campaign`.
    pub fn hold(&self, campaign: CampaignId, rows: &[Claimed]) {
        if self.0.len() + rows.len() > MAX_ENTRIES {
            self.0.retain(|_, (_, since)| since.elapsed() < MAX_AGE);
        }
        let now = Instant::now();
        for claimed in rows {
            if self.0.len() >= MAX_ENTRIES {
                return;
            }
            if let Some(row) = first_attempt_row(campaign, claimed) {
                self.0.insert(row.recipient, (row, now));
            }
        }
    }

    /// Forgets recipients whose claims go back to the queue (or are cancelled).
    pub fn forget(&self, recipients: &[RecipientId]) {
        for recipient in recipients {
            self.0.remove(recipient);
        }
    }

    /// Takes the entries of the sends in `batch`, and answers the rows of those the ledger
    /// asked to look up (removing them from `lookups`). Entries of rows the ledger already
    /// holds are dropped: memory is newer.
    pub fn take_for(&self, batch: &[Incoming], lookups: &mut Lookups) -> Vec<MessageRow> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let asked: HashSet<RecipientId> = lookups.recipients.iter().copied().collect();
        let mut handed = Vec::new();
        for event in batch.iter().filter_map(|i| i.event.as_ref().ok()) {
            let (Event::Sent { recipient_id, .. } | Event::SendFailed { recipient_id, .. }) = event
            else {
                continue;
            };
            if let Some((_, (row, _))) = self.0.remove(recipient_id) {
                if asked.contains(recipient_id) {
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

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The row of a claimed first attempt, as Postgres holds it after the claim.
fn first_attempt_row(campaign: CampaignId, claimed: &Claimed) -> Option<MessageRow> {
    if claimed.attempt != 0 {
        return None;
    }
    Some(MessageRow {
        recipient: RecipientId::new(claimed.id).ok()?,
        campaign,
        status: MessageStatus::Processing,
        message_id: None,
        bulk_id: None,
        delivery_status: None,
        error: None,
        error_retryable: None,
        sent_at: None,
        delivered_at: None,
        failed_at: None,
        attempt: 0,
        segments: u32::try_from(claimed.segments).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageId;
    use chrono::Utc;

    fn claimed(id: i64, attempt: i32) -> Claimed {
        Claimed {
            id,
            phone: format!("+3069{id:08}"),
            body: None,
            attempt,
            segments: 2,
            link_secret: None,
        }
    }

    fn sent(offset: i64, recipient: i64) -> Incoming {
        Incoming {
            offset,
            event: Ok(Event::Sent {
                message_id: MessageId::parse(&format!("M{recipient}")).unwrap(),
                campaign_id: CampaignId::new(1).unwrap(),
                recipient_id: RecipientId::new(recipient).unwrap(),
                bulk_id: None,
                attempt: 0,
                at: Utc::now(),
            }),
        }
    }

    fn ids(ids: &[i64]) -> Vec<RecipientId> {
        ids.iter().map(|i| RecipientId::new(*i).unwrap()).collect()
    }

    #[test]
    fn a_send_takes_its_claimed_row_once_and_only_first_attempts_are_held() {
        let rows = ClaimedRows::default();
        let campaign = CampaignId::new(1).unwrap();
        rows.hold(campaign, &[claimed(1, 0), claimed(2, 0), claimed(3, 1)]);
        assert_eq!(rows.len(), 2, "a later attempt is looked up");
        let mut lookups = Lookups {
            recipients: ids(&[1, 3]),
            ..Lookups::default()
        };
        // recipient 2's row is in the ledger's memory already: its entry is dropped
        let batch = [sent(0, 1), sent(1, 2), sent(2, 3)];
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
        let mut again = Lookups {
            recipients: ids(&[1]),
            ..Lookups::default()
        };
        assert!(
            rows.take_for(&batch[..1], &mut again).is_empty(),
            "a repeated send looks up"
        );
        assert_eq!(again.recipients, ids(&[1]));
    }

    #[test]
    fn released_claims_are_forgotten() {
        let rows = ClaimedRows::default();
        rows.hold(CampaignId::new(1).unwrap(), &[claimed(1, 0), claimed(2, 0)]);
        rows.forget(&ids(&[1]));
        let mut lookups = Lookups {
            recipients: ids(&[1, 2]),
            ..Lookups::default()
        };
        let handed = rows.take_for(&[sent(0, 1), sent(1, 2)], &mut lookups);
        assert_eq!(handed.len(), 1);
        assert_eq!(lookups.recipients, ids(&[1]));
    }
}
