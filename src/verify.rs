//! The independent verifier: recomputes every constraint and every objective
//! term of a placement straight from the instance, sharing no code with the
//! problem builder, physics or topology (only the instance types and the
//! server-model data). One misunderstanding cannot hide in both. Pure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::instance::{AshraeClass, Instance, Price, Site};
use crate::placement::Placement;
use crate::problem::ObjectiveTerms;
use crate::server_models::{catalogue_with, ServerModel};

/// Absolute slack on limit comparisons (kW, °C, resource units).
const TOL: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Violation {
    /// The rule broken, e.g. `capacity`, `power_cap`, `inlet`, `latency`.
    pub rule: String,
    /// The workload or site concerned.
    pub item: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyReport {
    pub feasible: bool,
    pub violations: Vec<Violation>,
    pub objective: ObjectiveTerms,
    pub moves: u64,
    pub unplaced_replicas: u64,
}

struct SiteCheck {
    ambient_c: f64,
    pue: f64,
    cooling_kw: f64,
    supply_c: f64,
    inlet_max_c: f64,
    factor: f64,
    idle_kw: f64,
    cores_per_server: f64,
    watts: Vec<f64>,
}

fn interpolate(watts: &[f64], u: f64) -> f64 {
    // 11 points at 0, 0.1, …, 1.0.
    let u = u.clamp(0.0, 1.0);
    let mut k = 0;
    while k + 1 < watts.len() - 1 && (k + 1) as f64 / 10.0 < u {
        k += 1;
    }
    let left = k as f64 / 10.0;
    watts[k] + (watts[k + 1] - watts[k]) * ((u - left) * 10.0)
}

fn site_check(
    inst: &Instance,
    models: &BTreeMap<String, ServerModel>,
    site: &Site,
) -> Option<SiteCheck> {
    let model = models.get(&site.servers.model)?;
    let horizon = inst.limits.horizon_hours as usize;
    let mut ambient_c = site.ambient.current_c;
    for t in site.ambient.forecast_c.iter().take(horizon) {
        if *t > ambient_c {
            ambient_c = *t;
        }
    }
    let c = &site.cooling;
    let s = ((ambient_c - c.free_cooling_limit_c) / (c.max_ambient_c - c.free_cooling_limit_c))
        .clamp(0.0, 1.0);
    let pue = site.power.pue_min * (1.0 - s) + site.power.pue_max * s;
    let cooling_kw = c.nominal_kw * (1.0 - s) + c.nominal_kw * c.derate_min * s;
    // Free cooling follows ambient up to its limit; beyond it chillers hold supply there.
    let supply_c = f64::max(
        site.thermal.supply_setpoint_c,
        ambient_c.min(c.free_cooling_limit_c) + site.thermal.approach_c,
    );
    let limit = match (site.thermal.inlet_limit_c, site.thermal.ashrae_class) {
        (Some(l), _) => l,
        (None, Some(AshraeClass::A1)) => 32.0,
        (None, Some(AshraeClass::A2)) => 35.0,
        (None, Some(AshraeClass::A3)) => 40.0,
        (None, Some(AshraeClass::A4)) => 45.0,
        (None, None) => 27.0,
    };
    Some(SiteCheck {
        ambient_c,
        pue,
        cooling_kw,
        supply_c,
        inlet_max_c: limit - site.thermal.margin_c,
        factor: if humidity_ok(site) {
            1.0
        } else {
            c.humidity_derate
        },
        idle_kw: site
            .power
            .idle_kw
            .unwrap_or_else(|| site.servers.count as f64 * model.watts[0] / 1000.0),
        cores_per_server: model.cores as f64,
        watts: model.watts.clone(),
    })
}

fn humidity_ok(site: &Site) -> bool {
    let class = site.thermal.ashrae_class.unwrap_or(AshraeClass::A1);
    let (max_dew, max_rh) = match class {
        AshraeClass::A1 => (17.0, 80.0),
        AshraeClass::A2 => (21.0, 80.0),
        AshraeClass::A3 => (24.0, 85.0),
        AshraeClass::A4 => (24.0, 90.0),
    };
    let a = &site.ambient;
    let dew = match (a.dew_point_c, a.humidity_pct) {
        (Some(d), _) => Some(d),
        (None, Some(rh)) => {
            // Magnus–Tetens with Sonntag's constants.
            let alpha = (rh.max(0.1) / 100.0).ln() + 17.62 * a.current_c / (243.12 + a.current_c);
            Some(243.12 * alpha / (17.62 - alpha))
        }
        (None, None) => None,
    };
    if let Some(d) = dew {
        if !(-12.0..=max_dew).contains(&d) {
            return false;
        }
    }
    if let Some(rh) = a.humidity_pct {
        if !(8.0..=max_rh).contains(&rh) {
            return false;
        }
    }
    true
}

fn price_over(price: &Price, hours: u32) -> f64 {
    match price {
        Price::Flat(p) => *p,
        Price::Series(points) => {
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.hour.total_cmp(&b.hour));
            let n = hours.max(1);
            let mut sum = 0.0;
            for h in 0..n {
                let mut p = sorted.first().map_or(0.0, |p| p.price_per_kwh);
                for pt in &sorted {
                    if pt.hour <= h as f64 {
                        p = pt.price_per_kwh;
                    }
                }
                sum += p;
            }
            sum / n as f64
        }
    }
}

#[derive(PartialEq)]
struct Item(f64, usize);
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// Shortest RTT from one node to every node (textbook Dijkstra on an adjacency list).
fn rtt_from(adj: &[Vec<(usize, f64)>], from: usize) -> Vec<f64> {
    let mut dist = vec![f64::INFINITY; adj.len()];
    let mut heap = BinaryHeap::new();
    dist[from] = 0.0;
    heap.push(Item(0.0, from));
    while let Some(Item(d, v)) = heap.pop() {
        if d > dist[v] {
            continue;
        }
        for &(to, w) in &adj[v] {
            if d + w < dist[to] {
                dist[to] = d + w;
                heap.push(Item(d + w, to));
            }
        }
    }
    dist
}

/// Check a placement against an instance.
pub fn verify(inst: &Instance, placement: &Placement) -> VerifyReport {
    let mut v: Vec<Violation> = Vec::new();
    let mut bad = |rule: &str, item: &str, message: String| {
        v.push(Violation {
            rule: rule.to_string(),
            item: item.to_string(),
            message,
        })
    };
    let w8 = &inst.objective;

    // Network.
    let mut node_ix: HashMap<&str, usize> = HashMap::new();
    fn ix<'a>(id: &'a str, m: &mut HashMap<&'a str, usize>) -> usize {
        let n = m.len();
        *m.entry(id).or_insert(n)
    }
    let mut edges = Vec::new();
    for l in &inst.network.links {
        let a = ix(l.a.as_str(), &mut node_ix);
        let b = ix(l.b.as_str(), &mut node_ix);
        edges.push((a, b, l.rtt_ms));
    }
    for s in &inst.sites {
        ix(s.node_id(), &mut node_ix);
    }
    for r in &inst.regions {
        ix(r.node.as_str(), &mut node_ix);
    }
    let mut adj = vec![Vec::new(); node_ix.len()];
    for (a, b, w) in edges {
        adj[a].push((b, w));
        adj[b].push((a, w));
    }
    let mut rtt_cache: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut rtt = |region: &str, site: &Site| -> f64 {
        let Some(r) = inst.regions.iter().find(|r| r.id == region) else {
            return f64::INFINITY;
        };
        let from = node_ix[r.node.as_str()];
        let d = rtt_cache
            .entry(from)
            .or_insert_with(|| rtt_from(&adj, from));
        d[node_ix[site.node_id()]]
    };

    let sites: HashMap<&str, (usize, &Site)> = inst
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), (i, s)))
        .collect();
    let models = catalogue_with(&inst.server_models);
    let checks: Vec<Option<SiteCheck>> = inst
        .sites
        .iter()
        .map(|s| site_check(inst, &models, s))
        .collect();
    let workloads: HashMap<&str, usize> = inst
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect();

    let mut used: Vec<BTreeMap<&str, f64>> = vec![BTreeMap::new(); inst.sites.len()];
    let mut it_kw: Vec<f64> = checks
        .iter()
        .map(|c| c.as_ref().map_or(0.0, |c| c.idle_kw))
        .collect();
    let mut obj = ObjectiveTerms::default();
    let mut moves = 0u64;
    let mut unplaced_total = 0u64;
    let mut anti: HashMap<(&str, usize), u32> = HashMap::new();
    let mut affinity_sites: HashMap<&str, Vec<(&str, Vec<usize>)>> = HashMap::new();

    for id in placement.assignments.keys() {
        if !workloads.contains_key(id.as_str()) {
            bad(
                "unknown_workload",
                id,
                format!("placement names unknown workload {id:?}"),
            );
        }
    }
    for w in &inst.workloads {
        let empty = BTreeMap::new();
        let assigned = placement.assignments.get(&w.id).unwrap_or(&empty);
        let mut placed = 0u32;
        let mut per_domain: HashMap<&str, u32> = HashMap::new();
        let mut my_sites = Vec::new();
        for (sid, &n) in assigned {
            if n == 0 {
                continue;
            }
            let Some(&(si, site)) = sites.get(sid.as_str()) else {
                bad(
                    "unknown_site",
                    &w.id,
                    format!("workload {:?} placed on unknown site {sid:?}", w.id),
                );
                continue;
            };
            placed += n;
            my_sites.push(si);
            // Eligibility.
            if w.forbidden_sites.contains(sid) {
                bad(
                    "forbidden",
                    &w.id,
                    format!("{:?} runs on forbidden site {sid}", w.id),
                );
            }
            if !w.pinned_sites.is_empty() && !w.pinned_sites.contains(sid) {
                bad(
                    "pinned",
                    &w.id,
                    format!("{:?} runs on {sid}, outside its pinned sites", w.id),
                );
            }
            for h in &w.hardware {
                if !site.hardware.contains(h) {
                    bad(
                        "hardware",
                        &w.id,
                        format!("{:?} needs {h:?}, which {sid} lacks", w.id),
                    );
                }
            }
            let total_weight: f64 = w.traffic.iter().map(|t| t.weight).sum();
            let mut mean = 0.0;
            let mut within = 0.0;
            for t in &w.traffic {
                let d = rtt(&t.region, site);
                if !d.is_finite() {
                    bad(
                        "latency",
                        &w.id,
                        format!("{:?}: region {} cannot reach {sid}", w.id, t.region),
                    );
                }
                mean += t.weight / total_weight * d;
                if let Some(slo) = &w.slo {
                    if d <= slo.rtt_ms {
                        within += t.weight / total_weight;
                    }
                }
            }
            if let Some(slo) = &w.slo {
                if within * 100.0 + 1e-6 < slo.percentile {
                    bad(
                        "latency",
                        &w.id,
                        format!(
                            "{:?} on {sid}: {:.1} % of traffic within {} ms, SLO needs {} %",
                            w.id,
                            within * 100.0,
                            slo.rtt_ms,
                            slo.percentile
                        ),
                    );
                }
            }
            if let Some(k) = w.max_per_site {
                if n > k {
                    bad(
                        "max_per_site",
                        &w.id,
                        format!("{:?} has {n} replicas on {sid}, at most {k} allowed", w.id),
                    );
                }
            }
            if let Some(g) = &w.anti_affinity_group {
                *anti.entry((g.as_str(), si)).or_default() += n;
            }
            if let Some(d) = &site.failure_domain {
                *per_domain.entry(d.as_str()).or_default() += n;
            }
            for (r, amount) in &w.resources {
                *used[si].entry(r.as_str()).or_default() += amount * n as f64;
            }
            let cores = w.resources.get("cpu_cores").copied().unwrap_or(0.0);
            let dyn_kw = checks[si].as_ref().map_or(0.0, |c| {
                n as f64 * cores / c.cores_per_server
                    * (interpolate(&c.watts, w.utilization) - c.watts[0])
                    / 1000.0
            });
            it_kw[si] += dyn_kw;
            obj.latency += n as f64 * w8.latency_per_ms * mean;
            let cur = w.current.get(sid).copied().unwrap_or(0);
            if n > cur {
                moves += (n - cur) as u64;
                obj.migration +=
                    (n - cur) as f64 * (w8.migration_per_move + w8.migration_per_gib * w.state_gib);
            }
        }
        if placed > w.replicas {
            bad(
                "replicas",
                &w.id,
                format!("{:?} places {placed} replicas, it has {}", w.id, w.replicas),
            );
        }
        if let Some(k) = w.max_per_failure_domain {
            for (d, n) in per_domain {
                if n > k {
                    bad(
                        "failure_domain",
                        &w.id,
                        format!(
                            "{:?} has {n} replicas in failure domain {d}, at most {k}",
                            w.id
                        ),
                    );
                }
            }
        }
        if let Some(g) = &w.affinity_group {
            my_sites.sort();
            affinity_sites
                .entry(g.as_str())
                .or_default()
                .push((w.id.as_str(), my_sites));
        }
        let missing = w.replicas.saturating_sub(placed);
        unplaced_total += missing as u64;
        obj.unplaced += missing as f64 * w8.unplaced_per_priority * w.priority as f64;
    }
    for ((g, si), n) in anti {
        if n > 1 {
            bad(
                "anti_affinity",
                g,
                format!(
                    "anti-affinity group {g:?} has {n} replicas on {}",
                    inst.sites[si].id
                ),
            );
        }
    }
    for (g, members) in affinity_sites {
        if let Some((first, set)) = members.first() {
            for (other, s) in &members[1..] {
                if s != set {
                    bad(
                        "affinity",
                        g,
                        format!("affinity group {g:?}: {first} and {other} run on different sites"),
                    );
                }
            }
        }
    }
    if let Some(k) = inst.limits.max_moves {
        if moves > k as u64 {
            bad(
                "max_moves",
                "placement",
                format!("{moves} moves, at most {k} allowed"),
            );
        }
    }
    // Site limits and site-level objective terms.
    for (si, site) in inst.sites.iter().enumerate() {
        for (r, amount) in &used[si] {
            let cap = site.capacity.get(*r).copied().unwrap_or(0.0)
                * (1.0 - site.reserve_fraction.get(*r).copied().unwrap_or(0.0));
            if *amount > cap + TOL * cap.max(1.0) {
                bad(
                    "capacity",
                    &site.id,
                    format!("{}: {r} used {amount}, available {cap}", site.id),
                );
            }
        }
        let Some(c) = &checks[si] else {
            bad(
                "server_model",
                &site.id,
                format!("{}: unknown server model {:?}", site.id, site.servers.model),
            );
            continue;
        };
        let it = it_kw[si];
        let facility = it * c.pue;
        // Idle power alone over a limit is the site's state, not the placement's fault.
        if it > c.idle_kw + TOL {
            if facility > c.factor * site.power.cap_kw + TOL {
                bad(
                    "power_cap",
                    &site.id,
                    format!(
                        "{}: facility {facility:.3} kW over cap {} kW × {}",
                        site.id, site.power.cap_kw, c.factor
                    ),
                );
            }
            if it > c.factor * c.cooling_kw + TOL {
                bad(
                    "cooling",
                    &site.id,
                    format!(
                        "{}: heat {it:.3} kW over cooling {:.3} kW at {:.1} °C",
                        site.id,
                        c.factor * c.cooling_kw,
                        c.ambient_c
                    ),
                );
            }
            let rise = site.thermal.recirc_c_per_kw * it / site.thermal.racks as f64;
            let allowed_rise = c.factor * (c.inlet_max_c - c.supply_c).max(0.0);
            if rise > allowed_rise + TOL {
                bad(
                    "inlet",
                    &site.id,
                    format!(
                        "{}: predicted inlet {:.2} °C over limit {:.2} °C",
                        site.id,
                        c.supply_c + rise,
                        c.supply_c + allowed_rise
                    ),
                );
            }
        }
        let price = price_over(&site.energy.price_per_kwh, inst.limits.horizon_hours);
        obj.energy += w8.energy * facility * price;
        obj.carbon += w8.carbon_per_tonne * facility * site.energy.carbon_g_per_kwh / 1e6;
        let inlet_kw = if site.thermal.recirc_c_per_kw > 0.0 {
            c.factor * (c.inlet_max_c - c.supply_c).max(0.0) * site.thermal.racks as f64
                / site.thermal.recirc_c_per_kw
        } else {
            f64::INFINITY
        };
        let thermal_kw = (c.factor * c.cooling_kw).min(inlet_kw);
        if thermal_kw > 0.0 && thermal_kw.is_finite() {
            obj.thermal += w8.thermal_risk * it / thermal_kw;
        }
    }
    obj.total = obj.energy + obj.carbon + obj.latency + obj.migration + obj.thermal + obj.unplaced;
    VerifyReport {
        feasible: v.is_empty(),
        violations: v,
        objective: obj,
        moves,
        unplaced_replicas: unplaced_total,
    }
}
