//! The independent verifier: recomputes every constraint and every objective
//! term of a placement straight from the instance, sharing no code with the
//! problem builder, physics or topology (only the instance types and the
//! server-model data). One misunderstanding cannot hide in both. Pure.
//!
//! `site` recomputes a site's limits and the load on it, `network` the
//! RTTs, `counts` where replicas are; `placement` checks a placement,
//! `plan` a plan, a state mid-plan and a step's precondition.

mod counts;
mod network;
mod placement;
mod plan;
mod site;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::kpi::ObjectiveTerms;

pub use placement::verify;
pub use plan::{verify_in_flight, verify_plan, PlanReport, Preconditions};

/// Absolute slack on limit comparisons (kW, °C, resource units).
pub(crate) const TOL: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Violation {
    /// The rule broken, e.g. `capacity`, `power_cap`, `inlet`, `latency`.
    pub rule: String,
    /// The workload or site concerned.
    pub item: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyReport {
    pub feasible: bool,
    pub violations: Vec<Violation>,
    pub objective: ObjectiveTerms,
    pub moves: u64,
    pub unplaced_replicas: u64,
}
