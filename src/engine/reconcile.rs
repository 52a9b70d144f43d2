//! What a status lookup at Mitto means for a message, and how the periodic pass walks the
//! messages still waiting for a report. Plain rules; the reconciler (`src/reconcile`) does
//! the I/O.
//!
//! Every answer becomes an event on `message-events`, applied by the message's DlrActor like
//! any report: a final answer settles the message, an in-flight one (`Sent`, `Pending`, …)
//! only refreshes its raw status, and a message overdue for its give-up time is recorded
//! `unknown` so that `pending` ends at 0.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::{CampaignId, DeliveryOutcome, DeliveryStatus, Event, MessageId, RecipientId};

/// The `source` of a `dlr` event made from a lookup.
pub const REFRESH_SOURCE: &str = "refresh";

/// What Mitto said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found {
        status: DeliveryStatus,
        description: Option<String>,
        /// When Mitto last changed the message (`updatedAt`).
        at: Option<DateTime<Utc>>,
    },
    /// Mitto does not know the message id.
    NotFound,
    /// Mitto could not be asked (unavailable, refusing, too slow).
    Failed(String),
}

impl Lookup {
    pub fn is_final(&self) -> bool {
        matches!(self, Lookup::Found { status, .. } if status.outcome() != DeliveryOutcome::InFlight)
    }
}

/// The event a lookup answer becomes, if any. `overdue`: the message has waited past the
/// give-up time, so an answer that settles nothing records it `unknown`.
pub fn event_for(
    message: &MessageId,
    lookup: &Lookup,
    overdue: bool,
    now: DateTime<Utc>,
) -> Option<Event> {
    let unknown = |reason: String| Event::OutcomeUnknown {
        message_id: message.clone(),
        reason,
        at: now,
    };
    match lookup {
        Lookup::Found { status, .. } if overdue && !lookup.is_final() => Some(unknown(format!(
            "no final report before the give-up time; Mitto still says {}",
            status.raw()
        ))),
        Lookup::Found {
            status,
            description,
            at,
        } => Some(Event::Dlr {
            message_id: message.clone(),
            status: status.clone(),
            description: description.clone(),
            at: at.unwrap_or(now),
            event_id: None,
            source: Some(REFRESH_SOURCE.to_owned()),
        }),
        Lookup::NotFound if overdue => Some(unknown(
            "no final report before the give-up time; Mitto does not know the message".into(),
        )),
        // past the give-up time an outage does not keep a message waiting forever
        Lookup::Failed(error) if overdue => Some(unknown(format!(
            "no final report before the give-up time; Mitto could not be asked: {error}"
        ))),
        Lookup::NotFound | Lookup::Failed(_) => None,
    }
}

/// Where the periodic pass stands in each campaign: it moves on after every pass, so the
/// oldest messages cannot take every lookup forever, and starts over once it reached the end.
#[derive(Debug, Default)]
pub struct Cursors {
    after: HashMap<CampaignId, RecipientId>,
}

impl Cursors {
    /// The recipient id the campaign's next read starts after (`None`: from the beginning).
    pub fn start(&self, campaign: CampaignId) -> Option<RecipientId> {
        self.after.get(&campaign).copied()
    }

    /// Records a read of up to `limit` rows that returned `last` as its last row and `read`
    /// rows: a short read reached the end, so the next pass starts over.
    pub fn advance(
        &mut self,
        campaign: CampaignId,
        last: Option<RecipientId>,
        read: usize,
        limit: usize,
    ) {
        match last {
            Some(last) if read >= limit => {
                self.after.insert(campaign, last);
            }
            _ => {
                self.after.remove(&campaign);
            }
        }
    }

    /// Forgets campaigns that no longer wait for anything.
    pub fn retain(&mut self, campaigns: &[CampaignId]) {
        self.after.retain(|c, _| campaigns.contains(c));
    }
}

/// What one pass or refresh did, for its log line and its answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub looked_up: u64,
    /// Answers that settle the message (delivered or failed).
    pub final_answers: u64,
    /// Answers that leave it in flight.
    pub in_flight: u64,
    pub not_found: u64,
    /// Lookups that failed (Mitto unavailable or refusing), not given up on.
    pub errors: u64,
    /// Messages recorded `unknown`.
    pub gave_up: u64,
}

impl Tally {
    pub fn count(&mut self, lookup: &Lookup, event: Option<&Event>) {
        self.looked_up += 1;
        match (lookup, event) {
            (_, Some(Event::OutcomeUnknown { .. })) => self.gave_up += 1,
            (Lookup::NotFound, _) => self.not_found += 1,
            (Lookup::Failed(_), _) => self.errors += 1,
            (l, _) if l.is_final() => self.final_answers += 1,
            _ => self.in_flight += 1,
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.looked_up += other.looked_up;
        self.final_answers += other.final_answers;
        self.in_flight += other.in_flight;
        self.not_found += other.not_found;
        self.errors += other.errors;
        self.gave_up += other.gave_up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(raw: &str) -> Lookup {
        Lookup::Found {
            status: DeliveryStatus::from_raw(raw),
            description: None,
            at: DateTime::from_timestamp(1_800_000_000, 0),
        }
    }

    fn id() -> MessageId {
        MessageId::parse("01KC69MT19BRK5MSXG1V95YPHX").unwrap()
    }

    #[test]
    fn every_answer_becomes_a_refresh_report_at_mittos_time() {
        let now = Utc::now();
        for raw in ["Delivered", "Undelivered", "Sent", "Pending"] {
            let Some(Event::Dlr {
                status, source, at, ..
            }) = event_for(&id(), &found(raw), false, now)
            else {
                panic!("{raw}: expected a dlr event");
            };
            assert_eq!(status.raw(), raw);
            assert_eq!(source.as_deref(), Some(REFRESH_SOURCE));
            assert_eq!(Some(at), DateTime::from_timestamp(1_800_000_000, 0));
        }
        assert_eq!(event_for(&id(), &Lookup::NotFound, false, now), None);
    }

    #[test]
    fn an_overdue_message_is_given_up_unless_the_answer_settles_it() {
        let now = Utc::now();
        assert!(matches!(
            event_for(&id(), &found("Sent"), true, now),
            Some(Event::OutcomeUnknown { reason, .. }) if reason.contains("Sent")
        ));
        assert!(matches!(
            event_for(&id(), &Lookup::NotFound, true, now),
            Some(Event::OutcomeUnknown { .. })
        ));
        assert!(matches!(
            event_for(&id(), &found("Delivered"), true, now),
            Some(Event::Dlr { .. })
        ));
        let outage = Lookup::Failed("503".into());
        assert!(matches!(
            event_for(&id(), &outage, true, now),
            Some(Event::OutcomeUnknown { reason, .. }) if reason.contains("could not be asked: 503")
        ));
        assert_eq!(event_for(&id(), &outage, false, now), None);
    }

    #[test]
    fn the_cursor_moves_on_and_starts_over_at_the_end() {
        let c = CampaignId::new(1).unwrap();
        let r = |n| RecipientId::new(n).unwrap();
        let mut cursors = Cursors::default();
        assert_eq!(cursors.start(c), None);
        cursors.advance(c, Some(r(50)), 50, 50);
        assert_eq!(cursors.start(c), Some(r(50)), "a full read moves on");
        cursors.advance(c, Some(r(120)), 50, 50);
        assert_eq!(cursors.start(c), Some(r(120)));
        cursors.advance(c, Some(r(130)), 3, 50);
        assert_eq!(cursors.start(c), None, "a short read reached the end");
        cursors.advance(c, Some(r(50)), 50, 50);
        cursors.retain(&[]);
        assert_eq!(cursors.start(c), None);
    }

    #[test]
    fn the_tally_sorts_answers() {
        let mut t = Tally::default();
        let now = Utc::now();
        for (lookup, overdue) in [
            (found("Delivered"), false),
            (found("Sent"), false),
            (found("Sent"), true),
            (Lookup::NotFound, false),
            (Lookup::Failed("503".into()), false),
            (Lookup::Failed("503".into()), true),
        ] {
            let event = event_for(&id(), &lookup, overdue, now);
            t.count(&lookup, event.as_ref());
        }
        assert_eq!(
            (
                t.looked_up,
                t.final_answers,
                t.in_flight,
                t.gave_up,
                t.not_found,
                t.errors
            ),
            (6, 1, 1, 2, 1, 1)
        );
    }
}
