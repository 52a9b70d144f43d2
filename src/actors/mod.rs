//! The actors of campaignd (DESIGN.md section 1). Each is a thin shell over a plain struct
//! that holds the logic and is unit-tested without actix.

pub mod campaign;
pub mod checkpoint;
pub mod dlr;
pub mod registry;
pub mod sender;
