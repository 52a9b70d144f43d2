//! Mitto's JSON shapes, field for field (mitto-api.md). Only the client and the simulator
//! touch these; the rest of campaignd sees domain types.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::TrafficAccountId;

pub const BULK_SEND_PATH: &str = "/api/v1.1/Messages/sendmessagesbulk";
pub const SINGLE_SEND_PATH: &str = "/api/v1.1/Messages/send";
pub const MESSAGE_PATH: &str = "/api/v1.1/Messages";
pub const API_KEY_HEADER: &str = "X-Mitto-API-Key";
/// Mitto refuses bulk requests larger than this.
pub const MAX_BULK_MESSAGES: usize = 1000;

/// Mitto's sender rule: 1–16 digits, or 1–11 alphanumerics (space, dot, underscore, hyphen
/// allowed).
pub fn valid_sender(sender: &str) -> bool {
    let numeric = sender.bytes().all(|b| b.is_ascii_digit()) && (1..=16).contains(&sender.len());
    let alphanumeric = sender
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" ._-".contains(&b))
        && (1..=11).contains(&sender.len());
    numeric || alphanumeric
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    pub traffic_account_id: TrafficAccountId,
    pub destination: String,
    pub sms: Sms,
    /// Our own reference (e.g. the recipient id), echoed by status lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sms {
    pub text: String,
    pub sender: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkRequest {
    pub messages: Vec<SendMessage>,
}

/// Response of both send endpoints; the single send has no `bulkId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_id: Option<String>,
    pub messages: Vec<SendResponseItem>,
}

/// One item of a send response: a `messageId`, or an `error` for that item alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResponseItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub code: String,
    pub message: String,
}

/// `GET /api/v1.1/Messages/{messageId}`; also the body the simulator's DLR webhook posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusResponse {
    pub message_id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub sender: Option<SenderInfo>,
    pub delivery_status: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub message_parts: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub traffic_account_id: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SenderInfo {
    pub id: String,
    pub name: String,
}

/// ASP.NET's ProblemDetails, as Mitto answers a 400.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProblemDetails {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
}

impl ProblemDetails {
    /// One line for logs and stored errors: the title, then the field errors.
    pub fn summary(&self) -> String {
        let title = self.title.as_deref().unwrap_or("request refused");
        match &self.errors {
            Some(errors) => format!("{title}: {errors}"),
            None => title.to_owned(),
        }
    }
}

/// Formats a timestamp the way Mitto (.NET) does: 7 fractional digits and `Z`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    // chrono has no 7-digit fraction specifier: .NET ticks are 100 ns
    let ticks = at.timestamp_subsec_nanos() / 100;
    format!("{}.{ticks:07}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

/// Parses Mitto's timestamps leniently: RFC 3339 with any number of fractional digits, or a
/// zone-less form read as UTC (seen in .NET serialisers).
pub fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_timestamps_parse_and_round_trip() {
        let at = parse_timestamp("2025-12-11T08:50:04.5000993Z").unwrap();
        assert_eq!(at.timestamp_subsec_nanos(), 500_099_300);
        assert_eq!(format_timestamp(at), "2025-12-11T08:50:04.5000993Z");
        assert!(parse_timestamp("2025-12-11T08:50:04.5").is_some());
        assert!(parse_timestamp("2025-12-11T10:50:04+02:00").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn the_documented_bulk_request_round_trips() {
        let doc = r#"{"messages":[{"trafficAccountId":"e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7","destination":"+306984303406","sms":{"text":"Hi, test msg.","sender":"Sendly"}}]}"#;
        let parsed: BulkRequest = serde_json::from_str(doc).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), doc);
    }
}
