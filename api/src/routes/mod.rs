//! One module per resource, each with its own `router()`.

pub mod agents;
pub mod events;
pub mod me;
pub mod runs;
pub mod service;
pub mod threads;
