//! The rules of swarming, free of transport and storage: tickets, experts,
//! ranks, routing, status moves and events. Everything here is pure and
//! unit-tested on its own.

#[macro_use]
pub mod model;
pub mod access;
pub mod activity;
pub mod error;
pub mod event;
pub mod knowledge;
pub mod lifecycle;
pub mod routing;
pub mod sla;
pub mod stats;

pub use access::{BotName, Grant, Operation, Principal, Role, TokenId, TokenRecord};
pub use error::DeskError;
pub use event::{EventKind, TicketEvent, Viewer};
pub use knowledge::{
    Article, ArticleContent, ArticleId, ArticleLink, ArticleState, KnowledgeCounts,
};
pub use model::*;
pub use sla::{SlaClocks, SlaPolicies, SlaPolicy, SlaTarget};
