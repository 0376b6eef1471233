//! The error every configuration problem becomes: the variable or the
//! catalog line at fault, and what is wrong.

use std::path::PathBuf;

/// A problem with the configuration, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is not set and cannot be inferred: {problem}")]
    Uninferable { name: &'static str, problem: String },
    #[error("{name}={value:?} is invalid: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {problem}")]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },
}
