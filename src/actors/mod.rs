//! The actors of campaignd (DESIGN.md section 1): thin shells over the plain logic in
//! `crate::engine`, each receiving a message, calling that logic and forwarding what it returns.

pub mod campaign;
mod campaign_commands;
pub mod campaign_messages;
mod campaign_sending;
pub mod checkpoint;
pub mod claimed;
pub mod dlr;
pub mod fold;
pub mod registry;
pub mod sender;
