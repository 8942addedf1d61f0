//! What a placement is worth: its objective term by term with the very
//! coefficients of the MILP, per-site figures, and the operator KPIs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::kpi::{Kpis, ObjectiveTerms};
use edgeplan_physics::physics::PowerLimit;

use crate::ix::{IndexVec, SiteIx, WorkloadIx};
use crate::problem::{Candidate, Problem};
use crate::replicas::Replicas;
use crate::rules::Ineligible;

impl Problem {
    /// KPIs of an indexed placement (moves counted against today's placement).
    pub fn kpis(&self, x: &Replicas) -> Kpis {
        self.kpis_of(x, &self.evaluate(x))
    }

    /// KPIs of `x` from its evaluation (`evaluate(x)`), for callers that
    /// need both.
    pub fn kpis_of(&self, x: &Replicas, eval: &Evaluation) -> Kpis {
        let mut k = Kpis {
            moves: eval.moves,
            unplaced_replicas: eval.unplaced_replicas,
            min_inlet_headroom_c: f64::INFINITY,
            min_cooling_headroom_kw: f64::INFINITY,
            ..Kpis::default()
        };
        for (s, site) in eval.sites.iter().zip(self.sites.iter()) {
            k.energy_cost_per_h += s.facility_kw * site.physics.price_per_kwh;
            k.carbon_kg_per_h += s.facility_kw * site.carbon_g_per_kwh / 1000.0;
            k.min_inlet_headroom_c = k.min_inlet_headroom_c.min(s.inlet_limit_c - s.inlet_c);
            k.min_cooling_headroom_kw = k.min_cooling_headroom_kw.min(s.cooling_headroom_kw);
            if s.power_cap_kw > 0.0 {
                k.max_power_use = k.max_power_use.max(s.facility_kw / s.power_cap_kw);
            }
        }
        let mut rtt_sum = 0.0;
        for (wi, sites) in x.iter_enumerated() {
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
    pub fn latency_quantile_ms(&self, x: &Replicas, q: f64) -> f64 {
        let mut samples: Vec<(f64, f64)> = Vec::new();
        for (wi, sites) in x.iter_enumerated() {
            for &(si, n) in sites {
                for &(r, share) in &self.traffic[wi] {
                    samples.push((self.topology.rtt_ms[r][si.ix()], share * n as f64));
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

    /// The objective terms and per-site figures of an indexed placement, with
    /// the very coefficients the MILP uses. Pairs that are not candidates are
    /// priced as if they were (the verifier flags them as violations).
    pub fn evaluate(&self, x: &Replicas) -> Evaluation {
        let mut it_dynamic_kw: IndexVec<SiteIx, f64> = IndexVec::from_elem_n(0.0, self.sites.len());
        let mut gpu_dynamic_kw: IndexVec<SiteIx, f64> =
            IndexVec::from_elem_n(0.0, self.sites.len());
        let mut used: IndexVec<SiteIx, Vec<f64>> =
            IndexVec::from_elem_n(vec![0.0; self.resources.len()], self.sites.len());
        let mut terms = ObjectiveTerms::default();
        let mut moves = 0u64;
        let mut unplaced = 0u64;
        for (wi, sites) in x.iter_enumerated() {
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
                gpu_dynamic_kw[si] += nf * self.replica_gpu_kw(wi, si);
                for (r, d) in wl.demand.iter().enumerate() {
                    used[si][r] += nf * d;
                }
                let m = n.saturating_sub(wl.current_at(si)) as u64;
                moves += m;
                terms.migration += m as f64 * wl.move_cost;
            }
            let u = wl.replicas.saturating_sub(placed) as u64;
            // A spot replica left out is the market's answer, not a failure.
            if self.instance_workloads[wi].spot.is_none() {
                unplaced += u;
            }
            terms.unplaced += u as f64 * wl.unplaced_cost;
        }
        let mut sites = Vec::with_capacity(self.sites.len());
        for (si, s) in self.sites.iter_enumerated() {
            terms.energy += s.physics.idle_kw * s.energy_cost_per_it_kwh;
            terms.carbon += s.physics.idle_kw * s.carbon_cost_per_it_kwh;
            terms.thermal += s.physics.idle_kw * s.thermal_cost_per_it_kw;
            let it_kw = s.physics.idle_kw + it_dynamic_kw[si];
            let mut kpi = self.site_kpi(si, it_kw, &used[si]);
            kpi.accelerator_kw = s.physics.accelerator_idle_kw + gpu_dynamic_kw[si];
            sites.push(kpi);
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

    fn candidate_or_priced(&self, wi: WorkloadIx, si: SiteIx) -> Candidate {
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

    fn site_kpi(&self, si: SiteIx, it_kw: f64, used: &[f64]) -> SiteKpi {
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
            accelerator_kw: p.accelerator_idle_kw,
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

/// Per-site figures of a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiteKpi {
    pub site: String,
    /// Used / available (after reserve), per resource.
    pub utilization: BTreeMap<String, f64>,
    pub it_kw: f64,
    /// The accelerators' part of `it_kw` (idle and the replicas' draw).
    #[serde(default)]
    pub accelerator_kw: f64,
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
