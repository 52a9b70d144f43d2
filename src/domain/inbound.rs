//! Mobile-originated (inbound) SMS: the payloads integrations post to us, and the opt-out
//! keywords that turn a reply into a STOP.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Opt-out keywords used when a tenant has not configured its own.
pub const DEFAULT_STOP_KEYWORDS: &[&str] = &[
    "STOP",
    "ΣΤΟΠ",
    "UNSUBSCRIBE",
    "STOPALL",
    "CANCEL",
    "END",
    "QUIT",
];

/// Most messages one request may carry.
pub const MAX_INBOUND_MESSAGES: usize = 1000;

/// Longest inbound text we keep, in characters: a concatenated SMS tops out well below this.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Longest phone number, sender id or message id, in characters.
const MAX_ID_CHARS: usize = 128;

/// Last second of year 9999. Seconds beyond it are almost always milliseconds sent by mistake;
/// refusing them beats recording a reply as arriving in the year 55 000.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Folds a text to the form keywords are compared in, so that every way a phone keyboard can
/// spell a keyword compares equal: compatibility decomposition (full-width `ＳＴＯＰ` becomes
/// `STOP`), accents dropped (`Στόπ` becomes `Στοπ`), lower case with final sigma folded to `σ`,
/// surrounding punctuation stripped and runs of whitespace collapsed to one space.
pub fn normalize(text: &str) -> String {
    let unaccented: String = text.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    let folded = unaccented.to_lowercase().replace('ς', "σ");
    let words: Vec<&str> = strip_punctuation(&folded).split_whitespace().collect();
    words.join(" ")
}

/// Drops everything that is neither a letter nor a digit from both ends (`.`, `!`, quotes,
/// whitespace, emoji).
fn strip_punctuation(text: &str) -> &str {
    text.trim_matches(|c: char| !c.is_alphanumeric())
}

/// Keywords (normalised) that opt out as the first word of a longer message.
const LEADING_KEYWORDS: &[&str] = &["stop", "στοπ", "unsubscribe", "stopall"];

/// A set of opt-out keywords, held in [`normalize`]d form so that matching a message is a
/// set lookup. Entries that normalise to nothing are dropped, so a blank message is never a
/// STOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopKeywords {
    keywords: HashSet<String>,
}

impl StopKeywords {
    pub fn new(list: &[String]) -> Self {
        let keywords = list
            .iter()
            .map(|k| normalize(k))
            .filter(|k| !k.is_empty())
            .collect();
        Self { keywords }
    }

    /// Whether a message opts out: its whole normalised text is a keyword (`STOP ALL` when
    /// that is configured), or its first word is an unambiguous one — STOP, ΣΤΟΠ, UNSUBSCRIBE,
    /// STOPALL — (`Stop please`, `stop.`). Everyday words in the list (CANCEL, END, QUIT) opt
    /// out only as the whole message, so "Cancel my order" does not. A keyword inside a longer
    /// word (`stopwatch`) or after another word (`don't stop`) is not an opt-out.
    pub fn is_stop(&self, text: &str) -> bool {
        let normalized = normalize(text);
        let first_word = normalized.split(' ').next().map(strip_punctuation);
        self.keywords.contains(&normalized)
            || first_word.is_some_and(|word| {
                self.keywords.contains(word) && LEADING_KEYWORDS.contains(&word)
            })
    }
}

impl Default for StopKeywords {
    fn default() -> Self {
        let list: Vec<String> = DEFAULT_STOP_KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .collect();
        Self::new(&list)
    }
}

/// One inbound SMS as an integration reported it. `from` is non-blank and every string holds
/// no NUL and fits its limit; `from` is kept as received (not E.164), because inbound numbers
/// come in national and short-code forms too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The subscriber's number, as received.
    pub from: String,
    /// Our sender the reply went to: a number, short code or alphanumeric id.
    pub to: Option<String>,
    /// The message text; may be empty (a blank SMS is odd but real).
    pub text: String,
    /// The integration's id for the message.
    pub message_id: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
}

/// What an inbound message carries, each under the names integrations are known to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    From,
    To,
    Text,
    MessageId,
    ReceivedAt,
}

impl Field {
    /// Keys tried in order; the first present and non-null wins. A dotted key is also looked
    /// up as a path into nested objects (`sms.text` finds `{"sms": {"text": …}}`).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::From => &["from", "sender", "msisdn", "originator", "From", "source"],
            Field::To => &[
                "to",
                "destination",
                "recipient",
                "To",
                "shortcode",
                "receiver",
            ],
            Field::Text => &["text", "message", "body", "Text", "content", "sms.text"],
            Field::MessageId => &["messageId", "message_id", "id", "MessageId"],
            Field::ReceivedAt => &[
                "receivedAt",
                "timestamp",
                "createdAt",
                "received_at",
                "Timestamp",
            ],
        }
    }

    fn max_chars(self) -> usize {
        match self {
            Field::Text => MAX_TEXT_CHARS,
            _ => MAX_ID_CHARS,
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.aliases()[0])
    }
}

/// Why an inbound payload was refused. Each message is fit for a 400 answer; retrying the
/// same body can never help, the sender has to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object or an array of objects")]
    NotMessages,
    #[error("{0} messages in one request; at most {MAX_INBOUND_MESSAGES} are accepted")]
    TooMany(usize),
    #[error("item {index}: not a JSON object")]
    NotAnObject { index: usize },
    #[error("item {index}: `{field}` is missing (accepted names: {})", .field.aliases().join(", "))]
    Missing { index: usize, field: Field },
    #[error("item {index}: `{key}` must be {expected}")]
    WrongType {
        index: usize,
        key: &'static str,
        expected: &'static str,
    },
    #[error("item {index}: `{key}` is longer than {max} characters")]
    TooLong {
        index: usize,
        key: &'static str,
        max: usize,
    },
    #[error("item {index}: `{key}` contains a NUL character")]
    ContainsNul { index: usize, key: &'static str },
    #[error("item {index}: `{key}` is neither an RFC 3339 time nor unix seconds")]
    BadTime { index: usize, key: &'static str },
}

/// Parses a webhook body holding one inbound message object or an array of up to
/// [`MAX_INBOUND_MESSAGES`]. The body's byte size is the HTTP layer's limit to enforce.
pub fn parse_inbound(body: &[u8]) -> Result<Vec<InboundMessage>, InboundError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| InboundError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => return Err(InboundError::NotMessages),
    };
    if items.len() > MAX_INBOUND_MESSAGES {
        return Err(InboundError::TooMany(items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_item(index, item))
        .collect()
}

fn parse_item(index: usize, item: &Value) -> Result<InboundMessage, InboundError> {
    let Value::Object(fields) = item else {
        return Err(InboundError::NotAnObject { index });
    };
    let item = Item { index, fields };
    let from = item
        .string(Field::From)?
        .filter(|from| !from.trim().is_empty());
    Ok(InboundMessage {
        from: from.ok_or_else(|| item.missing(Field::From))?,
        to: item.string(Field::To)?.filter(|to| !to.trim().is_empty()),
        text: item
            .string(Field::Text)?
            .ok_or_else(|| item.missing(Field::Text))?,
        message_id: item.string(Field::MessageId)?.filter(|id| !id.is_empty()),
        received_at: item.time()?,
    })
}

/// One array element being read, with its index for error messages.
struct Item<'a> {
    index: usize,
    fields: &'a Map<String, Value>,
}

impl Item<'_> {
    /// The first alias present with a non-null value, and the key it was found under.
    fn find(&self, field: Field) -> Option<(&'static str, &Value)> {
        field
            .aliases()
            .iter()
            .find_map(|&key| lookup(self.fields, key).map(|value| (key, value)))
    }

    /// A string field, checked for NUL and length. Ids and numbers may arrive as JSON
    /// integers (`"msisdn": 306984303406`) and are kept as their digits; text must be a string.
    fn string(&self, field: Field) -> Result<Option<String>, InboundError> {
        let Some((key, value)) = self.find(field) else {
            return Ok(None);
        };
        let s = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) if field != Field::Text && (n.is_u64() || n.is_i64()) => n.to_string(),
            _ => return Err(self.wrong_type(key, field)),
        };
        self.check(key, field.max_chars(), &s)?;
        Ok(Some(s))
    }

    fn time(&self) -> Result<Option<DateTime<Utc>>, InboundError> {
        let Some((key, value)) = self.find(Field::ReceivedAt) else {
            return Ok(None);
        };
        if let Value::String(s) = value {
            self.check(key, MAX_ID_CHARS, s)?;
        }
        let bad = InboundError::BadTime {
            index: self.index,
            key,
        };
        parse_time(value).map(Some).ok_or(bad)
    }

    fn check(&self, key: &'static str, max: usize, s: &str) -> Result<(), InboundError> {
        let index = self.index;
        if s.contains('\0') {
            return Err(InboundError::ContainsNul { index, key });
        }
        if s.chars().count() > max {
            return Err(InboundError::TooLong { index, key, max });
        }
        Ok(())
    }

    fn missing(&self, field: Field) -> InboundError {
        InboundError::Missing {
            index: self.index,
            field,
        }
    }

    fn wrong_type(&self, key: &'static str, field: Field) -> InboundError {
        let expected = match field {
            Field::Text => "a string",
            _ => "a string or an integer",
        };
        InboundError::WrongType {
            index: self.index,
            key,
            expected,
        }
    }
}

/// A non-null value under `key`, trying the key as written first and then, for a dotted key,
/// as a path into nested objects.
fn lookup<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let nested = || {
        let (head, rest) = key.split_once('.')?;
        lookup(fields.get(head)?.as_object()?, rest)
    };
    fields.get(key).filter(|v| !v.is_null()).or_else(nested)
}

/// RFC 3339 (any number of fractional digits, `T` or a space between date and time), the same
/// without an offset taken as UTC (what .NET emits), or unix seconds as a number or a string.
fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .and_then(unix_seconds),
        Value::String(s) => parse_time_text(s.trim()),
        _ => None,
    }
}

fn parse_time_text(s: &str) -> Option<DateTime<Utc>> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().and_then(unix_seconds);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"));
    naive.ok().map(|t| t.and_utc())
}

fn unix_seconds(secs: i64) -> Option<DateTime<Utc>> {
    if !(0..=MAX_UNIX_SECONDS).contains(&secs) {
        return None;
    }
    DateTime::from_timestamp(secs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn keywords() -> StopKeywords {
        StopKeywords::new(&["STOP".into(), "ΣΤΟΠ".into(), "UNSUBSCRIBE".into()])
    }

    fn one(body: &str) -> InboundMessage {
        let mut messages = parse_inbound(body.as_bytes()).expect("valid body");
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    fn refused(body: &str) -> InboundError {
        parse_inbound(body.as_bytes()).expect_err("body should be refused")
    }

    #[test]
    fn stop_matches_across_case_accents_scripts_and_width() {
        let k = keywords();
        for text in [
            "STOP",
            "stop",
            "Stop",
            "ΣΤΟΠ",
            "στοπ",
            "Στόπ",
            "unsubscribe",
            "ＳＴＯＰ",
            "  stop  ",
        ] {
            assert!(k.is_stop(text), "{text:?} should be a STOP");
        }
    }

    #[test]
    fn a_keyword_followed_by_more_words_or_punctuation_is_a_stop() {
        let k = keywords();
        for text in [
            "Stop please",
            "stop.",
            "STOP!",
            "stop, thanks",
            "\"Stop\"",
            "ΣΤΟΠ!!",
        ] {
            assert!(k.is_stop(text), "{text:?} should be a STOP");
        }
    }

    #[test]
    fn everyday_keywords_opt_out_only_as_the_whole_message() {
        let k = StopKeywords::default();
        assert!(k.is_stop("Cancel"));
        assert!(!k.is_stop("Cancel my order please"));
        assert!(!k.is_stop("End of sale?"));
    }

    #[test]
    fn a_keyword_inside_a_word_or_after_another_word_is_not_a_stop() {
        let k = keywords();
        for text in [
            "don't stop",
            "stopwatch",
            "nonstop",
            "yes",
            "",
            "   ",
            "!!!",
        ] {
            assert!(!k.is_stop(text), "{text:?} should not be a STOP");
        }
    }

    #[test]
    fn a_multi_word_keyword_matches_the_whole_message() {
        let k = StopKeywords::new(&["STOP ALL".into()]);
        assert!(k.is_stop("stop   all"));
        assert!(!k.is_stop("stop"));
    }

    #[test]
    fn blank_keyword_entries_are_ignored() {
        let k = StopKeywords::new(&["".into(), " . ".into()]);
        assert!(!k.is_stop(""));
        assert!(!k.is_stop("."));
    }

    #[test]
    fn normalize_folds_width_accents_case_final_sigma_and_whitespace() {
        assert_eq!(normalize("  ＳＴＯＰ \t\n ALL!  "), "stop all");
        assert_eq!(normalize("Στόπ."), "στοπ");
        assert_eq!(normalize("ΤΕΛΟΣ"), "τελοσ");
        assert_eq!(normalize("τέλος"), "τελοσ");
        assert_eq!(normalize("Café"), "cafe");
    }

    #[test]
    fn default_keywords_cover_the_usual_opt_out_words() {
        let k = StopKeywords::default();
        for text in [
            "stop",
            "Στοπ",
            "unsubscribe",
            "stopall",
            "cancel",
            "end",
            "quit",
        ] {
            assert!(k.is_stop(text), "{text:?} should be a STOP");
        }
        assert!(!k.is_stop("hello"));
    }

    #[test]
    fn a_single_object_becomes_one_message() {
        let m = one(
            r#"{"from":"+306984303406","to":"ACME","text":"STOP","messageId":"m-1",
                "receivedAt":"2024-05-01T10:00:00Z"}"#,
        );
        assert_eq!(
            m,
            InboundMessage {
                from: "+306984303406".into(),
                to: Some("ACME".into()),
                text: "STOP".into(),
                message_id: Some("m-1".into()),
                received_at: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
            }
        );
    }

    #[test]
    fn an_array_becomes_messages_in_order_with_optional_fields_absent() {
        let messages =
            parse_inbound(br#"[{"from":"1","text":"a"},{"from":"2","text":"b","to":null}]"#)
                .unwrap();
        let summary: Vec<_> = messages
            .iter()
            .map(|m| (m.from.as_str(), m.text.as_str(), m.to.is_none()))
            .collect();
        assert_eq!(summary, [("1", "a", true), ("2", "b", true)]);
        assert!(parse_inbound(b"[]").unwrap().is_empty());
    }

    #[test]
    fn provider_field_names_are_understood() {
        let m = one(
            r#"{"msisdn":306984303406,"shortcode":"54321","sms":{"text":"Stop"},
                "message_id":"abc","timestamp":1714557600}"#,
        );
        assert_eq!(m.from, "306984303406");
        assert_eq!(m.to.as_deref(), Some("54321"));
        assert_eq!(m.text, "Stop");
        assert_eq!(m.message_id.as_deref(), Some("abc"));
        assert_eq!(m.received_at, Utc.timestamp_opt(1_714_557_600, 0).single());

        let m = one(r#"{"From":"+1555","Text":"hi","MessageId":7,"sms.text":"ignored"}"#);
        assert_eq!((m.from.as_str(), m.text.as_str()), ("+1555", "hi"));
        assert_eq!(m.message_id.as_deref(), Some("7"));
        assert_eq!(one(r#"{"originator":"x","sms.text":"y"}"#).text, "y");
    }

    #[test]
    fn the_first_listed_alias_wins_when_several_are_present() {
        let m = one(r#"{"source":"api","sender":"+1555","content":"b","message":"a"}"#);
        assert_eq!((m.from.as_str(), m.text.as_str()), ("+1555", "a"));
    }

    #[test]
    fn received_at_accepts_lenient_rfc3339_and_unix_seconds() {
        let at = |t: &str| one(&format!(r#"{{"from":"1","text":"x","createdAt":{t}}}"#));
        let expected = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        let seven_digits = at(r#""2024-05-01T13:00:00.1234567+03:00""#)
            .received_at
            .unwrap();
        assert_eq!(seven_digits.timestamp(), expected.timestamp());
        assert_eq!(seven_digits.timestamp_subsec_nanos(), 123_456_700);
        for t in [
            r#""2024-05-01 10:00:00Z""#,
            r#""2024-05-01T10:00:00.0000000""#,
            r#""1714557600""#,
            "1714557600",
            "1714557600.5",
        ] {
            assert_eq!(at(t).received_at, Some(expected), "{t}");
        }
    }

    #[test]
    fn a_time_that_is_not_a_time_is_refused_naming_the_key() {
        for t in [r#""yesterday""#, "1714557600000", "-5", "true"] {
            let body = format!(r#"{{"from":"1","text":"x","receivedAt":{t}}}"#);
            assert_eq!(
                refused(&body),
                InboundError::BadTime {
                    index: 0,
                    key: "receivedAt"
                },
                "{t}"
            );
        }
    }

    #[test]
    fn a_missing_sender_or_text_is_refused_naming_the_item_and_field() {
        let err = refused(r#"[{"from":"1","text":"a"},{"text":"b"}]"#);
        assert_eq!(
            err,
            InboundError::Missing {
                index: 1,
                field: Field::From
            }
        );
        assert!(err.to_string().starts_with("item 1: `from` is missing"));
        assert!(err.to_string().contains("msisdn"));
        assert_eq!(
            refused(r#"{"from":"  ","text":"b"}"#),
            InboundError::Missing {
                index: 0,
                field: Field::From
            }
        );
        assert_eq!(
            refused(r#"{"from":"1","text":null}"#),
            InboundError::Missing {
                index: 0,
                field: Field::Text
            }
        );
    }

    #[test]
    fn long_text_or_a_nul_is_refused_naming_the_field() {
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        let err = refused(&format!(r#"{{"from":"1","body":"{long}"}}"#));
        assert_eq!(
            err,
            InboundError::TooLong {
                index: 0,
                key: "body",
                max: MAX_TEXT_CHARS
            }
        );
        let exactly = "α".repeat(MAX_TEXT_CHARS);
        assert_eq!(
            one(&format!(r#"{{"from":"1","text":"{exactly}"}}"#)).text,
            exactly
        );

        let err = refused(r#"{"from":"1","text":"st\u0000op"}"#);
        assert_eq!(
            err,
            InboundError::ContainsNul {
                index: 0,
                key: "text"
            }
        );
        let err = refused(r#"{"from":"1\u0000","text":"x"}"#);
        assert_eq!(
            err,
            InboundError::ContainsNul {
                index: 0,
                key: "from"
            }
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_is_refused_naming_the_key() {
        let err = refused(r#"{"from":"1","message":{"parts":1}}"#);
        assert_eq!(
            err,
            InboundError::WrongType {
                index: 0,
                key: "message",
                expected: "a string"
            }
        );
        assert!(matches!(
            refused(r#"{"from":"1","text":42}"#),
            InboundError::WrongType { key: "text", .. }
        ));
        assert!(matches!(
            refused(r#"{"sender":1.5,"text":"x"}"#),
            InboundError::WrongType { key: "sender", .. }
        ));
    }

    #[test]
    fn more_than_a_thousand_messages_are_refused() {
        let item = r#"{"from":"1","text":"x"}"#;
        let body = |n: usize| format!("[{}]", vec![item; n].join(","));
        assert_eq!(parse_inbound(body(1000).as_bytes()).unwrap().len(), 1000);
        assert_eq!(refused(&body(1001)), InboundError::TooMany(1001));
    }

    #[test]
    fn a_body_that_is_not_json_objects_is_refused() {
        assert!(matches!(refused("from=1&text=x"), InboundError::NotJson(_)));
        assert_eq!(refused(r#""STOP""#), InboundError::NotMessages);
        assert_eq!(
            refused(r#"[{"from":"1","text":"x"}, 3]"#),
            InboundError::NotAnObject { index: 1 }
        );
    }
}
