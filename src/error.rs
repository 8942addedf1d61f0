//! Library errors. Each names the offending item so the user can fix it.

use crate::validate::Issue;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("the instance has {} problem(s):\n{}", .0.len(), render_issues(.0))]
    Invalid(Vec<Issue>),
    #[error("unknown server model {name:?} (known: {known})")]
    UnknownServerModel { name: String, known: String },
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
