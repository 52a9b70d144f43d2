//! Mitto's `deliveryStatus` vocabulary and the ONE mapping onto campaignd's outcomes
//! (DESIGN.md section 3). Nothing else in the code base interprets a raw status string.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// What a delivery report means for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
    /// Accepted but not final yet; the message counts as sent.
    InFlight,
}

/// A raw `deliveryStatus` as the provider wrote it, with its meaning.
///
/// The raw text is kept verbatim (it is stored and shown), the outcome is derived once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatus {
    raw: String,
    outcome: DeliveryOutcome,
    recognised: bool,
}

const DELIVERED: &[&str] = &["delivered", "delivrd", "deliveredtohandset"];
const FAILED: &[&str] = &[
    "failure",
    "failed",
    "undelivered",
    "expired",
    "rejected",
    "error",
    "deleted",
    "aborted",
];
const IN_FLIGHT: &[&str] = &[
    "sent",
    "pending",
    "queued",
    "accepted",
    "submitted",
    "enroute",
    "unknown",
];

/// Unrecognised values are logged once each; past this many distinct values a flood of
/// garbage would only grow memory, so further ones are no longer remembered.
const MAX_REMEMBERED_UNRECOGNISED: usize = 1024;

impl DeliveryStatus {
    /// Maps a raw status, case-insensitively. Unrecognised values count as in flight, are
    /// kept raw, and are logged once per distinct value.
    pub fn from_raw(raw: &str) -> Self {
        let key = raw.trim().to_ascii_lowercase();
        let (outcome, recognised) = if DELIVERED.contains(&key.as_str()) {
            (DeliveryOutcome::Delivered, true)
        } else if FAILED.contains(&key.as_str()) {
            (DeliveryOutcome::Failed, true)
        } else {
            (DeliveryOutcome::InFlight, IN_FLIGHT.contains(&key.as_str()))
        };
        if !recognised {
            note_unrecognised(&key);
        }
        Self {
            raw: raw.to_owned(),
            outcome,
            recognised,
        }
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn outcome(&self) -> DeliveryOutcome {
        self.outcome
    }

    pub fn is_recognised(&self) -> bool {
        self.recognised
    }
}

fn note_unrecognised(key: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.len() < MAX_REMEMBERED_UNRECOGNISED && seen.insert(key.to_owned()) {
        tracing::warn!(
            delivery_status = key,
            "unrecognised deliveryStatus; counted as in flight"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryOutcome::*;

    /// Every value of mitto-api.md and DESIGN.md section 3, as providers write them.
    const VOCABULARY: &[(&str, DeliveryOutcome)] = &[
        ("Delivered", Delivered),
        ("delivrd", Delivered),
        ("DELIVRD", Delivered),
        ("DeliveredToHandset", Delivered),
        ("Failure", Failed),
        ("Failed", Failed),
        ("Undelivered", Failed),
        ("UNDELIV", InFlight),
        ("Expired", Failed),
        ("Rejected", Failed),
        ("Error", Failed),
        ("Deleted", Failed),
        ("Aborted", Failed),
        ("Sent", InFlight),
        ("Pending", InFlight),
        ("Queued", InFlight),
        ("Accepted", InFlight),
        ("Submitted", InFlight),
        ("Enroute", InFlight),
        ("Unknown", InFlight),
        ("SomethingNew", InFlight),
    ];

    #[test]
    fn the_whole_vocabulary_maps_as_the_design_says() {
        for (raw, expected) in VOCABULARY {
            let status = DeliveryStatus::from_raw(raw);
            assert_eq!(status.outcome(), *expected, "{raw}");
            assert_eq!(status.raw(), *raw, "raw text is kept verbatim");
        }
    }

    #[test]
    fn undelivered_is_a_failure() {
        assert_eq!(DeliveryStatus::from_raw("undelivered").outcome(), Failed);
    }

    #[test]
    fn mapping_ignores_case_and_surrounding_space() {
        assert_eq!(DeliveryStatus::from_raw(" dElIvErEd ").outcome(), Delivered);
        assert_eq!(DeliveryStatus::from_raw("EXPIRED").outcome(), Failed);
    }

    #[test]
    fn unrecognised_values_are_flagged_but_still_in_flight() {
        let s = DeliveryStatus::from_raw("Teleported");
        assert!(!s.is_recognised());
        assert_eq!(s.outcome(), InFlight);
        assert!(DeliveryStatus::from_raw("Enroute").is_recognised());
    }
}
