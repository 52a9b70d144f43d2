//! Value types parsed at the boundary. Anything past the boundary holds one of these, so an
//! invalid phone, id or status cannot travel further into the system.

mod credentials;
mod delivery;
mod event;
mod ids;
pub mod inbound;
mod link_code;
pub mod links;
mod message_type;
mod phone;
mod segments;
mod status;
mod template;
mod token;

pub use credentials::{
    random_text, same_secret, CredentialError, Email, Lockout, PasswordDigest, SessionToken,
    MIN_PASSWORD_CHARS,
};
pub use delivery::{DeliveryOutcome, DeliveryStatus};
pub use event::{EngagementKind, Event, EventError, EVENT_VERSION};
pub use ids::{BulkId, CampaignId, IdError, MessageId, RecipientId, TenantId, TrafficAccountId};
pub use inbound::{InboundError, InboundMessage, StopKeywords};
pub use link_code::{secrets, LinkCode, LINK_CODE_LEN, SECRET_LEN};
pub use links::{Carried, LinkPlan, LinkWording};
pub use message_type::MessageType;
pub use phone::{PhoneE164, PhoneError};
pub use segments::{Encoding, Segments, TooLong};
pub use status::{CampaignStatus, MessageStatus, StatusError, TransitionRefused};
pub use template::{Fields, Template};
pub use token::ApiToken;
