//! How far an answer may be from the best: the gap between an objective
//! and a proven bound, over the whole objective or over the cost of what is
//! placed. Used by every solver (exact, fast, incremental) and by reports,
//! so it lives below all of them. Pure.

/// Relative gap between an objective and a bound.
pub fn relative_gap(objective: f64, bound: f64) -> f64 {
    ((objective - bound) / objective.abs().max(1e-9)).max(0.0)
}

/// The gap edgeplan reports and the gap target (`--gap`) applies to:
/// (objective − bound) over the cost of what is placed (the objective less
/// the unplaced penalty). Over the whole objective, a penalty of 10,000/h a
/// replica would make any gap on the rest look like zero.
///
/// What it proves: `bound − unplaced_penalty` is a lower bound on the placed
/// cost of every placement that leaves no more penalty unplaced than this
/// one (placed + penalty ≥ bound for all of them), so the placed cost is
/// within this gap of the best such placement's.
pub fn placed_gap(objective: f64, bound: f64, unplaced_penalty: f64) -> f64 {
    ((objective - bound) / (objective - unplaced_penalty).abs().max(1e-9)).max(0.0)
}
