//! Campaign and message state machines. Every writer of a status goes through these.

use std::fmt;

/// A status string that is not one of ours (from the database or a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {value:?}")]
pub struct StatusError {
    pub kind: &'static str,
    pub value: String,
}

/// A campaign transition that the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("campaign is {from}; it cannot become {to}")]
pub struct TransitionRefused {
    pub from: CampaignStatus,
    pub to: CampaignStatus,
}

/// Where a campaign is in its life.
///
/// ```text
/// draft ──► scheduled ──► sending ⇄ paused
///   │  ◄──────┘  │           │  │      │
///   └────────────┼──────►────┘  ├─► completed ─┐
///                └─► cancelled ◄┴─────◄──┘     │ retry-failed
///                               └─► failed ────┴──► sending
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    Draft,
    Scheduled,
    Sending,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl CampaignStatus {
    pub const ALL: [Self; 7] = [
        Self::Draft,
        Self::Scheduled,
        Self::Sending,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The one table of allowed campaign transitions.
    pub fn can_become(self, to: Self) -> bool {
        use CampaignStatus::*;
        matches!(
            (self, to),
            (Draft, Scheduled | Sending)
                | (Scheduled, Draft | Sending | Cancelled)
                | (Sending, Paused | Completed | Failed | Cancelled)
                | (Paused, Sending | Cancelled)
                // retry-failed reopens a finished campaign for its retryable failures
                | (Completed | Failed, Sending)
        )
    }

    pub fn transition(self, to: Self) -> Result<Self, TransitionRefused> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionRefused { from: self, to })
        }
    }

    /// Enqueue may start a campaign only from these (DESIGN.md section 5).
    pub fn can_start(self) -> bool {
        matches!(self, Self::Draft | Self::Scheduled | Self::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StatusError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StatusError {
                kind: "campaign",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one message (one recipient of one campaign) is.
///
/// Failures keep their origin: a send refused before Mitto accepted it is final, while a
/// failure that came from a delivery report may still be corrected by a later `Delivered`
/// report (providers do this). Both are stored as `failed`; `sent_at` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
// the schema's names are `MessageStatus::name`, which serialises it
#[schema(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Processing,
    Sent,
    Delivered,
    SendFailed,
    DeliveryFailed,
    Cancelled,
    /// Accepted, but no final report came and Mitto could not tell within the reconciler's
    /// give-up time: final for counting (neither delivered nor failed), though a report that
    /// does arrive later still settles it.
    Unknown,
    /// Never sent: its contact opted out (or reached the tenant's marketing cap) after enqueue,
    /// found when its batch was claimed; its credits are refunded.
    Skipped,
}

impl serde::Serialize for MessageStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl MessageStatus {
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Processing,
        Self::Sent,
        Self::Delivered,
        Self::SendFailed,
        Self::DeliveryFailed,
        Self::Cancelled,
        Self::Unknown,
        Self::Skipped,
    ];

    /// The forward-only rule: `Some(to)` when moving to `to` is progress, `None` when the
    /// event is a duplicate, a regression or arrives after a final state.
    pub fn advance(self, to: Self) -> Option<Self> {
        use MessageStatus::*;
        let allowed = matches!(
            (self, to),
            // a `sent` is a fact even when the claim was never seen (upstream producers)
            (Queued, Processing | Sent | SendFailed | Cancelled | Skipped)
                | (Processing, Sent | SendFailed | Cancelled | Skipped)
                | (Sent, Delivered | DeliveryFailed | Unknown)
                | (Unknown, Delivered | DeliveryFailed)
                | (DeliveryFailed, Delivered)
        );
        allowed.then_some(to)
    }

    /// No event can move a message out of a final state (bar the `DeliveryFailed → Delivered`
    /// correction, which [`MessageStatus::advance`] allows explicitly).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::SendFailed
                | Self::DeliveryFailed
                | Self::Cancelled
                | Self::Unknown
                | Self::Skipped
        )
    }

    /// The name the API gives it (the same as its JSON form): failures are told apart.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::SendFailed => "send_failed",
            Self::DeliveryFailed => "delivery_failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
            Self::Skipped => "skipped",
        }
    }

    /// The value stored in `campaign_recipients.status`.
    pub fn as_db_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::SendFailed | Self::DeliveryFailed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
            Self::Skipped => "skipped",
        }
    }

    /// Reads a stored status; `was_sent` (a non-null `sent_at`) tells the two failures apart.
    pub fn from_db(s: &str, was_sent: bool) -> Result<Self, StatusError> {
        Ok(match s {
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "failed" if was_sent => Self::DeliveryFailed,
            "failed" => Self::SendFailed,
            "cancelled" => Self::Cancelled,
            "unknown" => Self::Unknown,
            "skipped" => Self::Skipped,
            other => {
                return Err(StatusError {
                    kind: "message",
                    value: other.to_owned(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How far along its life a message is; progress must strictly increase it.
    fn rank(s: MessageStatus) -> u8 {
        use MessageStatus::*;
        match s {
            Queued => 0,
            Processing => 1,
            Sent => 2,
            Unknown => 3,
            SendFailed | DeliveryFailed | Cancelled | Skipped => 4,
            Delivered => 5,
        }
    }

    fn any_message_status() -> impl Strategy<Value = MessageStatus> {
        proptest::sample::select(MessageStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn no_sequence_of_events_moves_a_message_backwards(
            events in proptest::collection::vec(any_message_status(), 0..64)
        ) {
            let mut status = MessageStatus::Queued;
            let mut changes = 0;
            for to in events {
                if let Some(next) = status.advance(to) {
                    prop_assert!(rank(next) > rank(status), "{status:?} -> {next:?}");
                    prop_assert_eq!(next, to);
                    status = next;
                    changes += 1;
                }
            }
            // strictly increasing ranks bound the number of changes: no oscillation
            prop_assert!(changes <= 5);
        }

        #[test]
        fn duplicates_never_change_anything(s in any_message_status()) {
            prop_assert_eq!(s.advance(s), None);
        }
    }

    #[test]
    fn a_late_sent_after_delivered_changes_nothing() {
        assert_eq!(MessageStatus::Delivered.advance(MessageStatus::Sent), None);
        assert_eq!(
            MessageStatus::Delivered.advance(MessageStatus::DeliveryFailed),
            None
        );
    }

    #[test]
    fn a_delivered_report_corrects_a_delivery_failure_but_not_a_send_failure() {
        use MessageStatus::*;
        assert_eq!(DeliveryFailed.advance(Delivered), Some(Delivered));
        assert_eq!(SendFailed.advance(Delivered), None);
    }

    #[test]
    fn an_unknown_outcome_ends_waiting_but_a_late_report_still_settles_it() {
        use MessageStatus::*;
        assert_eq!(Sent.advance(Unknown), Some(Unknown));
        assert!(Unknown.is_final());
        assert_eq!(Unknown.advance(Delivered), Some(Delivered));
        assert_eq!(Unknown.advance(DeliveryFailed), Some(DeliveryFailed));
        assert_eq!(
            Unknown.advance(Sent),
            None,
            "an in-flight answer changes nothing"
        );
        assert_eq!(Delivered.advance(Unknown), None);
        assert_eq!(Processing.advance(Unknown), None, "only accepted messages");
    }

    #[test]
    fn both_failures_are_stored_as_failed_and_read_back_apart() {
        use MessageStatus::*;
        for s in MessageStatus::ALL {
            let was_sent = !matches!(s, Queued | Processing | SendFailed | Cancelled | Skipped);
            assert_eq!(MessageStatus::from_db(s.as_db_str(), was_sent), Ok(s));
        }
        assert!(MessageStatus::from_db("bounced", true).is_err());
    }

    #[test]
    fn campaign_transitions_follow_the_design() {
        use CampaignStatus::*;
        assert!(Draft.can_become(Sending));
        assert!(Paused.can_become(Sending));
        assert!(Sending.can_become(Paused));
        assert!(!Completed.can_become(Paused));
        assert!(!Cancelled.can_become(Sending));
        assert!(!Draft.can_become(Completed));
        assert_eq!(
            Cancelled.transition(Draft),
            Err(TransitionRefused {
                from: Cancelled,
                to: Draft
            })
        );
        assert!(Draft.can_start() && Scheduled.can_start() && Paused.can_start());
        assert!(!Sending.can_start() && !Completed.can_start());
        for s in CampaignStatus::ALL {
            assert_eq!(CampaignStatus::parse(s.as_str()), Ok(s));
            assert!(
                !s.can_become(s),
                "{s} -> {s} must not count as a transition"
            );
        }
    }
}
