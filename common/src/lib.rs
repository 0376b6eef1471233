//! Switchyard's shared core: what the API and the worker both need.
//!
//! # Layout
//!
//! - [`config`]: the environment and the TOML catalog of providers and agents.
//! - [`domain`]: ids, statuses and the resources of the HTTP contract.
//! - [`events`]: [`events::RunEvent`], the one enum every run event comes from.
//! - [`db`]: PostgreSQL, the source of truth, one module per aggregate.
//! - [`net`]: public addresses and host allow-lists.
//! - [`redis_conn`]: Redis connections with the timeouts Switchyard needs.
//! - [`cache`]: write-through, cache-aside copies of threads and messages in Redis.
//! - [`bus`]: run events: numbered, coalesced, stored in PostgreSQL and
//!   published to a Redis stream per run.
//! - [`lifecycle`]: the transitions of a run, each with its effects.
//! - [`queue`]: the apalis job that carries a run to a worker, and enqueueing.
//! - [`telemetry`]: logging set-up.

pub mod bus;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod redis_conn;
pub mod telemetry;
