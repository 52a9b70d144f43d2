//! Value types parsed at the boundary. Anything past the boundary holds one of these, so an
//! invalid phone, id or status cannot travel further into the system.

mod delivery;
mod event;
mod ids;
mod link_code;
mod message_type;
mod phone;
mod segments;
mod status;
mod template;
mod token;

pub use delivery::{DeliveryOutcome, DeliveryStatus};
pub use event::{Event, EventError, EVENT_VERSION};
pub use ids::{BulkId, CampaignId, IdError, MessageId, RecipientId, TenantId, TrafficAccountId};
pub use link_code::{secrets, LinkCode, LINK_CODE_LEN, SECRET_LEN};
pub use message_type::MessageType;
pub use phone::{PhoneE164, PhoneError};
pub use segments::{Encoding, Segments, TooLong};
pub use status::{CampaignStatus, MessageStatus, StatusError, TransitionRefused};
pub use template::{Fields, Template};
pub use token::ApiToken;
