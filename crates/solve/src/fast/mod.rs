//! The fast path for fleets the exact MILP cannot serve: a Lagrangian lower
//! bound and a price-guided primal heuristic that feed each other.
//!
//! * **Bound.** The per-site capacity and power rows are dualised with
//!   multipliers (one per site and resource, one per site for power, each row
//!   scaled by its limit). What remains splits into one tiny problem per
//!   workload — pick its cheapest replica slots at the priced costs, under its
//!   per-site and per-failure-domain caps, or leave replicas unplaced — which
//!   a sort solves exactly. Cross-workload anti-affinity, affinity and the
//!   move budget are dropped, which can only lower the minimum: every value is
//!   a proven lower bound. Subgradient ascent with Polyak steps towards the
//!   best known placement raises it.
//! * **Placement.** A greedy that places the biggest and most important
//!   workloads first, each replica on the feasible site of least *priced*
//!   cost (the multipliers steer load away from contended sites), then local
//!   search on the true objective: place what is unplaced, relocate a replica
//!   to a cheaper site with room, and eject a replica from a full site to its
//!   next best site to make room. Every step keeps every constraint.
//!
//! Per-workload work runs on rayon; sums are taken in workload order, so a
//! run is deterministic when it stops on its work budget ([`Limit`]); a
//! wall-clock deadline, when it binds, is the only clock.

use std::time::Duration;

use edgeplan_model::clock::{Deadline, Stopwatch};

use rayon::prelude::*;

pub use crate::limit::Limit;

use edgeplan_problem::gap::placed_gap;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rows::within;

mod incremental;
pub use incremental::{
    diff, Change, Replanned, Replanner, WorkloadMove, DEFAULT_REPLAN_WORK,
    DEFAULT_TIME_LIMIT as DEFAULT_REPLAN_TIME_LIMIT,
};

/// Options of a fast solve.
#[derive(Debug, Clone, PartialEq)]
pub struct FastOptions {
    /// Stop once (objective − bound) / placed cost is at most this.
    pub target_gap: f64,
    /// When to stop with the best placement and bound found, handed in by
    /// the caller (ignored when `deterministic`).
    pub deadline: Deadline,
    /// Subgradient iterations at most.
    pub max_iterations: usize,
    /// Work budget (see [`Limit`]); unlimited when unset, unless
    /// `deterministic` ([`DEFAULT_WORK`] then).
    pub work: Option<u64>,
    /// Stop on the work budget alone, never on the clock.
    pub deterministic: bool,
    /// Only the multipliers are wanted (spot prices): the bound's search
    /// gets all the work; no placement is searched beyond the first.
    pub prices_only: bool,
}

impl Default for FastOptions {
    fn default() -> Self {
        Self {
            target_gap: 1e-3,
            deadline: Deadline::NONE,
            max_iterations: 3000,
            work: None,
            deterministic: false,
            prices_only: false,
        }
    }
}

/// The work budget of a run asked to be reproducible without one: about
/// ten seconds' work on a 6,500-replica, 20-site fleet.
pub const DEFAULT_WORK: u64 = 200_000_000;

/// Share of the time and work left after the bound that goes to
/// [`repair`](crate::repair) when replicas are left out (the rest: the
/// final polish).
const REPAIR_SHARE: f64 = 0.5;

/// What the fast path found.
#[derive(Debug, Clone)]
pub struct FastSolved {
    /// Per workload: (site, replicas).
    pub x: Replicas,
    /// Objective of `x` (as `Problem::evaluate` prices it).
    pub objective: f64,
    /// Proven lower bound on the optimum.
    pub bound: f64,
    /// (objective − bound) over the placed cost (`gap::placed_gap`).
    pub gap: f64,
    /// Subgradient iterations run.
    pub iterations: usize,
    /// Work spent (see [`Limit`]).
    pub work: u64,
    /// Whether the work budget stopped it (rather than the gap, the
    /// deadline or the iteration cap).
    pub out_of_work: bool,
    /// The multipliers of the best bound, per (site, row): resources, then
    /// power (see `Flat`). An incremental re-plan prices with them.
    pub price: Vec<f64>,
}

/// (site, replicas) pairs of one workload.
type Slots = Vec<(SiteIx, u32)>;

/// (candidate slot, replicas) pairs of one workload.
type Taken = Vec<(usize, u32)>;

/// Candidates of all workloads in flat arrays, workload by workload.
struct Flat {
    /// Workload `w`'s candidates are `start[w]..start[w + 1]`.
    start: Vec<usize>,
    site: Vec<SiteIx>,
    /// Cost per replica (energy, carbon, latency, thermal).
    cost: Vec<f64>,
    kw: Vec<f64>,
    max: Vec<u32>,
    current: Vec<u32>,
    /// Failure domain of the candidate's site, if any.
    domain: Vec<Option<usize>>,
    /// Per site, the candidates at it.
    at_site: IndexVec<SiteIx, Vec<usize>>,
    /// Row stride: `Problem::rows` (resources, then power).
    stride: usize,
    /// Limit per (site, row).
    limit: Vec<f64>,
    /// 1 / limit per (site, row); 0 where the limit is not positive.
    inv_limit: Vec<f64>,
}

impl Flat {
    fn new(p: &Problem) -> Flat {
        let n: usize = p.workloads.iter().map(|w| w.candidates.len()).sum();
        let stride = p.row_count();
        let mut f = Flat {
            start: Vec::with_capacity(p.workloads.len() + 1),
            site: Vec::with_capacity(n),
            cost: Vec::with_capacity(n),
            kw: Vec::with_capacity(n),
            max: Vec::with_capacity(n),
            current: Vec::with_capacity(n),
            domain: Vec::with_capacity(n),
            at_site: IndexVec::from_elem_n(Vec::new(), p.sites.len()),
            stride,
            limit: vec![0.0; p.sites.len() * stride],
            inv_limit: vec![0.0; p.sites.len() * stride],
        };
        for w in &p.workloads {
            f.start.push(f.site.len());
            for c in &w.candidates {
                f.at_site[c.site].push(f.site.len());
                f.site.push(c.site);
                f.cost.push(c.cost());
                f.kw.push(c.dynamic_kw);
                f.max.push(c.max_count);
                f.current.push(w.current_at(c.site).min(c.max_count));
                f.domain.push(p.sites[c.site].failure_domain);
            }
        }
        f.start.push(f.site.len());
        for s in p.sites.indices() {
            f.set_limits(p, s);
        }
        f
    }

    /// Site `s`'s limits per row, and their scaling.
    fn set_limits(&mut self, p: &Problem, s: SiteIx) {
        let base = s.ix() * self.stride;
        for (i, row) in p.rows().enumerate() {
            let limit = p.limit(s, row);
            self.limit[base + i] = limit;
            self.inv_limit[base + i] = if limit > 0.0 { 1.0 / limit } else { 0.0 };
        }
    }

    /// One replica of `w`'s need on each row at slot `k`, in row order:
    /// its resource demand, then its IT kW there.
    fn needs<'p>(&self, p: &'p Problem, w: WorkloadIx, k: usize) -> impl Iterator<Item = f64> + 'p {
        let kw = self.kw[k];
        p.workloads[w]
            .demand
            .iter()
            .copied()
            .chain(std::iter::once(kw))
    }

    /// Slot `k` (workload `w`) from the problem's candidate there, or
    /// closed (no replicas allowed) when the site is no longer a candidate.
    fn refresh_slot(&mut self, p: &Problem, w: WorkloadIx, k: usize) {
        let wl = &p.workloads[w];
        let s = self.site[k];
        match wl.candidates.binary_search_by_key(&s, |c| c.site) {
            Ok(i) => {
                let c = &wl.candidates[i];
                self.cost[k] = c.cost();
                self.kw[k] = c.dynamic_kw;
                self.max[k] = c.max_count;
                self.current[k] = wl.current_at(s).min(c.max_count);
            }
            Err(_) => {
                self.max[k] = 0;
                self.current[k] = 0;
            }
        }
    }

    /// Take site `s`'s new model for the workloads in `touched` (whose
    /// candidate there changed). False when one of them gained a candidate
    /// the layout has no slot for: the caller rebuilds.
    fn update_site(&mut self, p: &Problem, s: SiteIx, touched: &[WorkloadIx]) -> bool {
        self.set_limits(p, s);
        for &w in touched {
            match self.slot_at(w, s) {
                Some(k) => self.refresh_slot(p, w, k),
                None => return false,
            }
        }
        true
    }

    /// Workload `w`'s slot at site `s`, if it has one (slots are by site).
    fn slot_at(&self, w: WorkloadIx, s: SiteIx) -> Option<usize> {
        let slots = self.range(w);
        self.site[slots.clone()]
            .binary_search(&s)
            .ok()
            .map(|i| slots.start + i)
    }

    /// Take workload `w`'s new model. False when its candidate sites are
    /// not the ones the layout has slots for.
    fn update_workload(&mut self, p: &Problem, w: WorkloadIx) -> bool {
        let slots = self.range(w);
        let wl = &p.workloads[w];
        if wl.candidates.len() > slots.len()
            || wl
                .candidates
                .iter()
                .any(|c| self.slot_at(w, c.site).is_none())
        {
            return false;
        }
        for k in slots {
            self.refresh_slot(p, w, k);
        }
        true
    }

    fn range(&self, w: WorkloadIx) -> std::ops::Range<usize> {
        self.start[w.ix()]..self.start[w.ix() + 1]
    }

    /// The priced cost of one replica slot: its cost plus the multipliers'
    /// price of what it uses at its site.
    fn priced(&self, p: &Problem, w: WorkloadIx, k: usize, price: &[f64]) -> f64 {
        let base = self.site[k].ix() * self.stride;
        let mut a = self.cost[k];
        for (i, d) in self.needs(p, w, k).enumerate() {
            a += price[base + i] * d * self.inv_limit[base + i];
        }
        a
    }
}

/// The Lagrangian subproblem of one workload at given prices: its cheapest
/// replica slots under its own caps. Returns the value and fills `taken`
/// with (candidate, replicas).
fn best_response(
    p: &Problem,
    f: &Flat,
    w: WorkloadIx,
    price: &[f64],
    segments: &mut Vec<(f64, usize, u32)>,
    taken: &mut Taken,
) -> f64 {
    let wl = &p.workloads[w];
    segments.clear();
    taken.clear();
    for k in f.range(w) {
        let a = f.priced(p, w, k, price);
        // Replicas that run there today cost no move; the rest do.
        if f.current[k] > 0 {
            segments.push((a, k, f.current[k]));
        }
        if f.max[k] > f.current[k] {
            segments.push((a + wl.move_cost, k, f.max[k] - f.current[k]));
        }
    }
    segments.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut left = wl.replicas;
    let mut value = 0.0;
    let mut domains: Vec<(usize, u32)> = Vec::new();
    for &(a, k, n) in segments.iter() {
        if left == 0 || a >= wl.unplaced_cost {
            break;
        }
        let mut take = n.min(left);
        if let (Some(cap), Some(d)) = (wl.max_per_failure_domain, f.domain[k]) {
            let used = domains.iter().find(|(x, _)| *x == d).map_or(0, |e| e.1);
            take = take.min(cap.saturating_sub(used));
            if take == 0 {
                continue;
            }
            match domains.iter_mut().find(|(x, _)| *x == d) {
                Some(e) => e.1 += take,
                None => domains.push((d, take)),
            }
        }
        value += a * take as f64;
        left -= take;
        taken.push((k, take));
    }
    value + left as f64 * wl.unplaced_cost
}

/// The Lagrangian at `price`: a lower bound, and the subgradient (row use
/// over limit, minus one) of the relaxed solution.
fn lagrangian(p: &Problem, f: &Flat, price: &[f64], fixed: f64, grad: &mut [f64]) -> f64 {
    let responses: Vec<(f64, Taken)> = (0..p.workloads.len())
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(64),
            |segments, w| {
                let w = WorkloadIx::new(w);
                let mut taken = Vec::new();
                let v = best_response(p, f, w, price, segments, &mut taken);
                (v, taken)
            },
        )
        .collect();
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut value = fixed;
    for (w, (v, taken)) in responses.iter().enumerate() {
        let w = WorkloadIx::new(w);
        value += v;
        for &(k, n) in taken {
            let base = f.site[k].ix() * f.stride;
            for (i, d) in f.needs(p, w, k).enumerate() {
                grad[base + i] += n as f64 * d * f.inv_limit[base + i];
            }
        }
    }
    for (i, g) in grad.iter_mut().enumerate() {
        value -= price[i];
        *g = if f.inv_limit[i] > 0.0 { *g - 1.0 } else { 0.0 };
    }
    value
}

/// A placement under construction, with running totals for every constraint.
struct Assign<'a> {
    p: &'a Problem,
    f: &'a Flat,
    s: State,
    /// When the search must stop; what it spends goes here.
    limit: &'a Limit,
}

/// The running totals of a placement, apart from the problem it places:
/// kept between incremental re-plans.
#[derive(Debug, Clone)]
struct State {
    /// Replicas per candidate slot.
    n: Vec<u32>,
    placed: IndexVec<WorkloadIx, u32>,
    /// Per (site, row): resources used, then dynamic kW.
    used: Vec<f64>,
    anti_group_of: IndexVec<WorkloadIx, Option<usize>>,
    /// Per anti-affinity group, replicas per site.
    anti: Vec<IndexVec<SiteIx, u32>>,
    /// Per workload, replicas per failure domain.
    domain: IndexVec<WorkloadIx, Vec<(usize, u32)>>,
    moves: u64,
    /// Members of affinity groups: placed as a block, then left alone.
    fixed: IndexVec<WorkloadIx, bool>,
    /// Cost of the placed replicas, their moves included.
    cost: f64,
    /// Cost of the replicas left unplaced.
    unplaced_cost: f64,
    /// When on: each changed workload's slots before its first change.
    journal: Option<Journal>,
}

impl State {
    /// Workload `w`'s (site, replicas).
    fn slots(&self, f: &Flat, w: WorkloadIx) -> Slots {
        f.range(w)
            .filter(|&k| self.n[k] > 0)
            .map(|k| (f.site[k], self.n[k]))
            .collect()
    }

    fn placement(&self, f: &Flat) -> Replicas {
        self.placed.indices().map(|w| self.slots(f, w)).collect()
    }
}

#[derive(Debug, Clone, Default)]
struct Journal {
    seen: std::collections::HashSet<WorkloadIx>,
    /// (workload, its (site, replicas) before), in order of first change.
    before: Vec<(WorkloadIx, Slots)>,
}

impl<'a> Assign<'a> {
    fn new(p: &'a Problem, f: &'a Flat, limit: &'a Limit) -> Assign<'a> {
        let mut anti_group_of = IndexVec::from_elem_n(None, p.workloads.len());
        for (g, (_, members)) in p.anti_affinity_groups.iter().enumerate() {
            for &w in members {
                anti_group_of[w] = Some(g);
            }
        }
        let mut fixed = IndexVec::from_elem_n(false, p.workloads.len());
        for (_, members) in &p.affinity_groups {
            for &w in members {
                fixed[w] = true;
            }
        }
        let state = State {
            n: vec![0; f.site.len()],
            placed: IndexVec::from_elem_n(0, p.workloads.len()),
            used: vec![0.0; p.sites.len() * f.stride],
            anti_group_of,
            anti: vec![IndexVec::from_elem_n(0, p.sites.len()); p.anti_affinity_groups.len()],
            domain: IndexVec::from_elem_n(Vec::new(), p.workloads.len()),
            moves: 0,
            fixed,
            cost: 0.0,
            unplaced_cost: p
                .workloads
                .iter()
                .map(|w| w.replicas as f64 * w.unplaced_cost)
                .sum(),
            journal: None,
        };
        Assign::resume(p, f, state, limit)
    }

    /// Carry on from a kept state (of the same problem and flat layout).
    fn resume(p: &'a Problem, f: &'a Flat, s: State, limit: &'a Limit) -> Assign<'a> {
        Assign { p, f, s, limit }
    }

    fn is_move(&self, k: usize) -> bool {
        self.s.n[k] >= self.f.current[k]
    }

    /// Cost of one more replica at candidate `k` (its move included).
    fn add_cost(&self, w: WorkloadIx, k: usize) -> f64 {
        self.f.cost[k]
            + if self.is_move(k) {
                self.p.workloads[w].move_cost
            } else {
                0.0
            }
    }

    /// What removing one replica at `k` saves (its move included).
    fn remove_saving(&self, w: WorkloadIx, k: usize) -> f64 {
        self.f.cost[k]
            + if self.s.n[k] > self.f.current[k] {
                self.p.workloads[w].move_cost
            } else {
                0.0
            }
    }

    fn domain_count(&self, w: WorkloadIx, d: usize) -> u32 {
        self.s.domain[w]
            .iter()
            .find(|(x, _)| *x == d)
            .map_or(0, |e| e.1)
    }

    /// May one more replica of `w` go to candidate `k`? The same limits and
    /// tolerance as the greedy warm start of the exact solver.
    fn fits(&self, w: WorkloadIx, k: usize) -> bool {
        let f = self.f;
        if self.s.n[k] + 1 > f.max[k] || self.s.placed[w] >= self.p.workloads[w].replicas {
            return false;
        }
        if self.is_move(k)
            && self
                .p
                .max_moves
                .is_some_and(|m| self.s.moves + 1 > m as u64)
        {
            return false;
        }
        let s = f.site[k];
        let base = s.ix() * f.stride;
        for (i, d) in f.needs(self.p, w, k).enumerate() {
            if d > 0.0 && !within(self.s.used[base + i] + d, f.limit[base + i]) {
                return false;
            }
        }
        if let Some(g) = self.s.anti_group_of[w] {
            if self.s.anti[g][s] >= 1 {
                return false;
            }
        }
        if let (Some(cap), Some(d)) = (self.p.workloads[w].max_per_failure_domain, f.domain[k]) {
            if self.domain_count(w, d) + 1 > cap {
                return false;
            }
        }
        true
    }

    /// Record `w`'s slots before its first change, when journaling.
    fn note(&mut self, w: WorkloadIx) {
        match &self.s.journal {
            Some(journal) if !journal.seen.contains(&w) => {}
            _ => return,
        }
        let slots = self.s.slots(self.f, w);
        if let Some(journal) = &mut self.s.journal {
            journal.seen.insert(w);
            journal.before.push((w, slots));
        }
    }

    fn add(&mut self, w: WorkloadIx, k: usize) {
        let f = self.f;
        self.note(w);
        self.s.cost += self.add_cost(w, k);
        self.s.unplaced_cost -= self.p.workloads[w].unplaced_cost;
        if self.is_move(k) {
            self.s.moves += 1;
        }
        self.s.n[k] += 1;
        self.s.placed[w] += 1;
        let s = f.site[k];
        let base = s.ix() * f.stride;
        for (i, d) in f.needs(self.p, w, k).enumerate() {
            self.s.used[base + i] += d;
        }
        if let Some(g) = self.s.anti_group_of[w] {
            self.s.anti[g][s] += 1;
        }
        if let Some(d) = f.domain[k] {
            match self.s.domain[w].iter_mut().find(|(x, _)| *x == d) {
                Some(e) => e.1 += 1,
                None => self.s.domain[w].push((d, 1)),
            }
        }
    }

    fn remove(&mut self, w: WorkloadIx, k: usize) {
        let f = self.f;
        self.note(w);
        self.s.cost -= self.remove_saving(w, k);
        self.s.unplaced_cost += self.p.workloads[w].unplaced_cost;
        self.s.n[k] -= 1;
        if self.is_move(k) {
            self.s.moves -= 1;
        }
        self.s.placed[w] -= 1;
        let s = f.site[k];
        let base = s.ix() * f.stride;
        for (i, d) in f.needs(self.p, w, k).enumerate() {
            self.s.used[base + i] -= d;
        }
        if let Some(g) = self.s.anti_group_of[w] {
            self.s.anti[g][s] -= 1;
        }
        if let Some(d) = f.domain[k] {
            if let Some(e) = self.s.domain[w].iter_mut().find(|(x, _)| *x == d) {
                e.1 -= 1;
            }
        }
    }

    /// Place one replica of `w` (not at `skip`) by moving a replica of a
    /// third workload off one of `w`'s sites to a site with room — or, up
    /// to `depth` levels, to a site made room on the same way. Every change
    /// goes to `log` (so the caller can undo); returns the cost of the
    /// changes. `budget` bounds the trials.
    fn make_room(
        &mut self,
        w: WorkloadIx,
        skip: usize,
        depth: usize,
        budget: &mut usize,
        log: &mut Vec<Edit>,
    ) -> Option<f64> {
        let f = self.f;
        let p = self.p;
        let unplaced = p.workloads[w].unplaced_cost;
        for slot in f.range(w) {
            if slot == skip || self.s.n[slot] >= f.max[slot] || self.add_cost(w, slot) >= unplaced {
                continue;
            }
            let s = f.site[slot];
            for idx in 0..f.at_site[s].len() {
                let from = f.at_site[s][idx];
                if self.s.n[from] == 0 {
                    continue;
                }
                let w3 = workload_of(f, from);
                if w3 == w || self.s.fixed[w3] || !self.frees_enough(w, slot, w3, from) {
                    continue;
                }
                if *budget == 0 || ((*budget).is_multiple_of(1024) && self.limit.out()) {
                    *budget = 0;
                    return None;
                }
                *budget -= 1;
                self.limit.spend(1);
                let mark = log.len();
                let saving3 = self.remove_saving(w3, from);
                self.apply(Edit::Remove(w3, from), log);
                if self.fits(w, slot) {
                    let add = self.add_cost(w, slot);
                    self.apply(Edit::Add(w, slot), log);
                    if let Some((to, c)) = self.best_fit(w3, Some(from), |i| self.add_cost(w3, i)) {
                        self.apply(Edit::Add(w3, to), log);
                        return Some(add + c - saving3);
                    }
                    if depth > 1 {
                        if let Some(d) = self.make_room(w3, from, depth - 1, budget, log) {
                            return Some(add + d - saving3);
                        }
                    }
                }
                self.undo(log, mark);
            }
        }
        None
    }

    fn apply(&mut self, change: Edit, log: &mut Vec<Edit>) {
        match change {
            Edit::Add(w, k) => self.add(w, k),
            Edit::Remove(w, k) => self.remove(w, k),
        }
        log.push(change);
    }

    /// Undo the changes in `log` after `mark`, newest first.
    fn undo(&mut self, log: &mut Vec<Edit>, mark: usize) {
        while log.len() > mark {
            match log.pop() {
                Some(Edit::Add(w, k)) => self.remove(w, k),
                Some(Edit::Remove(w, k)) => self.add(w, k),
                None => break,
            }
        }
    }

    /// Would removing one replica at `k2` (of `w2`) leave room at that site
    /// for one of `w` at `j`, as far as resources and power go? A cheap
    /// filter before trying the ejection for real.
    fn frees_enough(&self, w: WorkloadIx, j: usize, w2: WorkloadIx, k2: usize) -> bool {
        let f = self.f;
        let base = f.site[j].ix() * f.stride;
        f.needs(self.p, w, j)
            .zip(f.needs(self.p, w2, k2))
            .enumerate()
            .all(|(i, (d, d2))| {
                d <= 0.0 || within(self.s.used[base + i] - d2 + d, f.limit[base + i])
            })
    }

    /// The feasible candidate of `w` with the least `score`, if any.
    fn best_fit(
        &self,
        w: WorkloadIx,
        skip: Option<usize>,
        score: impl Fn(usize) -> f64,
    ) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for k in self.f.range(w) {
            if Some(k) == skip || !self.fits(w, k) {
                continue;
            }
            let v = score(k);
            if best.is_none_or(|(_, b)| v < b) {
                best = Some((k, v));
            }
        }
        best
    }

    fn placement(&self) -> Replicas {
        self.s.placement(self.f)
    }

    /// Place each affinity group on the common site where it costs least,
    /// widened to further common sites while that pays (each member on
    /// every site of the set: "the same set of sites"), or leave it
    /// unplaced.
    fn place_affinity_groups(&mut self) {
        for g in 0..self.p.affinity_groups.len() {
            self.place_affinity_group(g);
        }
    }

    /// Place affinity group `g` (unplaced so far) on its cheapest common
    /// site, then widen the set while every member still has replicas out.
    fn place_affinity_group(&mut self, g: usize) {
        let p = self.p;
        let members = &p.affinity_groups[g].1;
        {
            let Some(&first) = members.first() else {
                return;
            };
            let mut best: Option<(SiteIx, f64)> = None;
            for k0 in self.f.range(first) {
                let s = self.f.site[k0];
                let ks: Vec<Option<usize>> = members
                    .iter()
                    .map(|&w| self.f.range(w).find(|&k| self.f.site[k] == s))
                    .collect();
                if ks.iter().any(Option::is_none) {
                    continue;
                }
                let mut added = Vec::new();
                let mut cost = 0.0;
                let mut every_member = true;
                for (&w, k) in members.iter().zip(ks.iter().flatten()) {
                    let before = added.len();
                    while self.fits(w, *k) {
                        cost += self.add_cost(w, *k);
                        self.add(w, *k);
                        added.push((w, *k));
                    }
                    every_member &= added.len() > before;
                    cost += (p.workloads[w].replicas - self.s.placed[w]) as f64
                        * p.workloads[w].unplaced_cost;
                }
                for &(w, k) in added.iter().rev() {
                    self.remove(w, k);
                }
                if every_member && best.is_none_or(|(_, b)| cost < b) {
                    best = Some((s, cost));
                }
            }
            let unplaced: f64 = members
                .iter()
                .map(|&w| p.workloads[w].replicas as f64 * p.workloads[w].unplaced_cost)
                .sum();
            let Some((s, _)) = best.filter(|(_, c)| *c < unplaced) else {
                return;
            };
            for &w in members {
                if let Some(k) = self.f.range(w).find(|&k| self.f.site[k] == s) {
                    while self.fits(w, k) {
                        self.add(w, k);
                    }
                }
            }
            // One site rarely holds a whole group (per-site caps, room):
            // while every member still has replicas out, widen the set by
            // the common site that lowers the cost most.
            let mut set = vec![s];
            while members
                .iter()
                .all(|&w| self.s.placed[w] < p.workloads[w].replicas)
            {
                let mut best: Option<(SiteIx, f64)> = None;
                for k0 in self.f.range(first) {
                    let t = self.f.site[k0];
                    if set.contains(&t) {
                        continue;
                    }
                    if let Some((delta, added)) = self.widen(members, &set, t) {
                        for &(w, k) in added.iter().rev() {
                            self.remove(w, k);
                        }
                        if delta < -1e-9 && best.is_none_or(|(_, b)| delta < b) {
                            best = Some((t, delta));
                        }
                    }
                }
                let Some((t, _)) = best else {
                    break;
                };
                if self.widen(members, &set, t).is_none() {
                    break;
                }
                set.push(t);
            }
        }
    }

    /// Add site `t` to affinity group `members`' set of sites `set`: one
    /// replica of every member there (each still has one out), then each
    /// member's other replicas out where they cost least in the set, while
    /// that beats leaving them out. Returns the change in cost and what was
    /// added, or `None` (nothing changed) when a member cannot go there.
    fn widen(
        &mut self,
        members: &[WorkloadIx],
        set: &[SiteIx],
        t: SiteIx,
    ) -> Option<(f64, Vec<(WorkloadIx, usize)>)> {
        let p = self.p;
        let mut added = Vec::new();
        let mut delta = 0.0;
        for &w in members {
            match self.f.slot_at(w, t).filter(|&k| self.fits(w, k)) {
                Some(k) => {
                    delta += self.add_cost(w, k) - p.workloads[w].unplaced_cost;
                    self.add(w, k);
                    added.push((w, k));
                }
                None => {
                    for &(w, k) in added.iter().rev() {
                        self.remove(w, k);
                    }
                    return None;
                }
            }
        }
        for &w in members {
            let unplaced = p.workloads[w].unplaced_cost;
            while self.s.placed[w] < p.workloads[w].replicas {
                let cheapest = set
                    .iter()
                    .chain([&t])
                    .filter_map(|&s| self.f.slot_at(w, s))
                    .filter(|&k| self.fits(w, k))
                    .map(|k| (self.add_cost(w, k), k))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                match cheapest {
                    Some((c, k)) if c < unplaced => {
                        delta += c - unplaced;
                        self.add(w, k);
                        added.push((w, k));
                    }
                    _ => break,
                }
            }
        }
        Some((delta, added))
    }

    /// Greedy construction at `price` (zero prices: plain cheapest-first).
    fn construct(&mut self, order: &[WorkloadIx], price: &[f64]) {
        if self.s.placed.iter().all(|&n| n == 0) {
            self.place_affinity_groups();
        }
        for &w in order {
            if self.s.fixed[w] {
                continue;
            }
            let wl = &self.p.workloads[w];
            while self.s.placed[w] < wl.replicas {
                let Some((k, _)) = self.best_fit(w, None, |k| {
                    let move_cost = if self.is_move(k) { wl.move_cost } else { 0.0 };
                    self.f.priced(self.p, w, k, price) + move_cost
                }) else {
                    break;
                };
                if self.add_cost(w, k) >= wl.unplaced_cost {
                    break;
                }
                self.add(w, k);
            }
        }
    }

    /// Start from a placement (feasible by construction of its source).
    fn load(&mut self, x: &Replicas) {
        for (w, sites) in x.iter_enumerated() {
            for &(s, n) in sites {
                if let Some(k) = self.f.range(w).find(|&k| self.f.site[k] == s) {
                    for _ in 0..n {
                        self.add(w, k);
                    }
                }
            }
        }
    }

    /// Start from the Lagrangian's own answer at `price`: each workload takes
    /// the slots it chose there, those with most to lose first, as far as
    /// they fit; what does not fit is placed by `construct`.
    fn start_from_response(&mut self, order: &[WorkloadIx], price: &[f64]) {
        let p = self.p;
        let f = self.f;
        self.place_affinity_groups();
        let mut segments = Vec::new();
        let mut taken = Vec::new();
        let mut chosen: Vec<(f64, WorkloadIx, Taken)> = Vec::with_capacity(p.workloads.len());
        for w in p.workloads.indices() {
            if self.s.fixed[w] {
                continue;
            }
            best_response(p, f, w, price, &mut segments, &mut taken);
            // Regret: what the workload's best slot saves over its next site.
            let mut costs: Vec<f64> = f.range(w).map(|k| f.priced(p, w, k, price)).collect();
            costs.sort_by(f64::total_cmp);
            // (A workload scaled to zero has nothing to lose: ∞ × 0 is NaN.)
            let regret = match (costs.as_slice(), p.workloads[w].replicas) {
                (_, 0) => 0.0,
                ([a, b, ..], n) => (b - a) * n as f64,
                (_, _) => f64::INFINITY,
            };
            chosen.push((regret, w, taken.clone()));
        }
        chosen.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, w, slots) in &chosen {
            for &(k, n) in slots {
                for _ in 0..n {
                    if self.fits(*w, k) {
                        self.add(*w, k);
                    }
                }
            }
        }
        self.construct(order, price);
    }

    /// Local search on the true objective until a pass finds nothing or the
    /// limit runs out. Returns the number of improving steps.
    fn improve(&mut self, eject: Eject, passes: usize) -> usize {
        let p = self.p;
        let limit = self.limit;
        let mut steps = 0;
        for _pass in 0..passes {
            let mut improved = 0;
            for w in p.workloads.indices() {
                if w.ix() % 1024 == 0 && limit.out() {
                    return steps + improved;
                }
                if !self.s.fixed[w] {
                    limit.spend(self.f.range(w).len() as u64);
                    improved += self.improve_workload(w);
                }
            }
            // Ejections for unplaced replicas are few and always worth a
            // look; for every replica, only once relocation is exhausted.
            if eject == Eject::Unplaced || (improved == 0 && eject == Eject::All) {
                for w in p.workloads.indices() {
                    let unplaced = self.s.placed[w] < p.workloads[w].replicas;
                    if !self.s.fixed[w] && (unplaced || eject == Eject::All) {
                        improved += self.eject_for(w, eject == Eject::All);
                    }
                    if w.ix() % 256 == 0 && limit.out() {
                        break;
                    }
                }
            }
            steps += improved;
            if improved == 0 || limit.out() {
                break;
            }
        }
        steps
    }

    /// Place what is unplaced, then relocate single replicas to cheaper sites.
    fn improve_workload(&mut self, w: WorkloadIx) -> usize {
        let wl = &self.p.workloads[w];
        let mut steps = 0;
        while self.s.placed[w] < wl.replicas {
            match self.best_fit(w, None, |k| self.add_cost(w, k)) {
                Some((k, c)) if c < wl.unplaced_cost - 1e-12 => {
                    self.add(w, k);
                    steps += 1;
                }
                _ => break,
            }
        }
        for k in self.f.range(w) {
            while self.s.n[k] > 0 {
                let saving = self.remove_saving(w, k);
                self.remove(w, k);
                let best = self.best_fit(w, Some(k), |j| self.add_cost(w, j));
                match best {
                    Some((j, c)) if c < saving - 1e-9 * saving.abs().max(1.0) => {
                        self.add(w, j);
                        steps += 1;
                    }
                    _ if saving > wl.unplaced_cost + 1e-12 => {
                        // Cheaper to leave it unplaced (only with tiny priorities).
                        steps += 1;
                        break;
                    }
                    _ => {
                        self.add(w, k);
                        break;
                    }
                }
            }
        }
        steps
    }

    /// Two-step moves for `w`: a replica of `w` (or one left unplaced) goes
    /// to a cheaper candidate site that is full, made room for by moving one
    /// replica of another workload off it to that workload's best other
    /// site (possibly the one `w` left). Taken when the pair lowers the
    /// objective.
    fn eject_for(&mut self, w: WorkloadIx, placed_too: bool) -> usize {
        let f = self.f;
        let p = self.p;
        let wl = &p.workloads[w];
        let mut steps = 0;
        // Sources: each placed slot, and "unplaced" (None).
        let mut sources: Vec<Option<usize>> = if placed_too {
            f.range(w).filter(|&k| self.s.n[k] > 0).map(Some).collect()
        } else {
            Vec::new()
        };
        if self.s.placed[w] < wl.replicas {
            sources.push(None);
        }
        for src in sources {
            if src.is_some_and(|k| self.s.n[k] == 0)
                || (src.is_none() && self.s.placed[w] >= wl.replicas)
            {
                continue;
            }
            let saving = match src {
                Some(k) => self.remove_saving(w, k),
                None => wl.unplaced_cost,
            };
            let mut targets: Vec<(f64, usize)> = f
                .range(w)
                .filter(|&j| Some(j) != src && self.s.n[j] < f.max[j])
                .map(|j| (self.add_cost(w, j), j))
                .filter(|(c, _)| *c < saving - 1e-9)
                .collect();
            targets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some(k) = src {
                self.remove(w, k);
            }
            let mut done = false;
            // Unplaced replicas are few and costly: try every target site.
            let tries = if src.is_none() { targets.len() } else { 3 };
            'target: for &(_, j) in targets.iter().take(tries) {
                let t = f.site[j];
                for idx in 0..f.at_site[t].len() {
                    let k2 = f.at_site[t][idx];
                    if self.s.n[k2] == 0 {
                        continue;
                    }
                    let w2 = workload_of(f, k2);
                    if w2 == w || self.s.fixed[w2] || !self.frees_enough(w, j, w2, k2) {
                        continue;
                    }
                    self.limit.spend(1);
                    let saving2 = self.remove_saving(w2, k2);
                    self.remove(w2, k2);
                    if self.fits(w, j) {
                        let add_w_now = self.add_cost(w, j);
                        self.add(w, j);
                        let alt = self.best_fit(w2, Some(k2), |i| self.add_cost(w2, i));
                        let unplaced2 = p.workloads[w2].unplaced_cost;
                        let cost2 = alt.map_or(unplaced2, |(_, c)| c.min(unplaced2));
                        let delta = add_w_now - saving + cost2 - saving2;
                        if delta < -1e-9 * saving.abs().max(1.0) {
                            if let Some((i, c)) = alt {
                                if c < unplaced2 {
                                    self.add(w2, i);
                                }
                            }
                            steps += 1;
                            done = true;
                            break 'target;
                        }
                        // Nowhere for the ejected replica either: one level
                        // deeper, for replicas that would stay unplaced.
                        if src.is_none() && alt.is_none() && placed_too {
                            let mut log = Vec::new();
                            let mut budget = 20_000;
                            if let Some(room) = self.make_room(w2, k2, 3, &mut budget, &mut log) {
                                let delta = add_w_now - saving + room - saving2;
                                if delta < -1e-9 * saving.abs().max(1.0) {
                                    steps += 1;
                                    done = true;
                                    break 'target;
                                }
                                self.undo(&mut log, 0);
                            }
                        }
                        self.remove(w, j);
                    }
                    self.add(w2, k2);
                }
                if self.limit.out() {
                    break;
                }
            }
            // A big replica may need more room than any one replica frees:
            // move several off one of its sites.
            if !done && src.is_none() && placed_too {
                // The same targets as above: every try there was undone.
                for &(_, j) in targets.iter().take(8) {
                    let mut log = Vec::new();
                    if let Some(cost) = self.make_room_many(w, j, &mut log) {
                        if cost < saving - 1e-9 * saving.abs().max(1.0) {
                            steps += 1;
                            done = true;
                            break;
                        }
                        self.undo(&mut log, 0);
                    }
                    if self.limit.out() {
                        break;
                    }
                }
            }
            if !done {
                if let Some(k) = src {
                    self.add(w, k);
                }
            }
        }
        steps
    }

    /// Place one replica of `w` at candidate `j` by moving as many replicas
    /// of other workloads off that site as it takes, each to its best other
    /// site with room, cheapest relocations first. Changes go to `log`;
    /// returns their cost, or `None` (everything undone) when no such set
    /// of moves makes room.
    fn make_room_many(&mut self, w: WorkloadIx, j: usize, log: &mut Vec<Edit>) -> Option<f64> {
        let f = self.f;
        let t = f.site[j];
        // (relocation cost, slot, workload) of each replica on the site.
        let mut movable: Vec<(f64, usize, WorkloadIx)> = Vec::new();
        for &k2 in &f.at_site[t] {
            if self.s.n[k2] == 0 {
                continue;
            }
            let w2 = workload_of(f, k2);
            if w2 == w || self.s.fixed[w2] {
                continue;
            }
            if let Some((_, c)) = self.best_fit(w2, Some(k2), |i| self.add_cost(w2, i)) {
                movable.push((c - self.remove_saving(w2, k2), k2, w2));
            }
        }
        self.limit.spend(f.at_site[t].len() as u64);
        movable.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut cost = 0.0;
        for (_, k2, w2) in movable {
            if self.fits(w, j) {
                break;
            }
            while self.s.n[k2] > 0 && !self.fits(w, j) {
                let saving2 = self.remove_saving(w2, k2);
                self.apply(Edit::Remove(w2, k2), log);
                match self.best_fit(w2, Some(k2), |i| self.add_cost(w2, i)) {
                    Some((to, c)) => {
                        self.apply(Edit::Add(w2, to), log);
                        cost += c - saving2;
                    }
                    None => {
                        self.apply(Edit::Add(w2, k2), log);
                        break;
                    }
                }
            }
        }
        if !self.fits(w, j) {
            self.undo(log, 0);
            return None;
        }
        cost += self.add_cost(w, j);
        self.apply(Edit::Add(w, j), log);
        Some(cost)
    }
}

/// One change to a placement under construction, for undoing.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Add(WorkloadIx, usize),
    Remove(WorkloadIx, usize),
}

/// Which replicas the local search may make room for by ejecting another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eject {
    /// Only replicas left unplaced (few, so cheap).
    Unplaced,
    All,
}

/// Where one more replica of each workload fits under placement `x`, by
/// the fast path's own checks on its flat state: per workload, (candidate
/// site, fits). The fast path keeps its counts in per-slot arrays for
/// speed rather than asking each `Rule`'s fits role; this is the view the
/// tests hold against `Load::fits` (every rule's fits role), so the two
/// cannot drift apart. `x` must place only on candidates.
pub fn fits_under(p: &Problem, x: &Replicas) -> IndexVec<WorkloadIx, Vec<(SiteIx, bool)>> {
    let f = Flat::new(p);
    let none = Limit::none();
    let mut a = Assign::new(p, &f, &none);
    a.load(x);
    p.workloads
        .indices()
        .map(|w| f.range(w).map(|k| (f.site[k], a.fits(w, k))).collect())
        .collect()
}

fn workload_of(f: &Flat, k: usize) -> WorkloadIx {
    WorkloadIx::new(f.start.partition_point(|&s| s <= k) - 1)
}

/// Solve a problem on the fast path.
pub fn solve(p: &Problem, options: &FastOptions) -> FastSolved {
    let started = Stopwatch::start();
    // Reproducible runs never read the clock to decide anything.
    let (deadline, work) = if options.deterministic {
        (Deadline::NONE, Some(options.work.unwrap_or(DEFAULT_WORK)))
    } else {
        (options.deadline, options.work)
    };
    let limit = Limit::new(deadline, work);
    let f = Flat::new(p);
    let pairs = f.site.len() as u64;
    let fixed_cost = p.fixed_cost();
    // Not the fixed cost: with negative prices a placement can earn.
    let trivial_bound = p.trivial_bound();
    let rows = p.sites.len() * f.stride;

    // Biggest and most important first: they are the hardest to fit late.
    let fleet: Vec<f64> = (0..p.resources.len())
        .map(|r| p.sites.iter().map(|s| s.capacity[r]).sum())
        .collect();
    let size: IndexVec<WorkloadIx, f64> = p
        .workloads
        .iter()
        .map(|w| {
            w.demand
                .iter()
                .zip(&fleet)
                .map(|(d, cap)| if *cap > 0.0 { d / cap } else { 0.0 })
                .fold(0.0, f64::max)
        })
        .collect();
    let mut order: Vec<WorkloadIx> = p.workloads.indices().collect();
    order.sort_by(|&a, &b| {
        let (wa, wb) = (&p.workloads[a], &p.workloads[b]);
        wb.unplaced_cost
            .total_cmp(&wa.unplaced_cost)
            .then(size[b].total_cmp(&size[a]))
            .then(a.cmp(&b))
    });

    // A placement at given prices: both constructions, local search
    // without ejections (cheap), the better one. The second construction
    // is skipped when the first one's time would not fit before the
    // deadline (at a million replicas one takes tens of seconds).
    let primal = |price: &[f64]| {
        let mut best: Option<(Replicas, f64, f64)> = None;
        let mut took = (Duration::ZERO, 0u64);
        for from_response in [false, true] {
            if best.is_some() && !limit.affords(took.1, took.0) {
                break;
            }
            let t = (Stopwatch::start(), limit.spent());
            limit.spend(pairs);
            let mut a = Assign::new(p, &f, &limit);
            if from_response {
                a.start_from_response(&order, price);
            } else {
                a.construct(&order, price);
            }
            a.improve(Eject::Unplaced, 3);
            let x = a.placement();
            let terms = p.evaluate(&x).objective;
            let objective = terms.total;
            took = (t.0.elapsed(), limit.spent() - t.1);
            tracing::trace!(from_response, objective, "primal");
            if best.as_ref().is_none_or(|(_, b, _)| objective < *b) {
                best = Some((x, objective, terms.unplaced));
            }
        }
        (best.unwrap_or_default(), took)
    };
    // The bound gets the first part of the time and of the work; the rest
    // is for the final local search with ejections.
    let bound_deadline = deadline.share(0.6);
    let bound_work = match work {
        Some(w) if options.prices_only => w,
        Some(w) => w / 5 * 3,
        None => u64::MAX,
    };

    let zero = vec![0.0; rows];
    // The gap is on the placed cost (`placed_gap`), so the penalty of the
    // best placement travels with it.
    let ((mut best_x, mut best_obj, mut best_pen), mut primal_took) = primal(&zero);
    tracing::debug!(elapsed_s = started.elapsed_s(), best_obj, "first placement");
    let mut price = zero;
    let mut grad = vec![0.0; rows];
    let mut best_bound = f64::NEG_INFINITY;
    let mut best_price = price.clone();
    let mut theta = 1.0;
    let mut since_better = 0;
    let mut iterations = 0;
    let mut next_primal = 10;
    while iterations < options.max_iterations {
        // One iteration at least: it turns the trivial bound (the fixed
        // cost) into the Lagrangian's, even when placing took all the time.
        if placed_gap(best_obj, best_bound, best_pen) <= options.target_gap
            || (iterations > 0 && (limit.spent() >= bound_work || bound_deadline.reached()))
        {
            break;
        }
        iterations += 1;
        limit.spend(pairs);
        let value = lagrangian(p, &f, &price, fixed_cost, &mut grad);
        if value > best_bound + 1e-12 * value.abs().max(1.0) {
            best_bound = value;
            best_price.clone_from(&price);
            since_better = 0;
        } else {
            since_better += 1;
            if since_better >= 15 {
                theta /= 2.0;
                since_better = 0;
                // Restart from the best prices found so far.
                price.clone_from(&best_price);
            }
        }
        // Rows at zero price that are slack do not move.
        let mut norm = 0.0;
        for (g, pr) in grad.iter_mut().zip(&price) {
            if *pr <= 0.0 && *g < 0.0 {
                *g = 0.0;
            }
            norm += *g * *g;
        }
        if norm <= 1e-18 {
            // The relaxed solution is feasible for the relaxed rows:
            // this bound is the Lagrangian optimum at these prices.
            break;
        }
        // Polyak's step towards a target: the best placement, but no more
        // than 2 % above the bound (early placements can be far off, and a
        // far target makes steps that throw the prices away).
        let lb = best_bound.max(value);
        let target = best_obj.min(lb + 0.02 * lb.abs().max(1e-9));
        let step = theta * (target - value).max(1e-9 * target.abs()) / norm;
        for (pr, g) in price.iter_mut().zip(&grad) {
            *pr = (*pr + step * g).max(0.0);
        }
        // A placement from the prices now and then, if one fits in the time.
        if iterations == next_primal
            && !options.prices_only
            && limit.affords(primal_took.1, primal_took.0)
        {
            next_primal = (next_primal as f64 * 1.6) as usize + 5;
            let ((x, obj, pen), took) = primal(&best_price);
            primal_took = took;
            tracing::debug!(
                elapsed_s = started.elapsed_s(),
                iterations,
                bound = best_bound,
                primal = obj,
                best = best_obj,
                theta,
                "fast path"
            );
            if obj < best_obj {
                best_x = x;
                best_obj = obj;
                best_pen = pen;
            }
        }
        if theta < 1e-3 {
            break;
        }
    }
    // Prices only: the bound's search was all that was asked for.
    if !options.prices_only {
        if iterations > 0 && limit.affords(primal_took.1, primal_took.0) {
            let ((x, obj, pen), _) = primal(&best_price);
            if obj < best_obj {
                best_x = x;
                best_obj = obj;
                best_pen = pen;
            }
        }
        // Replicas left out that a placement might hold: small exact models
        // around them (`repair`) get half of what is left, the polish the rest.
        if best_pen > 0.0 && !limit.out() {
            let repair_limit = Limit::new(
                deadline.share(REPAIR_SHARE),
                work.map(|w| (w.saturating_sub(limit.spent()) as f64 * REPAIR_SHARE) as u64),
            );
            match crate::repair::repair(p, best_x.clone(), best_obj, &repair_limit, 0) {
                Ok(r) => {
                    limit.spend(repair_limit.spent());
                    if r.objective < best_obj {
                        best_pen = p.evaluate(&r.x).objective.unplaced;
                        best_x = r.x;
                        best_obj = r.objective;
                    }
                }
                Err(e) => tracing::warn!("repair failed: {e}"),
            }
        }
        // The final polish: ejection chains from the best placement.
        if placed_gap(best_obj, best_bound, best_pen) > options.target_gap {
            let mut a = Assign::new(p, &f, &limit);
            a.load(&best_x);
            a.improve(Eject::All, 50);
            let x = a.placement();
            let terms = p.evaluate(&x).objective;
            if terms.total < best_obj {
                best_x = x;
                best_obj = terms.total;
                best_pen = terms.unplaced;
            }
        }
    }
    tracing::debug!(
        elapsed_s = started.elapsed_s(),
        iterations,
        bound = best_bound,
        best = best_obj,
        "fast path done"
    );
    let bound = best_bound.max(trivial_bound).min(best_obj);
    FastSolved {
        gap: placed_gap(best_obj, bound, best_pen),
        x: best_x,
        objective: best_obj,
        bound,
        iterations,
        work: limit.spent(),
        out_of_work: limit.spent() >= work.unwrap_or(u64::MAX),
        price: best_price,
    }
}
