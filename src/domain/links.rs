//! The links in a marketing message: where they go in the text, and the text they make.
//!
//! A template places them with `{{offerLink}}` and `{{unsubscribeLink}}`; where it does not,
//! the configured wording (which carries the same marker) is appended on a new line. The
//! markers survive rendering and are replaced by each recipient's URLs only when its batch is
//! sent. Every code has one length, so a text's SMS parts are counted at enqueue on the text
//! with a stand-in code ([`LinkPlan::sized`]) and the count holds for every recipient.

use super::link_code::{LinkCode, LINK_CODE_LEN};

pub const OFFER_LINK: &str = "{{offerLink}}";
pub const UNSUBSCRIBE_LINK: &str = "{{unsubscribeLink}}";

/// The link placeholders a template may use; rendering keeps them for [`LinkPlan::render`].
pub fn is_link_field(name: &str) -> bool {
    matches!(name, "offerLink" | "unsubscribeLink")
}

/// Which links a campaign's messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carried {
    /// Service messages: no links (markers in the template are removed).
    #[default]
    None,
    /// Marketing without an offer: the unsubscribe link.
    Unsubscribe,
    /// Marketing with an offer: both.
    OfferAndUnsubscribe,
}

/// Where links point and the wording appended when a template does not place them: the
/// service's settings, the same for every campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkWording {
    /// The public base URL, without a trailing slash.
    pub base_url: String,
    pub offer_wording: String,
    pub unsubscribe_wording: String,
}

impl LinkWording {
    /// The default wording with a local base URL: for a service started without sending
    /// (its enqueues count parts with links of the same length as configured ones would have
    /// only if the base URLs match, so the service always configures its own).
    pub fn unconfigured() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            offer_wording: "Claim Offer: {{offerLink}}".into(),
            unsubscribe_wording: "To unsubscribe, tap: {{unsubscribeLink}}".into(),
        }
    }

    /// The plan of a campaign whose messages carry `carried`.
    pub fn plan(&self, carried: Carried) -> LinkPlan {
        LinkPlan {
            carried,
            base_url: self.base_url.clone(),
            offer_wording: self.offer_wording.clone(),
            unsubscribe_wording: self.unsubscribe_wording.clone(),
        }
    }
}

impl Carried {
    /// What a campaign of `message_type` carries, with or without an offer.
    pub fn of(message_type: super::MessageType, has_offer: bool) -> Self {
        match (message_type.has_links(), has_offer) {
            (false, _) => Self::None,
            (true, false) => Self::Unsubscribe,
            (true, true) => Self::OfferAndUnsubscribe,
        }
    }
}

/// How one campaign's messages carry their links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub carried: Carried,
    /// The public base URL, without a trailing slash.
    pub base_url: String,
    /// Appended when the template has no `{{offerLink}}`; contains that marker.
    pub offer_wording: String,
    /// Appended when the template has no `{{unsubscribeLink}}`; contains that marker.
    pub unsubscribe_wording: String,
}

impl LinkPlan {
    /// The body with a marker wherever a carried link goes, and without markers of links it
    /// does not carry. Applying it twice changes nothing.
    pub fn compose(&self, body: &str) -> String {
        let (offer, unsubscribe) = match self.carried {
            Carried::None => (false, false),
            Carried::Unsubscribe => (false, true),
            Carried::OfferAndUnsubscribe => (true, true),
        };
        let mut text = body.to_owned();
        for (carried, marker, wording) in [
            (offer, OFFER_LINK, &self.offer_wording),
            (unsubscribe, UNSUBSCRIBE_LINK, &self.unsubscribe_wording),
        ] {
            if !carried {
                text = text.replace(marker, "");
            } else if !text.contains(marker) {
                text = format!("{}\n{wording}", text.trim_end());
            }
        }
        text
    }

    /// A composed text with a stand-in code of the real length: what its SMS parts are
    /// counted on.
    pub fn sized(&self, composed: &str) -> String {
        self.fill(composed, &"A".repeat(LINK_CODE_LEN))
    }

    /// The text one recipient gets: `body` (as written or rendered) with its links, or without
    /// any when it has no code (service messages).
    pub fn text(&self, body: &str, code: Option<&LinkCode>) -> String {
        let composed = self.compose(body);
        match code {
            Some(code) => self.render(&composed, code),
            None => composed
                .replace(OFFER_LINK, "")
                .replace(UNSUBSCRIBE_LINK, ""),
        }
    }

    /// A composed text with one recipient's links.
    pub fn render(&self, composed: &str, code: &LinkCode) -> String {
        self.fill(composed, &code.to_string())
    }

    fn fill(&self, composed: &str, code: &str) -> String {
        composed
            .replace(OFFER_LINK, &format!("{}/o/{code}", self.base_url))
            .replace(UNSUBSCRIBE_LINK, &format!("{}/s/{code}", self.base_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecipientId;

    fn plan(carried: Carried) -> LinkPlan {
        LinkPlan {
            carried,
            base_url: "https://go.example".into(),
            offer_wording: "Claim Offer: {{offerLink}}".into(),
            unsubscribe_wording: "To unsubscribe, tap: {{unsubscribeLink}}".into(),
        }
    }

    fn code() -> LinkCode {
        LinkCode::new(RecipientId::new(42).unwrap(), [7; 12])
    }

    #[test]
    fn links_are_appended_with_the_wording_when_the_template_has_no_markers() {
        let p = plan(Carried::OfferAndUnsubscribe);
        let composed = p.compose("20% off today ");
        let text = p.render(&composed, &code());
        let c = code().to_string();
        assert_eq!(
            text,
            format!(
                "20% off today\nClaim Offer: https://go.example/o/{c}\nTo unsubscribe, tap: https://go.example/s/{c}"
            )
        );
        assert_eq!(
            p.compose(&composed),
            composed,
            "composing twice changes nothing"
        );
    }

    #[test]
    fn markers_in_the_template_place_the_links_and_uncarried_ones_vanish() {
        let p = plan(Carried::Unsubscribe);
        let composed = p.compose("Hi {{offerLink}} stop: {{unsubscribeLink}}");
        assert_eq!(composed, "Hi  stop: {{unsubscribeLink}}");
        let service = plan(Carried::None).compose("Your order shipped {{unsubscribeLink}}");
        assert_eq!(service, "Your order shipped ");
    }

    #[test]
    fn the_sized_text_is_as_long_as_every_rendered_one() {
        let p = plan(Carried::OfferAndUnsubscribe);
        let composed = p.compose("Sale");
        assert_eq!(
            p.sized(&composed).chars().count(),
            p.render(&composed, &code()).chars().count()
        );
    }
}
