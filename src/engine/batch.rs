//! A claimed batch and what becomes of it: the plain rule that turns a send's resolution
//! (answered per message, failed as a whole, or looked up after a lost answer) into the
//! `sent` / `send_failed` events to publish and the messages to queue again. Never a resend.

use chrono::Utc;

use crate::domain::{
    BulkId, CampaignId, Event, MessageId, RecipientId, TenantId, TrafficAccountId,
};
use crate::mitto::client::ItemResult;

/// One recipient of a claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub recipient: RecipientId,
    pub phone: String,
    pub text: String,
    pub attempt: u32,
    pub segments: u32,
}

impl BatchItem {
    /// Unique per recipient and attempt: what an unanswered send is looked up by.
    pub fn reference(&self) -> String {
        format!("r{}a{}", self.recipient, self.attempt)
    }
}

/// A claimed batch of one campaign.
#[derive(Debug, Clone)]
pub struct Batch {
    pub campaign: CampaignId,
    pub tenant: TenantId,
    pub traffic_account: TrafficAccountId,
    pub sender: String,
    pub items: Vec<BatchItem>,
    /// The partition whose holder owns the campaign and its generation when the batch was
    /// claimed: the batch goes to Mitto only while that holder still has it.
    pub owner: Option<(i32, u64)>,
}

impl Batch {
    /// What a batch that never left becomes: every message queued again, no event.
    pub fn never_left(&self) -> Resolution {
        Resolution::LookedUp(vec![Ok(None); self.items.len()])
    }

    /// The batch cut, in order, into pieces of at most `cells` segments each (a message
    /// longer than that goes alone); one piece when there is no bound.
    pub fn pieces(mut self, cells: Option<u32>) -> Vec<Batch> {
        let Some(cells) = cells else {
            return vec![self];
        };
        let mut groups: Vec<Vec<BatchItem>> = Vec::new();
        let mut used = 0;
        for item in std::mem::take(&mut self.items) {
            match groups.last_mut() {
                Some(group) if used + item.segments <= cells => {
                    used += item.segments;
                    group.push(item);
                }
                _ => {
                    used = item.segments;
                    groups.push(vec![item]);
                }
            }
        }
        groups
            .into_iter()
            .map(|items| Batch {
                items,
                sender: self.sender.clone(),
                ..self
            })
            .collect()
    }
}

/// What became of a batch once its events are on the topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchDone {
    pub accepted: usize,
    pub failed: usize,
    /// Provably never accepted (lost answer, absent at Mitto): to be queued again.
    pub requeue: Vec<RecipientId>,
}

impl BatchDone {
    /// Adds a piece's outcome.
    pub fn merge(&mut self, other: BatchDone) {
        self.accepted += other.accepted;
        self.failed += other.failed;
        self.requeue.extend(other.requeue);
    }
}

/// How a batch's send ended, before it becomes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Mitto answered per message.
    Answered {
        bulk_id: Option<BulkId>,
        items: Vec<ItemResult>,
    },
    /// The whole batch failed before acceptance.
    AllFailed { error: String, retryable: bool },
    /// The answer was lost; per message: accepted as, or absent (`None`), or unknowable
    /// (`Err`).
    LookedUp(Vec<Result<Option<MessageId>, String>>),
}

/// The error recorded for a message whose send outcome cannot be known.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// Turns a resolution into the events to publish and the batch's report. Pure.
pub fn events_for(batch: &Batch, resolution: Resolution) -> (Vec<Event>, BatchDone) {
    let at = Utc::now();
    let mut done = BatchDone::default();
    let mut events = Vec::with_capacity(batch.items.len());
    let sent = |item: &BatchItem, message_id: MessageId, bulk_id| Event::Sent {
        message_id,
        campaign_id: batch.campaign,
        recipient_id: item.recipient,
        bulk_id,
        attempt: item.attempt,
        at,
    };
    // a provider's reason is stored as text, which cannot hold NUL: drop it rather than let
    // the event be dead-lettered and its recipient stay claimed
    let failed = |item: &BatchItem, error: String, retryable| Event::SendFailed {
        campaign_id: batch.campaign,
        recipient_id: item.recipient,
        error: error.replace('\0', ""),
        retryable,
        attempt: item.attempt,
        at,
    };
    match resolution {
        Resolution::Answered { bulk_id, items } => {
            for (item, result) in batch.items.iter().zip(items) {
                events.push(match result {
                    ItemResult::Accepted { message_id } => sent(item, message_id, bulk_id),
                    ItemResult::Rejected { code, message } => {
                        failed(item, format!("{code}: {message}"), false)
                    }
                });
            }
        }
        Resolution::AllFailed { error, retryable } => {
            events.extend(
                batch
                    .items
                    .iter()
                    .map(|i| failed(i, error.clone(), retryable)),
            );
        }
        Resolution::LookedUp(found) => {
            for (item, found) in batch.items.iter().zip(found) {
                match found {
                    Ok(Some(message_id)) => events.push(sent(item, message_id, None)),
                    Ok(None) => done.requeue.push(item.recipient),
                    Err(why) => {
                        events.push(failed(item, format!("{OUTCOME_UNKNOWN}: {why}"), false))
                    }
                }
            }
        }
    }
    done.accepted = events
        .iter()
        .filter(|e| matches!(e, Event::Sent { .. }))
        .count();
    done.failed = events.len() - done.accepted;
    (events, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_pieces_that_fit_the_burst_in_order() {
        let item = |recipient: i64, segments| BatchItem {
            recipient: RecipientId::new(recipient).unwrap(),
            phone: format!("+3069000000{recipient:02}"),
            text: "x".into(),
            attempt: 1,
            segments,
        };
        let batch = Batch {
            campaign: CampaignId::new(1).unwrap(),
            tenant: TenantId::new(1).unwrap(),
            traffic_account: TrafficAccountId::from_uuid(uuid::Uuid::nil()),
            sender: "Shop".into(),
            items: vec![item(1, 1), item(2, 2), item(3, 1), item(4, 5), item(5, 1)],
            owner: Some((3, 7)),
        };
        let sizes = |pieces: &[Batch]| -> Vec<Vec<i64>> {
            pieces
                .iter()
                .map(|p| p.items.iter().map(|i| i.recipient.get()).collect())
                .collect()
        };
        let pieces = batch.clone().pieces(Some(3));
        assert_eq!(sizes(&pieces), [vec![1, 2], vec![3], vec![4], vec![5]]);
        assert!(pieces
            .iter()
            .all(|p| p.owner == Some((3, 7)) && p.sender == "Shop"));
        assert_eq!(sizes(&batch.clone().pieces(None)), [vec![1, 2, 3, 4, 5]]);
    }

    fn batch(n: i64) -> Batch {
        Batch {
            campaign: CampaignId::new(1).unwrap(),
            tenant: TenantId::new(1).unwrap(),
            traffic_account: TrafficAccountId::new_random(),
            sender: "Shop".into(),
            owner: None,
            items: (1..=n)
                .map(|r| BatchItem {
                    recipient: RecipientId::new(r).unwrap(),
                    phone: format!("+3069000000{r:02}"),
                    text: "Hi".into(),
                    attempt: 1,
                    segments: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn answered_items_become_sent_or_failed_in_request_order() {
        let id = MessageId::generate();
        let (events, done) = events_for(
            &batch(2),
            Resolution::Answered {
                bulk_id: None,
                items: vec![
                    ItemResult::Accepted {
                        message_id: id.clone(),
                    },
                    ItemResult::Rejected {
                        code: "InvalidDestination".into(),
                        message: "bad".into(),
                    },
                ],
            },
        );
        assert!(
            matches!(&events[0], Event::Sent { message_id, attempt: 1, .. } if *message_id == id)
        );
        assert!(
            matches!(&events[1], Event::SendFailed { retryable: false, recipient_id, .. } if recipient_id.get() == 2)
        );
        assert_eq!((done.accepted, done.failed), (1, 1));
    }

    #[test]
    fn unanswered_sends_are_recorded_requeued_or_failed_never_resent() {
        let found = vec![
            Ok(Some(MessageId::generate())),
            Ok(None),
            Err("lookup failed".to_owned()),
        ];
        let (events, done) = events_for(&batch(3), Resolution::LookedUp(found));
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::Sent { .. }));
        assert!(
            matches!(&events[1], Event::SendFailed { error, retryable: false, .. } if error.starts_with(OUTCOME_UNKNOWN))
        );
        assert_eq!(done.requeue, vec![RecipientId::new(2).unwrap()]);
    }
}
