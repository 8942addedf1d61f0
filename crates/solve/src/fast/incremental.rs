//! Incremental re-planning: after one site's telemetry (or one workload's
//! demand) changed, re-plan only what must change, starting from the
//! placement in force, in milliseconds at 100,000 replicas.
//!
//! The problem, the flat candidate layout and the placement's running
//! totals are kept between changes. A changed site has its replicas taken
//! off, its model and every workload's candidate there rebuilt, then as
//! many replicas put back as now fit (most important first); those that no
//! longer fit are re-homed by the local search (best site with room, then
//! ejection chains), and replicas elsewhere move onto the site only where
//! that pays for their move. Everything else stays where it is. A changed
//! workload is taken off and put back the same way.
//!
//! The bound stays proven: the Lagrangian at the kept multipliers, with
//! only the changed workloads' subproblems solved again.

use std::time::Duration;

use edgeplan_model::clock::Deadline;

/// The default wall-clock guard of one re-plan.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(2);

use rayon::prelude::*;

/// The work budget of one re-plan unless set otherwise: a re-plan that
/// only puts back what fits spends a few thousand units; on a tight fleet
/// the search for room (ejection chains, the neighbourhood) can spend
/// millions — a second and more. This stops it at tens of milliseconds;
/// what it leaves out waits for the next full solve.
pub const DEFAULT_REPLAN_WORK: u64 = 30_000;

/// Sites per stuck workload that a re-plan's neighbourhood places afresh.
const NEIGHBOURHOOD_SITES: usize = 6;

use super::{best_response, workload_of, Assign, Flat, Journal, Limit, Slots, State};
use edgeplan_model::error::Issue;
use edgeplan_model::error::{Error, Result};
use edgeplan_model::instance::Instance;
use edgeplan_problem::build::SiteUpdate;
use edgeplan_problem::gap::placed_gap;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;

/// What changed in an instance, as far as a re-plan is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Site `i` (its telemetry-driven physics, prices, capacity…).
    Site(SiteIx),
    /// Workload `i` (demand, replicas, SLO, traffic, today's placement…).
    Workload(WorkloadIx),
}

/// One workload whose placement the re-plan changed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadMove {
    pub workload: WorkloadIx,
    /// (site, replicas) before and after.
    pub before: Slots,
    pub after: Slots,
}

/// The answer of one incremental re-plan.
#[derive(Debug, Clone)]
pub struct Replanned {
    /// Objective of the whole placement after the change.
    pub objective: f64,
    /// Proven lower bound on the changed problem's optimum.
    pub bound: f64,
    /// (objective − bound) over the placed cost (`gap::placed_gap`).
    pub gap: f64,
    /// The workloads whose placement changed; all others kept theirs.
    pub moved: Vec<WorkloadMove>,
    /// Replicas started on a site where they did not run before the re-plan.
    pub replicas_started: u32,
    /// Whether the candidate layout had to be rebuilt (a site became a
    /// candidate for a workload that could not use it before): slower.
    pub rebuilt: bool,
}

/// Keeps a solved problem and its placement, and re-plans after changes.
pub struct Replanner {
    problem: Problem,
    flat: Flat,
    state: Option<State>,
    price: Vec<f64>,
    /// Per workload, its Lagrangian subproblem's value at `price`.
    values: IndexVec<WorkloadIx, f64>,
    fixed_cost: f64,
    /// Affinity group of each workload, if any.
    affinity_of: IndexVec<WorkloadIx, Option<usize>>,
    /// Work budget of one re-plan (see `fast::Limit`).
    work: Option<u64>,
}

impl Replanner {
    /// Start from `problem`, a feasible placement `x` of it, and the
    /// multipliers of the fast path's best bound (`FastSolved::price`; any
    /// non-negative prices give a valid, if weaker, bound).
    pub fn new(problem: Problem, x: &Replicas, price: Vec<f64>) -> Replanner {
        let flat = Flat::new(&problem);
        let rows = problem.sites.len() * flat.stride;
        let price = if price.len() == rows {
            price.into_iter().map(|p| p.max(0.0)).collect()
        } else {
            vec![0.0; rows]
        };
        // Loading always ends: no limit.
        let none = Limit::none();
        let mut a = Assign::new(&problem, &flat, &none);
        a.load(x);
        let state = a.s;
        let mut affinity_of = IndexVec::from_elem_n(None, problem.workloads.len());
        for (g, (_, members)) in problem.affinity_groups.iter().enumerate() {
            for &w in members {
                affinity_of[w] = Some(g);
            }
        }
        let values = (0..problem.workloads.len())
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(segments, taken), w| {
                    let w = WorkloadIx::new(w);
                    best_response(&problem, &flat, w, &price, segments, taken)
                },
            )
            .collect::<Vec<f64>>()
            .into();
        Replanner {
            fixed_cost: problem.fixed_cost(),
            problem,
            flat,
            state: Some(state),
            price,
            values,
            affinity_of,
            work: Some(DEFAULT_REPLAN_WORK),
        }
    }

    /// The work budget of each re-plan ([`DEFAULT_REPLAN_WORK`] unless
    /// set; `None`: the deadline alone). With a budget
    /// and no deadline a re-plan stops on its work alone and is
    /// deterministic: the same changes give the same placement on any
    /// machine.
    pub fn set_work(&mut self, work: Option<u64>) {
        self.work = work;
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    fn state(&self) -> &State {
        self.state
            .as_ref()
            .expect("the state is put back after each change")
    }

    /// Take `x` as the placement in force, keeping the multipliers: the
    /// last placement was not reached as planned (a migration plan blocked
    /// some of its moves), so the next re-plan starts from where the fleet
    /// is. `x` must be a placement of this problem.
    pub fn rebase(&mut self, x: &Replicas) {
        let none = Limit::none();
        let state = {
            let mut a = Assign::new(&self.problem, &self.flat, &none);
            a.load(x);
            a.s
        };
        self.state = Some(state);
    }

    /// The whole placement in force.
    pub fn placement(&self) -> Replicas {
        self.state().placement(&self.flat)
    }

    /// Its objective (as `Problem::evaluate` prices it, up to rounding).
    pub fn objective(&self) -> f64 {
        let s = self.state();
        self.fixed_cost + s.cost + s.unplaced_cost
    }

    /// The Lagrangian bound at the kept multipliers.
    pub fn bound(&self) -> f64 {
        let value =
            self.fixed_cost + self.values.iter().sum::<f64>() - self.price.iter().sum::<f64>();
        value.min(self.objective())
    }

    /// Re-plan after `changes` made `inst` out of the instance this
    /// replanner holds (see [`diff`]; `inst` is validated), searching no
    /// later than `deadline` — a guard against a runaway search, made by
    /// the caller (`Deadline::after(DEFAULT_TIME_LIMIT)` is the usual one;
    /// `Deadline::NONE` with a work budget for reproducible re-plans). On an
    /// error nothing is changed.
    pub fn apply(
        &mut self,
        inst: &Instance,
        changes: &[Change],
        deadline: Deadline,
    ) -> Result<Replanned> {
        if inst.sites.len() != self.problem.sites.len()
            || inst.workloads.len() != self.problem.workloads.len()
        {
            return Err(Error::Invalid(vec![Issue {
                path: "instance".into(),
                message: format!(
                    "{} sites and {} workloads, the re-planned problem has {} and {}: build it afresh",
                    inst.sites.len(),
                    inst.workloads.len(),
                    self.problem.sites.len(),
                    self.problem.workloads.len()
                ),
            }]));
        }
        // What can fail (a site's server model unknown) is computed before
        // anything changes.
        let mut updates = Vec::new();
        for c in changes {
            let (what, i, n) = match *c {
                Change::Site(i) => ("sites", i.ix(), inst.sites.len()),
                Change::Workload(i) => ("workloads", i.ix(), inst.workloads.len()),
            };
            if i >= n {
                return Err(Error::Invalid(vec![Issue {
                    path: format!("{what}[{i}]"),
                    message: format!("no such item: the instance has {n} {what}"),
                }]));
            }
            if let Change::Site(si) = *c {
                updates.push(self.problem.site_update(inst, si)?);
            }
        }
        let limit = Limit::new(deadline, self.work);
        self.state_mut().journal = Some(Journal::default());
        let mut rebuilt = false;
        let mut revalue: Vec<WorkloadIx> = Vec::new();
        let mut updates = updates.into_iter();
        for c in changes {
            match *c {
                Change::Site(si) => {
                    if let Some(update) = updates.next() {
                        rebuilt |= self.site_changed(inst, si, update, &limit, &mut revalue);
                    }
                }
                Change::Workload(wi) => {
                    rebuilt |= self.workload_changed(inst, wi, &limit);
                    revalue.push(wi);
                }
            }
        }
        // The bound: only the changed subproblems are solved again.
        revalue.sort_unstable();
        revalue.dedup();
        let (p, f, price) = (&self.problem, &self.flat, &self.price);
        let fresh: Vec<f64> = revalue
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(segments, taken), &w| best_response(p, f, w, price, segments, taken),
            )
            .collect();
        for (&w, v) in revalue.iter().zip(fresh) {
            self.values[w] = v;
        }
        self.fixed_cost = self.problem.fixed_cost();

        let journal = self.state_mut().journal.take().unwrap_or_default();
        let state = self.state();
        let mut moved = Vec::new();
        let mut replicas_started = 0;
        for (w, before) in journal.before {
            let after = state.slots(&self.flat, w);
            if after != before {
                for &(s, n) in &after {
                    let was = before.iter().find(|(b, _)| *b == s).map_or(0, |e| e.1);
                    replicas_started += n.saturating_sub(was);
                }
                moved.push(WorkloadMove {
                    workload: w,
                    before,
                    after,
                });
            }
        }
        moved.sort_by_key(|m| m.workload);
        let objective = self.objective();
        let bound = self.bound();
        Ok(Replanned {
            objective,
            bound,
            gap: placed_gap(objective, bound, self.state().unplaced_cost),
            moved,
            replicas_started,
            rebuilt,
        })
    }

    /// Take the kept state out for a search (put back with `self.state = Some(..)`).
    fn take(&mut self) -> State {
        self.state
            .take()
            .expect("the state is put back after each change")
    }

    fn state_mut(&mut self) -> &mut State {
        self.state
            .as_mut()
            .expect("the state is put back after each change")
    }

    /// Rebuild the flat layout from the problem and reload `state`'s
    /// placement into it (journal carried over; reloading is not a change).
    fn rebuild(&mut self, mut state: State, limit: &Limit) -> State {
        let journal = state.journal.take();
        let x = state.placement(&self.flat);
        self.flat = Flat::new(&self.problem);
        let mut a = Assign::new(&self.problem, &self.flat, limit);
        a.load(&x);
        let mut state = a.s;
        state.journal = journal;
        state
    }

    /// Site `si` changed. Returns whether the layout was rebuilt; adds the
    /// workloads whose subproblem changed to `revalue`.
    fn site_changed(
        &mut self,
        inst: &Instance,
        si: SiteIx,
        update: SiteUpdate,
        limit: &Limit,
        revalue: &mut Vec<WorkloadIx>,
    ) -> bool {
        // 1. Take every replica off the site (its costs and power change).
        let state = self.take();
        // Who was short before: a workload the re-plan leaves short that
        // was not (an ejection's victim) is as stuck as a displaced one.
        let short_before: Vec<bool> = self
            .problem
            .workloads
            .iter_enumerated()
            .map(|(w, wl)| state.placed[w] < wl.replicas)
            .collect();
        let mut a = Assign::resume(&self.problem, &self.flat, state, limit);
        let mut displaced: Vec<(WorkloadIx, u32)> = Vec::new();
        for idx in 0..self.flat.at_site[si].len() {
            let k = self.flat.at_site[si][idx];
            let n = a.s.n[k];
            if n > 0 {
                let w = workload_of(&self.flat, k);
                for _ in 0..n {
                    a.remove(w, k);
                }
                displaced.push((w, n));
            }
        }
        let mut state = a.s;

        // 2. The site's new model, and every candidate there.
        let touched = self.problem.update_site(inst, si, update);
        revalue.extend_from_slice(&touched);
        let rebuilt = !self.flat.update_site(&self.problem, si, &touched);
        if rebuilt {
            state = self.rebuild(state, limit);
        }
        let p = &self.problem;
        let f = &self.flat;
        let mut a = Assign::resume(p, f, state, limit);

        // 3. Put back what fits, most important (then biggest) first.
        displaced.sort_by(|x, y| {
            let (a, b) = (&p.workloads[x.0], &p.workloads[y.0]);
            b.unplaced_cost
                .total_cmp(&a.unplaced_cost)
                .then(
                    b.demand
                        .iter()
                        .sum::<f64>()
                        .total_cmp(&a.demand.iter().sum::<f64>()),
                )
                .then(x.0.cmp(&y.0))
        });
        let mut groups = Vec::new();
        for &(w, n) in &displaced {
            if let Some(g) = self.affinity_of[w] {
                groups.push(g);
                continue;
            }
            put_back(&mut a, w, si, n);
        }
        // Affinity groups keep their common sites less this one; a group
        // left with none is placed afresh as a block.
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            if p.affinity_groups[g].1.iter().all(|&w| a.s.placed[w] == 0) {
                a.place_affinity_group(g);
            }
        }

        // 4. Re-home what no longer fits; what was put back reconsiders
        //    its sites too (this one's costs changed: a replica put back
        //    on a site that got dearer moves where it is now cheaper).
        for &(w, _) in &displaced {
            if a.s.fixed[w] {
                continue;
            }
            if a.s.placed[w] >= p.workloads[w].replicas {
                if !limit.out() {
                    limit.spend(f.range(w).len() as u64);
                    a.improve_workload(w);
                }
                continue;
            }
            a.improve_workload(w);
            if a.s.placed[w] < p.workloads[w].replicas {
                a.eject_for(w, true);
            }
        }

        let mut stuck: Vec<WorkloadIx> = displaced
            .iter()
            .map(|d| d.0)
            .chain(p.workloads.indices().filter(|w| !short_before[w.ix()]))
            .filter(|&w| !a.s.fixed[w] && a.s.placed[w] < p.workloads[w].replicas)
            .collect();
        stuck.sort_unstable();
        stuck.dedup();
        resolve_neighbourhood(&mut a, &stuck, &self.price);

        // 5. Replicas elsewhere move here where that pays for the move
        //    (the site got cheaper or roomier).
        for idx in 0..f.at_site[si].len() {
            let k = f.at_site[si][idx];
            let w = workload_of(f, k);
            if a.s.fixed[w] {
                continue;
            }
            while a.s.placed[w] < p.workloads[w].replicas
                && a.fits(w, k)
                && a.add_cost(w, k) < p.workloads[w].unplaced_cost
            {
                a.add(w, k);
            }
            // Whether a replica fits here is asked after one is taken off
            // its site: a fully placed workload never "fits" one more.
            while a.s.n[k] < f.max[k] && !limit.out() {
                limit.spend(f.range(w).len() as u64);
                let from = f
                    .range(w)
                    .filter(|&j| j != k && a.s.n[j] > 0)
                    .map(|j| (a.remove_saving(w, j), j))
                    .max_by(|x, y| x.0.total_cmp(&y.0));
                let Some((saving, j)) = from else {
                    break;
                };
                a.remove(w, j);
                if a.fits(w, k) && a.add_cost(w, k) < saving - 1e-9 * saving.abs().max(1.0) {
                    a.add(w, k);
                } else {
                    a.add(w, j);
                    break;
                }
            }
        }
        self.state = Some(a.s);
        rebuilt
    }

    /// Workload `wi` changed. Returns whether the layout was rebuilt.
    fn workload_changed(&mut self, inst: &Instance, wi: WorkloadIx, limit: &Limit) -> bool {
        // Affinity groups move as a block: take the whole group off.
        let members: Vec<WorkloadIx> = match self.affinity_of[wi] {
            Some(g) => self.problem.affinity_groups[g].1.clone(),
            None => vec![wi],
        };
        let state = self.take();
        let mut a = Assign::resume(&self.problem, &self.flat, state, limit);
        let before = a.s.slots(&self.flat, wi);
        for &w in &members {
            for k in self.flat.range(w) {
                while a.s.n[k] > 0 {
                    a.remove(w, k);
                }
            }
        }
        let mut state = a.s;
        // Its unplaced replicas are priced anew.
        let old = &self.problem.workloads[wi];
        state.unplaced_cost -= old.replicas as f64 * old.unplaced_cost;
        self.problem.update_workload(inst, wi);
        let new = &self.problem.workloads[wi];
        state.unplaced_cost += new.replicas as f64 * new.unplaced_cost;

        let rebuilt = !self.flat.update_workload(&self.problem, wi);
        if rebuilt {
            state = self.rebuild(state, limit);
        }
        let p = &self.problem;
        let f = &self.flat;
        let mut a = Assign::resume(p, f, state, limit);
        match self.affinity_of[wi] {
            Some(g) => a.place_affinity_group(g),
            None => {
                // Back where it ran, as far as it fits; then the search.
                for &(s, n) in &before {
                    put_back(&mut a, wi, s, n);
                }
                a.improve_workload(wi);
                if a.s.placed[wi] < p.workloads[wi].replicas {
                    a.eject_for(wi, true);
                }
                if a.s.placed[wi] < p.workloads[wi].replicas {
                    resolve_neighbourhood(&mut a, &[wi], &self.price);
                }
            }
        }
        self.state = Some(a.s);
        rebuilt
    }
}

/// Up to `n` replicas of `w` onto site `s`, as many as fit.
fn put_back(a: &mut Assign, w: WorkloadIx, s: SiteIx, n: u32) {
    if let Some(k) = a.f.slot_at(w, s) {
        for _ in 0..n {
            if !a.fits(w, k) {
                break;
            }
            a.add(w, k);
        }
    }
}

/// When the local search leaves replicas of `stuck` unplaced: place the
/// neighbourhood afresh — every replica on the [`NEIGHBOURHOOD_SITES`]
/// cheapest sites (at the kept prices) each of those workloads may use —
/// most important, then least flexible, then biggest first, each
/// on its cheapest site at the kept prices; then the local search. Kept only
/// if it lowers the objective (the placement before is restored otherwise).
fn resolve_neighbourhood(a: &mut Assign, stuck: &[WorkloadIx], price: &[f64]) {
    if stuck.is_empty() {
        return;
    }
    let (p, f) = (a.p, a.f);
    let saved = a.s.clone();
    // Each stuck workload's cheapest sites at the kept prices, not all it
    // may use: on a tight fleet "all" is most of the fleet, and placing
    // that afresh took up to the 2 s guard per re-plan.
    let mut on_site: IndexVec<SiteIx, bool> = IndexVec::from_elem_n(false, p.sites.len());
    for &w in stuck {
        let mut open: Vec<(f64, usize)> = f
            .range(w)
            .filter(|&k| f.max[k] > 0)
            .map(|k| (f.priced(p, w, k, price), k))
            .collect();
        open.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for &(_, k) in open.iter().take(NEIGHBOURHOOD_SITES) {
            on_site[f.site[k]] = true;
        }
    }
    let mut members: Vec<WorkloadIx> = stuck.to_vec();
    for (s, _) in on_site.iter_enumerated().filter(|e| *e.1) {
        for &k in &f.at_site[s] {
            if a.s.n[k] == 0 {
                continue;
            }
            let w = workload_of(f, k);
            if a.s.fixed[w] {
                continue;
            }
            while a.s.n[k] > 0 {
                a.remove(w, k);
            }
            members.push(w);
        }
    }
    members.sort_unstable();
    members.dedup();
    let open = |w: WorkloadIx| f.range(w).filter(|&k| f.max[k] > 0).count();
    let size = |w: WorkloadIx| p.workloads[w].demand.iter().sum::<f64>();
    members.sort_by(|&x, &y| {
        let (wx, wy) = (&p.workloads[x], &p.workloads[y]);
        wy.unplaced_cost
            .total_cmp(&wx.unplaced_cost)
            .then(open(x).cmp(&open(y)))
            .then(size(y).total_cmp(&size(x)))
            .then(x.cmp(&y))
    });
    for &w in &members {
        let wl = &p.workloads[w];
        while a.s.placed[w] < wl.replicas {
            let best = a.best_fit(w, None, |k| {
                let move_cost = if a.is_move(k) { wl.move_cost } else { 0.0 };
                f.priced(p, w, k, price) + move_cost
            });
            match best {
                Some((k, _)) if a.add_cost(w, k) < wl.unplaced_cost => a.add(w, k),
                _ => break,
            }
        }
    }
    for &w in &members {
        a.improve_workload(w);
        if a.s.placed[w] < p.workloads[w].replicas {
            a.eject_for(w, true);
        }
    }
    let before = saved.cost + saved.unplaced_cost;
    if a.s.cost + a.s.unplaced_cost >= before - 1e-9 * before.abs().max(1.0) {
        a.s = saved;
    }
}

/// The changes that turn `old` into `new`, or `None` when the difference is
/// structural (sites, workloads, regions or the network added, removed or
/// rewired; weights, limits or server models changed): then build and solve
/// afresh (so too with spot workloads). `problem` is `old`'s.
pub fn diff(problem: &Problem, old: &Instance, new: &Instance) -> Option<Vec<Change>> {
    // Spot work is admitted after a solve of the on-demand work, which an
    // incremental re-plan does not run: solve afresh.
    if problem.has_spot() || new.workloads.iter().any(|w| w.spot.is_some()) {
        return None;
    }
    if old.sites.len() != new.sites.len()
        || old.workloads.len() != new.workloads.len()
        || old.network != new.network
        || old.regions != new.regions
        || old.objective != new.objective
        || old.limits != new.limits
        || old.server_models != new.server_models
    {
        return None;
    }
    let mut changes = Vec::new();
    for (i, (a, b)) in old.sites.iter().zip(&new.sites).enumerate() {
        if a != b {
            let i = SiteIx::new(i);
            if !problem.site_updatable(old, i, b) {
                return None;
            }
            changes.push(Change::Site(i));
        }
    }
    for (i, (a, b)) in old.workloads.iter().zip(&new.workloads).enumerate() {
        if a != b {
            let i = WorkloadIx::new(i);
            if !problem.workload_updatable(old, i, b) {
                return None;
            }
            changes.push(Change::Workload(i));
        }
    }
    Some(changes)
}
