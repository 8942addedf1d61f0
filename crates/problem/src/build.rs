//! Building the indexed problem from an instance, and rebuilding one
//! site's or one workload's part of it in place: the rules
//! ([`Rule`](crate::rules::Rule)) decide each (workload, site) candidate
//! and its cap, the rows (`rows`) its limits.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use edgeplan_model::accelerator_models::{self, AcceleratorModel};
use edgeplan_model::error::Result;
use edgeplan_model::instance::{Instance, ObjectiveWeights, Site, Workload};
use edgeplan_model::server_models::{catalogue_with, ServerModel};
use edgeplan_physics::physics::SitePhysics;
use edgeplan_physics::power::SitePowerModel;
use edgeplan_physics::topology::Topology;

use crate::ix::{IndexVec, SiteIx, WorkloadIx};
use crate::problem::{Candidate, Problem, SiteModel, WorkloadModel};
use crate::rows::UPLINK;
use crate::rules::Rule;

/// A site's new model, computed before `Problem::update_site` applies it.
#[derive(Debug, Clone)]
pub struct SiteUpdate {
    site: SiteModel,
    model: SitePowerModel,
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
        let accelerators = accelerator_models::catalogue_with(&inst.accelerator_models);
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
        // Only a site's uplink can bind: without one anywhere, egress is
        // no limit and needs no row (and a workload batch added later by
        // `set_workloads` cannot miss it).
        if inst.sites.iter().any(|s| s.uplink_gbps.is_some()) {
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

        let mut sites = IndexVec::with_capacity(inst.sites.len());
        let mut site_models = IndexVec::with_capacity(inst.sites.len());
        for s in &inst.sites {
            let (site, model) =
                site_model(s, &models, &accelerators, horizon, w, &resources, &domains)?;
            sites.push(site);
            site_models.push(model);
        }
        let site_index: HashMap<String, SiteIx> = sites
            .iter_enumerated()
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
            workloads: IndexVec::new(),
            failure_domains: domains,
            anti_affinity_groups: Vec::new(),
            affinity_groups: Vec::new(),
            weights: w.clone(),
            max_moves: inst.limits.max_moves,
            topology,
            traffic: IndexVec::new(),
            region_index,
            site_index,
            hardware: inst.sites.iter().map(|s| s.hardware.clone()).collect(),
            site_power: site_models,
            instance_workloads: IndexVec::new(),
            node_sites: Vec::new(),
        };
        // Sites grouped by network node, in site order; (first site, members).
        let mut group_of_node: HashMap<usize, usize> = HashMap::new();
        for si in problem.sites.indices() {
            let node = problem.topology.site_node(si.ix());
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
        self.instance_workloads = IndexVec::from_raw(workloads.to_vec());
        // Each workload's model is its own (rayon; collected in order).
        let models: Vec<WorkloadModel> = workloads
            .par_iter()
            .enumerate()
            .map(|(wi, wl)| self.workload_model(WorkloadIx::new(wi), wl))
            .collect();
        self.workloads = IndexVec::from_raw(models);
    }

    /// The model of workload `wi` (described by `wl`): demand, costs, and
    /// its candidate sites, latency checked once per network node.
    fn workload_model(&self, wi: WorkloadIx, wl: &Workload) -> WorkloadModel {
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
            // Spot replicas are admitted by their bid, not by a penalty.
            unplaced_cost: if wl.spot.is_some() {
                0.0
            } else {
                w.unplaced_per_priority * wl.priority as f64
            },
            max_per_failure_domain: wl.max_per_failure_domain,
            disruption_allowed: wl.disruption_allowed,
            current,
            candidates,
        }
    }

    /// Site `si` as a candidate of workload `wi` (latency aside), or `None`
    /// when a placement rule or one replica's size rules it out.
    fn candidate(&self, wi: WorkloadIx, si: SiteIx, demand: &[f64]) -> Option<Candidate> {
        let site = &self.sites[si];
        let dynamic_kw = self.replica_dynamic_kw(wi, si);
        if self
            .first_filter(wi, si, demand, dynamic_kw, false)
            .is_some()
        {
            return None;
        }
        let max_count = Rule::ALL
            .iter()
            .map(|r| r.cap(self, wi, si, demand, dynamic_kw))
            .min()
            .unwrap_or(u32::MAX);
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
    pub fn site_updatable(&self, inst: &Instance, si: SiteIx, new: &Site) -> bool {
        let old = &inst.sites[si.ix()];
        old.id == new.id
            && old.node == new.node
            && old.lat == new.lat
            && old.lon == new.lon
            && old.failure_domain == new.failure_domain
            && new.capacity.keys().all(|r| self.resources.contains(r))
            && (new.uplink_gbps.is_none() || self.resources.iter().any(|r| r == UPLINK))
    }

    /// The new model of site `si` of `inst`, for `update_site`: the
    /// fallible half (an unknown server or accelerator model), so that a failed update
    /// changes nothing.
    pub fn site_update(&self, inst: &Instance, si: SiteIx) -> Result<SiteUpdate> {
        let models = catalogue_with(&inst.server_models);
        let accelerators = accelerator_models::catalogue_with(&inst.accelerator_models);
        let (site, model) = site_model(
            &inst.sites[si.ix()],
            &models,
            &accelerators,
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
    pub fn update_site(
        &mut self,
        inst: &Instance,
        si: SiteIx,
        update: SiteUpdate,
    ) -> Vec<WorkloadIx> {
        let SiteUpdate { site, model } = update;
        self.sites[si] = site;
        self.site_power[si] = model;
        self.hardware[si] = inst.sites[si.ix()].hardware.clone();
        let node = self.topology.site_node(si.ix());
        let rep = self
            .node_sites
            .iter()
            .find(|(_, members)| members.contains(&si))
            .map_or(si, |(rep, _)| *rep);
        debug_assert_eq!(self.topology.site_node(rep.ix()), node);
        let mut touched = Vec::new();
        for wi in self.workloads.indices() {
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
    pub fn workload_updatable(&self, inst: &Instance, wi: WorkloadIx, new: &Workload) -> bool {
        let old = &inst.workloads[wi.ix()];
        old.id == new.id
            && old.anti_affinity_group == new.anti_affinity_group
            && old.affinity_group == new.affinity_group
            && new.resources.keys().all(|r| self.resources.contains(r))
            && new
                .traffic
                .iter()
                .all(|t| self.region_index.contains_key(&t.region))
    }

    /// Workload `wi` of `inst` changed (demand, replicas, SLO, today's
    /// placement…): rebuild its model. The caller checked `workload_updatable`.
    pub fn update_workload(&mut self, inst: &Instance, wi: WorkloadIx) {
        let wl = &inst.workloads[wi.ix()];
        let total: f64 = wl.traffic.iter().map(|t| t.weight).sum();
        self.traffic[wi] = wl
            .traffic
            .iter()
            .filter_map(|t| Some((*self.region_index.get(&t.region)?, t.weight / total)))
            .collect();
        self.instance_workloads[wi] = wl.clone();
        self.workloads[wi] = self.workload_model(wi, wl);
    }
}

/// One site's model: physics at its worst forecast ambient, capacities after
/// the reserve, cost rates per IT kWh; and its server model.
fn site_model(
    s: &Site,
    models: &BTreeMap<String, ServerModel>,
    accelerators: &BTreeMap<String, AcceleratorModel>,
    horizon: u32,
    w: &ObjectiveWeights,
    resources: &[String],
    domains: &[String],
) -> Result<(SiteModel, SitePowerModel)> {
    let model = SitePowerModel::of(s, models, accelerators)?;
    let physics = SitePhysics::of(s, &model, horizon);
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
    Ok((site, model))
}

fn groups(
    workloads: &[Workload],
    key: impl Fn(&Workload) -> Option<&str>,
) -> Vec<(String, Vec<WorkloadIx>)> {
    let mut map: BTreeMap<String, Vec<WorkloadIx>> = BTreeMap::new();
    for (i, w) in workloads.iter().enumerate() {
        if let Some(g) = key(w) {
            map.entry(g.to_string())
                .or_default()
                .push(WorkloadIx::new(i));
        }
    }
    map.into_iter().collect()
}
