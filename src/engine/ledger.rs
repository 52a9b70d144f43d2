//! The ledger of one partition of `message-events`: per-message state and the rules applied
//! to it. Its DlrActor shell (`actors::dlr`) is the single writer of message state.
//!
//! Events of one message share a key, hence a partition, hence an order, so deduplication and
//! ordering are local decisions made by [`Ledger`] through `MessageStatus::advance`. The shell
//! loads message state from Postgres lazily (what [`Ledger::lookups`] asks for), so memory
//! stays bounded and nothing is hashed up front. Engagement (`visit`, `redemption`,
//! `unsubscribe`) is kept apart in an [`EngagementBook`] with columns of its own. Real status
//! changes become [`Transition`]s
//! for the campaign's actor, and the same transitions, counted by [`Figures::record`], become
//! the campaign deltas the next checkpoint commits.
//!
//! Accepted messages awaiting their report, once committed, move to a compact [`Waiting`] book
//! (64 bytes each) and come back as full rows when their report arrives, so a campaign's
//! in-flight messages are neither looked up again nor kept as full rows.
//!
//! A `dlr` for a message not known yet (the report raced ahead of `sent`) is parked and applied
//! when the `sent` arrives; parked reports that never match go to `dead_letters` after
//! `park_ttl`. While a report is parked the partition's committed offset stays at or before it,
//! so a crash replays it rather than losing it (replays are harmless: the forward-only rule
//! turns every already-applied event into a no-op).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::campaign::{Change, Figures, Transition};
use super::engagement::{Engagement, EngagementBook, EngagementRow};
use super::waiting::Waiting;
use crate::domain::{
    BulkId, CampaignId, DeliveryOutcome, Event, MessageId, MessageStatus, RecipientId,
};

/// The columns of `campaign_recipients` a DlrActor owns, for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub recipient: RecipientId,
    pub campaign: CampaignId,
    pub status: MessageStatus,
    pub message_id: Option<MessageId>,
    pub bulk_id: Option<BulkId>,
    pub delivery_status: Option<String>,
    pub error: Option<String>,
    pub error_retryable: Option<bool>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// The send attempt the state belongs to (`retry_count`).
    pub attempt: u32,
    /// Billable SMS parts, fixed at enqueue: what a `sent` charges and a send failure refunds.
    pub segments: u32,
}

impl MessageRow {
    /// A recipient just claimed for `attempt` and nothing else yet: no message id, report,
    /// error or time (what a first attempt's row holds after its claim).
    pub fn claimed(
        recipient: RecipientId,
        campaign: CampaignId,
        attempt: u32,
        segments: u32,
    ) -> Self {
        Self {
            recipient,
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
            attempt,
            segments,
        }
    }
}

/// A record that could not be applied, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
}

/// One record as the consumer hands it over, parsed on the consumer's thread.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub offset: i64,
    pub event: Result<Event, Poison>,
}

/// A record that did not parse, kept as received for `dead_letters`. Parsed records carry no
/// copy of their key: [`Event::key`] rebuilds it on the rare path that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
}

/// Bounds that keep a partition's memory finite.
#[derive(Debug, Clone, Copy)]
pub struct LedgerLimits {
    pub max_parked: usize,
    pub park_ttl: Duration,
    /// Full rows beyond this many: the final, checkpointed ones are evicted at a checkpoint.
    pub max_resident: usize,
    /// Committed messages awaiting their report move to the compact book. Always on in the
    /// service; off only to check that the book changes no outcome.
    pub compact_waiting: bool,
    /// Messages in the compact book beyond this many: the oldest are forgotten at a
    /// checkpoint (a report for one is looked up again).
    pub max_waiting: usize,
}

impl Default for LedgerLimits {
    fn default() -> Self {
        Self {
            max_parked: 100_000,
            park_ttl: Duration::from_secs(300),
            max_resident: 1_000_000,
            compact_waiting: true,
            max_waiting: 2_000_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Parked {
    offset: i64,
    event: Event,
    since: DateTime<Utc>,
}

/// What one partition hands to a checkpoint.
#[derive(Debug, Default)]
pub struct PartitionCheckpoint {
    pub partition: i32,
    pub rows: Vec<MessageRow>,
    pub engaged: Vec<EngagementRow>,
    pub dead_letters: Vec<DeadLetter>,
    /// The offset to resume from: the next unread one, or the oldest parked report.
    pub commit_offset: Option<i64>,
    /// The next offset to apply (past parked reports): how far the partition is applied.
    pub applied_offset: Option<i64>,
    /// The partition's generation when this member took it over (its writes are fenced by it).
    pub generation: u64,
    /// Credits that changed hands with these rows, per campaign.
    pub credits: HashMap<CampaignId, CreditMoves>,
    /// What these rows' transitions add to each campaign's figures.
    pub figures: HashMap<CampaignId, Figures>,
}

/// Which rows a single writer changed since the last barrier, and which stay in memory because
/// their last handed-over change is not committed yet, or committed to the message log but not
/// folded into the table a lookup reads (Postgres answers a lookup with the state before it).
#[derive(Debug, Default)]
pub(super) struct Changes {
    dirty: HashSet<RecipientId>,
    uncommitted: HashMap<RecipientId, u64>,
    /// Rows whose last change is not folded yet, by the epoch that committed it.
    unfolded: HashMap<RecipientId, u64>,
    /// Rows whose last change became committed at the latest hand-over.
    settled: Vec<RecipientId>,
}

impl Changes {
    pub(super) fn mark(&mut self, recipient: RecipientId) {
        self.dirty.insert(recipient);
    }

    /// The changed rows, handed over to the checkpoint of `epoch`; `committed` is the last
    /// epoch known to be in Postgres, `folded` the last one a lookup can read.
    pub(super) fn hand_over<R: Clone>(
        &mut self,
        rows: &HashMap<RecipientId, R>,
        epoch: u64,
        committed: u64,
        folded: u64,
    ) -> Vec<R> {
        let changed: Vec<RecipientId> = self.dirty.drain().collect();
        let handed = changed
            .iter()
            .filter_map(|r| rows.get(r).cloned())
            .collect();
        self.unfolded.extend(changed.iter().map(|r| (*r, epoch)));
        self.unfolded.retain(|_, e| *e > folded);
        shrink(&mut self.unfolded);
        self.uncommitted
            .extend(changed.into_iter().map(|r| (r, epoch)));
        let settled = &mut self.settled;
        self.uncommitted.retain(|r, e| {
            let waits = *e > committed;
            if !waits {
                settled.push(*r);
            }
            waits
        });
        handed
    }

    /// The rows whose last change became committed since this was last asked.
    pub(super) fn settled(&mut self) -> Vec<RecipientId> {
        std::mem::take(&mut self.settled)
    }

    pub(super) fn uncommitted(&self, recipient: &RecipientId) -> bool {
        self.uncommitted.contains_key(recipient)
    }

    /// The row's last change is not in the table lookups read yet.
    pub(super) fn unfolded(&self, recipient: &RecipientId) -> bool {
        self.unfolded.contains_key(recipient)
    }
}

/// Credit movements a checkpoint books: reserved credits of accepted messages are charged,
/// those of messages refused before acceptance are refunded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CreditMoves {
    pub charged: i64,
    pub refunded: i64,
}

impl CreditMoves {
    pub fn add(&mut self, other: CreditMoves) {
        self.charged += other.charged;
        self.refunded += other.refunded;
    }
}

/// What became of an event. A parked report is counted once when parked and again when it is
/// applied (or dead-lettered) later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It moved its message (or counted an engagement).
    Applied,
    /// Its message already had that status (or the engagement was already counted).
    Duplicate,
    /// It would have moved its message backwards or out of a final status: dropped.
    Regression,
    /// A report ahead of its message's `sent`: waits for it.
    Parked,
    DeadLettered,
}

impl Outcome {
    pub const ALL: [Self; 5] = [
        Self::Applied,
        Self::Duplicate,
        Self::Regression,
        Self::Parked,
        Self::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Regression => "regression",
            Self::Parked => "parked",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// Event types as on the wire, and `malformed` for records that are no event.
pub const EVENT_TYPES: [&str; 8] = [
    "sent",
    "send_failed",
    "dlr",
    "outcome_unknown",
    "visit",
    "redemption",
    "unsubscribe",
    "malformed",
];

/// Events per type and outcome, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LedgerCounts {
    table: [[u64; Outcome::ALL.len()]; EVENT_TYPES.len()],
}

impl LedgerCounts {
    pub fn add(&mut self, event_type: &str, outcome: Outcome) {
        let row = EVENT_TYPES
            .iter()
            .position(|t| *t == event_type)
            .unwrap_or(EVENT_TYPES.len() - 1);
        self.table[row][outcome as usize] += 1;
    }

    pub fn get(&self, event_type: &str, outcome: Outcome) -> u64 {
        EVENT_TYPES
            .iter()
            .position(|t| *t == event_type)
            .map_or(0, |row| self.table[row][outcome as usize])
    }

    /// Events of every type with this outcome.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.table.iter().map(|row| row[outcome as usize]).sum()
    }

    /// The non-zero cells: (type, outcome, count).
    pub fn cells(&self) -> impl Iterator<Item = (&'static str, Outcome, u64)> + '_ {
        EVENT_TYPES.iter().enumerate().flat_map(move |(row, t)| {
            Outcome::ALL
                .into_iter()
                .map(move |o| (*t, o, self.table[row][o as usize]))
                .filter(|(_, _, n)| *n > 0)
        })
    }
}

/// Per-message state of one partition and the rules applied to it.
#[derive(Debug)]
pub struct Ledger {
    partition: i32,
    limits: LedgerLimits,
    rows: HashMap<RecipientId, MessageRow>,
    by_message: HashMap<MessageId, RecipientId>,
    /// Committed, accepted messages awaiting their report; in neither map above.
    waiting: Waiting,
    /// Rows loaded from Postgres or woken from the book since the last barrier: committed
    /// as they are, so candidates for the book again.
    recheck: Vec<RecipientId>,
    engagement: EngagementBook,
    parked: HashMap<MessageId, Vec<Parked>>,
    parked_len: usize,
    changes: Changes,
    dead: Vec<DeadLetter>,
    credits: HashMap<CampaignId, CreditMoves>,
    figures: HashMap<CampaignId, Figures>,
    next_offset: Option<i64>,
    epoch: u64,
    pub counts: LedgerCounts,
}

/// What a report (a `dlr` or an `outcome_unknown`) says about its message.
struct Report<'a> {
    /// The message it is about.
    message: &'a MessageId,
    target: MessageStatus,
    /// Mitto's raw status, kept verbatim; none for an unknown outcome.
    raw: Option<&'a str>,
    /// Why the message failed or is unknown (the provider's description, else its status);
    /// borrowed, so a delivered report allocates nothing for it.
    reason: &'a str,
    at: DateTime<Utc>,
}

impl<'a> Report<'a> {
    fn of(event: &'a Event) -> Option<Self> {
        match event {
            Event::Dlr {
                message_id,
                status,
                description,
                at,
                ..
            } => Some(Self {
                message: message_id,
                target: match status.outcome() {
                    DeliveryOutcome::Delivered => MessageStatus::Delivered,
                    DeliveryOutcome::Failed => MessageStatus::DeliveryFailed,
                    DeliveryOutcome::InFlight => MessageStatus::Sent,
                },
                raw: Some(status.raw()),
                reason: description.as_deref().unwrap_or(status.raw()),
                at: *at,
            }),
            Event::OutcomeUnknown {
                message_id,
                reason,
                at,
            } => Some(Self {
                message: message_id,
                target: MessageStatus::Unknown,
                raw: None,
                reason,
                at: *at,
            }),
            Event::Sent { .. } | Event::SendFailed { .. } | Event::Engaged { .. } => None,
        }
    }
}

/// Which send of which recipient an event is about: campaign, recipient, attempt.
type SendRef = (CampaignId, RecipientId, u32);

/// What a batch needs from Postgres before it can be applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    pub recipients: Vec<RecipientId>,
    pub messages: Vec<MessageId>,
    /// Recipients whose engagement columns are needed.
    pub engaged: Vec<RecipientId>,
}

impl Ledger {
    /// `next_offset`: where the partition resumes (records below it were already applied);
    /// `epoch`: the checkpoint that will commit what this ledger changes first.
    pub fn new(partition: i32, next_offset: Option<i64>, epoch: u64, limits: LedgerLimits) -> Self {
        Self {
            partition,
            limits,
            rows: HashMap::new(),
            by_message: HashMap::new(),
            waiting: Waiting::default(),
            recheck: Vec::new(),
            engagement: EngagementBook::default(),
            parked: HashMap::new(),
            parked_len: 0,
            changes: Changes::default(),
            dead: Vec::new(),
            credits: HashMap::new(),
            figures: HashMap::new(),
            next_offset,
            epoch,
            counts: LedgerCounts::default(),
        }
    }

    /// Messages of this batch that are in neither memory nor the same batch's `sent` events.
    pub fn lookups(&self, batch: &[Incoming]) -> Lookups {
        let mut recipients = HashSet::new();
        let mut messages = HashSet::new();
        let mut engaged = HashSet::new();
        let mut sent_here = HashSet::new();
        for event in batch.iter().filter_map(|i| i.event.as_ref().ok()) {
            match event {
                Event::Sent {
                    recipient_id,
                    message_id,
                    ..
                } => {
                    sent_here.insert(message_id);
                    if !self.rows.contains_key(recipient_id)
                        && self.waiting.recipient_of(message_id) != Some(*recipient_id)
                    {
                        recipients.insert(*recipient_id);
                    }
                }
                Event::SendFailed { recipient_id, .. } if !self.rows.contains_key(recipient_id) => {
                    recipients.insert(*recipient_id);
                }
                Event::Dlr { message_id, .. } | Event::OutcomeUnknown { message_id, .. }
                    if !self.by_message.contains_key(message_id)
                        && !self.waiting.contains(message_id)
                        && !self.parked.contains_key(message_id)
                        && !sent_here.contains(message_id) =>
                {
                    messages.insert(message_id.clone());
                }
                Event::Engaged { recipient_id, .. } if !self.engagement.knows(*recipient_id) => {
                    engaged.insert(*recipient_id);
                }
                _ => {}
            }
        }
        Lookups {
            recipients: recipients.into_iter().collect(),
            messages: messages.into_iter().collect(),
            engaged: engaged.into_iter().collect(),
        }
    }

    /// Adds rows loaded from Postgres; what memory already holds is newer and is kept. A row
    /// waiting in the compact book holds its committed state, the same as the loaded one,
    /// which replaces it.
    pub fn absorb(&mut self, rows: Vec<MessageRow>) {
        for row in rows {
            if self.rows.contains_key(&row.recipient) {
                continue;
            }
            if let Some(id) = &row.message_id {
                self.waiting.take(id);
                self.by_message.insert(id.clone(), row.recipient);
            }
            self.recheck.push(row.recipient);
            self.rows.insert(row.recipient, row);
        }
    }

    /// Adds engagement rows loaded from Postgres; what memory already holds is newer.
    pub fn absorb_engaged(&mut self, rows: Vec<EngagementRow>) {
        self.engagement.absorb(rows);
    }

    /// Applies a batch in partition order; returns what changed for campaign actors.
    pub fn apply_batch(&mut self, batch: Vec<Incoming>, now: DateTime<Utc>) -> Vec<Change> {
        let mut transitions = Vec::new();
        for incoming in batch {
            if self.next_offset.is_some_and(|next| incoming.offset < next) {
                continue; // already applied before this ledger resumed
            }
            self.next_offset = Some(incoming.offset + 1);
            match incoming.event {
                Ok(event) => self.apply(incoming.offset, event, now, &mut transitions),
                Err(poison) => {
                    let (key, payload, error) = (poison.key, poison.payload, poison.error);
                    self.dead_letter("malformed", incoming.offset, key, payload, error)
                }
            }
        }
        transitions
    }

    fn apply(&mut self, offset: i64, event: Event, now: DateTime<Utc>, out: &mut Vec<Change>) {
        let result = match &event {
            Event::Sent {
                message_id,
                campaign_id,
                recipient_id,
                bulk_id,
                attempt,
                at,
            } => {
                // a repeated `sent` of a waiting message: its state is in the book
                if !self.rows.contains_key(recipient_id)
                    && self.waiting.recipient_of(message_id) == Some(*recipient_id)
                {
                    self.wake(message_id);
                }
                self.apply_sent(
                    message_id,
                    (*campaign_id, *recipient_id, *attempt),
                    *bulk_id,
                    *at,
                    out,
                )
            }
            Event::SendFailed {
                campaign_id,
                recipient_id,
                error,
                retryable,
                attempt,
                at,
            } => self.apply_send_failed(
                (*campaign_id, *recipient_id, *attempt),
                error,
                *retryable,
                *at,
                out,
            ),
            Event::Dlr { message_id, .. } | Event::OutcomeUnknown { message_id, .. } => {
                let known = self.by_message.get(message_id).copied();
                match known.or_else(|| self.wake(message_id)) {
                    Some(recipient) => self.apply_report(recipient, &event, out),
                    None => self.park(offset, event.clone(), now),
                }
                Ok(())
            }
            Event::Engaged {
                kind,
                campaign_id,
                recipient_id,
                via,
                at,
                ..
            } => self.apply_engaged(
                Engagement {
                    kind: *kind,
                    campaign: *campaign_id,
                    recipient: *recipient_id,
                    via: via.as_deref(),
                    at: *at,
                },
                out,
            ),
        };
        if let Err(error) = result {
            self.dead_letter_event(offset, &event, error);
        }
    }

    /// Brings a waiting message back as a full row; answers its recipient. A full row of the
    /// same recipient is newer (another send of it reached memory since): the book's copy is
    /// dropped and the message is not known here any more.
    fn wake(&mut self, message_id: &MessageId) -> Option<RecipientId> {
        let row = self.waiting.take(message_id)?;
        let recipient = row.recipient;
        if self.rows.contains_key(&recipient) {
            return None;
        }
        self.recheck.push(recipient);
        self.by_message.insert(message_id.clone(), recipient);
        self.rows.insert(recipient, row);
        Some(recipient)
    }

    /// The recipient's row for this attempt, if it exists and belongs to the campaign the
    /// event names; `None` for an event of an older attempt than the row's (stale). A newer
    /// attempt than memory holds means retry-failed re-queued and re-claimed the recipient
    /// since: the row is in `processing` for that attempt, as its campaign counts it.
    fn row_for(&mut self, send: SendRef) -> Result<Option<&mut MessageRow>, String> {
        let (campaign, recipient, attempt) = send;
        let row = self.rows.get_mut(&recipient).ok_or_else(|| {
            format!("recipient {recipient} of campaign {campaign} does not exist")
        })?;
        if row.campaign != campaign {
            return Err(format!(
                "recipient {recipient} belongs to campaign {}, not {campaign}",
                row.campaign
            ));
        }
        if attempt < row.attempt {
            return Ok(None);
        }
        if attempt > row.attempt {
            row.attempt = attempt;
            row.status = MessageStatus::Processing;
            row.error = None;
            row.error_retryable = None;
            row.failed_at = None;
        }
        Ok(Some(row))
    }

    /// Moves the row of a send towards `target` if the forward-only rule allows it; returns the
    /// row and the status it had. `None`: a stale attempt, or not a move forward.
    fn advance_send(
        &mut self,
        send: SendRef,
        target: MessageStatus,
    ) -> Result<Option<(&mut MessageRow, MessageStatus)>, String> {
        let Some(row) = self.row_for(send)? else {
            return Ok(None);
        };
        let from = row.status;
        Ok(from.advance(target).map(move |to| {
            row.status = to;
            (row, from)
        }))
    }

    fn apply_sent(
        &mut self,
        message_id: &MessageId,
        send: SendRef,
        bulk_id: Option<BulkId>,
        at: DateTime<Utc>,
        out: &mut Vec<Change>,
    ) -> Result<(), String> {
        let (campaign, recipient, _) = send;
        let Some((row, from)) = self.advance_send(send, MessageStatus::Sent)? else {
            self.ignored("sent", recipient, MessageStatus::Sent);
            return Ok(());
        };
        let to = row.status;
        let earlier = row.message_id.replace(message_id.clone());
        row.bulk_id = bulk_id;
        row.sent_at = Some(at);
        let charged = i64::from(row.segments);
        self.credits.entry(campaign).or_default().charged += charged;
        // an earlier attempt's message no longer leads to this row
        if let Some(earlier) = earlier.filter(|e| e != message_id) {
            self.by_message.remove(&earlier);
        }
        self.by_message.insert(message_id.clone(), recipient);
        self.changed(recipient, campaign, from, to, at, None, out);
        self.counts.add("sent", Outcome::Applied);
        self.release_parked(message_id, out);
        Ok(())
    }

    fn apply_engaged(&mut self, e: Engagement<'_>, out: &mut Vec<Change>) -> Result<(), String> {
        let event_type = e.kind.type_name();
        match self.engagement.apply(e, self.epoch)? {
            Some(engaged) => {
                self.figures
                    .entry(engaged.campaign)
                    .or_default()
                    .record_engaged(&engaged);
                out.push(Change::Engaged(engaged));
                self.counts.add(event_type, Outcome::Applied);
            }
            None => self.counts.add(event_type, Outcome::Duplicate),
        }
        Ok(())
    }

    fn apply_send_failed(
        &mut self,
        send: SendRef,
        error: &str,
        retryable: bool,
        at: DateTime<Utc>,
        out: &mut Vec<Change>,
    ) -> Result<(), String> {
        let (campaign, recipient, _) = send;
        let Some((row, from)) = self.advance_send(send, MessageStatus::SendFailed)? else {
            self.ignored("send_failed", recipient, MessageStatus::SendFailed);
            return Ok(());
        };
        let to = row.status;
        row.error = Some(error.to_owned());
        row.error_retryable = Some(retryable);
        row.failed_at = Some(at);
        let refunded = i64::from(row.segments);
        self.credits.entry(campaign).or_default().refunded += refunded;
        self.changed(recipient, campaign, from, to, at, None, out);
        self.counts.add("send_failed", Outcome::Applied);
        Ok(())
    }

    /// Counts an event the forward-only rule dropped: a duplicate if its message already has
    /// the status it names, a regression otherwise.
    fn ignored(&mut self, event_type: &str, recipient: RecipientId, target: MessageStatus) {
        let current = self.rows.get(&recipient).map(|r| r.status);
        let outcome = match current == Some(target) {
            true => Outcome::Duplicate,
            false => Outcome::Regression,
        };
        self.counts.add(event_type, outcome);
    }

    /// Records a real status change: the row is dirty, the campaign hears of it.
    #[allow(clippy::too_many_arguments)] // one transition's fields, named at each call site
    fn changed(
        &mut self,
        recipient: RecipientId,
        campaign: CampaignId,
        from: MessageStatus,
        to: MessageStatus,
        at: DateTime<Utc>,
        corrected_at: Option<DateTime<Utc>>,
        out: &mut Vec<Change>,
    ) {
        let transition = Transition {
            campaign,
            from,
            to,
            at,
            corrected_at,
            epoch: self.epoch,
        };
        self.figures
            .entry(campaign)
            .or_default()
            .record(&transition);
        out.push(Change::Status(transition));
        self.changes.mark(recipient);
    }

    fn apply_report(&mut self, recipient: RecipientId, event: &Event, out: &mut Vec<Change>) {
        let Some(report) = Report::of(event) else {
            return;
        };
        let row = self.rows.get_mut(&recipient);
        let Some(row) = row.filter(|r| r.message_id.as_ref() == Some(report.message)) else {
            // the recipient was sent again since: a report of the superseded message moves
            // nothing
            self.counts.add(event.type_name(), Outcome::Regression);
            return;
        };
        let from = row.status;
        let Some(to) = from.advance(report.target) else {
            // an in-flight report on a message still in flight refreshes the raw status only
            if let (MessageStatus::Sent, MessageStatus::Sent, Some(raw)) =
                (from, report.target, report.raw)
            {
                if row.delivery_status.as_deref() != Some(raw) {
                    row.delivery_status = Some(raw.to_owned());
                    self.changes.mark(recipient);
                }
            }
            self.ignored(event.type_name(), recipient, report.target);
            return;
        };
        let corrected_at = (from == MessageStatus::DeliveryFailed)
            .then_some(row.failed_at)
            .flatten();
        row.status = to;
        if let Some(raw) = report.raw {
            row.delivery_status = Some(raw.to_owned());
        }
        match to {
            MessageStatus::Delivered => row.delivered_at = Some(report.at),
            MessageStatus::Unknown => row.error = Some(report.reason.to_owned()),
            _ => {
                row.failed_at = Some(report.at);
                row.error = Some(report.reason.to_owned());
            }
        }
        let campaign = row.campaign;
        self.changed(recipient, campaign, from, to, report.at, corrected_at, out);
        self.counts.add(event.type_name(), Outcome::Applied);
    }

    fn park(&mut self, offset: i64, event: Event, now: DateTime<Utc>) {
        let (Event::Dlr { message_id, .. } | Event::OutcomeUnknown { message_id, .. }) = &event
        else {
            return;
        };
        if self.parked_len >= self.limits.max_parked {
            let error = format!("no sent event for message {message_id} and the park is full");
            return self.dead_letter_event(offset, &event, error);
        }
        self.counts.add(event.type_name(), Outcome::Parked);
        self.parked_len += 1;
        self.parked
            .entry(message_id.clone())
            .or_default()
            .push(Parked {
                offset,
                event,
                since: now,
            });
    }

    fn release_parked(&mut self, message_id: &MessageId, out: &mut Vec<Change>) {
        let Some(parked) = self.parked.remove(message_id) else {
            return;
        };
        self.parked_len -= parked.len();
        let Some(recipient) = self.by_message.get(message_id).copied() else {
            return;
        };
        for p in parked {
            self.apply_report(recipient, &p.event, out);
        }
    }

    /// A parsed event that cannot be applied, kept with its key and canonical JSON.
    fn dead_letter_event(&mut self, offset: i64, event: &Event, error: String) {
        self.dead_letter(
            event.type_name(),
            offset,
            Some(event.key().into_bytes()),
            event.to_json(),
            error,
        );
    }

    fn dead_letter(
        &mut self,
        event_type: &str,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        error: String,
    ) {
        self.counts.add(event_type, Outcome::DeadLettered);
        tracing::warn!(partition = self.partition, offset, %error, "record sent to dead_letters");
        self.dead.push(DeadLetter {
            source: "message-events".into(),
            partition: Some(self.partition),
            offset: Some(offset),
            key,
            payload,
            error,
        });
    }

    /// Hands over everything changed since the last barrier; what follows belongs to the next
    /// epoch. `committed`: the last epoch known to be in Postgres (messages move to the compact
    /// book from there); `folded`: the last one whose rows a lookup finds (final messages are
    /// forgotten from there).
    pub fn barrier(
        &mut self,
        epoch: u64,
        committed: u64,
        folded: u64,
        now: DateTime<Utc>,
    ) -> PartitionCheckpoint {
        self.expire_parked(now);
        let rows = self.changes.hand_over(&self.rows, epoch, committed, folded);
        let oldest_parked = self.parked.values().flatten().map(|p| p.offset).min();
        let commit_offset = match (self.next_offset, oldest_parked) {
            (Some(next), Some(parked)) => Some(next.min(parked)),
            (next, None) => next,
            (None, Some(parked)) => Some(parked),
        };
        self.epoch = epoch + 1;
        self.evict();
        let engaged = self
            .engagement
            .barrier(epoch, committed, self.limits.max_resident);
        PartitionCheckpoint {
            partition: self.partition,
            rows,
            engaged,
            dead_letters: std::mem::take(&mut self.dead),
            commit_offset,
            applied_offset: self.next_offset,
            // the shell knows the generation its partition was taken over with
            generation: 0,
            credits: std::mem::take(&mut self.credits),
            figures: std::mem::take(&mut self.figures),
        }
    }

    fn expire_parked(&mut self, now: DateTime<Utc>) {
        let ttl = chrono::Duration::from_std(self.limits.park_ttl).unwrap_or(chrono::Duration::MAX);
        let expired: Vec<MessageId> = self
            .parked
            .iter()
            .filter(|(_, ps)| ps.iter().all(|p| now - p.since >= ttl))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            for p in self.parked.remove(&id).unwrap_or_default() {
                self.parked_len -= 1;
                let error = format!(
                    "no sent event arrived for message {id} within {:?}",
                    self.limits.park_ttl
                );
                self.dead_letter_event(p.offset, &p.event, error);
            }
        }
    }

    /// Moves accepted messages whose `sent` is committed to the compact book, and drops final
    /// messages whose last change is folded once memory holds too many; a late report for
    /// one of those is looked up again and finds that change in Postgres.
    fn evict(&mut self) {
        if self.limits.compact_waiting {
            self.compact_waiting();
        }
        if self.rows.len() > self.limits.max_resident {
            self.drop_final();
        }
        self.waiting.keep_at_most(self.limits.max_waiting);
        shrink(&mut self.rows);
        shrink(&mut self.by_message);
    }

    /// Only rows that just became committed (or were loaded committed) are looked at, so a
    /// checkpoint costs what changed, not what memory holds.
    fn compact_waiting(&mut self) {
        let mut candidates = self.changes.settled();
        candidates.append(&mut self.recheck);
        for id in candidates {
            if self.changes.uncommitted(&id) {
                continue;
            }
            let Some(row) = self.rows.get(&id) else {
                continue;
            };
            if self.waiting.keep(row) {
                if let Some(m) = &row.message_id {
                    self.by_message.remove(m);
                }
                self.rows.remove(&id);
            }
        }
    }

    fn drop_final(&mut self) {
        let changes = &self.changes;
        let by_message = &mut self.by_message;
        self.rows.retain(|id, row| {
            let keep = !row.status.is_final() || changes.unfolded(id);
            if !keep {
                if let Some(m) = &row.message_id {
                    by_message.remove(m);
                }
            }
            keep
        });
    }

    /// The next offset this ledger will apply.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// The checkpoint that will commit what this ledger changes next.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages held in memory, as full rows or waiting.
    pub fn resident(&self) -> usize {
        self.rows.len() + self.waiting.len()
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Messages held as full rows.
    pub fn full_rows(&self) -> usize {
        self.rows.len()
    }

    /// What the partition's message state holds, and the bytes its tables take: full rows,
    /// their message ids, the compact book (the text of ids and errors is left out, so that
    /// asking costs nothing whatever memory holds).
    pub fn memory(&self) -> LedgerMemory {
        let rows = table_bytes(
            self.rows.capacity(),
            std::mem::size_of::<(RecipientId, MessageRow)>(),
        );
        let by_message = table_bytes(
            self.by_message.capacity(),
            std::mem::size_of::<(MessageId, RecipientId)>(),
        );
        LedgerMemory {
            partition: self.partition,
            full_rows: self.rows.len(),
            waiting: self.waiting.len(),
            bytes: rows + by_message + self.waiting.bytes(),
        }
    }
}

/// A partition's message state in memory (`campaignd_ledger_*` metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerMemory {
    pub partition: i32,
    pub full_rows: usize,
    pub waiting: usize,
    pub bytes: usize,
}

/// Bytes of a hash table holding `capacity` entries of `entry` bytes: its buckets (a power of
/// two, at most 7/8 full) and one control byte each.
pub(super) fn table_bytes(capacity: usize, entry: usize) -> usize {
    match capacity {
        0 => 0,
        c => (c * 8 / 7).next_power_of_two() * (entry + 1),
    }
}

/// Gives memory back once a map holds far fewer entries than it has room for (maps never
/// shrink by themselves, and most rows leave for the compact book at every checkpoint).
fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to(2 * map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignId, DeliveryStatus};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn row(recipient: i64, status: MessageStatus) -> MessageRow {
        let (recipient, campaign) = (RecipientId::new(recipient).unwrap(), CampaignId::new(7));
        MessageRow {
            status,
            ..MessageRow::claimed(recipient, campaign.unwrap(), 0, 1)
        }
    }

    /// A ULID, as Mitto issues message ids.
    fn mid(r: i64) -> MessageId {
        MessageId::parse(&ulid::Ulid(r as u128).to_string()).unwrap()
    }

    fn sent(offset: i64, r: i64) -> Incoming {
        let event = Event::Sent {
            message_id: mid(r),
            campaign_id: CampaignId::new(7).unwrap(),
            recipient_id: RecipientId::new(r).unwrap(),
            bulk_id: None,
            attempt: 0,
            at: at(offset),
        };
        Incoming {
            offset,
            event: Ok(event),
        }
    }

    fn dlr(offset: i64, r: i64, status: &str) -> Incoming {
        let event = Event::Dlr {
            message_id: mid(r),
            status: DeliveryStatus::from_raw(status),
            description: None,
            at: at(offset),
            event_id: None,
            source: None,
        };
        Incoming {
            offset,
            event: Ok(event),
        }
    }

    fn ledger_with(rows: Vec<MessageRow>) -> Ledger {
        let mut l = Ledger::new(0, None, 1, LedgerLimits::default());
        l.absorb(rows);
        l
    }

    fn moves(ts: &[Change]) -> Vec<(MessageStatus, MessageStatus)> {
        ts.iter()
            .filter_map(|c| match c {
                Change::Status(t) => Some((t.from, t.to)),
                Change::Engaged(_) => None,
            })
            .collect()
    }

    fn unknown(offset: i64, r: i64) -> Incoming {
        let event = Event::OutcomeUnknown {
            message_id: mid(r),
            reason: "no final report".into(),
            at: at(offset),
        };
        Incoming {
            offset,
            event: Ok(event),
        }
    }

    #[test]
    fn an_unknown_outcome_ends_waiting_and_a_late_report_still_settles_it() {
        use MessageStatus::*;
        let mut l = ledger_with(vec![row(1, Processing), row(2, Processing)]);
        let ts = l.apply_batch(
            vec![
                sent(0, 1),
                sent(1, 2),
                dlr(2, 2, "Delivered"),
                unknown(3, 1),
                unknown(4, 2),
                dlr(5, 1, "Sent"),
            ],
            at(9),
        );
        assert_eq!(
            moves(&ts),
            vec![
                (Processing, Sent),
                (Processing, Sent),
                (Sent, Delivered),
                (Sent, Unknown)
            ],
            "an unknown outcome never overrides a final report; an in-flight one changes nothing"
        );
        let ts = l.apply_batch(vec![dlr(6, 1, "Expired")], at(9));
        assert_eq!(moves(&ts), vec![(Unknown, DeliveryFailed)]);
        let cp = l.barrier(1, 0, 0, at(9));
        let r1 = cp.rows.iter().find(|r| r.recipient.get() == 1).unwrap();
        assert_eq!(r1.delivery_status.as_deref(), Some("Expired"));
        assert_eq!(
            cp.figures[&CampaignId::new(7).unwrap()]
                .counters
                .get(Unknown),
            0
        );
    }

    #[test]
    fn sent_then_delivered_then_duplicates_yield_two_transitions() {
        use MessageStatus::*;
        let mut l = ledger_with(vec![row(1, Processing)]);
        let ts = l.apply_batch(
            vec![
                sent(0, 1),
                dlr(1, 1, "Delivered"),
                dlr(2, 1, "Delivered"),
                sent(3, 1),
                dlr(4, 1, "Sent"),
            ],
            at(9),
        );
        assert_eq!(moves(&ts), vec![(Processing, Sent), (Sent, Delivered)]);
        assert_eq!(l.counts.total(Outcome::Applied), 2);
        assert_eq!(l.counts.get("dlr", Outcome::Duplicate), 1);
        assert_eq!(l.counts.get("dlr", Outcome::Regression), 1);
        assert_eq!(l.counts.get("sent", Outcome::Regression), 1);
        let cp = l.barrier(1, 0, 0, at(9));
        assert_eq!(cp.rows.len(), 1);
        assert_eq!(cp.rows[0].status, Delivered);
        assert_eq!(cp.rows[0].delivery_status.as_deref(), Some("Delivered"));
        assert_eq!(cp.commit_offset, Some(5));
    }

    #[test]
    fn undelivered_is_a_failure_that_a_later_delivered_corrects() {
        use MessageStatus::*;
        let mut l = ledger_with(vec![row(1, Processing)]);
        let ts = l.apply_batch(
            vec![sent(0, 1), dlr(1, 1, "Undelivered"), dlr(2, 1, "Delivered")],
            at(9),
        );
        assert_eq!(
            moves(&ts),
            vec![
                (Processing, Sent),
                (Sent, DeliveryFailed),
                (DeliveryFailed, Delivered)
            ]
        );
        assert!(matches!(ts[2], Change::Status(t) if t.corrected_at == Some(at(1))));
    }

    #[test]
    fn a_report_ahead_of_its_sent_is_parked_and_holds_the_offset_back() {
        use MessageStatus::*;
        let mut l = ledger_with(vec![row(1, Processing)]);
        assert!(l
            .apply_batch(vec![dlr(0, 1, "Delivered")], at(0))
            .is_empty());
        let cp = l.barrier(1, 0, 0, at(1));
        assert_eq!(
            cp.commit_offset,
            Some(0),
            "a crash must replay the parked report"
        );
        let ts = l.apply_batch(vec![sent(1, 1)], at(2));
        assert_eq!(moves(&ts), vec![(Processing, Sent), (Sent, Delivered)]);
        assert!(
            matches!(ts[0], Change::Status(t) if t.epoch == 2),
            "after barrier 1, changes belong to epoch 2"
        );
        assert_eq!(l.barrier(2, 0, 0, at(3)).commit_offset, Some(2));
    }

    #[test]
    fn parked_reports_that_never_match_become_dead_letters() {
        let mut l = Ledger::new(
            3,
            None,
            1,
            LedgerLimits {
                park_ttl: Duration::from_secs(10),
                ..Default::default()
            },
        );
        l.apply_batch(vec![dlr(5, 99, "Delivered")], at(0));
        assert!(l.barrier(1, 0, 0, at(5)).dead_letters.is_empty());
        let cp = l.barrier(2, 0, 0, at(11));
        assert_eq!(cp.dead_letters.len(), 1);
        assert_eq!(cp.dead_letters[0].offset, Some(5));
        assert_eq!(cp.commit_offset, Some(6));
    }

    #[test]
    fn poison_and_unknown_recipients_are_dead_letters_and_the_partition_moves_on() {
        let mut l = ledger_with(vec![row(1, MessageStatus::Processing)]);
        let poison = Incoming {
            offset: 0,
            event: Err(Poison {
                key: Some(b"k".to_vec()),
                payload: b"{oops".to_vec(),
                error: "bad json".into(),
            }),
        };
        let ts = l.apply_batch(vec![poison, sent(1, 404), sent(2, 1)], at(0));
        assert_eq!(ts.len(), 1);
        let cp = l.barrier(1, 0, 0, at(0));
        assert_eq!(cp.dead_letters.len(), 2);
        assert_eq!(cp.dead_letters[0].payload, b"{oops");
        assert_eq!(cp.dead_letters[0].key.as_deref(), Some(&b"k"[..]));
        assert!(cp.dead_letters[1].error.contains("does not exist"));
        assert_eq!(
            cp.dead_letters[1].key.as_deref(),
            Some(mid(404).as_str().as_bytes()),
            "the key is rebuilt from the event"
        );
        assert_eq!(cp.commit_offset, Some(3));
    }

    #[test]
    fn records_below_the_resume_offset_are_skipped() {
        let mut l = Ledger::new(0, Some(10), 1, LedgerLimits::default());
        l.absorb(vec![row(1, MessageStatus::Processing)]);
        assert!(l.apply_batch(vec![sent(9, 1)], at(0)).is_empty());
        assert_eq!(l.apply_batch(vec![sent(10, 1)], at(0)).len(), 1);
    }

    #[test]
    fn lookups_ask_only_for_what_memory_and_the_batch_lack() {
        let l = ledger_with(vec![row(1, MessageStatus::Processing)]);
        let lookups = l.lookups(&[
            sent(0, 1),
            sent(1, 2),
            dlr(2, 2, "Delivered"),
            dlr(3, 3, "Delivered"),
        ]);
        assert_eq!(lookups.recipients, vec![RecipientId::new(2).unwrap()]);
        assert_eq!(lookups.messages, vec![mid(3)]);
    }

    #[test]
    fn absorbing_never_overwrites_newer_state_in_memory() {
        let mut l = ledger_with(vec![row(1, MessageStatus::Processing)]);
        l.apply_batch(vec![sent(0, 1)], at(0));
        l.absorb(vec![row(1, MessageStatus::Processing)]);
        assert_eq!(l.apply_batch(vec![dlr(1, 1, "Delivered")], at(0)).len(), 1);
    }

    #[test]
    fn final_checkpointed_messages_are_evicted_past_the_limit() {
        let mut l = Ledger::new(
            0,
            None,
            1,
            LedgerLimits {
                max_resident: 0,
                ..Default::default()
            },
        );
        l.absorb(vec![
            row(1, MessageStatus::Processing),
            row(2, MessageStatus::Processing),
        ]);
        l.apply_batch(vec![sent(0, 1), dlr(1, 1, "Delivered"), sent(2, 2)], at(0));
        l.barrier(1, 0, 0, at(0));
        assert_eq!(l.resident(), 2, "epoch 1 is not committed yet: both stay");
        l.barrier(2, 1, 1, at(0));
        assert_eq!(l.resident(), 1, "only the in-flight message stays");
        assert_eq!(l.lookups(&[dlr(3, 1, "Delivered")]).messages, vec![mid(1)]);
    }

    #[test]
    fn a_final_message_is_forgotten_only_once_its_row_is_folded() {
        let mut l = Ledger::new(
            0,
            None,
            1,
            LedgerLimits {
                max_resident: 0,
                ..Default::default()
            },
        );
        l.absorb(vec![row(1, MessageStatus::Processing)]);
        l.apply_batch(vec![sent(0, 1), dlr(1, 1, "Delivered")], at(0));
        l.barrier(1, 0, 0, at(0));
        l.barrier(2, 1, 0, at(0));
        assert_eq!(
            l.resident(),
            1,
            "committed to the log, not folded: a lookup would miss it"
        );
        let repeat = [sent(2, 1)];
        assert_eq!(l.lookups(&repeat), Lookups::default(), "memory answers");
        assert!(
            l.apply_batch(repeat.to_vec(), at(0)).is_empty(),
            "a duplicate"
        );
        l.barrier(3, 2, 1, at(0));
        assert_eq!(l.resident(), 0, "folded: Postgres answers from now on");
    }

    #[test]
    fn a_committed_message_waits_compactly_and_its_report_needs_no_lookup() {
        use MessageStatus::*;
        let mut l = ledger_with(vec![row(1, Processing)]);
        l.apply_batch(vec![sent(0, 1)], at(0));
        let first = l.barrier(1, 0, 0, at(0));
        assert_eq!(l.full_rows(), 1, "not committed yet: a full row");
        l.barrier(2, 1, 1, at(1));
        assert_eq!((l.full_rows(), l.resident()), (0, 1), "committed: waiting");
        let report = [dlr(5, 1, "Delivered")];
        assert_eq!(l.lookups(&report), Lookups::default());
        let ts = l.apply_batch(report.to_vec(), at(5));
        assert_eq!(moves(&ts), vec![(Sent, Delivered)]);
        let cp = l.barrier(3, 2, 2, at(5));
        let expected = MessageRow {
            status: Delivered,
            delivery_status: Some("Delivered".into()),
            delivered_at: Some(at(5)),
            ..first.rows[0].clone()
        };
        assert_eq!(cp.rows, vec![expected], "every column of the send is kept");
    }

    #[test]
    fn past_the_waiting_bound_the_oldest_are_forgotten_and_their_reports_looked_up() {
        let n = 10;
        let mut l = Ledger::new(
            0,
            None,
            1,
            LedgerLimits {
                max_waiting: 4,
                ..Default::default()
            },
        );
        l.absorb((1..=n).map(|r| row(r, MessageStatus::Processing)).collect());
        l.apply_batch((1..=n).map(|r| sent(r, r)).collect(), at(0));
        l.barrier(1, 0, 0, at(0));
        l.barrier(2, 1, 1, at(1));
        assert_eq!((l.full_rows(), l.resident()), (0, 4), "the 4 newest wait");
        let late = [dlr(20, 1, "Delivered")];
        assert_eq!(
            l.lookups(&late).messages,
            vec![mid(1)],
            "forgotten: asked for"
        );
        let kept = [dlr(21, n, "Delivered")];
        assert_eq!(
            l.lookups(&kept),
            Lookups::default(),
            "still waiting: memory answers"
        );
    }

    #[test]
    fn memory_counts_full_rows_and_the_compact_book_apart() {
        let n = 2_000;
        let mut l = ledger_with((1..=n).map(|r| row(r, MessageStatus::Processing)).collect());
        l.apply_batch((1..=n).map(|r| sent(r, r)).collect(), at(0));
        l.barrier(1, 0, 0, at(0));
        let full = l.memory();
        assert_eq!((full.full_rows, full.waiting), (n as usize, 0));
        l.barrier(2, 1, 1, at(1));
        let waiting = l.memory();
        assert_eq!((waiting.full_rows, waiting.waiting), (0, n as usize));
        assert!(
            waiting.bytes < full.bytes,
            "{waiting:?} takes less than {full:?}"
        );
        assert_eq!(table_bytes(0, 100), 0);
        assert_eq!(table_bytes(7, 63), 8 * 64, "7 fit in 8 buckets");
        assert_eq!(table_bytes(8, 63), 16 * 64);
    }

    #[test]
    fn a_repeated_sent_for_a_waiting_message_is_a_duplicate_held_once() {
        let mut l = ledger_with(vec![row(1, MessageStatus::Processing)]);
        l.apply_batch(vec![sent(0, 1)], at(0));
        let committed = l.barrier(1, 0, 0, at(0)).rows;
        l.barrier(2, 1, 1, at(1));
        let repeat = [sent(1, 1)];
        assert_eq!(l.lookups(&repeat), Lookups::default(), "the book answers");
        assert!(l.apply_batch(repeat.to_vec(), at(2)).is_empty());
        assert_eq!(l.barrier(3, 2, 2, at(2)).rows, vec![], "nothing changed");
        // a row loaded from Postgres for the same message replaces the book's copy
        l.barrier(4, 3, 3, at(3));
        assert_eq!((l.full_rows(), l.resident()), (0, 1));
        l.absorb(committed);
        assert_eq!(l.counts.get("sent", Outcome::Duplicate), 1);
        assert_eq!((l.full_rows(), l.resident()), (1, 1), "held once");
    }

    /// A ledger whose misses are answered from a map standing for Postgres, which receives a
    /// checkpoint's rows when the test commits it.
    struct Harness {
        ledger: Ledger,
        db: HashMap<RecipientId, MessageRow>,
        pending: Vec<(u64, Vec<MessageRow>)>,
        epoch: u64,
        committed: u64,
        offset: i64,
    }

    impl Harness {
        fn new(compact_waiting: bool, recipients: i64) -> Self {
            let limits = LedgerLimits {
                compact_waiting,
                ..Default::default()
            };
            Self {
                ledger: Ledger::new(0, None, 1, limits),
                db: (1..=recipients)
                    .map(|r| {
                        (
                            RecipientId::new(r).unwrap(),
                            row(r, MessageStatus::Processing),
                        )
                    })
                    .collect(),
                pending: Vec::new(),
                epoch: 1,
                committed: 0,
                offset: 0,
            }
        }

        fn apply(&mut self, event: Event) -> String {
            let batch = vec![Incoming {
                offset: self.offset,
                event: Ok(event),
            }];
            self.offset += 1;
            let lookups = self.ledger.lookups(&batch);
            let loaded = self
                .db
                .values()
                .filter(|r| {
                    lookups.recipients.contains(&r.recipient)
                        || r.message_id
                            .as_ref()
                            .is_some_and(|m| lookups.messages.contains(m))
                })
                .cloned()
                .collect();
            self.ledger.absorb(loaded);
            format!("{:?}", self.ledger.apply_batch(batch, at(self.offset)))
        }

        fn barrier(&mut self, commit: bool) -> Vec<MessageRow> {
            let mut cp =
                self.ledger
                    .barrier(self.epoch, self.committed, self.committed, at(self.offset));
            cp.rows.sort_by_key(|r| r.recipient);
            self.pending.push((self.epoch, cp.rows.clone()));
            if commit {
                for (_, rows) in self.pending.drain(..) {
                    self.db.extend(rows.into_iter().map(|r| (r.recipient, r)));
                }
                self.committed = self.epoch;
            }
            self.epoch += 1;
            cp.rows
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Sent(i64, u32),
        SendFailed(i64, u32),
        Report(i64, &'static str),
        Unknown(i64),
        Barrier(bool),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let r = 1i64..=5;
        prop_oneof![
            (r.clone(), 0u32..2).prop_map(|(r, a)| Step::Sent(r, a)),
            (r.clone(), 0u32..2).prop_map(|(r, a)| Step::SendFailed(r, a)),
            (
                r.clone(),
                prop::sample::select(vec!["Delivered", "Undelivered", "Enroute", "Sent", "odd"])
            )
                .prop_map(|(r, s)| Step::Report(r, s)),
            r.prop_map(Step::Unknown),
            any::<bool>().prop_map(Step::Barrier),
            any::<bool>().prop_map(Step::Barrier),
        ]
    }

    /// Message `r`'s id for attempt `a`: ULIDs, so that the book takes them.
    fn attempt_id(r: i64, a: u32) -> MessageId {
        MessageId::parse(&ulid::Ulid((u128::from(a) << 64) | r as u128).to_string()).unwrap()
    }

    fn event_of(step: &Step, at_offset: i64) -> Option<Event> {
        let campaign_id = CampaignId::new(7).unwrap();
        let recipient = |r: i64| RecipientId::new(r).unwrap();
        Some(match *step {
            Step::Sent(r, attempt) => Event::Sent {
                message_id: attempt_id(r, attempt),
                campaign_id,
                recipient_id: recipient(r),
                bulk_id: Some(BulkId::from_uuid(uuid::Uuid::from_u128(r as u128))),
                attempt,
                at: at(at_offset),
            },
            Step::SendFailed(r, attempt) => Event::SendFailed {
                campaign_id,
                recipient_id: recipient(r),
                error: "refused".into(),
                retryable: false,
                attempt,
                at: at(at_offset),
            },
            Step::Report(r, status) => Event::Dlr {
                message_id: attempt_id(r, 0),
                status: DeliveryStatus::from_raw(status),
                description: None,
                at: at(at_offset),
                event_id: None,
                source: None,
            },
            Step::Unknown(r) => Event::OutcomeUnknown {
                message_id: attempt_id(r, 0),
                reason: "no final report".into(),
                at: at(at_offset),
            },
            Step::Barrier(_) => return None,
        })
    }

    proptest::proptest! {
        /// The compact book is only a cheaper place for committed messages: with it or without
        /// it, every event produces the same changes and every checkpoint the same rows.
        #[test]
        fn the_book_of_waiting_messages_changes_no_outcome(
            steps in proptest::collection::vec(step(), 1..80),
        ) {
            let mut with = Harness::new(true, 5);
            let mut without = Harness::new(false, 5);
            for (i, step) in steps.iter().enumerate() {
                match (step, event_of(step, i as i64)) {
                    (Step::Barrier(commit), _) => {
                        proptest::prop_assert_eq!(with.barrier(*commit), without.barrier(*commit));
                    }
                    (_, Some(event)) => {
                        proptest::prop_assert_eq!(with.apply(event.clone()), without.apply(event));
                    }
                    (_, None) => unreachable!("only barriers have no event"),
                }
            }
            proptest::prop_assert_eq!(with.barrier(true), without.barrier(true));
            proptest::prop_assert_eq!(with.ledger.counts, without.ledger.counts);
        }
    }

    /// A report repeated while the checkpoint that holds its message's final state is not
    /// committed must find that state in memory, not the older row in Postgres.
    #[test]
    fn a_final_message_stays_in_memory_until_its_checkpoint_commits() {
        let mut l = Ledger::new(
            0,
            None,
            1,
            LedgerLimits {
                max_resident: 0,
                ..Default::default()
            },
        );
        l.absorb(vec![row(1, MessageStatus::Processing)]);
        l.apply_batch(vec![sent(0, 1), dlr(1, 1, "Undelivered")], at(0));
        l.barrier(1, 0, 0, at(0));
        let repeated = l.apply_batch(vec![dlr(2, 1, "Undelivered")], at(1));
        assert!(repeated.is_empty(), "the repeat changes nothing");
        assert!(l.lookups(&[dlr(3, 1, "Failed")]).messages.is_empty());
        l.barrier(2, 1, 1, at(2));
        assert_eq!(l.resident(), 0, "committed: evicted");
    }
}
