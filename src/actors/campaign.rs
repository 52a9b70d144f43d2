//! CampaignActor: one per active campaign; owns its counters and answers stats from memory.
//!
//! The logic lives in [`Campaign`], a plain struct: counters per message status, first/last
//! event times and a per-minute series, changed only by [`Transition`]s that DlrActors send.
//! The actor is a thin shell that loads the campaign from Postgres when activated and queues
//! messages until that load is done.
//!
//! Activation and checkpoints: every transition carries the checkpoint epoch in which its row
//! change is committed. The activation query reads the rows and the last committed epoch in
//! one snapshot, so a transition whose epoch is already committed is counted by the query and
//! skipped when it arrives — never counted twice, never missed.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;

use crate::domain::{CampaignId, CampaignStatus, MessageStatus, TenantId, TrafficAccountId};

/// A message's status change, as its DlrActor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub campaign: CampaignId,
    pub from: MessageStatus,
    pub to: MessageStatus,
    /// When the change happened (the event's time).
    pub at: DateTime<Utc>,
    /// For a `DeliveryFailed → Delivered` correction: when the failure was reported, so the
    /// series can take it back from the right minute.
    pub corrected_at: Option<DateTime<Utc>>,
    /// The checkpoint that commits the row change.
    pub epoch: u64,
}

/// Messages per status, the one set of counters everything else is derived from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub queued: i64,
    pub processing: i64,
    /// Accepted by Mitto, no final report yet.
    pub pending: i64,
    pub delivered: i64,
    pub send_failed: i64,
    pub delivery_failed: i64,
    pub cancelled: i64,
}

impl Counters {
    fn bucket(&mut self, status: MessageStatus) -> &mut i64 {
        match status {
            MessageStatus::Queued => &mut self.queued,
            MessageStatus::Processing => &mut self.processing,
            MessageStatus::Sent => &mut self.pending,
            MessageStatus::Delivered => &mut self.delivered,
            MessageStatus::SendFailed => &mut self.send_failed,
            MessageStatus::DeliveryFailed => &mut self.delivery_failed,
            MessageStatus::Cancelled => &mut self.cancelled,
        }
    }

    pub fn add(&mut self, status: MessageStatus, n: i64) {
        *self.bucket(status) += n;
    }

    pub fn total(&self) -> i64 {
        self.queued
            + self.processing
            + self.pending
            + self.delivered
            + self.send_failed
            + self.delivery_failed
            + self.cancelled
    }

    /// Handed to Mitto and accepted: pending, delivered, or failed by a report.
    pub fn sent(&self) -> i64 {
        self.pending + self.delivered + self.delivery_failed
    }

    pub fn failed(&self) -> i64 {
        self.send_failed + self.delivery_failed
    }
}

/// Sent, delivered and failed counts of one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteCounts {
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// Which series a status feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Sent,
    Delivered,
    Failed,
}

/// The text and sender of a campaign's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    /// The body as written; recipients with placeholders carry their rendered text.
    pub body: String,
    pub sender: String,
    pub traffic_account: Option<TrafficAccountId>,
}

/// A campaign as its actor holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: CampaignId,
    pub tenant: TenantId,
    pub name: String,
    pub status: CampaignStatus,
    pub counters: Counters,
    pub redemptions: i64,
    pub unsubscribes: i64,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub series: BTreeMap<DateTime<Utc>, MinuteCounts>,
    /// What its messages say and who sends them.
    pub plan: SendPlan,
    /// Transitions of this epoch or older are already in the counters (from the activation
    /// query).
    pub loaded_epoch: u64,
    /// The newest epoch whose transition was applied: passivating is safe only once it is
    /// committed.
    pub applied_epoch: u64,
    /// Counters changed since the last checkpoint snapshot.
    pub dirty: bool,
}

fn minute(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

impl Campaign {
    /// Applies a transition; `false` when its epoch was already counted at activation.
    pub fn apply(&mut self, t: &Transition) -> bool {
        if t.epoch <= self.loaded_epoch {
            return false;
        }
        self.counters.add(t.from, -1);
        self.counters.add(t.to, 1);
        self.track_times(t);
        self.applied_epoch = self.applied_epoch.max(t.epoch);
        self.dirty = true;
        true
    }

    fn track_times(&mut self, t: &Transition) {
        // the forward-only rule routes every accepted message through `Sent` exactly once
        if t.to == MessageStatus::Sent {
            self.first_sent_at = Some(self.first_sent_at.map_or(t.at, |f| f.min(t.at)));
            self.add_series(SeriesKind::Sent, t.at, 1);
        }
        match t.to {
            MessageStatus::Delivered => self.add_series(SeriesKind::Delivered, t.at, 1),
            MessageStatus::DeliveryFailed | MessageStatus::SendFailed => {
                self.add_series(SeriesKind::Failed, t.at, 1)
            }
            _ => {}
        }
        if let Some(failed_at) = t.corrected_at {
            self.add_series(SeriesKind::Failed, failed_at, -1);
        }
        self.last_event_at = Some(self.last_event_at.map_or(t.at, |l| l.max(t.at)));
    }

    /// Recipients added by an enqueue; the campaign is sending.
    pub fn enqueued(&mut self, added: i64) {
        self.counters.add(MessageStatus::Queued, added);
        self.status = CampaignStatus::Sending;
        self.dirty = true;
    }

    /// Queued recipients claimed for a batch (committed before the batch leaves).
    pub fn claimed(&mut self, n: i64) {
        self.move_counts(MessageStatus::Queued, MessageStatus::Processing, n);
    }

    /// Claimed recipients that provably never reached Mitto, queued again.
    pub fn released(&mut self, n: i64) {
        self.move_counts(MessageStatus::Processing, MessageStatus::Queued, n);
    }

    /// Queued recipients cancelled with the campaign.
    pub fn cancelled(&mut self, n: i64) {
        self.move_counts(MessageStatus::Queued, MessageStatus::Cancelled, n);
        self.status = CampaignStatus::Cancelled;
    }

    /// Retryable send failures queued again; the campaign is sending.
    pub fn retried(&mut self, n: i64) {
        self.move_counts(MessageStatus::SendFailed, MessageStatus::Queued, n);
        self.status = CampaignStatus::Sending;
    }

    fn move_counts(&mut self, from: MessageStatus, to: MessageStatus, n: i64) {
        self.counters.add(from, -n);
        self.counters.add(to, n);
        self.dirty = true;
    }

    /// How a sending campaign ends once nothing is queued, claimed or out with a sender:
    /// `completed`, or `failed` when Mitto accepted nothing. Late reports still count after.
    pub fn finished(&self, batches_out: usize) -> Option<CampaignStatus> {
        let c = &self.counters;
        let idle = c.queued == 0 && c.processing == 0 && batches_out == 0;
        (self.status == CampaignStatus::Sending && idle).then(|| {
            if c.sent() == 0 {
                CampaignStatus::Failed
            } else {
                CampaignStatus::Completed
            }
        })
    }

    pub fn add_series(&mut self, kind: SeriesKind, at: DateTime<Utc>, n: i64) {
        let m = self.series.entry(minute(at)).or_default();
        match kind {
            SeriesKind::Sent => m.sent += n,
            SeriesKind::Delivered => m.delivered += n,
            SeriesKind::Failed => m.failed += n,
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let rate = |num: i64, den: i64| {
            if den > 0 {
                num as f64 / den as f64
            } else {
                0.0
            }
        };
        let total = c.total();
        Stats {
            campaign_id: self.id,
            sent: c.sent(),
            delivered: c.delivered,
            failed: c.failed(),
            redemptions: self.redemptions,
            unsubscribes: self.unsubscribes,
            delivered_rate: rate(c.delivered, c.sent()),
            conversion_rate: rate(self.redemptions, c.delivered),
            first_sent_at: self.first_sent_at,
            status: self.status,
            total,
            queued: c.queued,
            processing: c.processing,
            pending: c.pending,
            send_failed: c.send_failed,
            delivery_failed: c.delivery_failed,
            cancelled: c.cancelled,
            progress: rate(total - c.queued - c.processing, total),
            last_event_at: self.last_event_at,
        }
    }
}

/// The public stats shape (DESIGN.md section 3): the replaced system's fields first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub campaign_id: CampaignId,
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    pub redemptions: i64,
    pub unsubscribes: i64,
    pub delivered_rate: f64,
    pub conversion_rate: f64,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub status: CampaignStatus,
    pub total: i64,
    pub queued: i64,
    pub processing: i64,
    pub pending: i64,
    pub send_failed: i64,
    pub delivery_failed: i64,
    pub cancelled: i64,
    pub progress: f64,
    pub last_event_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    fn campaign() -> Campaign {
        let mut counters = Counters::default();
        counters.add(Processing, 10);
        Campaign {
            id: CampaignId::new(1).unwrap(),
            tenant: TenantId::new(1).unwrap(),
            name: "c".into(),
            status: CampaignStatus::Sending,
            counters,
            redemptions: 0,
            unsubscribes: 0,
            first_sent_at: None,
            last_event_at: None,
            series: BTreeMap::new(),
            plan: SendPlan {
                body: "Hi".into(),
                sender: "Shop".into(),
                traffic_account: None,
            },
            loaded_epoch: 3,
            applied_epoch: 0,
            dirty: false,
        }
    }

    fn t(from: MessageStatus, to: MessageStatus, secs: i64, epoch: u64) -> Transition {
        Transition {
            campaign: CampaignId::new(1).unwrap(),
            from,
            to,
            at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            corrected_at: None,
            epoch,
        }
    }

    #[test]
    fn transitions_move_counts_between_buckets() {
        let mut c = campaign();
        for tr in [
            t(Processing, Sent, 0, 4),
            t(Processing, Sent, 1, 4),
            t(Processing, SendFailed, 2, 4),
        ] {
            assert!(c.apply(&tr));
        }
        c.apply(&t(Sent, Delivered, 70, 5));
        c.apply(&t(Sent, DeliveryFailed, 71, 5));
        let s = c.stats();
        assert_eq!((s.total, s.sent, s.delivered, s.failed), (10, 2, 1, 2));
        assert_eq!(
            (s.send_failed, s.delivery_failed, s.pending, s.processing),
            (1, 1, 0, 7)
        );
        assert_eq!(s.delivered_rate, 0.5);
        assert_eq!(s.first_sent_at, Some(t(Queued, Sent, 0, 0).at));
        assert_eq!(c.applied_epoch, 5);
    }

    #[test]
    fn transitions_already_counted_at_activation_are_skipped() {
        let mut c = campaign();
        assert!(!c.apply(&t(Processing, Sent, 0, 3)));
        assert_eq!(c.stats().sent, 0);
        assert!(!c.dirty);
    }

    #[test]
    fn rates_are_zero_not_nan_when_nothing_was_sent() {
        let s = campaign().stats();
        assert_eq!(
            (s.delivered_rate, s.conversion_rate, s.progress),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn a_delivery_correction_moves_a_failure_to_delivered_in_the_series() {
        let mut c = campaign();
        c.apply(&t(Processing, Sent, 0, 4));
        c.apply(&t(Sent, DeliveryFailed, 10, 4));
        let mut fix = t(DeliveryFailed, Delivered, 130, 4);
        fix.corrected_at = Some(t(Queued, Sent, 10, 0).at);
        c.apply(&fix);
        let s = c.stats();
        assert_eq!((s.sent, s.delivered, s.failed), (1, 1, 0));
        let minutes: Vec<_> = c.series.values().copied().collect();
        assert_eq!(
            minutes[0],
            MinuteCounts {
                sent: 1,
                delivered: 0,
                failed: 0
            }
        );
        assert_eq!(
            minutes[1],
            MinuteCounts {
                sent: 0,
                delivered: 1,
                failed: 0
            }
        );
    }
}

mod shell;
pub use shell::{
    ApplyTransitions, CampaignActor, Command, GetAppliedEpoch, GetStats, Lifecycle, LifecycleReply,
    LifecycleResult, Passivate, Reload, SendingContext, TakeSnapshot,
};
