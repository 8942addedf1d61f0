//! edgeplan: workload-aware placement across fleets of micro data centers.
//!
//! This crate is a facade over the workspace's crates (see ARCHITECTURE.md),
//! one module per concept, so `edgeplan::solver::solve` reads the same
//! whichever crate holds it. With `default-features = false` it is the pure
//! core alone; the `service` feature (on by default) adds the gRPC service,
//! its API and the files edgeplan writes. A library user who wants one part
//! can depend on its crate (`edgeplan-solve`, `edgeplan-verify`, …) instead.

pub use edgeplan_analysis::{accelerator_catalogue, gen, replay, report, suite, whatif};
pub use edgeplan_model::{
    accelerator_models, clock, duration_s, error, instance, kpi, placement, server_models,
    settings, Error, Result, MAX_DURATION_S,
};
pub use edgeplan_physics::{physics, topology};
pub use edgeplan_plan::{execution, explain, plan};
pub use edgeplan_problem::{
    build, evaluate, gap, ix, load, problem, replicas, rows, rules, validate,
};
pub use edgeplan_solve::{fast, milp, repair, solver, spot};
pub use edgeplan_telemetry::{alarm, effective, forecast, telemetry};
pub use edgeplan_verify as verify;

#[cfg(feature = "service")]
pub use edgeplan_api as api;
#[cfg(feature = "service")]
pub use edgeplan_files::{archive, operator_report, replay_report, tables};
#[cfg(feature = "service")]
pub use edgeplan_service as service;
