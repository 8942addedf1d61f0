//! Repair: place what a placement leaves out by solving small exact
//! sub-models around it. Where a fleet is tight (GPUs or cores nearly
//! full), greedy moves and ejection chains stop at packings an exact
//! search improves: two small replicas out of a site make room for a big
//! one, which frees room elsewhere for a third. A repair picks a workload
//! with replicas left out, the sites it may use and the sites their
//! tenants could move to, frees every (workload, site) count there, holds
//! the rest of the fleet where it is ([`Around`]), and lets HiGHS solve
//! that small model exactly, warm-started from the placement. A better
//! answer is kept only after the whole placement passes every rule's fits
//! role ([`Load::fits`]) and prices lower ([`Problem::evaluate`]), so a
//! repair never breaks a constraint or worsens the objective. Pure: a
//! deadline and a work budget come in as values; deterministic for a seed
//! when only the budget stops it (sub-solves stop on node limits).

use edgeplan_model::error::Result;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::load::Load;
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rows::Row;
use highs::HighsModelStatus;
use rand::{Rng, SeedableRng};

use crate::highs_run::{run_highs, HighsOptions};
use crate::limit::Limit;
use crate::milp::{rows_by_workload, Around, Milp};

/// Sites a repair frees at first among the target workload's own, and
/// half as many beyond them (it grows while sub-models solve to
/// optimality without an improvement, and shrinks when they run out of
/// time).
const FIRST_REACH: usize = 3;

/// At most this many of the target's candidate sites.
const MAX_OWN_SITES: usize = 12;

/// At most this many sites beyond them.
const MAX_REACH: usize = 48;

/// Branch-and-bound nodes of one sub-solve under a work budget.
const NODES: u64 = 500;

/// Longest one sub-solve may take on the clock.
const SUB_SOLVE_S: f64 = 1.0;

/// What a repair did.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub x: Replicas,
    /// The objective of `x` (`Problem::evaluate`).
    pub objective: f64,
    /// Sub-models solved, and how many of them improved the placement.
    pub tries: usize,
    pub kept: usize,
}

/// Whether placement `x` keeps every rule: its replicas added one at a
/// time, each where every rule's fits role lets it (the rows only fill
/// up, so the order does not matter).
pub fn holds(p: &Problem, x: &Replicas) -> bool {
    let mut load = Load::empty(p);
    for (wi, sites) in x.iter_enumerated() {
        let w = &p.workloads[wi];
        for &(si, n) in sites {
            for _ in 0..n {
                let is_move = load.count(wi, si) >= w.current_at(si);
                if !load.fits(p, wi, si, is_move) {
                    return false;
                }
                load.add(p, wi, si, 1);
                load.moves += u64::from(is_move);
            }
        }
    }
    true
}

/// Workloads with replicas left out that some candidate would take at a
/// cost below leaving them out (members of affinity groups aside: their
/// sites are chosen together across the fleet).
fn left_out(
    p: &Problem,
    x: &Replicas,
    in_affinity: &IndexVec<WorkloadIx, bool>,
) -> Vec<WorkloadIx> {
    p.workloads
        .iter_enumerated()
        .filter(|&(wi, w)| {
            !in_affinity[wi]
                && x.placed(wi) < w.replicas
                && w.candidates
                    .iter()
                    .any(|c| c.cost() + w.move_cost < w.unplaced_cost)
        })
        .map(|(wi, _)| wi)
        .collect()
}

/// Improve placement `x` (of objective `objective`) by repairs until
/// `limit` runs out, nothing is left out, or a round of tries over every
/// workload left out, at the widest reach, changed nothing.
pub fn repair(
    p: &Problem,
    mut x: Replicas,
    mut objective: f64,
    limit: &Limit,
    seed: u32,
) -> Result<Repaired> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(seed) ^ 0x4e9a);
    let mut in_affinity = IndexVec::from_elem_n(false, p.workloads.len());
    for (_, members) in &p.affinity_groups {
        for &w in members {
            in_affinity[w] = true;
        }
    }
    let rows = Milp::rule_rows(p);
    let rows_of = rows_by_workload(p, &rows);
    let mut reach = FIRST_REACH;
    let (mut tries, mut kept, mut stale) = (0usize, 0usize, 0usize);
    let sites = p.sites.len();
    // Per site: the workloads placed there (kept up to date on each change).
    let mut on_site: IndexVec<SiteIx, Vec<WorkloadIx>> = IndexVec::from_elem_n(Vec::new(), sites);
    for (wi, at) in x.iter_enumerated() {
        for &(si, _) in at {
            on_site[si].push(wi);
        }
    }
    let mut load = Load::of(p, &x);
    while !limit.out() {
        let out = left_out(p, &x, &in_affinity);
        if out.is_empty() || stale > out.len() + 2 && reach >= MAX_REACH {
            break;
        }
        tries += 1;
        let target = out[rng.random_range(0..out.len())];
        // The target's own sites, in random order, then the sites their
        // tenants could move to, most shared first.
        let free_on = |s: SiteIx, row: Row| p.limit(s, row) - load.use_of(p, s, row);
        // Its own sites nearest to fitting it first (the rows it lacks
        // there, as shares of its need), with noise so that tries vary.
        let mut own: Vec<(f64, SiteIx)> = p.workloads[target]
            .candidates
            .iter()
            .map(|c| {
                let lack: f64 = p
                    .rows()
                    .map(|row| {
                        let need = p.need(target, c.site, row);
                        if need > 0.0 {
                            ((need - free_on(c.site, row)) / need).max(0.0)
                        } else {
                            0.0
                        }
                    })
                    .sum();
                (lack + rng.random::<f64>(), c.site)
            })
            .collect();
        own.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        own.truncate(reach.min(MAX_OWN_SITES));
        let own: Vec<SiteIx> = own.into_iter().map(|(_, s)| s).collect();
        let mut chosen: IndexVec<SiteIx, bool> = IndexVec::from_elem_n(false, sites);
        for &s in &own {
            chosen[s] = true;
        }
        // The rows the target lacks room on at its own sites: only the
        // tenants that use them need to move (all of them when it lacks
        // no row: a rule, not a row, keeps it out).
        let mut short: Vec<Row> = Vec::new();
        for &s in &own {
            if let Err(lack) = load.room(p, target, s) {
                if !short.contains(&lack.row) {
                    short.push(lack.row);
                }
            }
        }
        let uses_short = |wi: WorkloadIx, s: SiteIx| {
            short.is_empty() || short.iter().any(|&row| p.need(wi, s, row) > 0.0)
        };
        let mut weight: IndexVec<SiteIx, u32> = IndexVec::from_elem_n(0, sites);
        for &s in &own {
            for &wi in on_site[s].iter().filter(|&&wi| uses_short(wi, s)) {
                for c in &p.workloads[wi].candidates {
                    weight[c.site] += 1;
                }
            }
        }
        // Where those tenants could go: the sites with the most room on
        // the rows the target lacks (the most tenants that could go
        // there, when it lacks no row), with noise.
        let mut near: Vec<(f64, SiteIx)> = weight
            .iter_enumerated()
            .filter(|&(s, &n)| n > 0 && !chosen[s])
            .map(|(s, &n)| {
                let room: f64 = if short.is_empty() {
                    f64::from(n)
                } else {
                    short
                        .iter()
                        .map(|&row| free_on(s, row).max(0.0) / p.limit(s, row).max(1e-9))
                        .sum()
                };
                (room * (1.0 + 0.25 * rng.random::<f64>()), s)
            })
            .collect();
        near.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, s) in near.iter().take(reach.div_ceil(2)) {
            chosen[s] = true;
        }
        // Free: every workload placed on a chosen site, and every one left
        // out that may use one; each over its candidates among them.
        let mut is_free = IndexVec::from_elem_n(false, p.workloads.len());
        let mut free_list: Vec<WorkloadIx> = Vec::new();
        for s in chosen.indices().filter(|&s| chosen[s]) {
            for &wi in &on_site[s] {
                if !is_free[wi] && uses_short(wi, s) {
                    is_free[wi] = true;
                    free_list.push(wi);
                }
            }
        }
        for &wi in &out {
            if !is_free[wi] && p.workloads[wi].candidates.iter().any(|c| chosen[c.site]) {
                is_free[wi] = true;
                free_list.push(wi);
            }
        }
        free_list.sort_unstable();
        let free: Vec<(WorkloadIx, Vec<SiteIx>)> = free_list
            .into_iter()
            .map(|wi| {
                let at: Vec<SiteIx> = p.workloads[wi]
                    .candidates
                    .iter()
                    .map(|c| c.site)
                    .filter(|&s| chosen[s])
                    .collect();
                (wi, at)
            })
            .collect();
        let model = Around::build(p, &x, &free, &rows, &rows_of);
        let start = model.values_of(p, &x);
        let node_work = model.columns.len().max(1) as u64;
        let nodes = limit
            .left()
            .map(|w| (w / node_work).saturating_sub(1).clamp(1, NODES));
        // A sub-solve is charged what it may spend: its nodes and its root.
        limit.spend((nodes.unwrap_or(NODES) + 1) * node_work);
        let sub = HighsOptions {
            deadline: limit.deadline().share(0.25).cap_s(SUB_SOLVE_S),
            seed,
            ..HighsOptions::default()
        };
        // A repair is for what is left out: HiGHS may stop once within a
        // tenth of a replica's penalty of its bound, not prove the last
        // cent of cost (the polish after it sees to that).
        let abs_gap = 0.1
            * model
                .u
                .iter()
                .map(|&(wi, _, _)| p.workloads[wi].unplaced_cost)
                .fold(f64::INFINITY, f64::min);
        let run = run_highs(
            &model.rows,
            &model.columns,
            &start,
            &sub,
            abs_gap.is_finite().then_some(abs_gap),
            nodes,
        )?;
        let optimal = run.status == HighsModelStatus::Optimal;
        tracing::trace!(
            target_workload = %target,
            reach,
            free = free.len(),
            columns = model.columns.len(),
            rows = model.rows.len(),
            status = ?run.status,
            "repair sub-model"
        );
        stale += 1;
        if let Some(values) = run.values {
            let candidate = model.apply(&x, &values);
            if candidate != x && holds(p, &candidate) {
                let obj = p.evaluate(&candidate).objective.total;
                if obj < objective - 1e-9 * objective.abs().max(1.0) {
                    for &(wi, _) in &free {
                        for &(s, _) in &x[wi] {
                            on_site[s].retain(|&w| w != wi);
                        }
                        for &(s, _) in &candidate[wi] {
                            on_site[s].push(wi);
                        }
                    }
                    x = candidate;
                    load = Load::of(p, &x);
                    objective = obj;
                    kept += 1;
                    stale = 0;
                }
            }
        }
        if !optimal {
            reach = (reach * 2 / 3).max(2);
        } else if stale > 0 {
            reach = (reach + reach.div_ceil(2)).min(MAX_REACH);
        }
    }
    tracing::debug!(tries, kept, reach, objective, "repair");
    Ok(Repaired {
        x,
        objective,
        tries,
        kept,
    })
}
