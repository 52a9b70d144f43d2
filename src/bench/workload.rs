//! Generated event streams with their ground truth, for tests and `campaignd bench ingest`.
//!
//! The truth is computed from the set of events, independently of their order and of the
//! ledger's code: a message refused before acceptance is send-failed; an accepted one is
//! delivered if any report says delivered, else failed if any report says failed, else
//! pending. Whatever order the stream arrives in, the engine must land on exactly this.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::domain::{
    BulkId, CampaignId, DeliveryStatus, Event, MessageId, MessageStatus, RecipientId,
};
use crate::engine::campaign::Counters;

/// Shape of a generated stream.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSpec {
    /// Extra copies of random events, as a share of the stream.
    pub dup_ratio: f64,
    /// Share of messages refused before acceptance.
    pub send_failed_ratio: f64,
    /// Events are shuffled within windows of this many (the whole stream when ≥ its length),
    /// so reports can arrive before their `sent`.
    pub shuffle_window: usize,
    /// Which reports follow an accepted message's `sent`.
    pub reports: Reports,
    pub seed: u64,
}

/// The reports a generated message gets after its `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// Intermediate, final, corrected and late reports, some messages left pending.
    Mixed,
    /// Exactly one final report: a stream of `sent` + `dlr` pairs, as the ingest bench
    /// describes it.
    OneFinal,
    /// None: every accepted message stays in flight, awaiting its report.
    None,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            dup_ratio: 0.3,
            send_failed_ratio: 0.03,
            shuffle_window: usize::MAX,
            reports: Reports::Mixed,
            seed: 7,
        }
    }
}

/// A stream and what it must produce.
pub struct Workload {
    pub events: Vec<Event>,
    pub expected_status: HashMap<RecipientId, MessageStatus>,
    pub expected: HashMap<CampaignId, Counters>,
}

/// Messages per bulk request, as the sender batches them.
const BULK_SIZE: usize = 500;

const FAILURES: [&str; 5] = ["Undelivered", "Expired", "Rejected", "Failure", "Failed"];
const IN_FLIGHT: [&str; 4] = ["Sent", "Enroute", "Accepted", "Pending"];
const DELIVERED: [&str; 3] = ["Delivered", "delivrd", "DeliveredToHandset"];

fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// The events of one message, in their natural order.
fn message_events(
    rng: &mut impl Rng,
    spec: &WorkloadSpec,
    campaign: CampaignId,
    recipient: RecipientId,
    bulk_id: Option<BulkId>,
    at: DateTime<Utc>,
) -> Vec<Event> {
    if rng.random_bool(spec.send_failed_ratio) {
        return vec![Event::SendFailed {
            campaign_id: campaign,
            recipient_id: recipient,
            error: "InvalidDestination".into(),
            retryable: false,
            attempt: 0,
            at,
        }];
    }
    let message_id = MessageId::generate();
    let report = |status: &str, secs: i64| Event::Dlr {
        message_id: message_id.clone(),
        status: DeliveryStatus::from_raw(status),
        description: None,
        at: at + Duration::seconds(secs),
        event_id: None,
        source: Some("bench".into()),
    };
    let mut events = vec![Event::Sent {
        message_id: message_id.clone(),
        campaign_id: campaign,
        recipient_id: recipient,
        bulk_id,
        attempt: 0,
        at,
    }];
    if spec.reports == Reports::None {
        return events;
    }
    if spec.reports == Reports::OneFinal {
        let last = if rng.random_bool(0.8) {
            &DELIVERED[..]
        } else {
            &FAILURES[..]
        };
        events.push(report(pick(rng, last), 2));
        return events;
    }
    if rng.random_bool(0.3) {
        events.push(report(pick(rng, &IN_FLIGHT), 1));
    }
    match rng.random_range(0..100) {
        0..70 => events.push(report(pick(rng, &DELIVERED), 2)),
        70..88 => events.push(report(pick(rng, &FAILURES), 2)),
        // a failure corrected by a later delivery
        88..92 => {
            events.push(report(pick(rng, &FAILURES), 2));
            events.push(report("Delivered", 3));
        }
        _ => {} // no final report yet: pending
    }
    if rng.random_bool(0.05) {
        events.push(report("Sent", 4)); // a late intermediate after the final report
    }
    events
}

/// What the generator meant a report to say.
enum Planned {
    Delivered,
    Failed,
    InFlight,
}

/// A report's meaning from the tables it was drawn from (case as generated).
fn planned(raw: &str) -> Planned {
    if DELIVERED.contains(&raw) {
        Planned::Delivered
    } else if FAILURES.contains(&raw) {
        Planned::Failed
    } else {
        assert!(
            IN_FLIGHT.contains(&raw),
            "{raw:?} is not a generated status"
        );
        Planned::InFlight
    }
}

/// The status a set of events must produce, whatever their order.
fn truth(events: &[Event]) -> MessageStatus {
    let mut sent = false;
    let (mut delivered, mut failed) = (false, false);
    for e in events {
        match e {
            Event::SendFailed { .. } => return MessageStatus::SendFailed,
            Event::Sent { .. } => sent = true,
            // the generator's own tables decide, not the engine's mapping
            Event::Dlr { status, .. } => match planned(status.raw()) {
                Planned::Delivered => delivered = true,
                Planned::Failed => failed = true,
                Planned::InFlight => {}
            },
            // the workload never gives up on a message and carries no engagement
            Event::OutcomeUnknown { .. } | Event::Engaged { .. } => {}
        }
    }
    match (sent, delivered, failed) {
        (false, _, _) => MessageStatus::Processing,
        (true, true, _) => MessageStatus::Delivered,
        (true, false, true) => MessageStatus::DeliveryFailed,
        (true, false, false) => MessageStatus::Sent,
    }
}

/// Generates events for claimed recipients of the given campaigns.
pub fn generate(campaigns: &[(CampaignId, Vec<RecipientId>)], spec: WorkloadSpec) -> Workload {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let start = Utc::now() - Duration::minutes(5);
    let mut events = Vec::new();
    let mut expected_status = HashMap::new();
    let mut expected: HashMap<CampaignId, Counters> = HashMap::new();
    for (campaign, recipients) in campaigns {
        let mut bulk = None;
        for (i, recipient) in recipients.iter().enumerate() {
            let at = start + Duration::milliseconds(i as i64);
            // Mitto answers each bulk request of up to BULK_SIZE messages with one bulk id
            if i % BULK_SIZE == 0 {
                bulk = Some(BulkId::from_uuid(uuid::Uuid::from_u128(rng.random())));
            }
            let mine = message_events(&mut rng, &spec, *campaign, *recipient, bulk, at);
            let status = truth(&mine);
            expected_status.insert(*recipient, status);
            expected.entry(*campaign).or_default().add(status, 1);
            events.extend(mine);
        }
    }
    let duplicates = (events.len() as f64 * spec.dup_ratio) as usize;
    for _ in 0..duplicates {
        let copy = events[rng.random_range(0..events.len())].clone();
        events.push(copy);
    }
    if spec.shuffle_window >= events.len() {
        events.shuffle(&mut rng);
    } else {
        events
            .chunks_mut(spec.shuffle_window.max(1))
            .for_each(|w| w.shuffle(&mut rng));
    }
    Workload {
        events,
        expected_status,
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truth_does_not_depend_on_order() {
        let c = CampaignId::new(1).unwrap();
        let r = RecipientId::new(1).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let spec = WorkloadSpec::default();
            let mut events = message_events(&mut rng, &spec, c, r, None, Utc::now());
            let expected = truth(&events);
            events.reverse();
            assert_eq!(truth(&events), expected);
        }
    }

    #[test]
    fn expected_counters_cover_every_recipient() {
        let c = CampaignId::new(1).unwrap();
        let recipients: Vec<_> = (1..=500).map(|i| RecipientId::new(i).unwrap()).collect();
        let w = generate(&[(c, recipients)], WorkloadSpec::default());
        assert_eq!(w.expected[&c].total(), 500);
        assert_eq!(w.expected_status.len(), 500);
        assert!(w.events.len() > 1000, "sent + reports + duplicates");
    }
}
