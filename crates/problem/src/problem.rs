//! The problem builder: turns an instance into indexed, solver-ready data —
//! effective capacities, the effective IT-power limit per site, latency
//! eligibility, per-replica cost coefficients — and evaluates a placement
//! against exactly those coefficients (the objective the MILP minimises).
//! Every rule lives here once; the MILP, explanations and validation read it.
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::error::{Error, Result};
use edgeplan_model::instance::{Instance, ObjectiveWeights, Site, Workload};
pub use edgeplan_model::kpi::{Kpis, ObjectiveTerms};
use edgeplan_model::placement::Placement;
use edgeplan_model::server_models::{catalogue_with, ServerModel};
use edgeplan_physics::physics::{PowerLimit, SitePhysics};
use edgeplan_physics::topology::Topology;

/// Relative slack for comparisons of sums against limits.
pub const EPS: f64 = 1e-9;

/// The row of the per-site uplink (backhaul) limit: a site's
/// `uplink_gbps` against the sum of its replicas' `egress_gbps`. It joins
/// the resource rows (and so every solver, the room test and the
/// explanations) when any site or workload declares it; a site that
/// declares none has an infinite limit there. The name is reserved: no
/// resource may take it.
pub const UPLINK: &str = "uplink_gbps";

/// The one capacity test, with its one tolerance: is `value` (a site's load
/// on one of its limits, after adding a replica) within `limit`? Every
/// solver, the planner's room test and the explanations ask this and
/// nothing else, so they never disagree at the edge. An infinite limit
/// (a site that declares no uplink) is never reached.
#[inline]
pub fn within(value: f64, limit: f64) -> bool {
    value <= limit + EPS * limit.abs().max(1.0)
}

/// The most replicas of size `need` that fit within `limit` by [`within`]
/// (`u32::MAX` for a need of zero or an infinite limit).
pub fn most_within(need: f64, limit: f64) -> u32 {
    if need <= 0.0 {
        return u32::MAX;
    }
    // `as` saturates: infinity gives u32::MAX, a negative limit 0.
    ((limit + EPS * limit.abs().max(1.0)) / need).floor() as u32
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub name: String,
    /// Resource names, in index order.
    pub resources: Vec<String>,
    pub sites: Vec<SiteModel>,
    pub workloads: Vec<WorkloadModel>,
    pub failure_domains: Vec<String>,
    /// Workload indices per anti-affinity group: at most one replica of the group per site.
    pub anti_affinity_groups: Vec<(String, Vec<usize>)>,
    /// Workload indices per affinity group: the same set of sites for all.
    pub affinity_groups: Vec<(String, Vec<usize>)>,
    pub weights: ObjectiveWeights,
    pub max_moves: Option<u32>,
    /// Region → site RTT, kept for explanations.
    pub topology: Topology,
    /// Per workload: (region index, weight / total weight).
    traffic: Vec<Vec<(usize, f64)>>,
    region_index: HashMap<String, usize>,
    site_index: HashMap<String, usize>,
    hardware: Vec<Vec<String>>,
    site_servers: Vec<ServerModel>,
    site_calibration: Vec<f64>,
    instance_workloads: Vec<Workload>,
    /// Sites grouped by network node, in site order: (first site, members).
    node_sites: Vec<(usize, Vec<usize>)>,
}

#[derive(Debug, Clone)]
pub struct SiteModel {
    pub id: String,
    pub name: String,
    pub physics: SitePhysics,
    /// Capacity per resource after the reserve.
    pub capacity: Vec<f64>,
    pub failure_domain: Option<usize>,
    pub carbon_g_per_kwh: f64,
    /// Energy cost per IT kWh (weights.energy × PUE × price).
    pub energy_cost_per_it_kwh: f64,
    /// Carbon cost per IT kWh (carbon price × PUE × intensity).
    pub carbon_cost_per_it_kwh: f64,
    /// Thermal-risk cost per IT kW (weight / thermal limit).
    pub thermal_cost_per_it_kw: f64,
    /// IT kW available to workloads: the effective limit less idle power.
    pub dynamic_kw_limit: f64,
    pub power_cap_kw: f64,
    /// Inlet rise per IT kW (recirculation per rack / racks), °C/kW.
    pub inlet_c_per_it_kw: f64,
}

#[derive(Debug, Clone)]
pub struct WorkloadModel {
    pub id: String,
    pub replicas: u32,
    /// Per replica, by resource index.
    pub demand: Vec<f64>,
    pub priority: u32,
    pub state_gib: f64,
    /// Cost of one replica started on a site where it did not run.
    pub move_cost: f64,
    /// Cost of one replica left unplaced.
    pub unplaced_cost: f64,
    pub max_per_failure_domain: Option<u32>,
    /// Break-before-make allowed (see `Workload::disruption_allowed`).
    pub disruption_allowed: bool,
    /// (site, replicas) today.
    pub current: Vec<(usize, u32)>,
    /// Sites that may host it, with per-replica figures.
    pub candidates: Vec<Candidate>,
}

impl WorkloadModel {
    /// Its candidate at site `si`, if any (candidates are sorted by site).
    pub fn candidate_at(&self, si: usize) -> Option<&Candidate> {
        self.candidates
            .binary_search_by_key(&si, |c| c.site)
            .ok()
            .map(|i| &self.candidates[i])
    }

    pub fn current_at(&self, site: usize) -> u32 {
        self.current
            .iter()
            .find(|(s, _)| *s == site)
            .map_or(0, |(_, n)| *n)
    }
}

/// A site's new model, computed before `Problem::update_site` applies it.
#[derive(Debug, Clone)]
pub struct SiteUpdate {
    site: SiteModel,
    model: ServerModel,
}

/// A site that may host a workload, and what one replica there costs.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub site: usize,
    /// Upper bound on replicas there (spread, anti-affinity, capacity).
    pub max_count: u32,
    pub dynamic_kw: f64,
    pub mean_rtt_ms: f64,
    pub energy_cost: f64,
    pub carbon_cost: f64,
    pub latency_cost: f64,
    pub thermal_cost: f64,
}

impl Candidate {
    /// Cost per hour of one replica here (moves and unplacement aside).
    pub fn cost(&self) -> f64 {
        self.energy_cost + self.carbon_cost + self.latency_cost + self.thermal_cost
    }
}

/// Why a site can never host a workload, whatever else runs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ineligible {
    /// Too little of the traffic is within the SLO's RTT.
    Latency {
        within_pct: f64,
        needed_pct: f64,
        rtt_ms: f64,
    },
    /// A traffic region has no network path to the site.
    Unreachable {
        region: String,
    },
    Hardware {
        missing: String,
    },
    NotPinned,
    Forbidden,
    /// One replica needs more of a resource than the site has.
    TooBig {
        resource: String,
        need: f64,
        capacity: f64,
    },
    /// One replica's power does not fit under the site's effective limit.
    TooHot {
        need_kw: f64,
        available_kw: f64,
        binding: PowerLimit,
    },
}

impl Ineligible {
    /// A short stable name of the kind of reason.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Ineligible::Latency { .. } => "latency",
            Ineligible::Unreachable { .. } => "unreachable",
            Ineligible::Hardware { .. } => "hardware",
            Ineligible::NotPinned => "pinned",
            Ineligible::Forbidden => "forbidden",
            Ineligible::TooBig { .. } => "too_big",
            Ineligible::TooHot { .. } => "too_hot",
        }
    }

    pub fn describe(&self, site: &str) -> String {
        match self {
            Ineligible::Latency { within_pct, needed_pct, rtt_ms } => format!(
                "{site} is out of latency reach ({within_pct:.0} % of traffic within {rtt_ms} ms, the SLO needs {needed_pct} %)"
            ),
            Ineligible::Unreachable { region } => {
                format!("{site} has no network path to region {region}")
            }
            Ineligible::Hardware { missing } => format!("{site} lacks hardware {missing:?}"),
            Ineligible::NotPinned => format!("{site} is not among its pinned sites"),
            Ineligible::Forbidden => format!("{site} is forbidden to it"),
            Ineligible::TooBig { resource, need, capacity } if resource == UPLINK => format!(
                "{site}'s {} Gbps uplink is too small: one replica's egress is {} Gbps",
                round2(*capacity),
                round2(*need)
            ),
            Ineligible::TooBig { resource, need, capacity } => format!(
                "{site} has {capacity} {resource} in all, one replica needs {need}"
            ),
            Ineligible::TooHot { need_kw, available_kw, binding } => format!(
                "{site} has {available_kw:.2} kW under its {} even when empty, one replica needs {need_kw:.2} kW",
                binding.describe()
            ),
        }
    }
}

impl Problem {
    pub fn build(inst: &Instance) -> Result<Problem> {
        let mut problem = Problem::frame(inst)?;
        problem.set_workloads(&inst.workloads);
        Ok(problem)
    }

    /// Everything but the workloads: sites, topology, and the resources of
    /// sites and workloads alike.
    pub fn frame(inst: &Instance) -> Result<Problem> {
        let models = catalogue_with(&inst.server_models);
        let horizon = inst.limits.horizon_hours;
        let mut resources: Vec<String> = inst
            .sites
            .iter()
            .flat_map(|s| s.capacity.keys().cloned())
            .chain(
                inst.workloads
                    .iter()
                    .flat_map(|w| w.resources.keys().cloned()),
            )
            .collect();
        resources.sort();
        resources.dedup();
        if inst.sites.iter().any(|s| s.uplink_gbps.is_some())
            || inst.workloads.iter().any(|w| w.egress_gbps > 0.0)
        {
            resources.retain(|r| r != UPLINK);
            resources.push(UPLINK.to_string());
        }
        let mut domains: Vec<String> = inst
            .sites
            .iter()
            .filter_map(|s| s.failure_domain.clone())
            .collect();
        domains.sort();
        domains.dedup();
        let w = &inst.objective;

        let mut sites = Vec::with_capacity(inst.sites.len());
        let mut site_models = Vec::with_capacity(inst.sites.len());
        for s in &inst.sites {
            let (site, model) = site_model(s, &models, horizon, w, &resources, &domains)?;
            sites.push(site);
            site_models.push(model);
        }
        let site_index: HashMap<String, usize> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let region_index: HashMap<String, usize> = inst
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let topology = Topology::build(inst);

        let mut problem = Problem {
            name: inst.name.clone(),
            resources,
            sites,
            workloads: Vec::new(),
            failure_domains: domains,
            anti_affinity_groups: Vec::new(),
            affinity_groups: Vec::new(),
            weights: w.clone(),
            max_moves: inst.limits.max_moves,
            topology,
            traffic: Vec::new(),
            region_index,
            site_index,
            hardware: inst.sites.iter().map(|s| s.hardware.clone()).collect(),
            site_servers: site_models,
            site_calibration: inst.sites.iter().map(|s| s.power.calibration).collect(),
            instance_workloads: Vec::new(),
            node_sites: Vec::new(),
        };
        // Sites grouped by network node, in site order; (first site, members).
        let mut group_of_node: HashMap<usize, usize> = HashMap::new();
        for si in 0..problem.sites.len() {
            let node = problem.topology.site_node(si);
            let g = *group_of_node.entry(node).or_insert_with(|| {
                problem.node_sites.push((si, Vec::new()));
                problem.node_sites.len() - 1
            });
            problem.node_sites[g].1.push(si);
        }
        Ok(problem)
    }

    /// Take `workloads` as the problem's workloads (replacing any): their
    /// traffic, groups and models with candidates. `build` = `frame` + this;
    /// `gen` judges many batches of workloads against one frame.
    pub fn set_workloads(&mut self, workloads: &[Workload]) {
        self.traffic = workloads
            .iter()
            .map(|wl| {
                let total: f64 = wl.traffic.iter().map(|t| t.weight).sum();
                wl.traffic
                    .iter()
                    .filter_map(|t| Some((*self.region_index.get(&t.region)?, t.weight / total)))
                    .collect()
            })
            .collect();
        self.anti_affinity_groups = groups(workloads, |w| w.anti_affinity_group.as_deref());
        self.affinity_groups = groups(workloads, |w| w.affinity_group.as_deref());
        self.instance_workloads = workloads.to_vec();
        // Each workload's model is its own (rayon; collected in order).
        let models: Vec<WorkloadModel> = workloads
            .par_iter()
            .enumerate()
            .map(|(wi, wl)| self.workload_model(wi, wl))
            .collect();
        self.workloads = models;
    }

    /// The model of workload `wi` (described by `wl`): demand, costs, and
    /// its candidate sites, latency checked once per network node.
    fn workload_model(&self, wi: usize, wl: &Workload) -> WorkloadModel {
        let w = &self.weights;
        let demand: Vec<f64> = self
            .resources
            .iter()
            .map(|r| {
                if r == UPLINK {
                    wl.egress_gbps
                } else {
                    wl.resources.get(r).copied().unwrap_or(0.0)
                }
            })
            .collect();
        let mut candidates = Vec::new();
        for (rep, members) in &self.node_sites {
            // Latency depends on the node only: checked once per node.
            if self.latency_reason(wi, *rep).is_some() {
                continue;
            }
            for &si in members {
                candidates.extend(self.candidate(wi, si, &demand));
            }
        }
        candidates.sort_by_key(|c| c.site);
        let current = wl
            .current
            .iter()
            .filter_map(|(s, n)| Some((*self.site_index.get(s)?, *n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        WorkloadModel {
            id: wl.id.clone(),
            replicas: wl.replicas,
            demand,
            priority: wl.priority,
            state_gib: wl.state_gib,
            move_cost: w.migration_per_move + w.migration_per_gib * wl.state_gib,
            unplaced_cost: w.unplaced_per_priority * wl.priority as f64,
            max_per_failure_domain: wl.max_per_failure_domain,
            disruption_allowed: wl.disruption_allowed,
            current,
            candidates,
        }
    }

    /// Site `si` as a candidate of workload `wi` (latency aside), or `None`
    /// when a placement rule or one replica's size rules it out.
    fn candidate(&self, wi: usize, si: usize, demand: &[f64]) -> Option<Candidate> {
        let wl = &self.instance_workloads[wi];
        let site = &self.sites[si];
        let dynamic_kw = self.replica_dynamic_kw(wi, si);
        if self.site_reason(wi, si, demand, dynamic_kw).is_some() {
            return None;
        }
        let mut max_count = wl.replicas.min(wl.max_per_site.unwrap_or(u32::MAX));
        if wl.anti_affinity_group.is_some() {
            max_count = max_count.min(1);
        }
        for (r, d) in demand.iter().enumerate() {
            max_count = max_count.min(most_within(*d, site.capacity[r]));
        }
        max_count = max_count.min(most_within(dynamic_kw, site.dynamic_kw_limit));
        if max_count == 0 {
            return None;
        }
        let mean_rtt_ms = self.mean_rtt_ms(wi, si);
        let w = &self.weights;
        Some(Candidate {
            site: si,
            max_count,
            dynamic_kw,
            mean_rtt_ms,
            energy_cost: dynamic_kw * site.energy_cost_per_it_kwh,
            carbon_cost: dynamic_kw * site.carbon_cost_per_it_kwh,
            latency_cost: w.latency_per_ms * mean_rtt_ms,
            thermal_cost: dynamic_kw * site.thermal_cost_per_it_kw,
        })
    }

    /// Whether `update_site` can take `new` in place of site `si`: the same
    /// id, network attachment, position, failure domain and resource names
    /// (what the topology, the failure domains and the resource index
    /// depend on). Telemetry changes none of them.
    pub fn site_updatable(&self, inst: &Instance, si: usize, new: &Site) -> bool {
        let old = &inst.sites[si];
        old.id == new.id
            && old.node == new.node
            && old.lat == new.lat
            && old.lon == new.lon
            && old.failure_domain == new.failure_domain
            && new.capacity.keys().all(|r| self.resources.contains(r))
            && (new.uplink_gbps.is_none() || self.resources.iter().any(|r| r == UPLINK))
    }

    /// The new model of site `si` of `inst`, for `update_site`: the
    /// fallible half (an unknown server model), so that a failed update
    /// changes nothing.
    pub fn site_update(&self, inst: &Instance, si: usize) -> Result<SiteUpdate> {
        let models = catalogue_with(&inst.server_models);
        let (site, model) = site_model(
            &inst.sites[si],
            &models,
            inst.limits.horizon_hours,
            &self.weights,
            &self.resources,
            &self.failure_domains,
        )?;
        Ok(SiteUpdate { site, model })
    }

    /// Site `si` of `inst` changed (telemetry or an operator): take its new
    /// model and rebuild every workload's candidate there. The caller
    /// checked `site_updatable`. Returns the workloads whose candidate at
    /// `si` changed, appeared or went.
    pub fn update_site(&mut self, inst: &Instance, si: usize, update: SiteUpdate) -> Vec<usize> {
        let SiteUpdate { site, model } = update;
        self.sites[si] = site;
        self.site_servers[si] = model;
        self.hardware[si] = inst.sites[si].hardware.clone();
        self.site_calibration[si] = inst.sites[si].power.calibration;
        let node = self.topology.site_node(si);
        let rep = self
            .node_sites
            .iter()
            .find(|(_, members)| members.contains(&si))
            .map_or(si, |(rep, _)| *rep);
        debug_assert_eq!(self.topology.site_node(rep), node);
        let mut touched = Vec::new();
        for wi in 0..self.workloads.len() {
            let at = self.workloads[wi]
                .candidates
                .binary_search_by_key(&si, |c| c.site);
            let new = if at.is_ok() || self.latency_reason(wi, rep).is_none() {
                self.candidate(wi, si, &self.workloads[wi].demand)
            } else {
                None
            };
            let candidates = &mut self.workloads[wi].candidates;
            match (at, new) {
                (Ok(i), Some(c)) => candidates[i] = c,
                (Ok(i), None) => {
                    candidates.remove(i);
                }
                (Err(i), Some(c)) => candidates.insert(i, c),
                (Err(_), None) => continue,
            }
            touched.push(wi);
        }
        touched
    }

    /// Whether `update_workload` can take `new` in place of workload `wi`:
    /// the same id, groups and resource names.
    pub fn workload_updatable(&self, inst: &Instance, wi: usize, new: &Workload) -> bool {
        let old = &inst.workloads[wi];
        old.id == new.id
            && old.anti_affinity_group == new.anti_affinity_group
            && old.affinity_group == new.affinity_group
            && new.resources.keys().all(|r| self.resources.contains(r))
            && (new.egress_gbps == 0.0 || self.resources.iter().any(|r| r == UPLINK))
            && new
                .traffic
                .iter()
                .all(|t| self.region_index.contains_key(&t.region))
    }

    /// Workload `wi` of `inst` changed (demand, replicas, SLO, today's
    /// placement…): rebuild its model. The caller checked `workload_updatable`.
    pub fn update_workload(&mut self, inst: &Instance, wi: usize) {
        let wl = &inst.workloads[wi];
        let total: f64 = wl.traffic.iter().map(|t| t.weight).sum();
        self.traffic[wi] = wl
            .traffic
            .iter()
            .filter_map(|t| Some((*self.region_index.get(&t.region)?, t.weight / total)))
            .collect();
        self.instance_workloads[wi] = wl.clone();
        self.workloads[wi] = self.workload_model(wi, wl);
    }

    /// The cost every placement pays: each site's idle power, priced.
    pub fn fixed_cost(&self) -> f64 {
        self.sites
            .iter()
            .map(|s| {
                s.physics.idle_kw
                    * (s.energy_cost_per_it_kwh
                        + s.carbon_cost_per_it_kwh
                        + s.thermal_cost_per_it_kw)
            })
            .sum()
    }

    /// A lower bound on every placement's objective, solving nothing: the
    /// fixed cost, plus each replica at its cheapest candidate where that
    /// earns (a negative spot price pays a site to consume). With prices
    /// ≥ 0 it is the fixed cost; the fixed cost alone is no bound once a
    /// placement can earn.
    pub fn trivial_bound(&self) -> f64 {
        self.fixed_cost()
            + self
                .workloads
                .iter()
                .map(|w| {
                    let cheapest = w.candidates.iter().map(Candidate::cost).fold(0.0, f64::min);
                    cheapest * w.replicas as f64
                })
                .sum::<f64>()
    }

    /// The one capacity rule: may site `si`, with `used` resources and
    /// `dynamic_kw` of workload power, take one more replica of `wi`?
    pub fn room_for(
        &self,
        wi: usize,
        si: usize,
        used: &[f64],
        dynamic_kw: f64,
    ) -> std::result::Result<(), Shortfall> {
        let site = &self.sites[si];
        for (r, d) in self.workloads[wi].demand.iter().enumerate() {
            let free = site.capacity[r] - used[r];
            if *d > 0.0 && !within(used[r] + d, site.capacity[r]) {
                return Err(Shortfall::Resource {
                    resource: r,
                    need: *d,
                    free,
                });
            }
        }
        let need_kw = self.workloads[wi]
            .candidate_at(si)
            .map_or_else(|| self.replica_dynamic_kw(wi, si), |c| c.dynamic_kw);
        let free_kw = site.dynamic_kw_limit - dynamic_kw;
        if need_kw > 0.0 && !within(dynamic_kw + need_kw, site.dynamic_kw_limit) {
            return Err(Shortfall::Power {
                binding: site.physics.binding,
                need_kw,
                free_kw,
            });
        }
        Ok(())
    }

    /// Is site `si`, with `used` resources and `dynamic_kw` of workload
    /// power, over any of its limits already? The same limits and
    /// tolerance as [`room_for`](Self::room_for) (a heat wave that cut a
    /// site's cooling leaves it over before any plan runs).
    pub fn over_limit(&self, si: usize, used: &[f64], dynamic_kw: f64) -> bool {
        let site = &self.sites[si];
        used.iter()
            .zip(&site.capacity)
            .any(|(u, c)| !within(*u, *c))
            || !within(dynamic_kw, site.dynamic_kw_limit)
    }

    /// KPIs of an indexed placement (moves counted against today's placement).
    pub fn kpis(&self, x: &[Vec<(usize, u32)>]) -> Kpis {
        let eval = self.evaluate(x);
        let mut k = Kpis {
            moves: eval.moves,
            unplaced_replicas: eval.unplaced_replicas,
            min_inlet_headroom_c: f64::INFINITY,
            min_cooling_headroom_kw: f64::INFINITY,
            ..Kpis::default()
        };
        for (si, s) in eval.sites.iter().enumerate() {
            k.energy_cost_per_h += s.facility_kw * self.sites[si].physics.price_per_kwh;
            k.carbon_kg_per_h += s.facility_kw * self.sites[si].carbon_g_per_kwh / 1000.0;
            k.min_inlet_headroom_c = k.min_inlet_headroom_c.min(s.inlet_limit_c - s.inlet_c);
            k.min_cooling_headroom_kw = k.min_cooling_headroom_kw.min(s.cooling_headroom_kw);
            if s.power_cap_kw > 0.0 {
                k.max_power_use = k.max_power_use.max(s.facility_kw / s.power_cap_kw);
            }
        }
        let mut rtt_sum = 0.0;
        for (wi, sites) in x.iter().enumerate() {
            for &(si, n) in sites {
                k.placed_replicas += n as u64;
                rtt_sum += n as f64 * self.mean_rtt_ms(wi, si);
                if matches!(
                    self.ineligible(wi, si),
                    Some(Ineligible::Latency { .. } | Ineligible::Unreachable { .. })
                ) {
                    k.slo_violations += n as u64;
                }
            }
        }
        if k.placed_replicas > 0 {
            k.mean_latency_ms = rtt_sum / k.placed_replicas as f64;
        }
        if !k.min_inlet_headroom_c.is_finite() {
            k.min_inlet_headroom_c = 0.0;
        }
        if !k.min_cooling_headroom_kw.is_finite() {
            k.min_cooling_headroom_kw = 0.0;
        }
        k
    }

    /// Traffic-weighted `q`-quantile of the RTT users see, over every placed
    /// replica and each of its traffic regions, ms.
    pub fn latency_quantile_ms(&self, x: &[Vec<(usize, u32)>], q: f64) -> f64 {
        let mut samples: Vec<(f64, f64)> = Vec::new();
        for (wi, sites) in x.iter().enumerate() {
            for &(si, n) in sites {
                for &(r, share) in &self.traffic[wi] {
                    samples.push((self.topology.rtt_ms[r][si], share * n as f64));
                }
            }
        }
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = samples.iter().map(|s| s.1).sum();
        let mut acc = 0.0;
        for (rtt, w) in &samples {
            acc += w;
            if acc >= q * total - 1e-12 {
                return *rtt;
            }
        }
        0.0
    }

    /// Today's placement, indexed.
    pub fn current_placement(&self) -> Vec<Vec<(usize, u32)>> {
        self.workloads.iter().map(|w| w.current.clone()).collect()
    }

    pub fn site_index(&self, id: &str) -> Option<usize> {
        self.site_index.get(id).copied()
    }

    /// Traffic-weighted mean RTT from a workload's regions to a site (0 without traffic).
    pub fn mean_rtt_ms(&self, wi: usize, si: usize) -> f64 {
        self.traffic[wi]
            .iter()
            .map(|(r, share)| share * self.topology.rtt_ms[*r][si])
            .sum()
    }

    /// Dynamic kW of one replica of workload `wi` on site `si`'s servers.
    pub fn replica_dynamic_kw(&self, wi: usize, si: usize) -> f64 {
        let wl = &self.instance_workloads[wi];
        let cores = wl.resources.get("cpu_cores").copied().unwrap_or(0.0);
        self.site_servers[si].replica_dynamic_kw(cores, wl.utilization) * self.site_calibration[si]
    }

    /// Why site `si` can never host workload `wi`, or `None` if it may.
    pub fn ineligible(&self, wi: usize, si: usize) -> Option<Ineligible> {
        let wl = &self.workloads[wi];
        if wl.candidate_at(si).is_some() {
            return None;
        }
        self.static_reason(wi, si, &wl.demand, self.replica_dynamic_kw(wi, si))
    }

    fn static_reason(
        &self,
        wi: usize,
        si: usize,
        demand: &[f64],
        dynamic_kw: f64,
    ) -> Option<Ineligible> {
        self.placement_rule_reason(wi, si)
            .or_else(|| self.latency_reason(wi, si))
            .or_else(|| self.size_reason(si, demand, dynamic_kw))
    }

    /// Everything but latency (which `build` checks once per node).
    fn site_reason(
        &self,
        wi: usize,
        si: usize,
        demand: &[f64],
        dynamic_kw: f64,
    ) -> Option<Ineligible> {
        self.placement_rule_reason(wi, si)
            .or_else(|| self.size_reason(si, demand, dynamic_kw))
    }

    /// Forbidden, pinned elsewhere, or missing hardware.
    fn placement_rule_reason(&self, wi: usize, si: usize) -> Option<Ineligible> {
        let wl = &self.instance_workloads[wi];
        let site = &self.sites[si];
        if wl.forbidden_sites.contains(&site.id) {
            return Some(Ineligible::Forbidden);
        }
        if !wl.pinned_sites.is_empty() && !wl.pinned_sites.contains(&site.id) {
            return Some(Ineligible::NotPinned);
        }
        if let Some(missing) = wl.hardware.iter().find(|h| !self.hardware[si].contains(h)) {
            return Some(Ineligible::Hardware {
                missing: missing.clone(),
            });
        }
        None
    }

    /// Unreachable regions or an SLO the site's RTTs cannot meet.
    fn latency_reason(&self, wi: usize, si: usize) -> Option<Ineligible> {
        let wl = &self.instance_workloads[wi];
        for (ri, _) in self.traffic[wi].iter() {
            if !self.topology.rtt_ms[*ri][si].is_finite() {
                return Some(Ineligible::Unreachable {
                    region: region_name(&self.instance_workloads[wi], *ri, &self.traffic[wi]),
                });
            }
        }
        if let Some(slo) = &wl.slo {
            let within: f64 = self.traffic[wi]
                .iter()
                .filter(|(r, _)| self.topology.rtt_ms[*r][si] <= slo.rtt_ms)
                .map(|(_, share)| share)
                .sum();
            if within * 100.0 + 1e-6 < slo.percentile {
                return Some(Ineligible::Latency {
                    // + 0.0 turns an empty sum's -0.0 into 0.0 for display.
                    within_pct: within * 100.0 + 0.0,
                    needed_pct: slo.percentile,
                    rtt_ms: slo.rtt_ms,
                });
            }
        }
        None
    }

    /// One replica bigger than the site, or hotter than its power limit.
    fn size_reason(&self, si: usize, demand: &[f64], dynamic_kw: f64) -> Option<Ineligible> {
        let site = &self.sites[si];
        for (r, d) in demand.iter().enumerate() {
            if !within(*d, site.capacity[r]) {
                return Some(Ineligible::TooBig {
                    resource: self.resources[r].clone(),
                    need: *d,
                    capacity: site.capacity[r],
                });
            }
        }
        if !within(dynamic_kw, site.dynamic_kw_limit) {
            return Some(Ineligible::TooHot {
                need_kw: dynamic_kw,
                available_kw: site.dynamic_kw_limit,
                binding: site.physics.binding,
            });
        }
        None
    }

    /// One line on why no site can host workload `wi` (for validation):
    /// reasons grouped by kind, a few sites named per kind.
    pub fn ineligibility_summary(&self, wi: usize) -> String {
        let mut by_kind: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (si, site) in self.sites.iter().enumerate() {
            let (kind, text) = match self.ineligible(wi, si) {
                Some(reason) => (reason.kind_name(), reason.describe(&site.name)),
                None => ("room", format!("{} cannot fit even one replica", site.name)),
            };
            by_kind.entry(kind).or_default().push(text);
        }
        by_kind
            .into_values()
            .map(|v| {
                let shown = v.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
                if v.len() > 3 {
                    format!("{shown}; and {} more sites alike", v.len() - 3)
                } else {
                    shown
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Turn an external placement into per-workload (site, count) lists.
    pub fn index_placement(&self, placement: &Placement) -> Result<Vec<Vec<(usize, u32)>>> {
        let wl_index: HashMap<&str, usize> = self
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id.as_str(), i))
            .collect();
        let mut out = vec![Vec::new(); self.workloads.len()];
        for (wid, sites) in &placement.assignments {
            let wi = *wl_index
                .get(wid.as_str())
                .ok_or_else(|| Error::Placement(format!("unknown workload {wid:?}")))?;
            for (sid, n) in sites {
                let si = self.site_index(sid).ok_or_else(|| {
                    Error::Placement(format!("workload {wid:?}: unknown site {sid:?}"))
                })?;
                if *n > 0 {
                    out[wi].push((si, *n));
                }
            }
        }
        Ok(out)
    }

    /// The external form of an indexed placement.
    pub fn placement_of(&self, x: &[Vec<(usize, u32)>]) -> Placement {
        let mut assignments = BTreeMap::new();
        for (wi, sites) in x.iter().enumerate() {
            let m: BTreeMap<String, u32> = sites
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (self.sites[*s].id.clone(), *n))
                .collect();
            if !m.is_empty() {
                assignments.insert(self.workloads[wi].id.clone(), m);
            }
        }
        Placement { assignments }
    }

    /// The objective terms and per-site figures of an indexed placement, with
    /// the very coefficients the MILP uses. Pairs that are not candidates are
    /// priced as if they were (the verifier flags them as violations).
    pub fn evaluate(&self, x: &[Vec<(usize, u32)>]) -> Evaluation {
        let mut it_dynamic_kw = vec![0.0; self.sites.len()];
        let mut used = vec![vec![0.0; self.resources.len()]; self.sites.len()];
        let mut terms = ObjectiveTerms::default();
        let mut moves = 0u64;
        let mut unplaced = 0u64;
        for (wi, sites) in x.iter().enumerate() {
            let wl = &self.workloads[wi];
            let mut placed = 0u32;
            for &(si, n) in sites {
                placed += n;
                let c = self.candidate_or_priced(wi, si);
                let nf = n as f64;
                terms.energy += nf * c.energy_cost;
                terms.carbon += nf * c.carbon_cost;
                terms.latency += nf * c.latency_cost;
                terms.thermal += nf * c.thermal_cost;
                it_dynamic_kw[si] += nf * c.dynamic_kw;
                for (r, d) in wl.demand.iter().enumerate() {
                    used[si][r] += nf * d;
                }
                let m = n.saturating_sub(wl.current_at(si)) as u64;
                moves += m;
                terms.migration += m as f64 * wl.move_cost;
            }
            let u = wl.replicas.saturating_sub(placed) as u64;
            unplaced += u;
            terms.unplaced += u as f64 * wl.unplaced_cost;
        }
        let mut sites = Vec::with_capacity(self.sites.len());
        for (si, s) in self.sites.iter().enumerate() {
            terms.energy += s.physics.idle_kw * s.energy_cost_per_it_kwh;
            terms.carbon += s.physics.idle_kw * s.carbon_cost_per_it_kwh;
            terms.thermal += s.physics.idle_kw * s.thermal_cost_per_it_kw;
            let it_kw = s.physics.idle_kw + it_dynamic_kw[si];
            sites.push(self.site_kpi(si, it_kw, &used[si]));
        }
        terms.total = terms.energy
            + terms.carbon
            + terms.latency
            + terms.migration
            + terms.thermal
            + terms.unplaced;
        Evaluation {
            objective: terms,
            sites,
            moves,
            unplaced_replicas: unplaced,
        }
    }

    fn candidate_or_priced(&self, wi: usize, si: usize) -> Candidate {
        if let Some(c) = self.workloads[wi].candidate_at(si) {
            return c.clone();
        }
        let site = &self.sites[si];
        let dynamic_kw = self.replica_dynamic_kw(wi, si);
        let mean_rtt_ms = self.mean_rtt_ms(wi, si);
        Candidate {
            site: si,
            max_count: 0,
            dynamic_kw,
            mean_rtt_ms,
            energy_cost: dynamic_kw * site.energy_cost_per_it_kwh,
            carbon_cost: dynamic_kw * site.carbon_cost_per_it_kwh,
            latency_cost: self.weights.latency_per_ms * mean_rtt_ms,
            thermal_cost: dynamic_kw * site.thermal_cost_per_it_kw,
        }
    }

    fn site_kpi(&self, si: usize, it_kw: f64, used: &[f64]) -> SiteKpi {
        let s = &self.sites[si];
        let p = &s.physics;
        let utilization = self
            .resources
            .iter()
            .enumerate()
            .filter(|(r, _)| s.capacity[*r] > 0.0 && s.capacity[*r].is_finite())
            .map(|(r, name)| (name.clone(), used[r] / s.capacity[r]))
            .collect();
        SiteKpi {
            site: s.id.clone(),
            utilization,
            it_kw,
            it_limit_kw: p.it_limit_kw,
            facility_kw: it_kw * p.pue,
            power_cap_kw: s.power_cap_kw,
            inlet_c: p.supply_c + s.inlet_c_per_it_kw * it_kw,
            inlet_limit_c: p.inlet_limit_c,
            cooling_kw: p.cooling_kw,
            cooling_headroom_kw: p.cooling_kw - it_kw,
            binding: p.binding,
            ambient_c: p.ambient_c,
            pue: p.pue,
        }
    }
}

/// One site's model: physics at its worst forecast ambient, capacities after
/// the reserve, cost rates per IT kWh; and its server model.
fn site_model(
    s: &Site,
    models: &BTreeMap<String, ServerModel>,
    horizon: u32,
    w: &ObjectiveWeights,
    resources: &[String],
    domains: &[String],
) -> Result<(SiteModel, ServerModel)> {
    let model = models
        .get(&s.servers.model)
        .ok_or_else(|| Error::UnknownServerModel {
            name: s.servers.model.clone(),
            known: models.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    let physics = SitePhysics::of(s, model, horizon);
    let capacity = resources
        .iter()
        .map(|r| {
            if r == UPLINK {
                return s.uplink_gbps.unwrap_or(f64::INFINITY);
            }
            let cap = s.capacity.get(r).copied().unwrap_or(0.0);
            cap * (1.0 - s.reserve_fraction.get(r).copied().unwrap_or(0.0))
        })
        .collect();
    let thermal_limit = physics.thermal_limit_kw();
    let site = SiteModel {
        id: s.id.clone(),
        name: s.name.clone().unwrap_or_else(|| s.id.clone()),
        capacity,
        failure_domain: s
            .failure_domain
            .as_ref()
            .and_then(|d| domains.iter().position(|x| x == d)),
        carbon_g_per_kwh: s.energy.carbon_g_per_kwh,
        energy_cost_per_it_kwh: w.energy * physics.pue * physics.price_per_kwh,
        carbon_cost_per_it_kwh: w.carbon_per_tonne * physics.pue * s.energy.carbon_g_per_kwh / 1e6,
        thermal_cost_per_it_kw: if thermal_limit.is_finite() && thermal_limit > 0.0 {
            w.thermal_risk / thermal_limit
        } else {
            0.0
        },
        dynamic_kw_limit: (physics.it_limit_kw - physics.idle_kw).max(0.0),
        power_cap_kw: s.power.cap_kw,
        inlet_c_per_it_kw: s.thermal.recirc_c_per_kw / s.thermal.racks.max(1) as f64,
        physics,
    };
    Ok((site, model.clone()))
}

fn region_name(wl: &Workload, region_index: usize, traffic: &[(usize, f64)]) -> String {
    traffic
        .iter()
        .position(|(r, _)| *r == region_index)
        .and_then(|k| wl.traffic.get(k))
        .map_or_else(|| format!("#{region_index}"), |t| t.region.clone())
}

fn groups(
    workloads: &[Workload],
    key: impl Fn(&Workload) -> Option<&str>,
) -> Vec<(String, Vec<usize>)> {
    let mut map: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, w) in workloads.iter().enumerate() {
        if let Some(g) = key(w) {
            map.entry(g.to_string()).or_default().push(i);
        }
    }
    map.into_iter().collect()
}

/// What a site lacks to take one more replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    Resource {
        resource: usize,
        need: f64,
        free: f64,
    },
    Power {
        binding: PowerLimit,
        need_kw: f64,
        free_kw: f64,
    },
}

impl Shortfall {
    pub fn describe(&self, p: &Problem, si: usize) -> String {
        let site = &p.sites[si];
        match self {
            Shortfall::Resource {
                resource,
                need,
                free,
            } if p.resources[*resource] == UPLINK => format!(
                "{}'s {} Gbps uplink is full: one replica needs {} Gbps, {} left",
                site.name,
                round2(site.capacity[*resource]),
                round2(*need),
                round2(free.max(0.0))
            ),
            Shortfall::Resource {
                resource,
                need,
                free,
            } => format!(
                "{} is out of {}: one replica needs {}, {} free",
                site.name,
                p.resources[*resource],
                round2(*need),
                round2(free.max(0.0))
            ),
            Shortfall::Power {
                binding,
                need_kw,
                free_kw,
            } => {
                let what = match binding {
                    PowerLimit::PowerCap => format!(
                        "{} is at its {:.0} kW power cap (PUE {:.2} at {:.1} °C)",
                        site.name, site.power_cap_kw, site.physics.pue, site.physics.ambient_c
                    ),
                    PowerLimit::Cooling => format!(
                        "{} is at its cooling capacity ({:.1} kW at {:.1} °C ambient)",
                        site.name, site.physics.cooling_kw, site.physics.ambient_c
                    ),
                    PowerLimit::Inlet => format!(
                        "{} is at its inlet limit (predicted inlet would pass {:.1} °C at {:.1} °C ambient)",
                        site.name, site.physics.inlet_limit_c, site.physics.ambient_c
                    ),
                };
                format!(
                    "{what}: one replica needs {need_kw:.3} kW, {:.3} kW left",
                    free_kw.max(0.0)
                )
            }
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Per-site figures of a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiteKpi {
    pub site: String,
    /// Used / available (after reserve), per resource.
    pub utilization: BTreeMap<String, f64>,
    pub it_kw: f64,
    pub it_limit_kw: f64,
    pub facility_kw: f64,
    pub power_cap_kw: f64,
    /// Predicted max rack inlet, °C.
    pub inlet_c: f64,
    /// Inlet limit less margin, °C.
    pub inlet_limit_c: f64,
    pub cooling_kw: f64,
    pub cooling_headroom_kw: f64,
    /// The physical limit that caps IT power at this site.
    pub binding: PowerLimit,
    pub ambient_c: f64,
    pub pue: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evaluation {
    pub objective: ObjectiveTerms,
    pub sites: Vec<SiteKpi>,
    pub moves: u64,
    pub unplaced_replicas: u64,
}
