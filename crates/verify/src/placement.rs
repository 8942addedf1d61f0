//! A placement checked against the instance: every constraint and every
//! objective term recomputed.

use std::collections::{BTreeMap, HashMap};

use edgeplan_model::instance::{Instance, Site};
use edgeplan_model::kpi::ObjectiveTerms;
use edgeplan_model::placement::Placement;

use crate::counts::*;
use crate::network::*;
use crate::site::*;
use crate::{VerifyReport, Violation};

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
        // Spot replicas left out are the market's answer: no count, no penalty.
        if w.spot.is_none() {
            unplaced_total += missing as u64;
            obj.unplaced += missing as f64 * w8.unplaced_per_priority * w.priority as f64;
        }
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
