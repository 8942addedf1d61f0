//! The indexed problem's types: sites with their effective limits and cost
//! rates, workloads with their demand per row and their candidate sites,
//! each candidate with its cap and per-replica costs; and the accessors
//! every solver reads. `build` makes one from an instance, `rules` decides
//! candidates, `rows` holds the capacity test, `evaluate` prices a
//! placement with exactly these coefficients. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use crate::ix::{IndexVec, SiteIx, WorkloadIx};
use crate::replicas::Replicas;
use edgeplan_model::error::{Error, Result};
use edgeplan_model::instance::{ObjectiveWeights, Workload};
pub use edgeplan_model::kpi::{Kpis, ObjectiveTerms};
use edgeplan_model::placement::Placement;
use edgeplan_physics::physics::SitePhysics;
use edgeplan_physics::power::SitePowerModel;
use edgeplan_physics::topology::Topology;

#[derive(Debug, Clone)]
pub struct Problem {
    pub name: String,
    /// Resource names, in index order.
    pub resources: Vec<String>,
    pub sites: IndexVec<SiteIx, SiteModel>,
    pub workloads: IndexVec<WorkloadIx, WorkloadModel>,
    pub failure_domains: Vec<String>,
    /// Workload indices per anti-affinity group: at most one replica of the group per site.
    pub anti_affinity_groups: Vec<(String, Vec<WorkloadIx>)>,
    /// Workload indices per affinity group: the same set of sites for all.
    pub affinity_groups: Vec<(String, Vec<WorkloadIx>)>,
    pub weights: ObjectiveWeights,
    pub max_moves: Option<u32>,
    /// Region → site RTT, kept for explanations.
    pub topology: Topology,
    /// Per workload: (region index, weight / total weight).
    pub(crate) traffic: IndexVec<WorkloadIx, Vec<(usize, f64)>>,
    pub(crate) region_index: HashMap<String, usize>,
    pub(crate) site_index: HashMap<String, SiteIx>,
    pub(crate) hardware: IndexVec<SiteIx, Vec<String>>,
    pub(crate) site_power: IndexVec<SiteIx, SitePowerModel>,
    pub(crate) instance_workloads: IndexVec<WorkloadIx, Workload>,
    /// Sites grouped by network node, in site order: (first site, members).
    pub(crate) node_sites: Vec<(SiteIx, Vec<SiteIx>)>,
}

#[derive(Debug, Clone)]
pub struct SiteModel {
    pub id: String,
    pub name: String,
    pub physics: SitePhysics,
    /// Capacity per resource row after the reserve; `f64::INFINITY` on the
    /// uplink row of a site that declares no uplink.
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
    pub current: Vec<(SiteIx, u32)>,
    /// Sites that may host it, with per-replica figures.
    pub candidates: Vec<Candidate>,
}

impl WorkloadModel {
    /// Its candidate at site `si`, if any (candidates are sorted by site).
    pub fn candidate_at(&self, si: SiteIx) -> Option<&Candidate> {
        self.candidates
            .binary_search_by_key(&si, |c| c.site)
            .ok()
            .map(|i| &self.candidates[i])
    }

    pub fn current_at(&self, site: SiteIx) -> u32 {
        self.current
            .iter()
            .find(|(s, _)| *s == site)
            .map_or(0, |(_, n)| *n)
    }
}

/// A site that may host a workload, and what one replica there costs.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub site: SiteIx,
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

impl Problem {
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

    /// A workload's spot terms (`None`: on-demand).
    pub fn spot(&self, wi: WorkloadIx) -> Option<edgeplan_model::instance::Spot> {
        self.instance_workloads[wi].spot
    }

    /// Whether any workload is spot.
    pub fn has_spot(&self) -> bool {
        self.instance_workloads.iter().any(|w| w.spot.is_some())
    }

    /// The problem of the workloads `keep` says to keep (sites, limits and
    /// costs unchanged), with each kept workload's index here. Groups keep
    /// their kept members (validation keeps spot workloads out of groups,
    /// so dropping them never splits one).
    pub fn restrict(&self, keep: impl Fn(WorkloadIx) -> bool) -> (Problem, Vec<WorkloadIx>) {
        let kept: Vec<WorkloadIx> = self.workloads.indices().filter(|&w| keep(w)).collect();
        let mut new_ix: HashMap<WorkloadIx, WorkloadIx> = HashMap::new();
        for (k, &w) in kept.iter().enumerate() {
            new_ix.insert(w, WorkloadIx::new(k));
        }
        let regroup = |groups: &[(String, Vec<WorkloadIx>)]| -> Vec<(String, Vec<WorkloadIx>)> {
            groups
                .iter()
                .map(|(g, ws)| {
                    (
                        g.clone(),
                        ws.iter()
                            .filter_map(|w| new_ix.get(w).copied())
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, ws)| !ws.is_empty())
                .collect()
        };
        let p = Problem {
            workloads: kept.iter().map(|&w| self.workloads[w].clone()).collect(),
            traffic: kept.iter().map(|&w| self.traffic[w].clone()).collect(),
            instance_workloads: kept
                .iter()
                .map(|&w| self.instance_workloads[w].clone())
                .collect(),
            anti_affinity_groups: regroup(&self.anti_affinity_groups),
            affinity_groups: regroup(&self.affinity_groups),
            ..self.clone()
        };
        (p, kept)
    }

    /// Today's placement, indexed.
    pub fn current_placement(&self) -> Replicas {
        self.workloads.iter().map(|w| w.current.clone()).collect()
    }

    pub fn site_index(&self, id: &str) -> Option<SiteIx> {
        self.site_index.get(id).copied()
    }

    /// Traffic-weighted mean RTT from a workload's regions to a site (0 without traffic).
    pub fn mean_rtt_ms(&self, wi: WorkloadIx, si: SiteIx) -> f64 {
        self.traffic[wi]
            .iter()
            .map(|(r, share)| share * self.topology.rtt_ms[*r][si.ix()])
            .sum()
    }

    /// Dynamic kW of one replica of `wi` on `si`: its candidate's figure,
    /// or the server curve's where `si` is no candidate (a replica still
    /// running on a site it may no longer use). The one source of a
    /// replica's kW for running loads and the room test.
    pub fn replica_kw(&self, wi: WorkloadIx, si: SiteIx) -> f64 {
        self.workloads[wi]
            .candidate_at(si)
            .map_or_else(|| self.replica_dynamic_kw(wi, si), |c| c.dynamic_kw)
    }

    /// Dynamic kW of one replica of workload `wi` on site `si`: its cores
    /// on the servers' curve and its accelerators on theirs.
    pub fn replica_dynamic_kw(&self, wi: WorkloadIx, si: SiteIx) -> f64 {
        self.site_power[si].replica_dynamic_kw(&self.instance_workloads[wi])
    }

    /// The accelerators' part of [`Problem::replica_dynamic_kw`].
    pub fn replica_gpu_kw(&self, wi: WorkloadIx, si: SiteIx) -> f64 {
        self.site_power[si].replica_gpu_kw(&self.instance_workloads[wi])
    }

    /// Turn an external placement into per-workload (site, count) lists.
    pub fn index_placement(&self, placement: &Placement) -> Result<Replicas> {
        let wl_index: HashMap<&str, WorkloadIx> = self
            .workloads
            .iter_enumerated()
            .map(|(i, w)| (w.id.as_str(), i))
            .collect();
        let mut out = Replicas::empty(self.workloads.len());
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
    pub fn placement_of(&self, x: &Replicas) -> Placement {
        let mut assignments = BTreeMap::new();
        for (wi, sites) in x.iter_enumerated() {
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
}

pub(crate) fn region_name(wl: &Workload, region_index: usize, traffic: &[(usize, f64)]) -> String {
    traffic
        .iter()
        .position(|(r, _)| *r == region_index)
        .and_then(|k| wl.traffic.get(k))
        .map_or_else(|| format!("#{region_index}"), |t| t.region.clone())
}
