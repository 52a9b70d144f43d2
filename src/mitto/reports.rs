//! Delivery reports as webhooks post them (mitto-api.md, "Delivery report webhook"): one object
//! or an array, in Mitto's status-lookup shape or with the field aliases integrations meet.
//! Parsed into `dlr` events; one bad report refuses the whole request, so a 400 never leaves
//! half a request produced.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::wire::parse_timestamp;
use crate::domain::{DeliveryStatus, Event, MessageId};

const ID: &[&str] = &["messageId", "message_id", "id", "MessageId", "msgid"];
const STATUS: &[&str] = &[
    "deliveryStatus",
    "status",
    "Status",
    "dlr_status",
    "delivery_status",
];
const TIME: &[&str] = &["updatedAt", "doneAt", "timestamp", "Timestamp", "createdAt"];
const ERROR: &[&str] = &["error", "Error", "description", "errorMessage"];
const EVENT_ID: &[&str] = &["eventId", "event_id", "EventId"];

/// At most this many reports per request.
pub const MAX_REPORTS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a report object or an array of them")]
    NotAnObject,
    #[error("report {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("a request carries at most {MAX_REPORTS} reports")]
    TooMany,
    #[error("the request carries no report")]
    Empty,
}

/// Parses a webhook body into `dlr` events; `now` stands in for a missing report time.
pub fn parse_reports(body: &[u8], now: DateTime<Utc>) -> Result<Vec<Event>, ReportError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ReportError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(ReportError::NotAnObject),
    };
    if items.is_empty() {
        return Err(ReportError::Empty);
    }
    if items.len() > MAX_REPORTS {
        return Err(ReportError::TooMany);
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            parse_one(item, now).map_err(|reason| ReportError::Invalid { index, reason })
        })
        .collect()
}

fn field<'a>(item: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| item.get(n))
        .filter(|v| !v.is_null())
}

fn text(item: &Value, names: &[&str]) -> Option<String> {
    field(item, names).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn parse_one(item: &Value, now: DateTime<Utc>) -> Result<Event, String> {
    if !item.is_object() {
        return Err("not an object".into());
    }
    let id =
        text(item, ID).ok_or("no message id (messageId, message_id, id, MessageId or msgid)")?;
    let message_id = MessageId::parse(&id).map_err(|e| e.to_string())?;
    let status = text(item, STATUS)
        .ok_or("no status (deliveryStatus, status, Status, dlr_status or delivery_status)")?;
    if status.trim().is_empty() {
        return Err("status is empty".into());
    }
    let at = match field(item, TIME) {
        None => now,
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(|| format!("timestamp {n} is not unix seconds"))?,
        Some(Value::String(s)) => {
            parse_timestamp(s).ok_or_else(|| format!("timestamp {s:?} is not a date"))?
        }
        Some(other) => return Err(format!("timestamp {other} is not a date")),
    };
    let (description, event_id) = (text(item, ERROR), text(item, EVENT_ID));
    reject_nul(&[
        ("status", Some(&status)),
        ("description", description.as_ref()),
        ("eventId", event_id.as_ref()),
    ])?;
    Ok(Event::Dlr {
        message_id,
        status: DeliveryStatus::from_raw(&status),
        description,
        at,
        event_id,
        source: Some("webhook".into()),
    })
}

/// These texts are stored verbatim, and Postgres refuses NUL in text: one let through would
/// fail every checkpoint that carries it.
fn reject_nul(fields: &[(&str, Option<&String>)]) -> Result<(), String> {
    match fields
        .iter()
        .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
    {
        Some((name, _)) => Err(format!(
            "{name} contains a NUL byte, which text may not hold"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn the_status_lookup_shape_parses() {
        let body = br#"{"messageId":"01KC69MT19BRK5MSXG1V95YPHX","deliveryStatus":"Delivered","description":null,"updatedAt":"2025-12-11T08:50:10.4140965Z"}"#;
        let events = parse_reports(body, now()).unwrap();
        let Event::Dlr {
            message_id,
            status,
            at,
            ..
        } = &events[0]
        else {
            panic!()
        };
        assert_eq!(message_id.as_str(), "01KC69MT19BRK5MSXG1V95YPHX");
        assert_eq!(status.raw(), "Delivered");
        assert_eq!(at.to_rfc3339(), "2025-12-11T08:50:10.414096500+00:00");
    }

    #[test]
    fn a_report_with_a_nul_byte_is_refused_naming_the_field() {
        let body =
            br#"[{"msgid":"A1","status":"Delivered"},{"msgid":"A2","status":"Deliv\u0000ered"}]"#;
        let refused = parse_reports(body, now()).unwrap_err().to_string();
        assert!(
            refused.starts_with("report 1: status contains a NUL byte"),
            "{refused}"
        );
        let body = br#"{"msgid":"A1","status":"Failed","description":"abs\u0000ent"}"#;
        assert!(parse_reports(body, now()).is_err());
    }

    #[test]
    fn aliases_and_arrays_parse() {
        let body = br#"[{"msgid":"A1","dlr_status":"UNDELIVERED","timestamp":1800000100,"errorMessage":"absent"},
                        {"id":"A2","Status":"delivrd","event_id":"e-2"}]"#;
        let events = parse_reports(body, now()).unwrap();
        assert_eq!(events.len(), 2);
        let Event::Dlr {
            message_id,
            description,
            at,
            ..
        } = &events[0]
        else {
            panic!()
        };
        assert_eq!(
            (message_id.as_str(), description.as_deref()),
            ("A1", Some("absent"))
        );
        assert_eq!(at.timestamp(), 1_800_000_100);
        let Event::Dlr { at, event_id, .. } = &events[1] else {
            panic!()
        };
        assert_eq!((*at, event_id.as_deref()), (now(), Some("e-2")));
    }

    #[test]
    fn one_bad_report_refuses_the_request() {
        assert!(matches!(
            parse_reports(b"{", now()),
            Err(ReportError::NotJson(_))
        ));
        assert_eq!(parse_reports(b"42", now()), Err(ReportError::NotAnObject));
        assert_eq!(parse_reports(b"[]", now()), Err(ReportError::Empty));
        let missing_status = br#"[{"messageId":"A","status":"Sent"},{"messageId":"B"}]"#;
        assert!(matches!(
            parse_reports(missing_status, now()),
            Err(ReportError::Invalid { index: 1, .. })
        ));
        let bad_time = br#"{"messageId":"A","status":"Sent","updatedAt":"soon"}"#;
        assert!(matches!(
            parse_reports(bad_time, now()),
            Err(ReportError::Invalid { index: 0, .. })
        ));
    }
}
