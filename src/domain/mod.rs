//! The rules of swarming, free of transport and storage: tickets, experts,
//! ranks, routing, status moves and events. Everything here is pure and
//! unit-tested on its own.

pub mod error;
pub mod event;
pub mod lifecycle;
pub mod model;
pub mod routing;

pub use error::DeskError;
pub use event::{EventKind, TicketEvent, Viewer};
pub use model::*;
