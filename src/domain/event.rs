//! The `message-events` topic's records (DESIGN.md section 4), a public contract versioned by
//! `v`. Records are parsed into [`Event`] at the boundary; anything that does not parse is a
//! poison record for `dead_letters`, with the reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BulkId, CampaignId, DeliveryStatus, MessageId, RecipientId};

/// The schema version this build writes and reads.
pub const EVENT_VERSION: u32 = 1;

/// What a recipient did with the links of a marketing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngagementKind {
    /// Opened the offer page (`visit`).
    Visit,
    /// The offer was redeemed (`redemption`), by the shop or by the recipient.
    Redemption,
    /// Opted out (`unsubscribe`), by link or by an inbound STOP.
    Unsubscribe,
}

impl EngagementKind {
    /// The event `type` on the wire.
    pub fn type_name(self) -> &'static str {
        match self {
            EngagementKind::Visit => "visit",
            EngagementKind::Redemption => "redemption",
            EngagementKind::Unsubscribe => "unsubscribe",
        }
    }
}

/// One event about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Mitto accepted the message.
    Sent {
        message_id: MessageId,
        campaign_id: CampaignId,
        recipient_id: RecipientId,
        bulk_id: Option<BulkId>,
        /// The recipient's send attempt (0 first, +1 per retry-failed); an event of an older
        /// attempt than the row's is stale.
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// The message was refused before Mitto accepted it.
    SendFailed {
        campaign_id: CampaignId,
        recipient_id: RecipientId,
        error: String,
        retryable: bool,
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// A delivery report.
    Dlr {
        message_id: MessageId,
        status: DeliveryStatus,
        description: Option<String>,
        at: DateTime<Utc>,
        event_id: Option<String>,
        source: Option<String>,
    },
    /// No final report came and Mitto could not tell within the give-up time: the message is
    /// recorded `unknown` (the reconciler stops asking).
    OutcomeUnknown {
        message_id: MessageId,
        reason: String,
        at: DateTime<Utc>,
    },
    /// A recipient used a link of its message, or opted out. Keyed by the recipient (not by
    /// messageId), so all of one recipient's engagement meets one DlrActor in order, whether
    /// or not its `sent` is applied yet: counting once per recipient is a local decision.
    Engaged {
        kind: EngagementKind,
        campaign_id: CampaignId,
        recipient_id: RecipientId,
        /// The message the link came in, when known (informational).
        message_id: Option<MessageId>,
        /// Redemption: `shop` or `self`; unsubscribe: `link` or `inbound`.
        via: Option<String>,
        at: DateTime<Utc>,
    },
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("record is not valid event JSON: {0}")]
    Malformed(String),
    #[error("unsupported event version {0} (this build reads version {EVENT_VERSION})")]
    UnsupportedVersion(u32),
}

/// The JSON shape, field for field.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    #[serde(rename_all = "camelCase")]
    Sent {
        v: u32,
        message_id: MessageId,
        campaign_id: CampaignId,
        recipient_id: RecipientId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bulk_id: Option<BulkId>,
        #[serde(default, skip_serializing_if = "is_zero")]
        attempt: u32,
        at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    SendFailed {
        v: u32,
        campaign_id: CampaignId,
        recipient_id: RecipientId,
        error: String,
        retryable: bool,
        #[serde(default, skip_serializing_if = "is_zero")]
        attempt: u32,
        at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    Dlr {
        v: u32,
        message_id: MessageId,
        delivery_status: String,
        #[serde(default)]
        description: Option<String>,
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    OutcomeUnknown {
        v: u32,
        message_id: MessageId,
        reason: String,
        at: DateTime<Utc>,
    },
    Visit(WireEngaged),
    Redemption(WireEngaged),
    Unsubscribe(WireEngaged),
}

/// The fields of `visit`, `redemption` and `unsubscribe`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEngaged {
    v: u32,
    campaign_id: CampaignId,
    recipient_id: RecipientId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<MessageId>,
    /// Who redeemed: `shop` or `self`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    /// How an unsubscribe came: `link` or `inbound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<String>,
    at: DateTime<Utc>,
}

/// The values `via` may take per kind (a closed set: they are stored under CHECK constraints).
fn via_allowed(kind: EngagementKind, via: Option<&str>) -> bool {
    matches!(
        (kind, via),
        (EngagementKind::Visit, None)
            | (EngagementKind::Redemption, Some("shop" | "self"))
            | (EngagementKind::Unsubscribe, Some("link" | "inbound"))
    )
}

impl Wire {
    /// The texts of an event are stored verbatim, and Postgres refuses NUL in text: a record
    /// carrying one would fail every checkpoint, so it is poison like any malformed record.
    fn reject_nul(&self) -> Result<(), EventError> {
        let has_nul = |text: Option<&String>| text.is_some_and(|t| t.contains('\0'));
        let field = match self {
            Wire::Sent { .. } => None,
            Wire::SendFailed { error, .. } => has_nul(Some(error)).then_some("error"),
            Wire::Dlr {
                delivery_status,
                description,
                event_id,
                source,
                ..
            } => [
                ("deliveryStatus", Some(delivery_status)),
                ("description", description.as_ref()),
                ("eventId", event_id.as_ref()),
                ("source", source.as_ref()),
            ]
            .into_iter()
            .find_map(|(name, text)| has_nul(text).then_some(name)),
            Wire::OutcomeUnknown { reason, .. } => has_nul(Some(reason)).then_some("reason"),
            Wire::Visit(_) | Wire::Redemption(_) | Wire::Unsubscribe(_) => None,
        };
        match field {
            Some(name) => Err(EventError::Malformed(format!("{name} contains a NUL byte"))),
            None => Ok(()),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Event {
    /// The record key: the messageId, or `r:<recipientId>` for a message never accepted.
    /// All events of one message share a key, hence a partition, hence an order.
    /// The event's `type` on the wire (`visit`, `redemption`, `unsubscribe` for engagement).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Sent { .. } => "sent",
            Event::SendFailed { .. } => "send_failed",
            Event::Dlr { .. } => "dlr",
            Event::OutcomeUnknown { .. } => "outcome_unknown",
            Event::Engaged { kind, .. } => kind.type_name(),
        }
    }

    pub fn key(&self) -> String {
        match self {
            Self::Sent { message_id, .. }
            | Self::Dlr { message_id, .. }
            | Self::OutcomeUnknown { message_id, .. } => message_id.to_string(),
            Self::SendFailed { recipient_id, .. } | Self::Engaged { recipient_id, .. } => {
                format!("r:{recipient_id}")
            }
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let wire = match self.clone() {
            Self::Sent {
                message_id,
                campaign_id,
                recipient_id,
                bulk_id,
                attempt,
                at,
            } => Wire::Sent {
                v: EVENT_VERSION,
                message_id,
                campaign_id,
                recipient_id,
                bulk_id,
                attempt,
                at,
            },
            Self::SendFailed {
                campaign_id,
                recipient_id,
                error,
                retryable,
                attempt,
                at,
            } => Wire::SendFailed {
                v: EVENT_VERSION,
                campaign_id,
                recipient_id,
                error,
                retryable,
                attempt,
                at,
            },
            Self::Dlr {
                message_id,
                status,
                description,
                at,
                event_id,
                source,
            } => Wire::Dlr {
                v: EVENT_VERSION,
                message_id,
                delivery_status: status.raw().to_owned(),
                description,
                at,
                event_id,
                source,
            },
            Self::OutcomeUnknown {
                message_id,
                reason,
                at,
            } => Wire::OutcomeUnknown {
                v: EVENT_VERSION,
                message_id,
                reason,
                at,
            },
            Self::Engaged {
                kind,
                campaign_id,
                recipient_id,
                message_id,
                via,
                at,
            } => {
                let redemption = kind == EngagementKind::Redemption;
                let fields = WireEngaged {
                    v: EVENT_VERSION,
                    campaign_id,
                    recipient_id,
                    message_id,
                    by: via.clone().filter(|_| redemption),
                    via: via.filter(|_| !redemption),
                    at,
                };
                match kind {
                    EngagementKind::Visit => Wire::Visit(fields),
                    EngagementKind::Redemption => Wire::Redemption(fields),
                    EngagementKind::Unsubscribe => Wire::Unsubscribe(fields),
                }
            }
        };
        serde_json::to_vec(&wire).expect("events always serialise")
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        let v = match &wire {
            Wire::Sent { v, .. }
            | Wire::SendFailed { v, .. }
            | Wire::Dlr { v, .. }
            | Wire::OutcomeUnknown { v, .. } => *v,
            Wire::Visit(e) | Wire::Redemption(e) | Wire::Unsubscribe(e) => e.v,
        };
        if v != EVENT_VERSION {
            return Err(EventError::UnsupportedVersion(v));
        }
        wire.reject_nul()?;
        Ok(match wire {
            Wire::Sent {
                message_id,
                campaign_id,
                recipient_id,
                bulk_id,
                attempt,
                at,
                ..
            } => Self::Sent {
                message_id,
                campaign_id,
                recipient_id,
                bulk_id,
                attempt,
                at,
            },
            Wire::SendFailed {
                campaign_id,
                recipient_id,
                error,
                retryable,
                attempt,
                at,
                ..
            } => Self::SendFailed {
                campaign_id,
                recipient_id,
                error,
                retryable,
                attempt,
                at,
            },
            Wire::Dlr {
                message_id,
                delivery_status,
                description,
                at,
                event_id,
                source,
                ..
            } => Self::Dlr {
                message_id,
                status: DeliveryStatus::from_raw(&delivery_status),
                description,
                at,
                event_id,
                source,
            },
            Wire::OutcomeUnknown {
                message_id,
                reason,
                at,
                ..
            } => Self::OutcomeUnknown {
                message_id,
                reason,
                at,
            },
            Wire::Visit(e) => Self::engaged(EngagementKind::Visit, e)?,
            Wire::Redemption(e) => Self::engaged(EngagementKind::Redemption, e)?,
            Wire::Unsubscribe(e) => Self::engaged(EngagementKind::Unsubscribe, e)?,
        })
    }

    /// An engagement event from stored ids (the link routes and the inbound webhook read them
    /// from rows); a message id that does not parse is left out, it is informational.
    pub fn engagement(
        kind: EngagementKind,
        (campaign, recipient): (i64, i64),
        message_id: Option<&str>,
        via: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Self, super::IdError> {
        Ok(Self::Engaged {
            kind,
            campaign_id: CampaignId::new(campaign)?,
            recipient_id: RecipientId::new(recipient)?,
            message_id: message_id.and_then(|m| MessageId::parse(m).ok()),
            via: via.map(str::to_owned),
            at,
        })
    }

    fn engaged(kind: EngagementKind, e: WireEngaged) -> Result<Self, EventError> {
        let via = match kind {
            EngagementKind::Redemption => e.by,
            _ => e.via,
        };
        if !via_allowed(kind, via.as_deref()) {
            return Err(EventError::Malformed(format!(
                "{kind:?} cannot come by or via {via:?}"
            )));
        }
        Ok(Self::Engaged {
            kind,
            campaign_id: e.campaign_id,
            recipient_id: e.recipient_id,
            message_id: e.message_id,
            via,
            at: e.at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_a_nul_byte_in_its_texts_is_poison() {
        let dlr = br#"{"v":1,"type":"dlr","messageId":"M1","deliveryStatus":"Delivered","description":"a\u0000b","at":"2026-11-20T10:00:05Z"}"#;
        let refused = Event::parse(dlr).unwrap_err().to_string();
        assert!(
            refused.contains("description contains a NUL byte"),
            "{refused}"
        );
        let failed = br#"{"v":1,"type":"send_failed","campaignId":42,"recipientId":9002,"error":"\u0000","retryable":false,"at":"2026-11-20T10:00:00Z"}"#;
        assert!(Event::parse(failed).is_err());
    }

    #[test]
    fn the_documented_examples_parse() {
        let sent = br#"{"v":1,"type":"sent","messageId":"01KC69MT19BRK5MSXG1V95YPHX","campaignId":42,"recipientId":9001,"bulkId":"5998ea4a-2403-48d4-b230-998fd4dd63f2","at":"2026-11-20T10:00:00Z"}"#;
        let failed = br#"{"v":1,"type":"send_failed","campaignId":42,"recipientId":9002,"error":"Invalid receiver","retryable":false,"at":"2026-11-20T10:00:00Z"}"#;
        let dlr = br#"{"v":1,"type":"dlr","messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered","description":null,"at":"2026-11-20T10:00:05Z","eventId":"e1","source":"webhook"}"#;
        let sent = Event::parse(sent).unwrap();
        assert_eq!(sent.key(), "01KC69MT19BRK5MSXG1V95YPHX");
        assert_eq!(Event::parse(failed).unwrap().key(), "r:9002");
        assert!(matches!(Event::parse(dlr).unwrap(), Event::Dlr { .. }));
        let unknown = br#"{"v":1,"type":"outcome_unknown","messageId":"01KC69MT19BRK5MSXG1V95YPHX","reason":"no final report within 72 h","at":"2026-11-23T10:00:00Z"}"#;
        let unknown = Event::parse(unknown).unwrap();
        assert_eq!(unknown.key(), "01KC69MT19BRK5MSXG1V95YPHX");
        assert_eq!(Event::parse(&unknown.to_json()).unwrap(), unknown);
        assert_eq!(Event::parse(&sent.to_json()).unwrap(), sent, "round trip");
    }

    #[test]
    fn engagement_events_are_keyed_by_recipient_and_round_trip() {
        let visit = br#"{"v":1,"type":"visit","campaignId":42,"recipientId":9001,"messageId":"01KC69MT19BRK5MSXG1V95YPHX","at":"2026-11-20T10:00:00Z"}"#;
        let redeemed = br#"{"v":1,"type":"redemption","campaignId":42,"recipientId":9001,"by":"shop","at":"2026-11-20T10:00:00Z"}"#;
        let stopped = br#"{"v":1,"type":"unsubscribe","campaignId":42,"recipientId":9001,"via":"inbound","at":"2026-11-20T10:00:00Z"}"#;
        for bytes in [&visit[..], &redeemed[..], &stopped[..]] {
            let event = Event::parse(bytes).unwrap();
            assert_eq!(event.key(), "r:9001");
            assert_eq!(Event::parse(&event.to_json()).unwrap(), event);
        }
        let odd = br#"{"v":1,"type":"unsubscribe","campaignId":42,"recipientId":9001,"via":"fax","at":"2026-11-20T10:00:00Z"}"#;
        assert!(matches!(Event::parse(odd), Err(EventError::Malformed(_))));
    }

    #[test]
    fn poison_records_say_why() {
        assert!(matches!(
            Event::parse(b"not json"),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            Event::parse(br#"{"v":1,"type":"teleported"}"#),
            Err(EventError::Malformed(_))
        ));
        let bad_id = br#"{"v":1,"type":"send_failed","campaignId":0,"recipientId":1,"error":"x","retryable":true,"at":"2026-11-20T10:00:00Z"}"#;
        assert!(matches!(
            Event::parse(bad_id),
            Err(EventError::Malformed(_))
        ));
        let future = br#"{"v":2,"type":"dlr","messageId":"A","deliveryStatus":"Delivered","at":"2026-11-20T10:00:00Z"}"#;
        assert_eq!(Event::parse(future), Err(EventError::UnsupportedVersion(2)));
    }
}
