//! The parts shared by `switchyard-bench` (performance) and
//! `switchyard-chaos` (recovery from killed workers): the system under
//! test as child processes ([`stack`]), streaming clients ([`load`]),
//! percentiles ([`stats`]) and process and server counters ([`sys`]).
//! See `bench/README.md`.

pub mod load;
pub mod stack;
pub mod stats;
pub mod sys;
