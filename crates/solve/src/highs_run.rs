//! One HiGHS run on a model given as rows and columns (the whole MILP,
//! one with columns fixed, or a repair's sub-model): the one place that
//! talks to HiGHS through good_lp, shared by the exact path, the
//! neighbourhood search and repairs. Pure apart from HiGHS's own clock,
//! which the deadline handed in sets.

use good_lp::solvers::highs::highs;
use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};
use highs::HighsModelStatus;

use crate::milp::{Column, Row};
use edgeplan_model::clock::Deadline;
use edgeplan_model::error::{Error, Result};

/// What HiGHS is told besides the model.
#[derive(Debug, Clone, Default)]
pub struct HighsOptions {
    /// Its time limit (none for `Deadline::NONE`).
    pub deadline: Deadline,
    /// Stop within this relative gap (HiGHS's default when unset).
    pub relative_gap: Option<f64>,
    /// HiGHS threads; `None` leaves HiGHS's default.
    pub threads: Option<u32>,
    pub seed: u32,
}

/// What one HiGHS run left.
pub struct HighsRun {
    /// Column values of its best solution, if it has one.
    pub values: Option<Vec<f64>>,
    pub status: HighsModelStatus,
    /// HiGHS's dual bound (offset excluded), −∞ if unknown.
    pub dual_bound: f64,
}

/// HiGHS on `rows` with these columns (a model's, some fixed, or a
/// sub-model's), warm-started from `start_values`. With `abs_gap`, HiGHS
/// stops at that absolute gap instead of `options.relative_gap`.
pub fn run_highs(
    rows: &[Row],
    columns: &[Column],
    start_values: &[f64],
    options: &HighsOptions,
    abs_gap: Option<f64>,
    max_nodes: Option<u64>,
) -> Result<HighsRun> {
    let mut vars = ProblemVariables::new();
    let cols: Vec<Variable> = columns
        .iter()
        .map(|c| {
            let mut v = variable().min(c.lower).max(c.upper);
            if c.integer {
                v = v.integer();
            }
            vars.add(v)
        })
        .collect();
    let mut objective = Expression::with_capacity(cols.len());
    for (c, v) in columns.iter().zip(&cols) {
        if c.cost != 0.0 {
            objective.add_mul(c.cost, *v);
        }
    }
    let mut model = vars.minimise(objective).using(highs);
    for r in rows {
        let mut e = Expression::with_capacity(r.coefs.len());
        for &(c, v) in &r.coefs {
            e.add_mul(v, cols[c]);
        }
        if r.lower == r.upper {
            model.add_constraint(e.eq(r.lower));
        } else {
            if r.lower.is_finite() {
                model.add_constraint(e.clone().geq(r.lower));
            }
            if r.upper.is_finite() {
                model.add_constraint(e.leq(r.upper));
            }
        }
    }
    let mut hm = model
        .try_into_inner()
        .map_err(|e| Error::Solver(e.to_string()))?;
    hm.make_quiet();
    hm.set_option("output_flag", false);
    hm.set_option("random_seed", options.seed as i32);
    if let Some(t) = options.deadline.remaining_s() {
        hm.set_option("time_limit", t);
    }
    if let Some(n) = max_nodes {
        hm.set_option("mip_max_nodes", n.clamp(1, i32::MAX as u64) as i32);
    }
    if let Some(a) = abs_gap {
        hm.set_option("mip_rel_gap", 0.0);
        hm.set_option("mip_abs_gap", a.max(0.0));
    } else if let Some(g) = options.relative_gap {
        hm.set_option("mip_rel_gap", g.max(0.0));
    }
    if let Some(t) = options.threads {
        hm.set_option("threads", t.max(1) as i32);
    }
    // The warm start only helps; HiGHS may refuse it (it then starts cold),
    // and a refused hint must not abort the solve.
    if let Err(e) = hm.try_set_solution(Some(start_values), None, None, None) {
        tracing::debug!("HiGHS refused the start: {e:?}");
    }
    let solved = hm
        .try_solve()
        .map_err(|e| Error::Solver(format!("HiGHS failed: {e:?}")))?;
    // Read the raw info: the binding's accessor panics on "no status yet".
    let has_solution = solved
        .int_info_value(c"primal_solution_status")
        .is_ok_and(|v| v == highs::HighsSolutionStatus::Feasible as i64);
    Ok(HighsRun {
        values: has_solution.then(|| solved.get_solution().columns().to_vec()),
        status: solved.status(),
        dual_bound: solved
            .double_info_value(c"mip_dual_bound")
            .unwrap_or(f64::NEG_INFINITY),
    })
}
