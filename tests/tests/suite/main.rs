//! The black-box suite: every file here is a module of one test binary, so
//! that the workspace is linked once for all of them rather than once a
//! file. A test's name is its file's and its own: `runs::a_run_completes…`
//! (`cargo test -p switchyard-tests --test suite runs::`).
//!
//! The tests share a process: each builds its own app, database and Redis
//! prefix, and nothing here changes process-wide state (the environment,
//! the current directory, limits). What is process-wide is the metrics
//! registry, whose figures the metrics tests check as lower bounds, and the
//! tracing subscriber, installed once by the first app.
//!
//! Two files stay binaries of their own. `pods.rs` builds the image and
//! runs the chart's pods with podman, as root; it drives them from outside
//! and links neither the API nor the worker, and it can be run or left out
//! by name (`--test pods`). `local_model.rs` runs the real model on the CPU,
//! every core busy for a minute or more, which the timing-bounded tests
//! here must not run beside.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod agents;
mod auth;
mod cancel;
mod chart;
mod compat_agent_chat;
mod compat_ai_sdk;
mod compat_conversations;
mod compat_openai;
mod compat_simple_chat;
mod cors;
mod delivery;
mod end_users;
mod http_workflow;
mod inputs;
mod isolation;
mod lifecycle;
mod limits;
mod metrics;
mod openai;
mod outages;
mod priorities;
mod providers;
mod runs;
mod security;
mod service;
mod threads;
mod tools;
mod workflows;
