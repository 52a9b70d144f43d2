//! What a campaign's messages are: marketing (offer and unsubscribe links, quiet hours, caps)
//! or service (transactional: none of those).

use std::fmt;

/// A campaign's kind of message; `marketing` unless the tenant says otherwise.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Every recipient gets a code for the offer and unsubscribe links.
    #[default]
    Marketing,
    /// Transactional: no links, no codes.
    Service,
}

impl MessageType {
    pub const ALL: [Self; 2] = [Self::Marketing, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Marketing => "marketing",
            Self::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether its recipients get a link code.
    pub fn has_links(self) -> bool {
        self == Self::Marketing
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_back_and_only_marketing_has_links() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(t));
        }
        assert_eq!(MessageType::parse("promo"), None);
        assert_eq!(MessageType::default(), MessageType::Marketing);
        assert!(MessageType::Marketing.has_links() && !MessageType::Service.has_links());
    }
}
