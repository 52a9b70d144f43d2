//! Identifier newtypes. Database ids are positive `i64`s; provider ids keep their own shapes.

use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be a positive integer, got {value:?}")]
    NotPositive { kind: &'static str, value: String },
    #[error("message id {0:?} must be 1 to 64 visible ASCII characters")]
    BadMessageId(String),
    #[error("{kind} {value:?} is not a UUID")]
    NotUuid { kind: &'static str, value: String },
}

macro_rules! db_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Accepts only positive values: database sequences never hand out 0 or less.
            pub fn new(value: i64) -> Result<Self, IdError> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(IdError::NotPositive { kind: $kind, value: value.to_string() })
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let bad = || IdError::NotPositive { kind: $kind, value: s.to_owned() };
                s.trim().parse::<i64>().map_err(|_| bad()).and_then(Self::new)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

db_id!(
    /// A tenant: a shop or retail owner; every `/api` request acts as exactly one.
    TenantId,
    "tenant id"
);
db_id!(
    /// A campaign, unique across tenants.
    CampaignId,
    "campaign id"
);
db_id!(
    /// One row of `campaign_recipients`: one phone of one campaign.
    RecipientId,
    "recipient id"
);

/// Mitto's id for one accepted message (a 26-character ULID in practice).
///
/// Upstream producers may report ids of other shapes, so the rule is deliberately loose:
/// 1–64 visible ASCII characters, which is what fits a Kafka key and an index entry safely.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::BadMessageId(raw.to_owned()))
        }
    }

    /// A fresh ULID, as Mitto issues them.
    pub fn generate() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                uuid::Uuid::parse_str(raw.trim())
                    .map(Self)
                    .map_err(|_| IdError::NotUuid { kind: $kind, value: raw.to_owned() })
            }

            pub fn new_random() -> Self {
                Self(uuid::Uuid::new_v4())
            }

            pub fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            /// Lowercase hyphenated, as Mitto writes it.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// Mitto's id for one bulk request.
    BulkId,
    "bulk id"
);
uuid_id!(
    /// A Mitto traffic account: the unit Mitto rate-limits and bills.
    TrafficAccountId,
    "traffic account id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_ids_must_be_positive() {
        assert_eq!(CampaignId::new(42).unwrap().get(), 42);
        assert!(CampaignId::new(0).is_err());
        assert!("-3".parse::<TenantId>().is_err());
        assert!("abc".parse::<RecipientId>().is_err());
        assert!(serde_json::from_str::<CampaignId>("0").is_err());
    }

    #[test]
    fn message_ids_accept_ulids_and_refuse_blanks() {
        let id = MessageId::generate();
        assert_eq!(id.as_str().len(), 26);
        assert!(MessageId::parse("01KC69MT19BRK5MSXG1V95YPHX").is_ok());
        assert!(MessageId::parse("").is_err());
        assert!(MessageId::parse("has space").is_err());
        assert!(MessageId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn uuids_print_lowercase() {
        let id = TrafficAccountId::parse("E8A5E53F-51CE-4CC8-9F3C-43FB1D24DAF7").unwrap();
        assert_eq!(id.to_string(), "e8a5e53f-51ce-4cc8-9f3c-43fb1d24daf7");
        assert!(BulkId::parse("nope").is_err());
    }
}
