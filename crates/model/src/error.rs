//! Library errors. Each names the offending item so the user can fix it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem in an instance: the path of the offending item and what is
/// wrong with it (`workloads[12].slo.rtt_ms: must be > 0, got -3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("the instance has {} problem(s):\n{}", .0.len(), render_issues(.0))]
    Invalid(Vec<Issue>),
    #[error("unknown server model {name:?} (known: {known})")]
    UnknownServerModel { name: String, known: String },
    #[error("unknown accelerator model {name:?} (known: {known})")]
    UnknownAcceleratorModel { name: String, known: String },
    #[error("placement: {0}")]
    Placement(String),
    #[error("solver: {0}")]
    Solver(String),
    #[error("telemetry archive {0}")]
    Archive(String),
    /// The caller stopped the work (a what-if whose client went away).
    #[error("cancelled")]
    Cancelled,
}

fn render_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub type Result<T> = std::result::Result<T, Error>;
