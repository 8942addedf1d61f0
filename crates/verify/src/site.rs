//! A site's limits recomputed from the instance alone: its server curve,
//! PUE, cooling, supply and inlet at the worst ambient, the humidity
//! envelope, prices over the horizon; the load a placement puts on it; and
//! the limits that load breaks.

use std::collections::BTreeMap;

use edgeplan_model::accelerator_models::{self, AcceleratorModel};
use edgeplan_model::instance::{AshraeClass, Instance, Price, Site};
use edgeplan_model::server_models::{catalogue_with, ServerModel};

use crate::{Violation, TOL};

pub(crate) struct SiteCheck {
    pub(crate) ambient_c: f64,
    pub(crate) pue: f64,
    pub(crate) cooling_kw: f64,
    pub(crate) supply_c: f64,
    pub(crate) inlet_max_c: f64,
    pub(crate) factor: f64,
    pub(crate) idle_kw: f64,
    pub(crate) cores_per_server: f64,
    pub(crate) watts: Vec<f64>,
    pub(crate) calibration: f64,
    /// One accelerator's curve (empty at a site without accelerators).
    pub(crate) gpu_watts: Vec<f64>,
    pub(crate) gpu_calibration: f64,
}

pub(crate) fn interpolate(watts: &[f64], u: f64) -> f64 {
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

pub(crate) fn site_check(
    inst: &Instance,
    models: &BTreeMap<String, ServerModel>,
    accelerators: &BTreeMap<String, AcceleratorModel>,
    site: &Site,
) -> Option<SiteCheck> {
    let model = models.get(&site.servers.model)?;
    let (gpu_watts, gpu_count, gpu_calibration) = match &site.accelerators {
        None => (Vec::new(), 0.0, 1.0),
        Some(a) => (
            accelerators.get(&a.model)?.watts.clone(),
            a.count as f64,
            a.calibration,
        ),
    };
    let gpu_idle_kw =
        gpu_count * gpu_watts.first().copied().unwrap_or(0.0) / 1000.0 * gpu_calibration;
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
        }) + gpu_idle_kw,
        gpu_watts,
        gpu_calibration,
        calibration: site.power.calibration,
        cores_per_server: model.cores as f64,
        watts: model.watts.clone(),
    })
}

pub(crate) fn humidity_ok(site: &Site) -> bool {
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

pub(crate) fn price_over(price: &Price, hours: u32) -> f64 {
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

pub(crate) fn site_checks(inst: &Instance) -> Vec<Option<SiteCheck>> {
    let models = catalogue_with(&inst.server_models);
    let accelerators = accelerator_models::catalogue_with(&inst.accelerator_models);
    inst.sites
        .iter()
        .map(|s| site_check(inst, &models, &accelerators, s))
        .collect()
}

/// The key of the replicas' summed egress (Gbps) among a site's used
/// resources. Validation refuses a resource of that name; on an instance
/// that skipped validation, such a resource would count as egress here.
pub(crate) const EGRESS: &str = "uplink_gbps";

/// Resources used (and egress, under [`EGRESS`]) and IT kW per site for
/// (workload, site, replicas) counts.
pub(crate) fn site_loads<'a>(
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
            // Each of the replica's GPUs above idle, on the site's accelerator curve.
            let gpus = w.resources.get("gpus").copied().unwrap_or(0.0);
            if gpus > 0.0 && !c.gpu_watts.is_empty() {
                let u = w.gpu_utilization.unwrap_or(w.utilization);
                it_kw[si] += n as f64 * gpus * (interpolate(&c.gpu_watts, u) - c.gpu_watts[0])
                    / 1000.0
                    * c.gpu_calibration;
            }
        }
    }
    (used, it_kw)
}

/// What a broken site limit is measured on: one resource, or IT power
/// (power cap, cooling and inlet all grow with it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Quantity<'a> {
    Resource(&'a str),
    ItKw,
}

/// One broken site limit: the violation, and the quantity with its value
/// and the most it may be (`None` for a site that cannot be checked at all).
pub(crate) struct Breach<'a> {
    pub(crate) violation: Violation,
    pub(crate) measure: Option<(Quantity<'a>, f64, f64)>,
}

/// Capacity, power cap, cooling and inlet of one site under a load.
pub(crate) fn site_limits(
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

pub(crate) fn site_breaches<'a>(
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
            format!(
                "{}: unknown server model {:?} or accelerator model {:?}",
                site.id,
                site.servers.model,
                site.accelerators.as_ref().map(|a| a.model.as_str())
            ),
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
pub(crate) fn measure(q: Quantity, used: &BTreeMap<&str, f64>, it: f64) -> f64 {
    match q {
        Quantity::Resource(r) => used.get(r).copied().unwrap_or(0.0),
        Quantity::ItKw => it,
    }
}

/// The limits a site breaks under `(used, it)` that a change from
/// `(base_used, base_it)` caused: over the limit, and grown. A quantity
/// already over its limit that the change did not grow is the start's
/// state (a heat wave cut the cooling), not the change's fault.
pub(crate) fn caused_breaches(
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
