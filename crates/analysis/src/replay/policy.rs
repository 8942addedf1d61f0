//! The policies a replay sets side by side. `edgeplan` re-plans with the
//! optimizer (in `replay::run`); the others are the rules operators and
//! benchmarks use today, written here as what they are: a ranking of a
//! workload's eligible sites (the same candidates the optimizer sees, so
//! SLOs, pinning and hardware bind every policy alike) and room counted
//! in cores, memory, GPUs and per-site replica caps — not in watts or
//! degrees, which these rules do not model. Pure.

use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;

/// A placement policy of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// The optimizer: a fast-path solve at the first hour, then an
    /// incremental re-plan every hour on forecasts.
    Edgeplan,
    /// `edgeplan` told the real future (weather and carbon) instead of
    /// forecasts: the upper bound that prices forecasting.
    EdgeplanForesight,
    /// Today's placement, never moved (nothing left out is placed).
    Static,
    /// Each replica on its nearest (traffic-weighted RTT) eligible site with room.
    LatencyOnly,
    /// Towards the eligible site with the lowest day-ahead price (green-dcc).
    LowestPrice,
    /// Towards the eligible site with the lowest grid carbon (green-dcc).
    LowestCarbon,
    /// Towards the eligible site with the most free cores (green-dcc).
    MostAvailable,
    /// New replicas on eligible sites in turn; nothing running moves (green-dcc).
    RoundRobin,
    /// OpenStack Watcher's style: after an hour whose inlet passed the
    /// threshold (the site's limit less its margin), move one replica off
    /// that site to its nearest eligible site with room.
    ReactiveThermal,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 9] = [
        PolicyKind::Edgeplan,
        PolicyKind::EdgeplanForesight,
        PolicyKind::Static,
        PolicyKind::LatencyOnly,
        PolicyKind::LowestPrice,
        PolicyKind::LowestCarbon,
        PolicyKind::MostAvailable,
        PolicyKind::RoundRobin,
        PolicyKind::ReactiveThermal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Edgeplan => "edgeplan",
            PolicyKind::EdgeplanForesight => "edgeplan-foresight",
            PolicyKind::Static => "static",
            PolicyKind::LatencyOnly => "latency-only",
            PolicyKind::LowestPrice => "lowest-price",
            PolicyKind::LowestCarbon => "lowest-carbon",
            PolicyKind::MostAvailable => "most-available",
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::ReactiveThermal => "reactive-thermal",
        }
    }

    /// Whether the optimizer decides (the others are rules).
    pub fn optimizes(self) -> bool {
        matches!(self, PolicyKind::Edgeplan | PolicyKind::EdgeplanForesight)
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<PolicyKind, String> {
        PolicyKind::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().map(|p| p.name()).collect();
                format!("unknown policy {s:?}: one of {}", names.join(", "))
            })
    }
}

/// What a rule sees of the hour besides the problem.
pub struct RuleInput<'a> {
    /// Sites whose inlet passed the threshold last hour (reactive-thermal).
    pub hot_last_hour: &'a [bool],
    /// Round-robin's next site (kept between hours).
    pub turn: &'a mut usize,
    /// Most replicas moved this hour (the fleet's `limits.max_moves`).
    pub max_moves: Option<u32>,
}

/// Resources used and replicas per (workload, site) under a placement.
struct Room<'a> {
    p: &'a Problem,
    used: IndexVec<SiteIx, Vec<f64>>,
}

impl<'a> Room<'a> {
    fn of(p: &'a Problem, x: &Replicas) -> Room<'a> {
        let mut used: IndexVec<SiteIx, Vec<f64>> =
            IndexVec::from_elem_n(vec![0.0; p.resources.len()], p.sites.len());
        for (wi, sites) in x.iter_enumerated() {
            for &(si, n) in sites {
                for (r, d) in p.workloads[wi].demand.iter().enumerate() {
                    used[si][r] += n as f64 * d;
                }
            }
        }
        Room { p, used }
    }

    /// Whether one more replica of `wi` fits on `si` (a candidate).
    fn fits(&self, x: &Replicas, wi: WorkloadIx, si: SiteIx) -> bool {
        let Some(c) = self.p.workloads[wi].candidate_at(si) else {
            return false;
        };
        if x.count(wi, si) >= c.max_count {
            return false;
        }
        let cap = &self.p.sites[si].capacity;
        self.p.workloads[wi]
            .demand
            .iter()
            .enumerate()
            .all(|(r, d)| self.used[si][r] + d <= cap[r] + 1e-9)
    }

    fn add(&mut self, x: &mut Replicas, wi: WorkloadIx, si: SiteIx, n: i64) {
        for (r, d) in self.p.workloads[wi].demand.iter().enumerate() {
            self.used[si][r] += n as f64 * d;
        }
        let sites = &mut x[wi];
        match sites.iter_mut().find(|(s, _)| *s == si) {
            Some(slot) => slot.1 = (slot.1 as i64 + n).max(0) as u32,
            None if n > 0 => sites.push((si, n as u32)),
            None => {}
        }
        sites.retain(|(_, k)| *k > 0);
    }

    /// Share of site `si`'s cores in use, with one more replica of `wi`
    /// if `adding` (0 without a core count).
    fn core_use(&self, wi: WorkloadIx, si: SiteIx, adding: bool) -> f64 {
        let Some(r) = self.p.resources.iter().position(|r| r == "cpu_cores") else {
            return 0.0;
        };
        let cap = self.p.sites[si].capacity[r];
        let extra = if adding {
            self.p.workloads[wi].demand[r]
        } else {
            0.0
        };
        if cap > 0.0 {
            (self.used[si][r] + extra) / cap
        } else {
            1.0
        }
    }
}

/// The placement a rule-based policy moves to from `x` this hour.
pub fn decide(p: &Problem, x: &Replicas, policy: PolicyKind, input: RuleInput) -> Replicas {
    let mut y = x.clone();
    if matches!(policy, PolicyKind::Static) || policy.optimizes() {
        return y;
    }
    let mut room = Room::of(p, &y);
    // Rank of a site for a workload, lower is better, RTT breaking ties;
    // `adding`: as if one more replica of it ran there (most-available
    // compares a site's use after a move with the source's before it, so
    // every move strictly evens the fleet out and moves cannot cycle).
    let rank = |room: &Room, wi: WorkloadIx, si: SiteIx, adding: bool| -> f64 {
        let rtt = p.mean_rtt_ms(wi, si);
        let key = match policy {
            PolicyKind::LowestPrice => p.sites[si].physics.price_per_kwh,
            PolicyKind::LowestCarbon => p.sites[si].carbon_g_per_kwh,
            PolicyKind::MostAvailable => room.core_use(wi, si, adding),
            _ => 0.0,
        };
        key * 1e6 + rtt
    };
    // Highest priority first, then file order.
    let mut order: Vec<WorkloadIx> = p.workloads.indices().collect();
    order.sort_by_key(|&wi| std::cmp::Reverse(p.workloads[wi].priority));

    // Replicas left out are placed first, where each rule would put them.
    for &wi in &order {
        let candidates: Vec<SiteIx> = p.workloads[wi].candidates.iter().map(|c| c.site).collect();
        if candidates.is_empty() {
            continue;
        }
        while y.placed(wi) < p.workloads[wi].replicas {
            let pick = if policy == PolicyKind::RoundRobin {
                let n = candidates.len();
                let found = (0..n)
                    .map(|k| candidates[(*input.turn + k) % n])
                    .find(|&si| room.fits(&y, wi, si));
                *input.turn = input.turn.wrapping_add(1);
                found
            } else {
                candidates
                    .iter()
                    .copied()
                    .filter(|&si| room.fits(&y, wi, si))
                    .min_by(|&a, &b| rank(&room, wi, a, true).total_cmp(&rank(&room, wi, b, true)))
            };
            match pick {
                Some(si) => room.add(&mut y, wi, si, 1),
                None => break,
            }
        }
    }

    // Then running replicas move, one at a time, while the rule prefers
    // another site with room and the hour's move limit allows.
    // Without a move limit, still at most one move per replica an hour.
    let replicas: u64 = p.workloads.iter().map(|w| w.replicas as u64).sum();
    let mut budget = input.max_moves.map_or(replicas, u64::from);
    match policy {
        PolicyKind::RoundRobin => {}
        PolicyKind::ReactiveThermal => {
            for si in p.sites.indices() {
                if budget == 0 || !input.hot_last_hour.get(si.ix()).copied().unwrap_or(false) {
                    continue;
                }
                // The replica whose nearest other site with room is nearest.
                let mut best: Option<(f64, WorkloadIx, SiteIx)> = None;
                for &wi in &order {
                    if y.count(wi, si) == 0 {
                        continue;
                    }
                    for c in &p.workloads[wi].candidates {
                        let to = c.site;
                        if to == si || input.hot_last_hour.get(to.ix()).copied().unwrap_or(false) {
                            continue;
                        }
                        if room.fits(&y, wi, to) {
                            let r = p.mean_rtt_ms(wi, to);
                            if best.is_none_or(|b| r < b.0) {
                                best = Some((r, wi, to));
                            }
                        }
                    }
                }
                if let Some((_, wi, to)) = best {
                    room.add(&mut y, wi, si, -1);
                    room.add(&mut y, wi, to, 1);
                    budget -= 1;
                }
            }
        }
        _ => {
            for &wi in &order {
                let mut from_sites: Vec<SiteIx> = y[wi].iter().map(|(s, _)| *s).collect();
                from_sites.sort_unstable();
                for from in from_sites {
                    while budget > 0 && y.count(wi, from) > 0 {
                        let here = rank(&room, wi, from, false);
                        room.add(&mut y, wi, from, -1);
                        let better = p.workloads[wi]
                            .candidates
                            .iter()
                            .map(|c| c.site)
                            .filter(|&si| si != from && room.fits(&y, wi, si))
                            .map(|si| (rank(&room, wi, si, true), si))
                            .filter(|(r, _)| *r < here - 1e-9)
                            .min_by(|a, b| a.0.total_cmp(&b.0));
                        match better {
                            Some((_, to)) => {
                                room.add(&mut y, wi, to, 1);
                                budget -= 1;
                            }
                            None => {
                                room.add(&mut y, wi, from, 1);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Replicas moved from one site to another between two placements (a
/// replica started where nothing stopped is a placement, not a move).
pub fn moves(before: &Replicas, after: &Replicas) -> IndexVec<WorkloadIx, u32> {
    before
        .iter_enumerated()
        .map(|(wi, old)| {
            let new = &after[wi];
            let started: u32 = new
                .iter()
                .map(|&(si, n)| n.saturating_sub(before.count(wi, si)))
                .sum();
            let stopped: u32 = old
                .iter()
                .map(|&(si, n)| n.saturating_sub(after.count(wi, si)))
                .sum();
            started.min(stopped)
        })
        .collect()
}
