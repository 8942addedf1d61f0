//! The fleet now, as the services see it: the inventory made effective by
//! telemetry (inventory + readings → `effective`), its problem and the
//! current placement evaluated under it. Solve, what-if, site states,
//! approval and dispatch all start from here, so it sits below them.

use tonic::Status;

use super::errors::{self, Reason};
use super::{now_s, Shared};
use edgeplan_model::instance::Instance;
use edgeplan_problem::evaluate::Evaluation;
use edgeplan_problem::problem::{Kpis, Problem};
use edgeplan_problem::validate::validate_structure;
use edgeplan_telemetry::effective::{effective_instance, EffectiveOptions};

/// The fleet now: the effective instance (inventory + telemetry), its
/// problem, and the current placement evaluated under it.
pub struct View {
    pub effective: Instance,
    pub version: u64,
    pub problem: Problem,
    pub eval: Evaluation,
    pub kpis: Kpis,
    pub now_s: f64,
}

/// `instance` as telemetry says it is at `now_s`. Takes the telemetry lock:
/// a caller that holds the state lock keeps the order (state, then
/// telemetry) every other path keeps.
pub fn effective(shared: &Shared, instance: &Instance, now_s: f64) -> Instance {
    let hub = shared.telemetry();
    effective_instance(instance, &hub.state, now_s, &EffectiveOptions::default()).0
}

impl View {
    pub fn now(shared: &Shared) -> Result<View, Status> {
        // A copy of the inventory: the state lock is not held while
        // telemetry makes it effective and the problem is built.
        let (instance, version) = {
            let s = shared.state();
            (s.instance.clone(), s.version)
        };
        let now = now_s();
        let effective = effective(shared, &instance, now);
        let issues = validate_structure(&effective);
        if !issues.is_empty() {
            let first: Vec<String> = issues.iter().take(5).map(|i| i.to_string()).collect();
            return Err(errors::error(
                Reason::NotPlannable,
                format!("the inventory cannot be planned yet: {}", first.join("; ")),
            ));
        }
        let problem = Problem::build(&effective).map_err(|e| {
            errors::error(
                Reason::NotPlannable,
                format!("the inventory cannot be planned: {e}"),
            )
        })?;
        let x = problem.current_placement();
        Ok(View {
            eval: problem.evaluate(&x),
            kpis: problem.kpis(&x),
            effective,
            version,
            problem,
            now_s: now,
        })
    }
}
