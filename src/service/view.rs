//! The fleet now, as the services see it: the inventory made effective by
//! telemetry (inventory + readings → `effective`), its problem and the
//! current placement evaluated under it. Solve, what-if, site states,
//! approval and dispatch all start from here, so it sits below them.

use tonic::Status;

use super::{now_s, Shared};
use crate::effective::{effective_instance, EffectiveOptions};
use crate::instance::Instance;
use crate::problem::{Evaluation, Kpis, Problem};
use crate::validate::validate_structure;

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

/// The inventory as telemetry says it is now, its version, and the time.
pub fn effective_now(shared: &Shared) -> (Instance, u64, f64) {
    let (instance, version) = {
        let s = shared.state();
        (s.instance.clone(), s.version)
    };
    let now = now_s();
    let (effective, _) = {
        let hub = shared.telemetry();
        effective_instance(&instance, &hub.state, now, &EffectiveOptions::default())
    };
    (effective, version, now)
}

impl View {
    pub fn now(shared: &Shared) -> Result<View, Status> {
        let (effective, version, now) = effective_now(shared);
        let issues = validate_structure(&effective);
        if !issues.is_empty() {
            let first: Vec<String> = issues.iter().take(5).map(|i| i.to_string()).collect();
            return Err(Status::failed_precondition(format!(
                "the inventory cannot be planned yet: {}",
                first.join("; ")
            )));
        }
        let problem = Problem::build(&effective).map_err(|e| {
            Status::failed_precondition(format!("the inventory cannot be planned: {e}"))
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
