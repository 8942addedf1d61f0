//! What a placement puts on each site, kept as replicas come and go: the
//! one running total that the exact solver's greedy warm start, the
//! migration planner and the explanations share. (The fast path keeps the
//! same totals in flat per-slot arrays for speed, and asks the same
//! [`within`](crate::rows::within) test.)

use crate::ix::{IndexVec, SiteIx, WorkloadIx};
use crate::problem::Problem;
use crate::replicas::Replicas;
use crate::rows::{Row, Shortfall};

/// Per site: the use of every row (resources, then IT kW); per workload:
/// replicas per site and per failure domain; per anti-affinity group:
/// replicas per site; and moves (replicas started where they did not run).
#[derive(Debug, Clone)]
pub struct Load {
    /// Per workload: (site, replicas), in the order sites were first used.
    pub x: Replicas,
    /// Per workload: replicas placed.
    pub placed: IndexVec<WorkloadIx, u32>,
    /// Per site: use of each row (`Problem::rows`: the resources, then
    /// workload IT power in kW).
    pub used: IndexVec<SiteIx, Vec<f64>>,
    pub moves: u64,
    anti: Vec<IndexVec<SiteIx, u32>>,
    domain: IndexVec<WorkloadIx, Vec<(usize, u32)>>,
    anti_group_of: IndexVec<WorkloadIx, Option<usize>>,
}

impl Load {
    /// Nothing placed.
    pub fn empty(p: &Problem) -> Load {
        let mut anti_group_of = IndexVec::from_elem_n(None, p.workloads.len());
        for (g, (_, members)) in p.anti_affinity_groups.iter().enumerate() {
            for &w in members {
                anti_group_of[w] = Some(g);
            }
        }
        Load {
            x: Replicas::empty(p.workloads.len()),
            placed: IndexVec::from_elem_n(0, p.workloads.len()),
            used: IndexVec::from_elem_n(vec![0.0; p.row_count()], p.sites.len()),
            moves: 0,
            anti: vec![IndexVec::from_elem_n(0, p.sites.len()); p.anti_affinity_groups.len()],
            domain: IndexVec::from_elem_n(Vec::new(), p.workloads.len()),
            anti_group_of,
        }
    }

    /// The load of placement `x`, moves counted against today's placement.
    pub fn of(p: &Problem, x: &Replicas) -> Load {
        let mut load = Load::empty(p);
        for (wi, sites) in x.iter_enumerated() {
            for &(si, n) in sites {
                let moved = n.saturating_sub(p.workloads[wi].current_at(si));
                load.add(p, wi, si, n);
                load.moves += u64::from(moved);
            }
        }
        load
    }

    /// The anti-affinity group of workload `wi`, if any.
    pub fn anti_group_of(&self, wi: WorkloadIx) -> Option<usize> {
        self.anti_group_of[wi]
    }

    /// Replicas of `wi` on site `si`.
    pub fn count(&self, wi: WorkloadIx, si: SiteIx) -> u32 {
        self.x.count(wi, si)
    }

    /// Replicas of anti-affinity group `g` on site `si`.
    pub fn in_group(&self, g: usize, si: SiteIx) -> u32 {
        self.anti[g][si]
    }

    /// Replicas of `wi` in failure domain `d`.
    pub fn in_domain(&self, wi: WorkloadIx, d: usize) -> u32 {
        self.domain[wi]
            .iter()
            .find(|(x, _)| *x == d)
            .map_or(0, |(_, n)| *n)
    }

    /// Put `n` replicas of `wi` on `si` (moves are the caller's to count).
    pub fn add(&mut self, p: &Problem, wi: WorkloadIx, si: SiteIx, n: u32) {
        self.change(p, wi, si, i64::from(n));
    }

    /// Take `n` replicas of `wi` off `si` (no more than are there).
    pub fn remove(&mut self, p: &Problem, wi: WorkloadIx, si: SiteIx, n: u32) {
        let n = n.min(self.count(wi, si));
        self.change(p, wi, si, -i64::from(n));
    }

    fn change(&mut self, p: &Problem, wi: WorkloadIx, si: SiteIx, delta: i64) {
        if delta == 0 {
            return;
        }
        let step = |n: &mut u32| *n = (i64::from(*n) + delta).max(0) as u32;
        match self.x[wi].iter_mut().find(|(s, _)| *s == si) {
            Some((_, n)) => step(n),
            None => self.x[wi].push((si, delta.max(0) as u32)),
        }
        step(&mut self.placed[wi]);
        p.add_use(wi, si, &mut self.used[si], delta as f64);
        if let Some(g) = self.anti_group_of[wi] {
            step(&mut self.anti[g][si]);
        }
        if let Some(dom) = p.sites[si].failure_domain {
            match self.domain[wi].iter_mut().find(|(x, _)| *x == dom) {
                Some((_, n)) => step(n),
                None => self.domain[wi].push((dom, delta.max(0) as u32)),
            }
        }
    }

    /// May site `si` take one more replica of `wi` under its limits
    /// (every row)? See [`Problem::room_for`].
    pub fn room(&self, p: &Problem, wi: WorkloadIx, si: SiteIx) -> Result<(), Shortfall> {
        p.room_for(wi, si, &self.used[si])
    }

    /// Site `si`'s use of `row`.
    pub fn use_of(&self, p: &Problem, si: SiteIx, row: Row) -> f64 {
        self.used[si][row.index(p.resources.len())]
    }
}
