//! `Placement.WhatIf`: the batch what-if of `edgeplan whatif`, on the live
//! state (inventory as telemetry says it is) instead of a file, with each
//! scenario's result streamed as it finishes.

use edgeplan_model::clock::Deadline;
use tokio::sync::mpsc;
use tonic::Status;

use super::errors;
use super::view::View;
use super::Shared;
use edgeplan_analysis::whatif::{apply, expand, parse, run_until, ScenarioFile, ScenarioResult};
use edgeplan_api::pb;
use edgeplan_solve::solver::SolveOptions;

/// The base a scenario document must name to run on the live state.
pub const LIVE: &str = "live";

fn to_pb(index: usize, total: usize, r: &ScenarioResult) -> pb::WhatIfResult {
    pb::WhatIfResult {
        index: index as u32,
        total: total as u32,
        scenario: r.scenario.clone(),
        status: r.status.clone(),
        solve_status: edgeplan_api::convert::solve_status_to_pb(&r.status) as i32,
        objective: r.objective,
        energy_cost_per_h: r.energy_cost_per_h,
        carbon_kg_per_h: r.carbon_kg_per_h,
        mean_latency_ms: r.mean_latency_ms,
        p95_latency_ms: r.p95_latency_ms,
        slo_violations: r.slo_violations,
        unplaced_replicas: r.unplaced_replicas,
        moves: r.moves,
        makespan_s: r.makespan_s,
        min_inlet_headroom_c: r.min_inlet_headroom_c,
        max_power_use: r.max_power_use,
        binding_sites: r.binding_sites.clone(),
        result_json: serde_json::to_string(r).unwrap_or_default(),
    }
}

/// What one caller may make the server do: each scenario's time limit and
/// work budget, the number of scenarios (sweeps expanded) and of values per sweep, checked
/// before anything is expanded or solved.
fn check_bounds(file: &ScenarioFile, cfg: &super::Config) -> Result<(), Status> {
    let t = file.time_limit_s;
    let max_t = cfg.max_whatif_time_limit_s;
    if !(t.is_finite() && t > 0.0 && t <= max_t) {
        return Err(errors::field(
            "time_limit_s",
            format!("must be > 0 and at most {max_t} (max_whatif_time_limit_s), got {t}"),
        ));
    }
    if let Some(gap) = file.gap {
        if !(0.0..1.0).contains(&gap) {
            return Err(errors::field(
                "gap",
                format!("must be in [0, 1), got {gap}"),
            ));
        }
    }
    if let Some(work) = file.work {
        if work == 0 || work > cfg.max_whatif_work {
            return Err(errors::field(
                "work",
                format!(
                    "must be in 1..={} (max_whatif_work), got {work}",
                    cfg.max_whatif_work
                ),
            ));
        }
    }
    let max_values = cfg.max_whatif_sweep_values;
    if let Some((i, s)) = file
        .sweeps
        .iter()
        .enumerate()
        .find(|(_, s)| s.values.len() > max_values)
    {
        return Err(errors::field(
            format!("sweeps[{i}].values"),
            format!(
                "{} values, at most {max_values} per sweep (max_whatif_sweep_values)",
                s.values.len()
            ),
        ));
    }
    let total = file.scenarios.len() + file.sweeps.iter().map(|s| s.values.len()).sum::<usize>();
    let max_scenarios = cfg.max_whatif_scenarios;
    if total > max_scenarios {
        return Err(errors::field(
            "sweeps",
            format!(
                "{total} scenarios (sweeps expanded), at most {max_scenarios} per call (max_whatif_scenarios)"
            ),
        ));
    }
    Ok(())
}

/// Check the document and every scenario against the live state, then run
/// them, sending each result on `tx`. Errors before the first result come
/// back as the call's status. The run stops between scenarios once the
/// client went away (`tx` closed: the response stream was dropped).
pub fn start(
    shared: &Shared,
    text: &str,
    tx: mpsc::Sender<Result<pb::WhatIfResult, Status>>,
) -> Result<impl FnOnce() + Send + 'static, Status> {
    let file = parse(text).map_err(|i| errors::field(i.path.clone(), i.message.clone()))?;
    check_bounds(&file, &shared.config)?;
    if file.base != LIVE {
        return Err(errors::field(
            "base",
            format!(
                "the service runs scenarios on its live state; write `base: {LIVE}`, got {:?}",
                file.base
            ),
        ));
    }
    // Paths name the scenario file's fields (`scenarios[2].set.sites`).
    let violations = |issues: Vec<edgeplan_model::error::Issue>| {
        errors::bad_request(
            errors::Reason::InvalidField,
            issues.into_iter().map(|i| (i.path, i.message)).collect(),
        )
    };
    let list = expand(&file).map_err(violations)?;
    let base = View::now(shared)?.effective;
    let issues: Vec<_> = list
        .iter()
        .filter_map(|s| apply(&base, s, &format!("scenario {:?}", s.name)).err())
        .flatten()
        .collect();
    if !issues.is_empty() {
        return Err(violations(issues));
    }
    let options = SolveOptions {
        // What-if stops on its work budget alone (deterministic).
        deadline: Deadline::NONE,
        relative_gap: file.gap,
        threads: Some(1),
        seed: file.seed,
        method: file.method,
        work: file.work,
        deterministic: true,
    };
    Ok(move || {
        let total = list.len() + 1;
        let sent = |i: usize, r: &ScenarioResult| {
            let _ = tx.blocking_send(Ok(to_pb(i, total, r)));
        };
        let gone = || tx.is_closed();
        match run_until(&base, &list, &options, true, &sent, &gone) {
            Ok(_) => {}
            Err(edgeplan_model::Error::Cancelled) => {
                tracing::info!("what-if stopped: its client went away")
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(errors::internal(format!("what-if: {e}"))));
            }
        }
    })
}
