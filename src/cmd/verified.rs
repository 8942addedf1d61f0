//! The independent verifier as a gate on a solver's answer (`replan`, `bench`).

use anyhow::{bail, Result};

use edgeplan::instance::Instance;
use edgeplan::problem::Problem;
use edgeplan::replicas::Replicas;
use edgeplan::verify::verify;

/// Fail when the independent verifier finds a broken rule in `x`.
pub fn verified(inst: &Instance, problem: &Problem, x: &Replicas) -> Result<()> {
    let report = verify(inst, &problem.placement_of(x));
    if let Some(v) = report.violations.first() {
        bail!(
            "the placement breaks {} rule(s), first {} at {}: {}",
            report.violations.len(),
            v.rule,
            v.item,
            v.message
        );
    }
    Ok(())
}
