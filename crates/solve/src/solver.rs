//! The solver front: picks the method by size and says which it used. The
//! exact path hands the [`Milp`] to HiGHS through good_lp, warm started from
//! a feasible placement so that a time-limited solve always returns one; the
//! fast path (`fast`) serves fleets the MILP cannot. Between them, `auto`
//! improves the fast answer by large-neighbourhood search: HiGHS solves
//! the sub-model of a few related sites' workloads, the rest held fixed.
//! Every answer reports a proven bound and the gap. Pure apart from the
//! time limits; with `deterministic`, a work budget alone stops every part
//! (the fast path, the neighbourhood search, HiGHS by node limits), so the
//! answer is the same on any machine.

use highs::HighsModelStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fast::{self, FastOptions, Limit};
use crate::highs_run::{run_highs, HighsOptions};
use crate::milp::{Column, Milp};
use edgeplan_model::clock::Deadline;
use edgeplan_model::error::{Error, Result};
pub use edgeplan_problem::gap::{placed_gap, relative_gap};
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::load::Load;
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rows::{Row, EPS};

/// Options of an exact solve.
#[derive(Debug, Clone, PartialEq)]
pub struct SolveOptions {
    /// When to stop with the best placement found: made by the shell
    /// (`Deadline::after_s`) and handed in; `Deadline::NONE` for none.
    /// Ignored when `deterministic`.
    pub deadline: Deadline,
    /// Stop once within this gap of the bound, on the placed cost
    /// ([`placed_gap`]); [`DEFAULT_GAP`] when unset.
    pub relative_gap: Option<f64>,
    /// HiGHS threads; `None` leaves HiGHS's default.
    pub threads: Option<u32>,
    /// HiGHS random seed, for reproducible runs.
    pub seed: u32,
    pub method: Method,
    /// Work budget (see `fast::Limit`; HiGHS nodes count as the model's
    /// columns each). Unlimited when unset, unless `deterministic`
    /// (`fast::DEFAULT_WORK` then).
    pub work: Option<u64>,
    /// Stop on the work budget alone: `deadline` is ignored, and the
    /// answer is the same for the same problem, options and seed on any
    /// machine.
    pub deterministic: bool,
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            deadline: Deadline::NONE,
            relative_gap: None,
            threads: None,
            seed: 0,
            method: Method::Auto,
            work: None,
            deterministic: false,
        }
    }
}

impl SolveOptions {
    /// The deadline that applies (none when deterministic).
    fn clock(&self) -> Deadline {
        if self.deterministic {
            Deadline::NONE
        } else {
            self.deadline
        }
    }

    /// What HiGHS is told of these options.
    pub(crate) fn highs(&self) -> HighsOptions {
        HighsOptions {
            deadline: self.clock(),
            relative_gap: self.relative_gap,
            threads: self.threads,
            seed: self.seed,
        }
    }

    /// The work budget that applies.
    fn budget(&self) -> Option<u64> {
        self.work
            .or(self.deterministic.then_some(fast::DEFAULT_WORK))
    }
}

/// How to solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The fast path first; then, if its gap is above the target and the
    /// model is small enough for HiGHS, a large-neighbourhood search with
    /// HiGHS on sub-problems, and the exact MILP warm-started from its answer.
    #[default]
    Auto,
    /// The exact MILP on HiGHS.
    Exact,
    /// Lagrangian bound + price-guided greedy + local search.
    Fast,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Method::Auto),
            "exact" => Ok(Method::Exact),
            "fast" => Ok(Method::Fast),
            other => Err(format!("unknown method {other:?}: auto, exact or fast")),
        }
    }
}

/// Above this many (workload, site) candidate pairs `auto` does not hand
/// the model to HiGHS: the LP relaxation alone outlasts any interactive
/// time limit there (5,000 × 100 pairs took seconds just to bound).
pub const EXACT_MAX_CANDIDATES: usize = 60_000;

/// Seconds HiGHS needs on the whole model per candidate pair, about,
/// before it improves on a tight fleet's fast answer (measured: 3.5 s on
/// gpu-tight 5,000 × 100, 12,951 pairs, 2 cores). With less time left,
/// `auto` spends it on repairs instead.
const EXACT_S_PER_CANDIDATE: f64 = 2.5e-4;

/// Share of `auto`'s time after the fast path that goes to the
/// large-neighbourhood search (the rest: HiGHS on the whole model).
const LNS_SHARE: f64 = 0.6;

/// At most this long on neighbourhoods: with a generous time limit, HiGHS
/// on the whole model, from the search's answer, proves the optimum sooner.
const LNS_MAX_S: f64 = 6.0;

/// Neighbourhoods in a row without an improvement before the search hands
/// over to HiGHS on the whole model.
const LNS_PATIENCE: usize = 6;

/// Branch-and-bound nodes of one neighbourhood's sub-solve under a work
/// budget (its stand-in for the 2 s a sub-solve gets on the clock).
const LNS_NODES: u64 = 200;

/// The gap `auto` settles for when none is asked for.
pub const DEFAULT_GAP: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SolveStatus {
    /// Proven optimal (within HiGHS's tolerance).
    Optimal,
    /// Stopped at the requested gap.
    GapLimit,
    /// Stopped by the time limit with a feasible placement.
    TimeLimit,
    /// Stopped by the work budget with a feasible placement.
    WorkLimit,
    /// An incremental re-plan from the placement in force (`fast::Replanner`).
    Replanned,
}

/// What the exact solver found.
#[derive(Debug, Clone)]
pub struct Solved {
    /// Per workload: (site, replicas).
    pub x: Replicas,
    pub status: SolveStatus,
    /// Objective of `x` (offset included).
    pub objective: f64,
    /// Proven lower bound on the optimum.
    pub bound: f64,
    /// (objective − bound) over the placed cost: [`placed_gap`].
    pub gap: f64,
    /// The method that produced `x` (for `auto`: the last one run).
    pub method: Method,
    /// The fast path's Lagrangian multipliers, when it ran (an incremental
    /// re-plan prices with them; see `fast::Replanner`); empty otherwise.
    pub price: Vec<f64>,
    /// Work spent (see `fast::Limit`).
    pub work: u64,
    /// With spot workloads: the prices and what spot work got at them.
    pub market: Option<Box<crate::spot::Market>>,
}

impl Solved {
    /// `self` answers `problem`'s on-demand part (`on_demand`, made by
    /// [`crate::spot::on_demand`], whose workloads are `problem`'s `kept`):
    /// the answer to `problem`, with spot replicas admitted into the room
    /// left. The objective and the bound both count what the admitted
    /// spot replicas cost (they are placed by the market's rule, not
    /// optimised); the gap stays the on-demand one (over a placed cost
    /// grown by spot work it would look smaller than the search earned).
    pub fn with_spot(self, problem: &Problem, on_demand: &Problem, kept: &[WorkloadIx]) -> Solved {
        let x = crate::spot::lift(problem, kept, &self.x);
        let market = crate::spot::on_with(problem, on_demand, &x, None, 0.0);
        self.with_market(problem, market)
    }

    /// [`Solved::with_spot`] at multipliers made before (an earlier
    /// market's `duals`): for incremental re-plans, which must stay fast.
    pub fn with_spot_at(self, problem: &Problem, kept: &[WorkloadIx], duals: &[f64]) -> Solved {
        let x = crate::spot::lift(problem, kept, &self.x);
        let market = crate::spot::admit_from(problem, &x, duals, None);
        self.with_market(problem, market)
    }

    fn with_market(self, problem: &Problem, market: crate::spot::Market) -> Solved {
        let objective = problem.evaluate(&market.x).objective.total;
        Solved {
            objective,
            bound: self.bound + (objective - self.objective),
            x: market.x.clone(),
            market: Some(Box::new(market)),
            ..self
        }
    }

    /// An incremental re-plan's answer, `x` being the replanner's placement.
    pub fn replanned(x: Replicas, r: &crate::fast::Replanned) -> Solved {
        Solved {
            x,
            status: SolveStatus::Replanned,
            objective: r.objective,
            bound: r.bound,
            gap: r.gap,
            method: Method::Fast,
            price: Vec::new(),
            work: 0,
            market: None,
        }
    }
}

/// The priority-weighted penalty of what `x` leaves unplaced.
pub fn unplaced_penalty(problem: &Problem, x: &Replicas) -> f64 {
    problem
        .workloads
        .iter()
        .zip(x)
        .map(|(w, at)| {
            let placed: u32 = at.iter().map(|&(_, n)| n).sum();
            f64::from(w.replicas.saturating_sub(placed)) * w.unplaced_cost
        })
        .sum()
}

/// [`placed_gap`] of placement `x`.
pub fn gap_of(problem: &Problem, x: &Replicas, objective: f64, bound: f64) -> f64 {
    placed_gap(objective, bound, unplaced_penalty(problem, x))
}

/// Replicas no placement can place: a proven lower bound on the unplaced
/// count — the larger of [`counted_unplaced`] and, on models of at most
/// [`PROOF_LP_MAX_CANDIDATES`] pairs, the LP relaxation's (every rule's
/// rows at once, so it sees which sites are within reach of whom and
/// that cores and GPUs must fit together: on gpu-tight 5,000 × 100 seed 1
/// it proves 37 of the optimum's 54, where counting proves 0).
pub fn proven_unplaced(p: &Problem) -> u64 {
    let counted = counted_unplaced(p);
    let candidates: usize = p.workloads.iter().map(|w| w.candidates.len()).sum();
    if candidates > PROOF_LP_MAX_CANDIDATES {
        return counted;
    }
    match lp_unplaced(p) {
        Ok(lp) => counted.max(lp),
        Err(e) => {
            tracing::warn!("the unplaced count's LP failed: {e}");
            counted
        }
    }
}

/// Above this many (workload, site) pairs [`proven_unplaced`] skips its
/// LP (0.2–0.4 s at 5,000 × 100: 13,000 pairs).
pub const PROOF_LP_MAX_CANDIDATES: usize = 20_000;

/// The fewest replicas the exact model's LP relaxation leaves unplaced
/// (each `u` costs one, nothing else costs): every placement is a solution
/// of it, so none leaves fewer out than its optimum, rounded up.
fn lp_unplaced(p: &Problem) -> Result<u64> {
    let milp = Milp::build(p);
    let mut columns: Vec<Column> = milp
        .columns
        .iter()
        .map(|c| Column {
            integer: false,
            cost: 0.0,
            ..c.clone()
        })
        .collect();
    for &u in milp.u.iter() {
        columns[u].cost = 1.0;
    }
    // Everything unplaced: a solution of every row.
    let start = milp.assignment_of(p, &Replicas::empty(p.workloads.len()));
    let run = run_highs(
        &milp.rows,
        &columns,
        &start,
        &HighsOptions::default(),
        None,
        None,
    )?;
    let (HighsModelStatus::Optimal, Some(values)) = (run.status, run.values) else {
        return Ok(0);
    };
    let lp: f64 = milp.u.iter().map(|&u| values[u]).sum();
    // HiGHS's tolerances may put its optimum a hair above the true one.
    Ok((lp - 1e-6 * lp.max(1.0)).ceil().max(0.0) as u64)
}

/// Replicas no placement can place, by counting alone. Per workload, the replicas beyond what its candidate sites may
/// hold (per-site caps, failure-domain caps; for a member of an affinity
/// group, only the sites every member may use); per anti-affinity group,
/// the replicas beyond one per site any member may use; then, per row
/// (each resource, then power), the fewest replicas (biggest first) whose
/// removal brings the placeable demand under the whole fleet's limit — a
/// group's excess taken off its members' biggest replicas first, so the
/// two counts add up without counting a replica twice. The move budget and
/// the split of the fleet into sites are ignored, which can only lower it.
pub fn counted_unplaced(p: &Problem) -> u64 {
    let mut placeable: IndexVec<WorkloadIx, u64> = p
        .workloads
        .iter()
        .map(|w| {
            let mut by_domain: Vec<(usize, u64)> = Vec::new();
            let mut cap = 0u64;
            for c in &w.candidates {
                let n = u64::from(c.max_count);
                match (w.max_per_failure_domain, p.sites[c.site].failure_domain) {
                    (Some(_), Some(d)) => match by_domain.iter_mut().find(|e| e.0 == d) {
                        Some(e) => e.1 += n,
                        None => by_domain.push((d, n)),
                    },
                    _ => cap += n,
                }
            }
            let per_domain = u64::from(w.max_per_failure_domain.unwrap_or(u32::MAX));
            cap += by_domain.iter().map(|e| e.1.min(per_domain)).sum::<u64>();
            u64::from(w.replicas).min(cap)
        })
        .collect();
    // Affinity: the same set of sites for every member — only sites all of
    // them may use.
    for (_, members) in &p.affinity_groups {
        for &wi in members {
            let common: u64 = p.workloads[wi]
                .candidates
                .iter()
                .filter(|c| {
                    members
                        .iter()
                        .all(|&m| p.workloads[m].candidate_at(c.site).is_some())
                })
                .map(|c| u64::from(c.max_count))
                .sum();
            placeable[wi] = placeable[wi].min(common);
        }
    }
    let mut structural: u64 = p
        .workloads
        .iter()
        .zip(placeable.iter())
        .map(|(w, &n)| u64::from(w.replicas) - n)
        .sum();
    // Anti-affinity: at most one replica of the group per site any member
    // may use.
    let mut group_excess: Vec<(&[WorkloadIx], u64)> = Vec::new();
    for (_, members) in &p.anti_affinity_groups {
        let mut sites: Vec<SiteIx> = members
            .iter()
            .flat_map(|&w| p.workloads[w].candidates.iter().map(|c| c.site))
            .collect();
        sites.sort_unstable();
        sites.dedup();
        let n: u64 = members.iter().map(|&w| placeable[w]).sum();
        let excess = n.saturating_sub(sites.len() as u64);
        if excess > 0 {
            structural += excess;
            group_excess.push((members, excess));
        }
    }
    // Per row (each resource, then power): (demand per replica, replicas).
    let mut worst = 0u64;
    for row in p.rows() {
        let limit: f64 = p
            .sites
            .indices()
            .map(|si| {
                let l = p.limit(si, row);
                // The same tolerance as `within`.
                let l = l.max(0.0);
                l + EPS * l.max(1.0)
            })
            .sum();
        let mut per: IndexVec<WorkloadIx, (f64, u64)> = p
            .workloads
            .iter()
            .zip(placeable.iter())
            .map(|(w, &n)| {
                let d = match row {
                    Row::Resource(r) => w.demand[r],
                    // Its least power at any candidate site.
                    Row::Power => w
                        .candidates
                        .iter()
                        .map(|c| c.dynamic_kw)
                        .fold(f64::INFINITY, f64::min),
                };
                (d.max(0.0), n)
            })
            .collect();
        // A group's excess is already counted: off its biggest replicas.
        for (members, excess) in &group_excess {
            let mut by_size: Vec<WorkloadIx> = members.to_vec();
            by_size.sort_by(|a, b| per[*b].0.total_cmp(&per[*a].0));
            let mut left = *excess;
            for w in by_size {
                let take = left.min(per[w].1);
                per[w].1 -= take;
                left -= take;
            }
        }
        let mut demand: Vec<(f64, u64)> = per
            .into_iter()
            .filter(|(d, n)| *n > 0 && d.is_finite() && *d > 0.0)
            .collect();
        let mut excess = demand.iter().map(|(d, n)| d * *n as f64).sum::<f64>() - limit;
        if excess <= 0.0 {
            continue;
        }
        demand.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut dropped = 0u64;
        for (d, n) in demand {
            if excess <= 0.0 {
                break;
            }
            let k = ((excess / d).ceil() as u64).clamp(1, n);
            dropped += k;
            excess -= d * k as f64;
        }
        worst = worst.max(dropped);
    }
    structural + worst
}

/// Solve a problem with the method the options ask for. Spot workloads
/// (see [`crate::spot`]) are left out of the solve: on-demand work is
/// placed first, then spot replicas are admitted into the room left where
/// the site's spot price for their shape is within their bid. The
/// objective and the bound both count what the admitted spot replicas
/// cost (they are placed by the market's rule, not optimised); the gap is
/// the on-demand solve's.
pub fn solve(problem: &Problem, options: &SolveOptions) -> Result<Solved> {
    if !problem.has_spot() {
        return solve_on_demand(problem, options);
    }
    let (on_demand, kept) = crate::spot::on_demand(problem);
    let solved = solve_on_demand(&on_demand, options)?;
    Ok(solved.with_spot(problem, &on_demand, &kept))
}

fn solve_on_demand(problem: &Problem, options: &SolveOptions) -> Result<Solved> {
    let target = options.relative_gap.unwrap_or(DEFAULT_GAP);
    match options.method {
        Method::Exact => exact(problem, options, greedy(problem)),
        Method::Fast => Ok(fast_solved(problem, options, target)),
        Method::Auto => {
            let candidates: usize = problem.workloads.iter().map(|w| w.candidates.len()).sum();
            if candidates > EXACT_MAX_CANDIDATES {
                return Ok(fast_solved(problem, options, target));
            }
            // HiGHS will continue: the fast path gets a third of the time
            // and of the work, HiGHS (warm-started from it) the rest.
            let work = options.budget();
            let fast_options = SolveOptions {
                deadline: options.deadline.share(1.0 / 3.0),
                work: work.map(|w| w / 3),
                ..options.clone()
            };
            let fast = fast_solved(problem, &fast_options, target.max(1e-3));
            if fast.gap <= target {
                return Ok(fast);
            }
            let milp = Milp::build(problem);
            let mut start = fast.x.clone();
            let mut spent = fast.work;
            // With a time limit or a budget: most of what is left on
            // neighbourhoods HiGHS solves exactly, the rest on the whole
            // model (for its bound, and whatever it still finds).
            // Where the fast answer leaves out replicas no bound says must
            // be (a tight fleet), the neighbourhoods' time goes to HiGHS
            // on the whole model: its search over the packing proves and
            // places what sub-models do not (gpu-tight 5,000 × 100 at
            // 10 s: 54 left out against 56).
            let tight = fast_unplaced(problem, &fast.x) > counted_unplaced(problem);
            // Too little time left for HiGHS on the whole model: more
            // repairs make better use of it (gpu-tight 5,000 × 100 at 3 s:
            // 57 left out, against 59 with HiGHS cut short).
            let whole_model_s = EXACT_S_PER_CANDIDATE * candidates as f64;
            if tight
                && options
                    .clock()
                    .remaining_s()
                    .is_some_and(|left| left < whole_model_s)
            {
                let limit = Limit::new(options.clock(), work.map(|w| w.saturating_sub(fast.work)));
                let r = crate::repair::repair(
                    problem,
                    fast.x.clone(),
                    fast.objective,
                    &limit,
                    options.seed,
                )?;
                let bound = fast.bound.min(r.objective);
                return Ok(Solved {
                    gap: gap_of(problem, &r.x, r.objective, bound),
                    x: r.x,
                    status: SolveStatus::TimeLimit,
                    objective: r.objective,
                    bound,
                    method: Method::Fast,
                    price: fast.price,
                    work: fast.work + limit.spent(),
                    market: None,
                });
            }
            if !tight && (options.clock().is_set() || work.is_some()) {
                let until = options.clock().share(LNS_SHARE).cap_s(LNS_MAX_S);
                let lns_work = work.map(|w| (w.saturating_sub(spent) as f64 * LNS_SHARE) as u64);
                let limit = Limit::new(until, lns_work);
                start = lns(problem, &milp, start, &limit, options)?.0;
                spent += limit.spent();
            }
            let exact_options = SolveOptions {
                deadline: options.deadline.at_least_s(0.1),
                work: work.map(|w| w.saturating_sub(spent)),
                ..options.clone()
            };
            let mut solved = exact_on(problem, &milp, &exact_options, start)?;
            solved.work += spent;
            if fast.objective < solved.objective {
                solved.x = fast.x;
                solved.objective = fast.objective;
                solved.method = Method::Fast;
            }
            solved.bound = solved.bound.max(fast.bound).min(solved.objective);
            solved.price = fast.price;
            solved.gap = gap_of(problem, &solved.x, solved.objective, solved.bound);
            Ok(solved)
        }
    }
}

/// Replicas placement `x` leaves out.
fn fast_unplaced(problem: &Problem, x: &Replicas) -> u64 {
    problem
        .workloads
        .iter_enumerated()
        .map(|(wi, w)| u64::from(w.replicas.saturating_sub(x.placed(wi))))
        .sum()
}

fn fast_solved(problem: &Problem, options: &SolveOptions, target: f64) -> Solved {
    let r = fast::solve(
        problem,
        &FastOptions {
            target_gap: target,
            deadline: options.deadline,
            work: options.budget(),
            deterministic: options.deterministic,
            ..FastOptions::default()
        },
    );
    Solved {
        status: if r.gap <= 1e-9 {
            SolveStatus::Optimal
        } else if r.gap <= target {
            SolveStatus::GapLimit
        } else if r.out_of_work {
            SolveStatus::WorkLimit
        } else {
            SolveStatus::TimeLimit
        },
        work: r.work,
        x: r.x,
        objective: r.objective,
        bound: r.bound,
        gap: r.gap,
        method: Method::Fast,
        price: r.price,
        market: None,
    }
}

/// Solve the exact MILP of a problem, warm-started from `start`.
pub fn exact(problem: &Problem, options: &SolveOptions, start: Replicas) -> Result<Solved> {
    exact_on(problem, &Milp::build(problem), options, start)
}

/// [`exact`] on a model already built.
fn exact_on(
    problem: &Problem,
    milp: &Milp,
    options: &SolveOptions,
    start: Replicas,
) -> Result<Solved> {
    let start_values = milp.assignment_of(problem, &start);
    let start_objective = milp.objective_at(&start_values);
    // HiGHS's relative gap is over the whole objective, which the unplaced
    // penalty swamps: the target, on the placed cost, becomes an absolute
    // gap from the start's placed cost.
    let target = options.relative_gap.unwrap_or(DEFAULT_GAP);
    let start_placed = start_objective - unplaced_penalty(problem, &start);
    let abs_gap = target * start_placed.abs().max(1e-9);
    // Under a budget, HiGHS gets what is left in nodes (each costs the
    // model's columns): node counts, unlike seconds, repeat.
    let node_work = milp.columns.len().max(1) as u64;
    let max_nodes = options.budget().map(|w| w / node_work);
    let run = run_highs(
        &milp.rows,
        &milp.columns,
        &start_values,
        &options.highs(),
        Some(abs_gap),
        max_nodes,
    )?;
    let (x, objective) = match &run.values {
        Some(values) => {
            let x = milp.placement_from(values);
            let obj = milp.objective_at(&milp.assignment_of(problem, &x));
            if obj <= start_objective + EPS * start_objective.abs().max(1.0) {
                (x, obj)
            } else {
                (start, start_objective)
            }
        }
        None => (start, start_objective),
    };
    let status = match run.status {
        // Settled below as the gap on the placed cost says.
        HighsModelStatus::Optimal => SolveStatus::Optimal,
        // The node limit ends in HiGHS's "solution limit".
        HighsModelStatus::ReachedSolutionLimit if max_nodes.is_some() => SolveStatus::WorkLimit,
        HighsModelStatus::ReachedTimeLimit
        | HighsModelStatus::ReachedIterationLimit
        | HighsModelStatus::ReachedSolutionLimit
        | HighsModelStatus::ReachedInterrupt
        | HighsModelStatus::ReachedMemoryLimit => SolveStatus::TimeLimit,
        other => {
            return Err(Error::Solver(format!(
                "HiGHS ended with status {other:?}; the model always has a solution (everything unplaced), so this is a defect"
            )))
        }
    };
    // HiGHS's bound excludes our offset; an unknown bound is reported as
    // the problem's trivial one (the offset, less what placements can earn
    // at negative prices).
    let bound = if run.dual_bound.is_finite() {
        (run.dual_bound + milp.offset).min(objective)
    } else if status == SolveStatus::Optimal {
        objective
    } else {
        problem.trivial_bound().min(objective)
    };
    let gap = gap_of(problem, &x, objective, bound);
    let status = if status == SolveStatus::Optimal && gap > 1e-6 {
        SolveStatus::GapLimit
    } else {
        status
    };
    Ok(Solved {
        gap,
        x,
        status,
        objective,
        bound,
        method: Method::Exact,
        price: Vec::new(),
        work: max_nodes.map_or(0, |n| n * node_work),
        market: None,
    })
}

/// Improve a placement by [large-neighbourhood search](lns) on the exact
/// model until `deadline` (it stops sooner once a neighbourhood spanning
/// every site was solved to optimality: then the answer is optimal).
/// Returns the placement and its objective.
pub fn neighbourhood_search(
    problem: &Problem,
    start: Replicas,
    deadline: Deadline,
    seed: u32,
) -> Result<(Replicas, f64)> {
    let limit = Limit::new(deadline, None);
    let options = SolveOptions {
        seed,
        ..SolveOptions::default()
    };
    lns(problem, &Milp::build(problem), start, &limit, &options)
}

/// Large-neighbourhood search on the exact model: free the workloads that
/// run on a few related sites, fix every other workload's columns at the
/// incumbent, and let HiGHS solve what is left (small after presolve),
/// warm-started from the incumbent. Every improvement is kept; the
/// neighbourhood grows while HiGHS proves its sub-problems optimal quickly
/// and shrinks when it runs out of time; the search ends at its deadline,
/// after [`LNS_PATIENCE`] fruitless tries once sub-models stop being solved
/// to optimality, or once it solved every site at once. Returns the best placement and
/// its objective (the model's pricing); deterministic for a seed when
/// `limit` has no deadline (sub-solves then stop on node limits, each
/// node costing the model's columns in work).
fn lns(
    problem: &Problem,
    milp: &Milp,
    mut x: Replicas,
    limit: &Limit,
    options: &SolveOptions,
) -> Result<(Replicas, f64)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(options.seed) ^ 0x1a5);
    let sites = problem.sites.len();
    let mut values = milp.assignment_of(problem, &x);
    let mut objective = milp.objective_at(&values);
    let mut width = 3usize; // sites per neighbourhood
    let (mut tries, mut kept, mut stale) = (0usize, 0usize, 0usize);
    let node_work = milp.columns.len().max(1) as u64;
    while !limit.out() && sites > 1 {
        tries += 1;
        // Related sites: one at random, then where its workloads could go.
        let s0 = SiteIx::new(rng.random_range(0..sites));
        let mut weight: IndexVec<SiteIx, u32> = IndexVec::from_elem_n(0, sites);
        for (w, at) in x.iter_enumerated() {
            if at.iter().any(|&(s, _)| s == s0) {
                for c in &problem.workloads[w].candidates {
                    weight[c.site] += 1;
                }
            }
        }
        let mut near: Vec<SiteIx> = weight
            .indices()
            .filter(|&s| s != s0 && weight[s] > 0)
            .collect();
        // Heaviest first, with a random tie-break so neighbourhoods vary.
        let jitter: IndexVec<SiteIx, u32> = (0..sites).map(|_| rng.random_range(0..4)).collect();
        near.sort_by_key(|&s| std::cmp::Reverse(weight[s] * 4 + jitter[s]));
        // At full width: every site, i.e. the whole model.
        let mut chosen: IndexVec<SiteIx, bool> = IndexVec::from_elem_n(width >= sites, sites);
        chosen[s0] = true;
        for &s in near.iter().take(width.saturating_sub(1)) {
            chosen[s] = true;
        }
        let free: IndexVec<WorkloadIx, bool> = x
            .iter()
            .map(|at| at.is_empty() || at.iter().any(|&(s, _)| chosen[s]))
            .collect();
        let mut columns = milp.columns.clone();
        for (w, &is_free) in free.iter_enumerated() {
            if is_free {
                continue;
            }
            let fixed = milp.x[w]
                .iter()
                .chain(&milp.m[w])
                .map(|&(_, c)| c)
                .chain([milp.u[w]]);
            for c in fixed {
                columns[c].lower = values[c];
                columns[c].upper = values[c];
            }
        }
        let sub = SolveOptions {
            deadline: limit.deadline().cap_s(2.0),
            relative_gap: Some(0.0),
            ..options.clone()
        };
        let nodes = limit
            .left()
            .map(|w| (w / node_work).saturating_sub(1).clamp(1, LNS_NODES));
        // A sub-solve is charged what it may spend: its nodes and its root.
        limit.spend((nodes.unwrap_or(LNS_NODES) + 1) * node_work);
        let run = run_highs(&milp.rows, &columns, &values, &sub.highs(), None, nodes)?;
        let optimal = run.status == HighsModelStatus::Optimal;
        if optimal {
            width = (width + width.div_ceil(2)).min(sites);
        } else {
            width = (width * 2 / 3).max(2);
        }
        // Every site at once, solved: that was the whole model.
        let whole = optimal && free.iter().all(|&f| f);
        stale += 1;
        if let Some(v) = run.values {
            let candidate = milp.placement_from(&v);
            let cv = milp.assignment_of(problem, &candidate);
            let obj = milp.objective_at(&cv);
            if obj < objective - 1e-9 * objective.abs().max(1.0) {
                x = candidate;
                values = cv;
                objective = obj;
                kept += 1;
                stale = 0;
            }
        }
        // Solved whole, or stuck where sub-models are already hard: the
        // whole model (HiGHS next) does better.
        if whole || (stale >= LNS_PATIENCE && !optimal) {
            break;
        }
    }
    tracing::debug!(tries, kept, width, objective, "large-neighbourhood search");
    Ok((x, objective))
}

/// A feasible placement, built greedily: keep what runs today where it still
/// fits, then place the rest, most important first, on the cheapest site with
/// room. Affinity groups are left unplaced (the MILP places them). Serves as
/// the MILP's warm start and as its answer when it finds nothing better.
pub fn greedy(p: &Problem) -> Replicas {
    let mut state = Load::empty(p);
    let mut in_affinity = IndexVec::from_elem_n(false, p.workloads.len());
    for (_, members) in &p.affinity_groups {
        for &w in members {
            in_affinity[w] = true;
        }
    }
    let mut order: Vec<WorkloadIx> = p.workloads.indices().filter(|w| !in_affinity[*w]).collect();
    order.sort_by(|a, b| {
        p.workloads[*b]
            .priority
            .cmp(&p.workloads[*a].priority)
            .then(a.cmp(b))
    });
    // Pass 1: stay where running.
    for &wi in &order {
        let w = &p.workloads[wi];
        for &(si, n) in &w.current {
            for _ in 0..n {
                if state.placed[wi] < w.replicas && state.fits(p, wi, si, false) {
                    state.add(p, wi, si, 1);
                }
            }
        }
    }
    // Pass 2: the rest, cheapest site first, while it beats leaving it unplaced.
    for &wi in &order {
        let w = &p.workloads[wi];
        let mut by_cost: Vec<usize> = (0..w.candidates.len()).collect();
        by_cost.sort_by(|a, b| w.candidates[*a].cost().total_cmp(&w.candidates[*b].cost()));
        'replica: while state.placed[wi] < w.replicas {
            for &k in &by_cost {
                let c = &w.candidates[k];
                let is_move = state.count(wi, c.site) >= w.current_at(c.site);
                let cost = c.cost() + if is_move { w.move_cost } else { 0.0 };
                if cost < w.unplaced_cost && state.fits(p, wi, c.site, is_move) {
                    state.add(p, wi, c.site, 1);
                    state.moves += u64::from(is_move);
                    continue 'replica;
                }
            }
            break;
        }
    }
    state.x
}
