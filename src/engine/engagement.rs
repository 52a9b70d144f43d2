//! What recipients did with their links, as one partition's DlrActor keeps it: the single
//! writer of a recipient's engagement columns (its `visit`, `redemption` and `unsubscribe`
//! events are keyed `r:<recipient id>`, so they all meet one partition, in order).
//!
//! The book decides what counts: every visit adds a click and the first one a visit; only a
//! recipient's first redemption and first unsubscribe count (resubscribing changes nothing
//! here). Rows are loaded from Postgres on first sight, like message rows, and written back at
//! the checkpoint that covers the events' offsets, so a crash replays exactly what was not
//! committed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::campaign::Engaged;
use super::ledger::Changes;
use crate::domain::{CampaignId, EngagementKind, RecipientId};

/// The engagement columns of one `campaign_recipients` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementRow {
    pub recipient: RecipientId,
    pub campaign: CampaignId,
    pub visited_at: Option<DateTime<Utc>>,
    pub clicks: i32,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub redeemed_by: Option<String>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub unsubscribed_via: Option<String>,
}

/// One engagement event's fields.
#[derive(Debug, Clone, Copy)]
pub struct Engagement<'a> {
    pub kind: EngagementKind,
    pub campaign: CampaignId,
    pub recipient: RecipientId,
    pub via: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// A partition's engagement rows: those loaded, those changed since the last barrier, and
/// those whose change is not committed yet (kept in memory until it is).
#[derive(Debug, Default)]
pub struct EngagementBook {
    rows: HashMap<RecipientId, EngagementRow>,
    changes: Changes,
}

impl EngagementBook {
    pub fn knows(&self, recipient: RecipientId) -> bool {
        self.rows.contains_key(&recipient)
    }

    /// Adds rows loaded from Postgres; what memory already holds is newer and is kept.
    pub fn absorb(&mut self, rows: Vec<EngagementRow>) {
        for row in rows {
            self.rows.entry(row.recipient).or_insert(row);
        }
    }

    /// Applies one event in epoch `epoch`; what counts is returned for the campaign. An event
    /// for a recipient that does not exist, or that names another campaign, is refused.
    pub fn apply(&mut self, e: Engagement<'_>, epoch: u64) -> Result<Option<Engaged>, String> {
        let row = self.rows.get_mut(&e.recipient).ok_or_else(|| {
            format!(
                "recipient {} of campaign {} does not exist",
                e.recipient, e.campaign
            )
        })?;
        if row.campaign != e.campaign {
            return Err(format!(
                "recipient {} belongs to campaign {}, not {}",
                e.recipient, row.campaign, e.campaign
            ));
        }
        let first = match e.kind {
            EngagementKind::Visit => {
                row.clicks = row.clicks.saturating_add(1);
                let first = row.visited_at.is_none();
                row.visited_at.get_or_insert(e.at);
                first
            }
            EngagementKind::Redemption => first_time(&mut row.redeemed_at, &mut row.redeemed_by, e),
            EngagementKind::Unsubscribe => {
                first_time(&mut row.unsubscribed_at, &mut row.unsubscribed_via, e)
            }
        };
        if !first && e.kind != EngagementKind::Visit {
            return Ok(None);
        }
        self.changes.mark(e.recipient);
        Ok(Some(Engaged {
            campaign: e.campaign,
            kind: e.kind,
            first,
            at: e.at,
            epoch,
        }))
    }

    /// Hands over the rows changed since the last barrier (committed by checkpoint `epoch`);
    /// `committed`: the last epoch known to be in Postgres. Beyond `max_resident` rows, those
    /// whose last change is committed are forgotten (Postgres has them).
    pub fn barrier(
        &mut self,
        epoch: u64,
        committed: u64,
        max_resident: usize,
    ) -> Vec<EngagementRow> {
        // engagement columns are written in the checkpoint itself, not through the log
        let rows = self
            .changes
            .hand_over(&self.rows, epoch, committed, committed);
        if self.rows.len() > max_resident {
            let changes = &self.changes;
            self.rows.retain(|id, _| changes.uncommitted(id));
        }
        rows
    }
}

/// Sets a once-only mark; `true` when this event set it.
fn first_time(at: &mut Option<DateTime<Utc>>, via: &mut Option<String>, e: Engagement<'_>) -> bool {
    if at.is_some() {
        return false;
    }
    *at = Some(e.at);
    *via = e.via.map(str::to_owned);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn book() -> EngagementBook {
        let mut b = EngagementBook::default();
        b.absorb(vec![EngagementRow {
            recipient: RecipientId::new(5).unwrap(),
            campaign: CampaignId::new(7).unwrap(),
            visited_at: None,
            clicks: 0,
            redeemed_at: None,
            redeemed_by: None,
            unsubscribed_at: None,
            unsubscribed_via: None,
        }]);
        b
    }

    fn event(kind: EngagementKind, via: Option<&str>, secs: i64) -> Engagement<'_> {
        Engagement {
            kind,
            campaign: CampaignId::new(7).unwrap(),
            recipient: RecipientId::new(5).unwrap(),
            via,
            at: at(secs),
        }
    }

    #[test]
    fn every_visit_is_a_click_and_only_the_first_is_a_visit() {
        let mut b = book();
        let first = b.apply(event(EngagementKind::Visit, None, 1), 1).unwrap();
        let again = b.apply(event(EngagementKind::Visit, None, 2), 1).unwrap();
        assert_eq!(first.map(|e| e.first), Some(true));
        assert_eq!(again.map(|e| e.first), Some(false));
        let rows = b.barrier(1, 0, 10);
        assert_eq!((rows[0].clicks, rows[0].visited_at), (2, Some(at(1))));
    }

    #[test]
    fn a_second_redemption_or_unsubscribe_counts_nothing() {
        let mut b = book();
        for kind in [EngagementKind::Redemption, EngagementKind::Unsubscribe] {
            let via = Some(if kind == EngagementKind::Redemption {
                "shop"
            } else {
                "link"
            });
            assert!(b.apply(event(kind, via, 1), 1).unwrap().is_some());
            assert_eq!(b.apply(event(kind, via, 2), 1).unwrap(), None);
        }
        let rows = b.barrier(1, 0, 10);
        assert_eq!(rows[0].redeemed_at, Some(at(1)));
        assert_eq!(rows[0].unsubscribed_via.as_deref(), Some("link"));
        assert!(b.barrier(2, 1, 10).is_empty(), "nothing changed since");
    }

    #[test]
    fn an_event_naming_another_campaign_or_an_unknown_recipient_is_refused() {
        let mut b = book();
        let mut wrong = event(EngagementKind::Visit, None, 1);
        wrong.campaign = CampaignId::new(8).unwrap();
        assert!(b.apply(wrong, 1).is_err());
        let mut missing = event(EngagementKind::Visit, None, 1);
        missing.recipient = RecipientId::new(6).unwrap();
        assert!(b.apply(missing, 1).is_err());
    }

    #[test]
    fn committed_rows_are_forgotten_beyond_the_resident_limit() {
        let mut b = book();
        b.apply(event(EngagementKind::Visit, None, 1), 1).unwrap();
        b.barrier(1, 0, 0);
        assert!(b.knows(RecipientId::new(5).unwrap()), "not committed yet");
        b.barrier(2, 1, 0);
        assert!(!b.knows(RecipientId::new(5).unwrap()));
    }
}
