//! The parts shared by `switchyard-bench` (performance) and
//! `switchyard-chaos` (recovery from killed workers): the system under
//! test as child processes ([`stack`]), streaming clients ([`load`]),
//! percentiles ([`stats`]) and process and server counters ([`sys`]).
//! See `bench/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "measurement tooling: a panic ends the measurement, and its tasks end with the program"
)]

pub mod load;
pub mod stack;
pub mod stats;
pub mod sys;
