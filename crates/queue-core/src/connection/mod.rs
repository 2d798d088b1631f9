//! The connection layer: configuration, roles, the budget, and one handle per role. Nothing here
//! knows about queues; everything above reaches Redis through these handles.

pub(crate) mod blocking;
pub(crate) mod budget;
pub(crate) mod command;
pub(crate) mod config;
pub(crate) mod connector;
pub(crate) mod role;
pub(crate) mod subscriber;
