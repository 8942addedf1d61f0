//! The independent verifier: recomputes every constraint and every objective
//! term of a placement straight from the instance, sharing no code with the
//! problem builder, physics or topology (only the instance types and the
//! server-model data). One misunderstanding cannot hide in both. Pure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::instance::{AshraeClass, Instance, Price, Site};
use edgeplan_model::kpi::ObjectiveTerms;
use edgeplan_model::placement::Placement;
use edgeplan_model::plan::{Plan, Step};
use edgeplan_model::server_models::{catalogue_with, ServerModel};

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
    calibration: f64,
}

fn interpolate(watts: &[f64], u: f64) -> f64 {
    // 11 points at 0, 0.1, …, 1.0.
    let u = u.clamp(0.0, 1.0);
    if watts.len() < 2 {
        // Not a curve (an unvalidated instance): no dynamic power to read.
        return watts.first().copied().unwrap_or(0.0);
    }
    let mut k = 0;
    while k + 2 < watts.len() && (k + 1) as f64 / 10.0 < u {
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
        idle_kw: site.power.idle_kw.unwrap_or_else(|| {
            site.servers.count as f64 * model.watts[0] / 1000.0 * site.power.calibration
        }),
        calibration: site.power.calibration,
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

fn site_checks(inst: &Instance) -> Vec<Option<SiteCheck>> {
    let models = catalogue_with(&inst.server_models);
    inst.sites
        .iter()
        .map(|s| site_check(inst, &models, s))
        .collect()
}

fn site_index(inst: &Instance) -> HashMap<&str, usize> {
    inst.sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect()
}

/// (workload, site) → replicas, as the loads and spread checks read them.
type Counts = BTreeMap<(usize, usize), u32>;

fn entries(counts: &Counts) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
    counts.iter().map(|(&(w, s), &n)| (w, s, n))
}

/// Where the instance's replicas run now, and the (workload, site) pairs of
/// `current` that name no site.
fn current_counts<'a>(
    inst: &'a Instance,
    site_ix: &HashMap<&str, usize>,
) -> (Counts, Vec<(&'a str, &'a str)>) {
    let mut counts = Counts::new();
    let mut unknown = Vec::new();
    for (wi, w) in inst.workloads.iter().enumerate() {
        for (sid, n) in &w.current {
            match site_ix.get(sid.as_str()) {
                Some(&si) => *counts.entry((wi, si)).or_default() += n,
                None => unknown.push((w.id.as_str(), sid.as_str())),
            }
        }
    }
    (counts, unknown)
}

fn workload_index(inst: &Instance) -> HashMap<&str, usize> {
    inst.workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect()
}

/// The key of the replicas' summed egress (Gbps) among a site's used
/// resources. Validation refuses a resource of that name; on an instance
/// that skipped validation, such a resource would count as egress here.
const EGRESS: &str = "uplink_gbps";

/// Resources used (and egress, under [`EGRESS`]) and IT kW per site for
/// (workload, site, replicas) counts.
fn site_loads<'a>(
    inst: &'a Instance,
    checks: &[Option<SiteCheck>],
    counts: impl IntoIterator<Item = (usize, usize, u32)>,
) -> (Vec<BTreeMap<&'a str, f64>>, Vec<f64>) {
    let mut used: Vec<BTreeMap<&str, f64>> = vec![BTreeMap::new(); inst.sites.len()];
    let mut it_kw: Vec<f64> = checks
        .iter()
        .map(|c| c.as_ref().map_or(0.0, |c| c.idle_kw))
        .collect();
    for (wi, si, n) in counts {
        let w = &inst.workloads[wi];
        for (r, amount) in &w.resources {
            *used[si].entry(r.as_str()).or_default() += amount * n as f64;
        }
        if w.egress_gbps > 0.0 {
            *used[si].entry(EGRESS).or_default() += w.egress_gbps * n as f64;
        }
        let cores = w.resources.get("cpu_cores").copied().unwrap_or(0.0);
        if let Some(c) = &checks[si] {
            it_kw[si] += n as f64 * cores / c.cores_per_server
                * (interpolate(&c.watts, w.utilization) - c.watts[0])
                / 1000.0
                * c.calibration;
        }
    }
    (used, it_kw)
}

/// What a broken site limit is measured on: one resource, or IT power
/// (power cap, cooling and inlet all grow with it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quantity<'a> {
    Resource(&'a str),
    ItKw,
}

/// One broken site limit: the violation, and the quantity with its value
/// and the most it may be (`None` for a site that cannot be checked at all).
struct Breach<'a> {
    violation: Violation,
    measure: Option<(Quantity<'a>, f64, f64)>,
}

/// Capacity, power cap, cooling and inlet of one site under a load.
fn site_limits(
    site: &Site,
    check: Option<&SiteCheck>,
    used: &BTreeMap<&str, f64>,
    it: f64,
) -> Vec<Violation> {
    site_breaches(site, check, used, it)
        .into_iter()
        .map(|b| b.violation)
        .collect()
}

fn site_breaches<'a>(
    site: &Site,
    check: Option<&SiteCheck>,
    used: &BTreeMap<&'a str, f64>,
    it: f64,
) -> Vec<Breach<'a>> {
    let mut v = Vec::new();
    let mut bad = |rule: &str, message: String, measure: Option<(Quantity<'a>, f64, f64)>| {
        v.push(Breach {
            violation: Violation {
                rule: rule.to_string(),
                item: site.id.clone(),
                message,
            },
            measure,
        })
    };
    for (r, amount) in used {
        if *r == EGRESS {
            // The uplink: the egress of every replica here within the
            // site's backhaul (no limit when it declares none).
            if let Some(gbps) = site.uplink_gbps {
                if *amount > gbps + TOL * gbps.max(1.0) {
                    bad(
                        "uplink",
                        format!(
                            "{}: egress {amount:.3} Gbps over the uplink's {gbps} Gbps",
                            site.id
                        ),
                        Some((Quantity::Resource(r), *amount, gbps)),
                    );
                }
            }
            continue;
        }
        let cap = site.capacity.get(*r).copied().unwrap_or(0.0)
            * (1.0 - site.reserve_fraction.get(*r).copied().unwrap_or(0.0));
        if *amount > cap + TOL * cap.max(1.0) {
            bad(
                "capacity",
                format!("{}: {r} used {amount}, available {cap}", site.id),
                Some((Quantity::Resource(r), *amount, cap)),
            );
        }
    }
    let Some(c) = check else {
        bad(
            "server_model",
            format!("{}: unknown server model {:?}", site.id, site.servers.model),
            None,
        );
        return v;
    };
    // Idle power alone over a limit is the site's state, not the placement's fault.
    if it <= c.idle_kw + TOL {
        return v;
    }
    let facility = it * c.pue;
    if facility > c.factor * site.power.cap_kw + TOL {
        bad(
            "power_cap",
            format!(
                "{}: facility {facility:.3} kW over cap {} kW × {}",
                site.id, site.power.cap_kw, c.factor
            ),
            Some((Quantity::ItKw, it, c.factor * site.power.cap_kw / c.pue)),
        );
    }
    if it > c.factor * c.cooling_kw + TOL {
        bad(
            "cooling",
            format!(
                "{}: heat {it:.3} kW over cooling {:.3} kW at {:.1} °C",
                site.id,
                c.factor * c.cooling_kw,
                c.ambient_c
            ),
            Some((Quantity::ItKw, it, c.factor * c.cooling_kw)),
        );
    }
    let per_kw = site.thermal.recirc_c_per_kw / site.thermal.racks.max(1) as f64;
    let rise = per_kw * it;
    let allowed_rise = c.factor * (c.inlet_max_c - c.supply_c).max(0.0);
    if rise > allowed_rise + TOL {
        bad(
            "inlet",
            format!(
                "{}: predicted inlet {:.2} °C over limit {:.2} °C",
                site.id,
                c.supply_c + rise,
                c.supply_c + allowed_rise
            ),
            Some((
                Quantity::ItKw,
                it,
                allowed_rise / per_kw.max(f64::MIN_POSITIVE),
            )),
        );
    }
    v
}

/// The value of a quantity under a load.
fn measure(q: Quantity, used: &BTreeMap<&str, f64>, it: f64) -> f64 {
    match q {
        Quantity::Resource(r) => used.get(r).copied().unwrap_or(0.0),
        Quantity::ItKw => it,
    }
}

/// The limits a site breaks under `(used, it)` that a change from
/// `(base_used, base_it)` caused: over the limit, and grown. A quantity
/// already over its limit that the change did not grow is the start's
/// state (a heat wave cut the cooling), not the change's fault.
fn caused_breaches(
    site: &Site,
    check: Option<&SiteCheck>,
    (used, it): (&BTreeMap<&str, f64>, f64),
    (base_used, base_it): (&BTreeMap<&str, f64>, f64),
) -> Vec<Violation> {
    site_breaches(site, check, used, it)
        .into_iter()
        .filter(|b| match b.measure {
            Some((q, value, _)) => {
                let before = measure(q, base_used, base_it);
                value > before + TOL * before.abs().max(1.0)
            }
            None => true,
        })
        .map(|b| b.violation)
        .collect()
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
    let checks = site_checks(inst);
    let workloads = workload_index(inst);

    let mut placed_counts: Vec<(usize, usize, u32)> = Vec::new();
    let mut obj = ObjectiveTerms::default();
    let mut moves = 0u64;
    let mut unplaced_total = 0u64;
    let mut anti: BTreeMap<(&str, usize), u32> = BTreeMap::new();
    let mut affinity_sites: BTreeMap<&str, Vec<(&str, Vec<usize>)>> = BTreeMap::new();

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
        let mut per_domain: BTreeMap<&str, u32> = BTreeMap::new();
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
            placed_counts.push((workloads[w.id.as_str()], si, n));
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
    let (used, it_kw) = site_loads(inst, &checks, placed_counts);
    for (si, site) in inst.sites.iter().enumerate() {
        v.extend(site_limits(site, checks[si].as_ref(), &used[si], it_kw[si]));
        let Some(c) = &checks[si] else {
            continue;
        };
        let it = it_kw[si];
        let facility = it * c.pue;
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
    // A fixed order, whatever the maps above iterated in.
    v.sort_by(|a, b| (&a.rule, &a.item, &a.message).cmp(&(&b.rule, &b.item, &b.message)));
    VerifyReport {
        feasible: v.is_empty(),
        violations: v,
        objective: obj,
        moves,
        unplaced_replicas: unplaced_total,
    }
}

/// What `verify_plan` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanReport {
    /// No violation at any wave.
    pub valid: bool,
    /// The instance differs from the one the plan was made from.
    pub stale: bool,
    /// Replaying the plan ends at its target.
    pub reaches_target: bool,
    pub violations: Vec<Violation>,
    /// Sites over a limit before the plan's first step (not the plan's
    /// doing), and how the plan brings each back: `rule` and `item` as in a
    /// violation, the message tells the trajectory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overloads: Vec<Violation>,
}

/// Replay a plan from the instance's current placement and check, for each
/// wave, the worst case of any order its steps may run in (every step holds
/// its target, no source released yet) against every site limit and the
/// spread rules (a replica counts where it serves; any subset of the wave
/// may have cut over), plus the concurrency limits, dependencies, routes and
/// the end state. The executor starts a wave only once the previous one has
/// finished, so these worst cases bound every state it can reach. A site
/// already over a limit at the start is the start's state: only growth of
/// what it is over on is a violation; its trajectory is in `overloads`.
pub fn verify_plan(inst: &Instance, plan: &Plan) -> PlanReport {
    let mut v: Vec<Violation> = Vec::new();
    macro_rules! bad {
        ($rule:expr, $item:expr, $msg:expr) => {
            v.push(Violation {
                rule: $rule.to_string(),
                item: $item,
                message: $msg,
            })
        };
    }
    let checks = site_checks(inst);
    let site_ix = site_index(inst);
    let wl_ix = workload_index(inst);
    let limits = &inst.limits;
    let per_link = ((1.0 / limits.migration_bandwidth_share).floor() as u32).max(1);

    // Own graph for route checks.
    let mut node_ix: HashMap<&str, usize> = HashMap::new();
    for l in &inst.network.links {
        for id in [l.a.as_str(), l.b.as_str()] {
            let n = node_ix.len();
            node_ix.entry(id).or_insert(n);
        }
    }
    for s in &inst.sites {
        let n = node_ix.len();
        node_ix.entry(s.node_id()).or_insert(n);
    }
    let mut adj = vec![Vec::new(); node_ix.len()];
    for l in &inst.network.links {
        let (a, b) = (node_ix[l.a.as_str()], node_ix[l.b.as_str()]);
        adj[a].push((b, l.rtt_ms));
        adj[b].push((a, l.rtt_ms));
    }

    let (mut counts, unknown) = current_counts(inst, &site_ix);
    for (workload, sid) in unknown {
        bad!(
            "unknown_site",
            workload.to_string(),
            format!("current placement names unknown site {sid:?}")
        );
    }
    let mut wave_of_step: HashMap<usize, usize> = HashMap::new();
    for w in &plan.waves {
        for &s in &w.steps {
            if wave_of_step.insert(s, w.index).is_some() {
                bad!(
                    "plan",
                    format!("step {s}"),
                    format!("step {s} appears in more than one wave")
                );
            }
        }
    }
    if wave_of_step.len() != plan.steps.len() {
        bad!(
            "plan",
            "waves".into(),
            format!(
                "{} steps but {} placed in waves",
                plan.steps.len(),
                wave_of_step.len()
            )
        );
    }
    // The committed state's loads: at the start, then after each wave.
    let (mut base_used, mut base_kw) = site_loads(inst, &checks, entries(&counts));
    let mut overloads = Overloads::at_start(inst, &checks, &base_used, &base_kw);
    let mut makespan = 0.0;
    for (k, wave) in plan.waves.iter().enumerate() {
        let label = format!("wave {k}");
        makespan += wave.duration_s;
        let mut in_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut out_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut link_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut leaving: BTreeMap<(usize, usize), u32> = BTreeMap::new();
        let mut arriving: Vec<(usize, usize, u32)> = Vec::new();
        let mut receiving: Vec<usize> = Vec::new();
        let mut moving_in: Vec<(usize, Option<usize>, usize)> = Vec::new();
        if wave.steps.len() > limits.max_in_flight as usize {
            bad!(
                "max_in_flight",
                label.clone(),
                format!(
                    "{label}: {} steps, at most {} in flight",
                    wave.steps.len(),
                    limits.max_in_flight
                )
            );
        }
        for &sid in &wave.steps {
            let Some(step) = plan.steps.get(sid) else {
                bad!(
                    "plan",
                    label.clone(),
                    format!("{label}: unknown step {sid}")
                );
                continue;
            };
            let Some(&wi) = wl_ix.get(step.workload.as_str()) else {
                bad!(
                    "unknown_workload",
                    step.workload.clone(),
                    format!("step {sid}: unknown workload")
                );
                continue;
            };
            if step.duration_s > wave.duration_s + TOL {
                bad!(
                    "timing",
                    format!("step {sid}"),
                    format!(
                        "step {sid} lasts {} s, longer than its wave",
                        step.duration_s
                    )
                );
            }
            for d in &step.depends_on {
                if wave_of_step.get(d).is_none_or(|w| *w >= k) {
                    bad!(
                        "dependency",
                        format!("step {sid}"),
                        format!("step {sid} depends on step {d}, which is not in an earlier wave")
                    );
                }
            }
            let from = step.from.as_deref().map(|f| site_ix.get(f).copied());
            let to = step.to.as_deref().map(|t| site_ix.get(t).copied());
            if matches!(from, Some(None)) || matches!(to, Some(None)) {
                bad!(
                    "unknown_site",
                    format!("step {sid}"),
                    format!("step {sid} names an unknown site")
                );
                continue;
            }
            if let Some(Some(f)) = from {
                *out_count.entry(f).or_default() += 1;
                *leaving.entry((wi, f)).or_default() += 1;
            }
            if let Some(Some(t)) = to {
                *in_count.entry(t).or_default() += 1;
                arriving.push((wi, t, 1));
                receiving.push(t);
                moving_in.push((wi, from.flatten(), t));
            }
            if let (Some(Some(f)), Some(Some(t))) = (from, to) {
                // The declared links must form a shortest path between the two sites.
                let (a, b) = (
                    node_ix[inst.sites[f].node_id()],
                    node_ix[inst.sites[t].node_id()],
                );
                let mut at = a;
                let mut rtt = 0.0;
                let mut ok = true;
                for &l in &step.links {
                    let Some(link) = inst.network.links.get(l) else {
                        ok = false;
                        break;
                    };
                    let (x, y) = (node_ix[link.a.as_str()], node_ix[link.b.as_str()]);
                    at = if x == at {
                        y
                    } else if y == at {
                        x
                    } else {
                        ok = false;
                        break;
                    };
                    rtt += link.rtt_ms;
                    *link_count.entry(l).or_default() += 1;
                }
                let shortest = rtt_from(&adj, a)[b];
                if !ok || at != b || rtt > shortest + 1e-6 * shortest.max(1.0) {
                    bad!(
                        "route",
                        format!("step {sid}"),
                        format!(
                            "step {sid}: its links are not a shortest path from {} to {}",
                            inst.sites[f].id, inst.sites[t].id
                        )
                    );
                }
            }
        }
        for (rule, counts, most, verb) in [
            (
                "max_in_per_site",
                &in_count,
                limits.max_in_per_site,
                "arrive at",
            ),
            (
                "max_out_per_site",
                &out_count,
                limits.max_out_per_site,
                "leave",
            ),
        ] {
            for (&s, &n) in counts {
                if n > most {
                    let id = &inst.sites[s].id;
                    bad!(
                        rule,
                        id.clone(),
                        format!("{label}: {n} steps {verb} {id}, at most {most}")
                    );
                }
            }
        }
        for (&l, &n) in &link_count {
            if n > per_link {
                bad!(
                    "link",
                    format!("link {l}"),
                    format!("{label}: {n} migrations share link {l}, at most {per_link}")
                );
            }
        }
        for (&(wi, f), &n) in &leaving {
            let have = counts.get(&(wi, f)).copied().unwrap_or(0);
            if n > have {
                bad!(
                    "source",
                    inst.workloads[wi].id.clone(),
                    format!(
                        "{label}: {n} replicas of {} leave {}, which runs {have}",
                        inst.workloads[wi].id, inst.sites[f].id
                    )
                );
            }
        }
        // Worst case: everything arriving is held, nothing leaving is released yet.
        let (used, it_kw) = site_loads(
            inst,
            &checks,
            entries(&counts).chain(arriving.iter().copied()),
        );
        receiving.sort_unstable();
        receiving.dedup();
        for s in receiving {
            for mut x in caused_breaches(
                &inst.sites[s],
                checks[s].as_ref(),
                (&used[s], it_kw[s]),
                (&base_used[s], base_kw[s]),
            ) {
                x.message = format!("{label} (all steps in flight): {}", x.message);
                v.push(x);
            }
        }
        for mut x in spread_in_flight(inst, &counts, &moving_in) {
            x.message = format!(
                "{label} (arrivals cut over, departures not yet): {}",
                x.message
            );
            v.push(x);
        }
        for (&(wi, f), &n) in &leaving {
            let c = counts.entry((wi, f)).or_default();
            if *c < n {
                bad!(
                    "source",
                    inst.workloads[wi].id.clone(),
                    format!("{label}: replica missing at {}", inst.sites[f].id)
                );
            }
            *c = c.saturating_sub(n);
        }
        for &(wi, t, n) in &arriving {
            *counts.entry((wi, t)).or_default() += n;
        }
        (base_used, base_kw) = site_loads(inst, &checks, entries(&counts));
        overloads.after_wave(k, &base_used, &base_kw);
    }
    if (makespan - plan.makespan_s).abs() > 1e-6 * makespan.max(1.0) {
        bad!(
            "timing",
            "plan".into(),
            format!(
                "makespan {} s is not the sum of its waves, {makespan} s",
                plan.makespan_s
            )
        );
    }
    let mut end = Placement::default();
    for (&(wi, si), &n) in &counts {
        if n > 0 {
            end.assignments
                .entry(inst.workloads[wi].id.clone())
                .or_default()
                .insert(inst.sites[si].id.clone(), n);
        }
    }
    if end != plan.reached {
        bad!(
            "end_state",
            "plan".into(),
            "replaying the plan does not end where it says it does".into()
        );
    }
    let reaches_target = end == plan.target;
    if !reaches_target && plan.blocked.is_empty() {
        bad!(
            "end_state",
            "plan".into(),
            "the plan stops short of its target but reports nothing blocked".into()
        );
    }
    PlanReport {
        valid: v.is_empty(),
        stale: plan.state_hash != edgeplan_model::plan::state_hash(inst),
        reaches_target,
        violations: v,
        overloads: overloads.report(inst),
    }
}

/// Sites over a limit at the start of a plan, followed wave by wave.
struct Overloads<'a> {
    tracked: Vec<Tracked<'a>>,
}

/// One quantity of one site over its limit at the start.
struct Tracked<'a> {
    site: usize,
    rule: String,
    quantity: Quantity<'a>,
    start: f64,
    limit: f64,
    /// The first wave after which it is within its limit, and its value then.
    cleared_after: Option<(usize, f64)>,
    /// Its value after the last wave seen.
    last: f64,
}

impl<'a> Overloads<'a> {
    /// Every quantity over its limit under the loads at the start.
    fn at_start(
        inst: &Instance,
        checks: &[Option<SiteCheck>],
        used: &[BTreeMap<&'a str, f64>],
        it_kw: &[f64],
    ) -> Overloads<'a> {
        let mut tracked = Vec::new();
        for (si, site) in inst.sites.iter().enumerate() {
            for b in site_breaches(site, checks[si].as_ref(), &used[si], it_kw[si]) {
                if let Some((quantity, value, limit)) = b.measure {
                    tracked.push(Tracked {
                        site: si,
                        rule: b.violation.rule,
                        quantity,
                        start: value,
                        limit,
                        cleared_after: None,
                        last: value,
                    });
                }
            }
        }
        Overloads { tracked }
    }

    /// The committed loads after `wave`.
    fn after_wave(&mut self, wave: usize, used: &[BTreeMap<&str, f64>], it_kw: &[f64]) {
        for t in &mut self.tracked {
            t.last = measure(t.quantity, &used[t.site], it_kw[t.site]);
            if t.cleared_after.is_none() && t.last <= t.limit + TOL * t.limit.abs().max(1.0) {
                t.cleared_after = Some((wave, t.last));
            }
        }
    }

    fn report(self, inst: &Instance) -> Vec<Violation> {
        self.tracked
            .into_iter()
            .map(|t| {
                let site = &inst.sites[t.site].id;
                let what = match t.quantity {
                    Quantity::Resource(r) => format!("{r} used"),
                    Quantity::ItKw => "IT kW".to_string(),
                };
                let fate = match t.cleared_after {
                    Some((w, value)) => format!("{value:.3} after wave {w}, within its limit"),
                    None => format!("still over after the plan ({:.3})", t.last),
                };
                Violation {
                    rule: t.rule,
                    item: site.clone(),
                    message: format!(
                        "{site}: {what} {:.3} over {:.3} before the plan (not the plan's doing); {fate}",
                        t.start, t.limit
                    ),
                }
            })
            .collect()
    }
}

/// The spread rules in the worst state of a wave: `committed` replicas,
/// plus `arrivals` (workload, source, target) counted at their target while
/// their sources still count too (a move inside one failure domain counts
/// once there). Only what the arrivals touch is checked: a rule broken
/// before the plan and not made worse is not the plan's doing.
fn spread_in_flight(
    inst: &Instance,
    committed: &Counts,
    arrivals: &[(usize, Option<usize>, usize)],
) -> Vec<Violation> {
    let mut v = Vec::new();
    let domain = |s: usize| inst.sites[s].failure_domain.as_deref();
    let mut at_site: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    let mut in_domain: BTreeMap<(usize, &str), u32> = BTreeMap::new();
    let mut in_group: BTreeMap<(&str, usize), u32> = BTreeMap::new();
    for &(wi, from, to) in arrivals {
        *at_site.entry((wi, to)).or_default() += 1;
        if let Some(d) = domain(to) {
            if from.and_then(domain) != Some(d) {
                *in_domain.entry((wi, d)).or_default() += 1;
            }
        }
        if let Some(g) = inst.workloads[wi].anti_affinity_group.as_deref() {
            *in_group.entry((g, to)).or_default() += 1;
        }
    }
    for (&(wi, si), &n) in &at_site {
        let w = &inst.workloads[wi];
        let total = committed.get(&(wi, si)).copied().unwrap_or(0) + n;
        if let Some(k) = w.max_per_site {
            if total > k {
                v.push(Violation {
                    rule: "max_per_site".into(),
                    item: w.id.clone(),
                    message: format!(
                        "{:?} has {total} replicas on {}, at most {k} allowed",
                        w.id, inst.sites[si].id
                    ),
                });
            }
        }
    }
    for (&(wi, d), &n) in &in_domain {
        let w = &inst.workloads[wi];
        let Some(k) = w.max_per_failure_domain else {
            continue;
        };
        let before: u32 = committed
            .range((wi, 0)..(wi + 1, 0))
            .filter(|(&(_, s), _)| domain(s) == Some(d))
            .map(|(_, n)| *n)
            .sum();
        if before + n > k {
            v.push(Violation {
                rule: "failure_domain".into(),
                item: w.id.clone(),
                message: format!(
                    "{:?} has {} replicas in failure domain {d}, at most {k}",
                    w.id,
                    before + n
                ),
            });
        }
    }
    for (&(g, si), &n) in &in_group {
        let before: u32 = committed
            .iter()
            .filter(|(&(wi, s), _)| {
                s == si && inst.workloads[wi].anti_affinity_group.as_deref() == Some(g)
            })
            .map(|(_, n)| *n)
            .sum();
        if before + n > 1 {
            v.push(Violation {
                rule: "anti_affinity".into(),
                item: g.to_string(),
                message: format!(
                    "anti-affinity group {g:?} has {} replicas on {}",
                    before + n,
                    inst.sites[si].id
                ),
            });
        }
    }
    v
}

/// Check one state the executor reached on the way through `plan`: the
/// steps `succeeded` have moved their replica; the steps `running` hold
/// both ends. Every capacity, power-cap, cooling and inlet limit the state
/// breaks beyond the plan's start, and every spread rule its arrivals break
/// (counting a replica where it serves, any running step possibly cut over).
pub fn verify_in_flight(
    inst: &Instance,
    plan: &Plan,
    succeeded: &[usize],
    running: &[usize],
) -> Vec<Violation> {
    let checks = site_checks(inst);
    let site_ix = site_index(inst);
    let wl_ix = workload_index(inst);
    let (mut counts, _) = current_counts(inst, &site_ix);
    let (base_used, base_kw) = site_loads(inst, &checks, entries(&counts));
    let resolve = |k: usize| {
        let step = plan.steps.get(k)?;
        let wi = *wl_ix.get(step.workload.as_str())?;
        let from = step.from.as_deref().and_then(|f| site_ix.get(f).copied());
        let to = step.to.as_deref().and_then(|t| site_ix.get(t).copied());
        Some((wi, from, to))
    };
    for &k in succeeded {
        if let Some((wi, from, to)) = resolve(k) {
            if let Some(f) = from {
                let c = counts.entry((wi, f)).or_default();
                *c = c.saturating_sub(1);
            }
            if let Some(t) = to {
                *counts.entry((wi, t)).or_default() += 1;
            }
        }
    }
    let arrivals: Vec<(usize, Option<usize>, usize)> = running
        .iter()
        .filter_map(|&k| match resolve(k)? {
            (wi, from, Some(t)) => Some((wi, from, t)),
            _ => None,
        })
        .collect();
    let (used, it_kw) = site_loads(
        inst,
        &checks,
        entries(&counts).chain(arrivals.iter().map(|&(wi, _, t)| (wi, t, 1))),
    );
    let mut v = Vec::new();
    for (si, site) in inst.sites.iter().enumerate() {
        v.extend(caused_breaches(
            site,
            checks[si].as_ref(),
            (&used[si], it_kw[si]),
            (&base_used[si], base_kw[si]),
        ));
    }
    v.extend(spread_in_flight(inst, &counts, &arrivals));
    v
}

/// The start precondition of plan steps against one state of the fleet
/// (its `current` is where replicas run now): built once, asked per step,
/// so a dispatcher round computes the sites' limits and the indices once.
pub struct Preconditions<'a> {
    inst: &'a Instance,
    checks: Vec<Option<SiteCheck>>,
    site_ix: HashMap<&'a str, usize>,
    wl_ix: HashMap<&'a str, usize>,
}

impl<'a> Preconditions<'a> {
    pub fn new(inst: &'a Instance) -> Preconditions<'a> {
        Preconditions {
            inst,
            checks: site_checks(inst),
            site_ix: site_index(inst),
            wl_ix: workload_index(inst),
        }
    }

    /// May `step` start now, with `running` steps holding both ends? The
    /// replica it moves must be at its source (beyond those running steps'
    /// own), and its arrival must not push its target over a limit that it
    /// grows. `Err` says why not.
    pub fn check(&self, running: &[&Step], step: &Step) -> Result<(), String> {
        let inst = self.inst;
        let Some(&wi) = self.wl_ix.get(step.workload.as_str()) else {
            return Err(format!(
                "workload {} is no longer in the inventory",
                step.workload
            ));
        };
        if let Some(from) = step.from.as_deref() {
            let here = inst.workloads[wi].current.get(from).copied().unwrap_or(0);
            let leaving = running
                .iter()
                .filter(|r| r.workload == step.workload && r.from.as_deref() == Some(from))
                .count() as u32;
            if here <= leaving {
                return Err(format!(
                    "{} runs {here} replica(s) at {from}, {leaving} already leaving: none for this step to move",
                    step.workload
                ));
            }
        }
        let Some(to) = step.to.as_deref() else {
            return Ok(());
        };
        let Some(&ti) = self.site_ix.get(to) else {
            return Err(format!("site {to} is no longer in the inventory"));
        };
        // What the target holds: its replicas, and every running arrival.
        let mut held: Vec<(usize, usize, u32)> = inst
            .workloads
            .iter()
            .enumerate()
            .filter_map(|(oi, o)| o.current.get(to).map(|&n| (oi, ti, n)))
            .collect();
        held.extend(
            running
                .iter()
                .filter(|r| r.to.as_deref() == Some(to))
                .filter_map(|r| self.wl_ix.get(r.workload.as_str()))
                .map(|&oi| (oi, ti, 1)),
        );
        let (base_used, base_kw) = site_loads(inst, &self.checks, held.iter().copied());
        let (used, it_kw) = site_loads(
            inst,
            &self.checks,
            held.iter().copied().chain([(wi, ti, 1)]),
        );
        let broken = caused_breaches(
            &inst.sites[ti],
            self.checks[ti].as_ref(),
            (&used[ti], it_kw[ti]),
            (&base_used[ti], base_kw[ti]),
        );
        match broken.first() {
            Some(b) => Err(format!("no room at {to} any more: {}", b.message)),
            None => Ok(()),
        }
    }
}
