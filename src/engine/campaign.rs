//! A campaign as its actor holds it: figures, status and the lifecycle rules.
//!
//! [`Figures`] are the counters per message status, first/last event times and a per-minute
//! series. They change in two ways only: by [`Transition`]s (a message's status moved; the
//! DlrActor saw it) and by the campaign's own lifecycle writes (enqueue, claims, releases,
//! cancel, retry). The same [`Figures::record`] builds the live figures in the campaign's
//! actor and the per-checkpoint deltas the ledger hands to the checkpointer, so the snapshot
//! in Postgres and the memory of an actor can never count a transition differently.
//!
//! Activation and checkpoints: every transition carries the checkpoint epoch in which it is
//! committed. An activation reads the snapshot and the last committed epoch in one database
//! snapshot, so a transition whose epoch is already committed is in the snapshot and is
//! skipped when it arrives — never counted twice, never missed.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;

use crate::domain::{
    CampaignId, CampaignStatus, Carried, EngagementKind, MessageStatus, TenantId, TrafficAccountId,
};

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

/// A recipient did something with its links, as its DlrActor saw it. Only what counts is
/// handed on: every counted offer visit (`first` for the recipient's first), a recipient's
/// first redemption and first unsubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engaged {
    pub campaign: CampaignId,
    pub kind: EngagementKind,
    pub first: bool,
    pub at: DateTime<Utc>,
    /// The checkpoint that commits the recipient's engagement row.
    pub epoch: u64,
}

/// What a DlrActor hands to a campaign's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Status(Transition),
    Engaged(Engaged),
}

impl Change {
    pub fn campaign(&self) -> CampaignId {
        match self {
            Change::Status(t) => t.campaign,
            Change::Engaged(e) => e.campaign,
        }
    }
}

/// What recipients did with their links. Visits and the two rates' numerators count
/// recipients (each at most once); clicks count every counted opening of an offer link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngagementCounts {
    pub visits: i64,
    pub clicks: i64,
    pub redemptions: i64,
    pub unsubscribes: i64,
}

impl EngagementCounts {
    pub fn record(&mut self, e: &Engaged) {
        match e.kind {
            EngagementKind::Visit => {
                self.clicks += 1;
                self.visits += i64::from(e.first);
            }
            EngagementKind::Redemption => self.redemptions += i64::from(e.first),
            EngagementKind::Unsubscribe => self.unsubscribes += i64::from(e.first),
        }
    }

    pub fn merge(&mut self, other: &EngagementCounts) {
        self.visits += other.visits;
        self.clicks += other.clicks;
        self.redemptions += other.redemptions;
        self.unsubscribes += other.unsubscribes;
    }
}

/// Messages per status, the one set of counters everything else is derived from. As a delta
/// (a checkpoint's or a lifecycle write's) the fields may be negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// Accepted, no final report, given up on by the reconciler.
    pub unknown: i64,
    /// Never sent: opted out or over the tenant's cap when claimed.
    pub skipped: i64,
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
            MessageStatus::Unknown => &mut self.unknown,
            MessageStatus::Skipped => &mut self.skipped,
        }
    }

    pub fn add(&mut self, status: MessageStatus, n: i64) {
        *self.bucket(status) += n;
    }

    /// `n` messages added in `status`.
    pub fn of(status: MessageStatus, n: i64) -> Self {
        let mut c = Self::default();
        c.add(status, n);
        c
    }

    /// The messages in `status`.
    pub fn get(&self, status: MessageStatus) -> i64 {
        *self.clone().bucket(status)
    }

    /// `n` messages moved from one status to another.
    pub fn moved(from: MessageStatus, to: MessageStatus, n: i64) -> Self {
        let mut c = Self::default();
        c.add(from, -n);
        c.add(to, n);
        c
    }

    pub fn merge(&mut self, other: &Counters) {
        for status in MessageStatus::ALL {
            self.add(status, other.get(status));
        }
    }

    pub fn total(&self) -> i64 {
        self.queued
            + self.processing
            + self.pending
            + self.delivered
            + self.send_failed
            + self.delivery_failed
            + self.cancelled
            + self.unknown
            + self.skipped
    }

    /// Handed to Mitto and accepted: pending, delivered, failed by a report, or unknown.
    pub fn sent(&self) -> i64 {
        self.pending + self.delivered + self.delivery_failed + self.unknown
    }

    pub fn failed(&self) -> i64 {
        self.send_failed + self.delivery_failed
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// What happened in one minute: messages sent, delivered and failed, and recipients' first
/// visits, redemptions and unsubscribes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MinuteCounts {
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    pub visits: i64,
    pub redemptions: i64,
    pub unsubscribes: i64,
}

impl MinuteCounts {
    pub fn merge(&mut self, other: &MinuteCounts) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.visits += other.visits;
        self.redemptions += other.redemptions;
        self.unsubscribes += other.unsubscribes;
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Which series a change feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Sent,
    Delivered,
    Failed,
    Visits,
    Redemptions,
    Unsubscribes,
}

/// The start of the minute `at` falls in.
pub fn minute(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// What a campaign's messages add up to: counters, first/last event time, a per-minute series.
/// Used whole (an actor's live state, a snapshot) and as a delta (what one checkpoint adds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub counters: Counters,
    pub engaged: EngagementCounts,
    pub series: BTreeMap<DateTime<Utc>, MinuteCounts>,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

impl Figures {
    /// Counts one transition: the one rule for live figures and checkpoint deltas alike.
    pub fn record(&mut self, t: &Transition) {
        self.counters.add(t.from, -1);
        self.counters.add(t.to, 1);
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

    /// Counts one engagement: the one rule for live figures and checkpoint deltas alike.
    pub fn record_engaged(&mut self, e: &Engaged) {
        self.engaged.record(e);
        if e.first {
            let kind = match e.kind {
                EngagementKind::Visit => SeriesKind::Visits,
                EngagementKind::Redemption => SeriesKind::Redemptions,
                EngagementKind::Unsubscribe => SeriesKind::Unsubscribes,
            };
            self.add_series(kind, e.at, 1);
        }
    }

    /// Counts what a DlrActor handed on.
    pub fn record_change(&mut self, change: &Change) {
        match change {
            Change::Status(t) => self.record(t),
            Change::Engaged(e) => self.record_engaged(e),
        }
    }

    pub fn add_series(&mut self, kind: SeriesKind, at: DateTime<Utc>, n: i64) {
        let m = self.series.entry(minute(at)).or_default();
        match kind {
            SeriesKind::Sent => m.sent += n,
            SeriesKind::Delivered => m.delivered += n,
            SeriesKind::Failed => m.failed += n,
            SeriesKind::Visits => m.visits += n,
            SeriesKind::Redemptions => m.redemptions += n,
            SeriesKind::Unsubscribes => m.unsubscribes += n,
        }
    }

    /// Adds a later delta to this one.
    pub fn merge(&mut self, other: &Figures) {
        self.counters.merge(&other.counters);
        self.engaged.merge(&other.engaged);
        for (at, m) in &other.series {
            self.series.entry(*at).or_default().merge(m);
        }
        self.first_sent_at = earliest(self.first_sent_at, other.first_sent_at);
        self.last_event_at = latest(self.last_event_at, other.last_event_at);
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where a snapshot and a recount from rows disagree, one line each (`campaignd verify`).
/// Compared: every counter, the engagement counts, the first send, and every series but the
/// failed one. Not compared:
/// the failed series and the last event time, because retry-failed clears a row's failure
/// while the snapshot keeps the minute it happened.
pub fn differences(snapshot: &Figures, rows: &Figures) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&snapshot.counters, &rows.counters);
    for status in MessageStatus::ALL {
        let (x, y) = (a.get(status), b.get(status));
        if x != y {
            out.push(format!("{status:?}: snapshot {x}, rows {y}"));
        }
    }
    if snapshot.engaged != rows.engaged {
        out.push(format!(
            "engagement: snapshot {:?}, rows {:?}",
            snapshot.engaged, rows.engaged
        ));
    }
    if snapshot.first_sent_at != rows.first_sent_at {
        out.push(format!(
            "first sent at: snapshot {:?}, rows {:?}",
            snapshot.first_sent_at, rows.first_sent_at
        ));
    }
    let minutes: std::collections::BTreeSet<_> =
        snapshot.series.keys().chain(rows.series.keys()).collect();
    for at in minutes {
        let x = snapshot.series.get(at).copied().unwrap_or_default();
        let y = rows.series.get(at).copied().unwrap_or_default();
        let compared = |m: MinuteCounts| MinuteCounts { failed: 0, ..m };
        if compared(x) != compared(y) {
            out.push(format!("minute {at}: snapshot {x:?}, rows {y:?}"));
        }
    }
    out
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// The text and sender of a campaign's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    /// The body as written; recipients with placeholders carry their rendered text.
    pub body: String,
    pub sender: String,
    pub traffic_account: Option<TrafficAccountId>,
    /// The links its messages carry (marketing: unsubscribe, and the offer when it has one).
    pub carried: Carried,
}

/// What a tenant (or the scheduler) asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enqueue,
    Schedule,
    Unschedule,
    Pause,
    Resume,
    Cancel,
    RetryFailed,
    /// Replace the definition; the status follows whether it has a start time.
    Edit {
        scheduled: bool,
    },
    Delete,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Enqueue,
        Action::Schedule,
        Action::Unschedule,
        Action::Pause,
        Action::Resume,
        Action::Cancel,
        Action::RetryFailed,
        Action::Edit { scheduled: false },
        Action::Edit { scheduled: true },
        Action::Delete,
    ];
}

/// An action the campaign's status does not allow; answered 409 with the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("campaign is {current}")]
pub struct Refused {
    pub current: CampaignStatus,
}

/// Where an action leads: the status after it (the same status for a re-schedule, an edit
/// that keeps the status, or a delete).
pub fn admit(current: CampaignStatus, action: Action) -> Result<CampaignStatus, Refused> {
    use CampaignStatus::*;
    let refused = Refused { current };
    let to = match action {
        Action::Enqueue if current.can_start() => Sending,
        Action::Schedule | Action::Edit { scheduled: true }
            if matches!(current, Draft | Scheduled) =>
        {
            Scheduled
        }
        Action::Edit { scheduled: false } if matches!(current, Draft | Scheduled) => Draft,
        Action::Unschedule => Draft,
        Action::Pause => Paused,
        Action::Resume if current == Paused => Sending,
        Action::Cancel => Cancelled,
        Action::RetryFailed if matches!(current, Completed | Failed) => Sending,
        Action::Delete if current == Draft => Draft,
        _ => return Err(refused),
    };
    // a new start time, an edit or a delete may keep the status; other actions must move it
    let keeps = matches!(
        action,
        Action::Schedule | Action::Edit { .. } | Action::Delete
    );
    if keeps && to == current {
        return Ok(to);
    }
    current.transition(to).map_err(|_| refused)
}

/// Whether a person is offered `action` on a campaign with these figures: its status admits
/// it and, for a retry, `retryable` failed sends would be queued again (counted from the
/// rows; only asked when the status admits a retry). The dashboard's buttons ask this; the
/// actor still decides (its `admit` and the rows).
pub fn offered(stats: &Stats, retryable: i64, action: Action) -> bool {
    let worth_it = match action {
        Action::RetryFailed => retryable > 0,
        // a paused campaign is resumed; enqueueing it again (new list members) is the API's
        Action::Enqueue => stats.status != CampaignStatus::Paused,
        _ => true,
    };
    worth_it && admit(stats.status, action).is_ok()
}

/// Whether asking Mitto for statuses can change anything: messages wait for a report, or were
/// given up on as unknown.
pub fn refresh_offered(stats: &Stats) -> bool {
    stats.pending + stats.unknown > 0
}

/// Failed sends a retry would queue again, as far as the page can tell: the rows' count once
/// they hold every refusal the figures know of; until then (the last refusals are not
/// checkpointed yet) the figures' own count, so a retry is never hidden.
pub fn retry_candidates(stats: &Stats, refused_rows: i64, retryable_rows: i64) -> i64 {
    if refused_rows < stats.send_failed {
        stats.send_failed
    } else {
        retryable_rows
    }
}

/// A campaign as its actor holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: CampaignId,
    pub tenant: TenantId,
    pub name: String,
    pub status: CampaignStatus,
    pub figures: Figures,
    /// What its messages say and who sends them.
    pub plan: SendPlan,
    /// Transitions of this epoch or older are already in the figures (from the snapshot).
    pub loaded_epoch: u64,
    /// The newest epoch whose transition was applied: passivating is safe only once it is
    /// committed.
    pub applied_epoch: u64,
    /// This member's transitions newer than `loaded_epoch`, by epoch, kept while other
    /// members also add to the snapshot (`None` otherwise): a refresh from the snapshot puts
    /// them back on top of it.
    pub uncommitted: Option<BTreeMap<u64, Vec<Change>>>,
    /// How many committed writes of the campaign's own were applied (see
    /// [`Campaign::adjust`]): a snapshot read while one landed may or may not hold it.
    pub adjustments: u64,
}

impl Campaign {
    pub fn counters(&self) -> &Counters {
        &self.figures.counters
    }

    /// Applies a transition; `false` when its epoch was already in the snapshot.
    #[cfg(test)]
    pub fn apply(&mut self, t: &Transition) -> bool {
        self.apply_change(&Change::Status(*t))
    }

    /// Applies what a DlrActor handed on; `false` when its epoch was already in the snapshot.
    pub fn apply_change(&mut self, change: &Change) -> bool {
        let epoch = match change {
            Change::Status(t) => t.epoch,
            Change::Engaged(e) => e.epoch,
        };
        if epoch <= self.loaded_epoch {
            return false;
        }
        self.figures.record_change(change);
        self.applied_epoch = self.applied_epoch.max(epoch);
        if let Some(kept) = &mut self.uncommitted {
            kept.entry(epoch).or_default().push(*change);
        }
        true
    }

    /// Keeps (or stops keeping) uncommitted transitions for [`Campaign::refresh`].
    pub fn keep_uncommitted(&mut self, keep: bool) {
        match (keep, self.uncommitted.is_some()) {
            (true, false) => self.uncommitted = Some(BTreeMap::new()),
            (false, true) => self.uncommitted = None,
            _ => {}
        }
    }

    /// Takes the figures of a fresh snapshot (every member's committed transitions, and the
    /// campaign's own committed writes) and applies this member's transitions it does not
    /// hold yet on top. Status and plan stay: this actor is their only writer. Call only while
    /// none of the campaign's own writes is in flight (the snapshot would hold it already).
    pub fn refresh(&mut self, snapshot: Campaign) {
        let kept = self.uncommitted.take().unwrap_or_default();
        self.figures = snapshot.figures;
        self.loaded_epoch = snapshot.loaded_epoch;
        self.uncommitted = Some(BTreeMap::new());
        for change in kept.into_values().flatten() {
            self.apply_change(&change);
        }
    }

    /// Applies a lifecycle write's counter change (already committed with its rows).
    pub fn adjust(&mut self, delta: &Counters) {
        self.figures.counters.merge(delta);
        self.adjustments += 1;
    }

    /// Takes an edited definition (the status is set by the caller, as admitted).
    pub fn edited(
        &mut self,
        name: &str,
        body: &str,
        sender: &str,
        traffic_account: Option<uuid::Uuid>,
        carried: Carried,
    ) {
        self.name = name.to_owned();
        self.plan = SendPlan {
            body: body.to_owned(),
            sender: sender.to_owned(),
            traffic_account: traffic_account.map(TrafficAccountId::from_uuid),
            carried,
        };
    }

    /// Where `action` leads from the current status.
    pub fn admit(&self, action: Action) -> Result<CampaignStatus, Refused> {
        admit(self.status, action)
    }

    /// How a sending campaign ends once nothing is queued, claimed or out with a sender:
    /// `completed`, or `failed` when Mitto accepted nothing. Late reports still count after.
    pub fn finished(&self, batches_out: usize) -> Option<CampaignStatus> {
        let c = self.counters();
        let idle = c.queued == 0 && c.processing == 0 && batches_out == 0;
        (self.status == CampaignStatus::Sending && idle).then(|| {
            if c.sent() == 0 {
                CampaignStatus::Failed
            } else {
                CampaignStatus::Completed
            }
        })
    }

    pub fn stats(&self) -> Stats {
        let c = self.counters();
        let rate = |num: i64, den: i64| {
            if den > 0 {
                num as f64 / den as f64
            } else {
                0.0
            }
        };
        let total = c.total();
        let e = &self.figures.engaged;
        Stats {
            campaign_id: self.id,
            sent: c.sent(),
            delivered: c.delivered,
            failed: c.failed(),
            redemptions: e.redemptions,
            unsubscribes: e.unsubscribes,
            delivered_rate: rate(c.delivered, c.sent()),
            conversion_rate: rate(e.redemptions, c.delivered),
            first_sent_at: self.figures.first_sent_at,
            status: self.status,
            total,
            queued: c.queued,
            processing: c.processing,
            pending: c.pending,
            send_failed: c.send_failed,
            delivery_failed: c.delivery_failed,
            cancelled: c.cancelled,
            unknown: c.unknown,
            skipped: c.skipped,
            visits: e.visits,
            clicks: e.clicks,
            awaiting_report: c.pending,
            last_refresh_at: None,
            progress: rate(total - c.queued - c.processing, total),
            last_event_at: self.figures.last_event_at,
        }
    }
}

#[cfg(test)]
impl Campaign {
    /// A campaign for unit tests: id 1 of tenant 1, in `status`, with `counters`.
    pub(crate) fn sample(status: CampaignStatus, counters: Counters) -> Self {
        Campaign {
            id: CampaignId::new(1).unwrap(),
            tenant: TenantId::new(1).unwrap(),
            name: "c".into(),
            status,
            figures: Figures {
                counters,
                ..Figures::default()
            },
            plan: SendPlan {
                body: "Hi".into(),
                sender: "Shop".into(),
                traffic_account: None,
                carried: Carried::None,
            },
            loaded_epoch: 0,
            applied_epoch: 0,
            uncommitted: None,
            adjustments: 0,
        }
    }
}

/// The public stats shape (DESIGN.md section 3): the replaced system's fields first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// Accepted messages whose outcome stayed unknown (no report, Mitto could not tell).
    pub unknown: i64,
    /// Recipients never sent: opted out or over the tenant's marketing cap when claimed.
    pub skipped: i64,
    /// Recipients who opened their offer link (at least once).
    pub visits: i64,
    /// Openings of offer links, every one counted (link previews and HEAD requests are not).
    pub clicks: i64,
    /// Accepted messages still waiting for a final report (the same figure as `pending`).
    pub awaiting_report: i64,
    /// When the reconciler last asked Mitto about this campaign's messages; filled in by the
    /// service from the reconciler, not by the campaign.
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub progress: f64,
    pub last_event_at: Option<DateTime<Utc>>,
}

impl Stats {
    /// Nothing more will change by itself: the campaign is finished and no message waits to be
    /// sent or for its report.
    pub fn settled(&self) -> bool {
        matches!(
            self.status,
            CampaignStatus::Completed | CampaignStatus::Failed | CampaignStatus::Cancelled
        ) && self.queued == 0
            && self.processing == 0
            && self.pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    fn campaign() -> Campaign {
        let mut c = Campaign::sample(CampaignStatus::Sending, Counters::of(Processing, 10));
        c.loaded_epoch = 3;
        c
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
    fn transitions_already_in_the_snapshot_are_skipped() {
        let mut c = campaign();
        assert!(!c.apply(&t(Processing, Sent, 0, 3)));
        assert_eq!(c.stats().sent, 0);
        assert_eq!(c.applied_epoch, 0);
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
        let minutes: Vec<_> = c.figures.series.values().copied().collect();
        let m = |sent, delivered, failed| MinuteCounts {
            sent,
            delivered,
            failed,
            ..MinuteCounts::default()
        };
        assert_eq!(minutes, vec![m(1, 0, 0), m(0, 1, 0)]);
    }

    /// Splitting a stream of transitions into checkpoint deltas and merging them onto a
    /// snapshot gives the same figures as applying them live, whatever the split.
    #[test]
    fn deltas_merged_in_any_split_equal_the_live_figures() {
        let transitions = [
            t(Processing, Sent, 0, 4),
            t(Processing, Sent, 61, 4),
            t(Processing, SendFailed, 62, 5),
            t(Sent, DeliveryFailed, 125, 5),
            t(Sent, Delivered, 130, 6),
            t(Processing, Sent, 3, 6),
        ];
        let mut live = campaign();
        transitions.iter().for_each(|tr| {
            live.apply(tr);
        });
        for split in 0..=transitions.len() {
            let mut snapshot = campaign().figures;
            let (mut a, mut b) = (Figures::default(), Figures::default());
            transitions[..split].iter().for_each(|tr| a.record(tr));
            transitions[split..].iter().for_each(|tr| b.record(tr));
            snapshot.merge(&a);
            snapshot.merge(&b);
            assert_eq!(snapshot, live.figures, "split at {split}");
        }
    }

    #[test]
    fn verify_names_each_difference_and_ignores_the_failed_series() {
        let mut live = campaign();
        live.apply(&t(Processing, Sent, 0, 4));
        live.apply(&t(Processing, SendFailed, 5, 4));
        let mut rows = live.figures.clone();
        assert!(differences(&live.figures, &rows).is_empty());
        rows.series.values_mut().for_each(|m| m.failed = 0);
        assert!(differences(&live.figures, &rows).is_empty());
        rows.counters.add(Delivered, 1);
        rows.add_series(SeriesKind::Delivered, t(Queued, Sent, 0, 0).at, 1);
        let found = differences(&live.figures, &rows);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("Delivered: snapshot 0, rows 1"));
    }

    #[test]
    fn lifecycle_moves_adjust_the_counters() {
        let mut c = campaign();
        c.adjust(&Counters::moved(Processing, Queued, 4));
        c.adjust(&Counters::moved(Queued, Cancelled, 3));
        let s = c.stats();
        assert_eq!(
            (s.processing, s.queued, s.cancelled, s.total),
            (6, 1, 3, 10)
        );
    }

    #[test]
    fn the_lifecycle_table_follows_the_status_machine() {
        use Action::*;
        use CampaignStatus::*;
        let cases = [
            (Draft, Enqueue, Ok(Sending)),
            (Paused, Enqueue, Ok(Sending)),
            (Sending, Enqueue, Err(Sending)),
            (Completed, Enqueue, Err(Completed)),
            (Scheduled, Schedule, Ok(Scheduled)),
            (Sending, Schedule, Err(Sending)),
            (Scheduled, Unschedule, Ok(Draft)),
            (Draft, Unschedule, Err(Draft)),
            (Sending, Pause, Ok(Paused)),
            (Paused, Pause, Err(Paused)),
            (Draft, Pause, Err(Draft)),
            (Paused, Resume, Ok(Sending)),
            (Sending, Resume, Err(Sending)),
            (Sending, Cancel, Ok(Cancelled)),
            (Draft, Cancel, Err(Draft)),
            (Cancelled, Cancel, Err(Cancelled)),
            (Failed, RetryFailed, Ok(Sending)),
            (Sending, RetryFailed, Err(Sending)),
            (Scheduled, Edit { scheduled: false }, Ok(Draft)),
            (Sending, Edit { scheduled: true }, Err(Sending)),
            (Draft, Delete, Ok(Draft)),
            (Scheduled, Delete, Err(Scheduled)),
        ];
        for (from, action, expected) in cases {
            let got = admit(from, action).map_err(|r| r.current);
            assert_eq!(got, expected, "{from} {action:?}");
        }
    }

    #[test]
    fn retry_is_offered_only_with_failed_sends_to_retry() {
        let mut stats = Campaign::sample(CampaignStatus::Completed, Counters::default()).stats();
        assert!(!offered(&stats, 0, Action::RetryFailed));
        assert!(offered(&stats, 2, Action::RetryFailed));
        stats.status = CampaignStatus::Sending;
        assert!(!offered(&stats, 2, Action::RetryFailed));
        assert!(offered(&stats, 0, Action::Pause));
        stats.status = CampaignStatus::Paused;
        assert!(offered(&stats, 0, Action::Resume));
        assert!(
            !offered(&stats, 0, Action::Enqueue),
            "resumed, not sent again"
        );
        assert!(!refresh_offered(&stats));
        stats.pending = 1;
        assert!(refresh_offered(&stats));
    }

    #[test]
    fn retry_candidates_follow_the_rows_once_they_hold_every_refusal() {
        let mut stats = Campaign::sample(CampaignStatus::Completed, Counters::default()).stats();
        stats.send_failed = 5;
        assert_eq!(retry_candidates(&stats, 3, 0), 5, "rows behind the figures");
        assert_eq!(retry_candidates(&stats, 5, 2), 2);
        assert_eq!(retry_candidates(&stats, 5, 0), 0, "none may be retried");
    }

    /// Every status change `admit` allows is one the status machine allows.
    #[test]
    fn admitted_changes_are_transitions_of_the_status_machine() {
        for from in CampaignStatus::ALL {
            for action in Action::ALL {
                if let Ok(to) = admit(from, action) {
                    assert!(to == from || from.can_become(to), "{from} {action:?} {to}");
                }
            }
        }
    }
}
