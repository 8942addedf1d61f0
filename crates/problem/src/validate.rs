//! Semantic validation of an instance: reports *every* problem, each with
//! the path of the offending item (`workloads[12].slo.rtt_ms: must be > 0,
//! got -3`). Structural checks first; only a structurally sound instance is
//! checked for workloads that no site could ever host.

use std::collections::{HashMap, HashSet};

use crate::problem::Problem;
use crate::rows::UPLINK;
use edgeplan_model::accelerator_models::{self, AcceleratorModel, CURVE_POINTS, GPU_RESOURCE};
pub use edgeplan_model::error::Issue;
use edgeplan_model::instance::{Instance, Price};
use edgeplan_model::server_models::{catalogue_with, ServerModel};

#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Finite and ≥ 0.
    fn non_negative(&mut self, path: &str, v: f64) {
        if !v.is_finite() {
            self.push(path, format!("must be a finite number, got {v}"));
        } else if v < 0.0 {
            self.push(path, format!("must be >= 0, got {v}"));
        }
    }

    /// Finite and > 0.
    fn positive(&mut self, path: &str, v: f64) {
        if !v.is_finite() {
            self.push(path, format!("must be a finite number, got {v}"));
        } else if v <= 0.0 {
            self.push(path, format!("must be > 0, got {v}"));
        }
    }

    fn finite(&mut self, path: &str, v: f64) {
        if !v.is_finite() {
            self.push(path, format!("must be a finite number, got {v}"));
        }
    }

    /// Finite and within `[lo, hi]`.
    fn within(&mut self, path: &str, v: f64, lo: f64, hi: f64) {
        if !v.is_finite() || v < lo || v > hi {
            self.push(path, format!("must be within {lo}..={hi}, got {v}"));
        }
    }

    fn unique<'a>(&mut self, what: &str, ids: impl Iterator<Item = &'a str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, id) in ids.enumerate() {
            if id.trim().is_empty() {
                self.push(format!("{what}[{i}].id"), "must not be empty");
            } else if let Some(first) = seen.insert(id, i) {
                seen.insert(id, first);
                self.push(
                    format!("{what}[{i}].id"),
                    format!("duplicate id {id:?} (first at {what}[{first}])"),
                );
            }
        }
    }
}

/// Structural problems only (types, ranges, references, duplicates), without
/// the costlier check for workloads no site could host.
pub fn validate_structure(instance: &Instance) -> Vec<Issue> {
    let mut c = Checker::default();
    structural(instance, &mut c);
    c.issues
}

/// All problems of an instance; empty when it is valid.
pub fn validate(instance: &Instance) -> Vec<Issue> {
    validate_and_build(instance).err().unwrap_or_default()
}

/// Validate and, when valid, the problem the hostability check built (so a
/// caller that solves next does not build it twice); else every problem.
pub fn validate_and_build(instance: &Instance) -> Result<Problem, Vec<Issue>> {
    let mut c = Checker::default();
    structural(instance, &mut c);
    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    match hostability(instance, &mut c) {
        Some(problem) if c.issues.is_empty() => Ok(problem),
        _ => Err(c.issues),
    }
}

fn check_server_model(c: &mut Checker, path: &str, m: &ServerModel) {
    if m.cores == 0 {
        c.push(format!("{path}.cores"), "must be > 0, got 0");
    }
    if m.watts.len() != 11 {
        c.push(
            format!("{path}.watts"),
            format!(
                "needs 11 values (idle, 10 %, …, 100 %), got {}",
                m.watts.len()
            ),
        );
    }
    for (k, w) in m.watts.iter().enumerate() {
        c.non_negative(&format!("{path}.watts[{k}]"), *w);
    }
    if m.watts.windows(2).any(|w| w[1] < w[0]) {
        c.push(format!("{path}.watts"), "must not decrease with load");
    }
}

fn check_accelerator_model(c: &mut Checker, path: &str, m: &AcceleratorModel) {
    if m.watts.len() != CURVE_POINTS {
        c.push(
            format!("{path}.watts"),
            format!(
                "needs {CURVE_POINTS} values (idle, 10 %, …, 100 % utilisation), got {}",
                m.watts.len()
            ),
        );
    }
    for (k, w) in m.watts.iter().enumerate() {
        c.non_negative(&format!("{path}.watts[{k}]"), *w);
    }
    if m.watts.windows(2).any(|w| w[1] < w[0]) {
        c.push(
            format!("{path}.watts"),
            "must not decrease with utilisation",
        );
    }
}

/// The uplink's row name is taken: a resource of that name would be
/// counted twice. Whether it was.
fn reserved_name(c: &mut Checker, path: &str, resource: &str) -> bool {
    let reserved = resource == UPLINK;
    if reserved {
        c.push(
            path,
            format!("{UPLINK:?} is reserved for the site's uplink: declare it as the site's `uplink_gbps` and the workload's `egress_gbps`"),
        );
    }
    reserved
}

fn structural(inst: &Instance, c: &mut Checker) {
    for (i, m) in inst.server_models.iter().enumerate() {
        check_server_model(c, &format!("server_models[{i}]"), m);
    }
    c.unique(
        "server_models",
        inst.server_models.iter().map(|m| m.name.as_str()),
    );
    for (i, m) in inst.accelerator_models.iter().enumerate() {
        check_accelerator_model(c, &format!("accelerator_models[{i}]"), m);
    }
    c.unique(
        "accelerator_models",
        inst.accelerator_models.iter().map(|m| m.name.as_str()),
    );
    c.unique("sites", inst.sites.iter().map(|s| s.id.as_str()));
    c.unique(
        "network.nodes",
        inst.network.nodes.iter().map(|n| n.id.as_str()),
    );
    c.unique("regions", inst.regions.iter().map(|r| r.id.as_str()));
    c.unique("workloads", inst.workloads.iter().map(|w| w.id.as_str()));
    if inst.sites.is_empty() {
        c.push("sites", "must list at least one site");
    }

    let models = catalogue_with(&inst.server_models);
    let accelerators = accelerator_models::catalogue_with(&inst.accelerator_models);
    let nodes: HashSet<&str> = inst.network.nodes.iter().map(|n| n.id.as_str()).collect();
    let site_ids: HashSet<&str> = inst.sites.iter().map(|s| s.id.as_str()).collect();
    let region_ids: HashSet<&str> = inst.regions.iter().map(|r| r.id.as_str()).collect();
    let mut offered: HashSet<&str> = HashSet::new();
    let l = &inst.limits;
    for (name, v) in [
        ("max_in_flight", l.max_in_flight),
        ("max_in_per_site", l.max_in_per_site),
        ("max_out_per_site", l.max_out_per_site),
    ] {
        if v == 0 {
            c.push(format!("limits.{name}"), "must be > 0, got 0");
        }
    }
    if !(l.migration_bandwidth_share > 0.0 && l.migration_bandwidth_share <= 1.0) {
        c.push(
            "limits.migration_bandwidth_share",
            format!("must be within (0, 1], got {}", l.migration_bandwidth_share),
        );
    }
    c.non_negative("limits.step_overhead_s", l.step_overhead_s);

    for (i, s) in inst.sites.iter().enumerate() {
        let p = format!("sites[{i}]");
        if !nodes.contains(s.node_id()) {
            c.push(
                format!("{p}.node"),
                format!("unknown network node {:?} (site {:?})", s.node_id(), s.id),
            );
        }
        c.within(&format!("{p}.lat"), s.lat, -90.0, 90.0);
        c.within(&format!("{p}.lon"), s.lon, -180.0, 180.0);
        for (r, v) in &s.capacity {
            c.non_negative(&format!("{p}.capacity.{r}"), *v);
            reserved_name(c, &format!("{p}.capacity.{r}"), r);
            offered.insert(r.as_str());
        }
        if let Some(gbps) = s.uplink_gbps {
            c.positive(&format!("{p}.uplink_gbps"), gbps);
        }
        for (r, v) in &s.reserve_fraction {
            if !s.capacity.contains_key(r) {
                c.push(
                    format!("{p}.reserve_fraction.{r}"),
                    format!("resource {r:?} is not in the site's capacity"),
                );
            }
            if !v.is_finite() || *v < 0.0 || *v >= 1.0 {
                c.push(
                    format!("{p}.reserve_fraction.{r}"),
                    format!("must be within 0..1, got {v}"),
                );
            }
        }
        match models.get(&s.servers.model) {
            None => c.push(
                format!("{p}.servers.model"),
                format!(
                    "unknown server model {:?}; known: {}",
                    s.servers.model,
                    models.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
            Some(_) if s.servers.count == 0 => {
                c.push(format!("{p}.servers.count"), "must be > 0, got 0")
            }
            Some(_) => {}
        }
        if let Some(a) = &s.accelerators {
            let ap = format!("{p}.accelerators");
            if !accelerators.contains_key(&a.model) {
                c.push(
                    format!("{ap}.model"),
                    format!(
                        "unknown accelerator model {:?}; known: {}",
                        a.model,
                        accelerators.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            c.within(&format!("{ap}.calibration"), a.calibration, 0.1, 10.0);
            // The accelerators are the site's GPUs: the count the placement
            // fills is `capacity.gpus`, and no more exist than have power.
            match s.capacity.get(GPU_RESOURCE) {
                None => c.push(
                    format!("{p}.capacity.{GPU_RESOURCE}"),
                    format!(
                        "a site with accelerators declares its {GPU_RESOURCE:?} capacity (at most accelerators.count = {})",
                        a.count
                    ),
                ),
                Some(&g) if g > a.count as f64 => c.push(
                    format!("{p}.capacity.{GPU_RESOURCE}"),
                    format!(
                        "{g} {GPU_RESOURCE} but accelerators.count is {}: every GPU needs a power model",
                        a.count
                    ),
                ),
                Some(_) => {}
            }
        }
        c.positive(&format!("{p}.power.cap_kw"), s.power.cap_kw);
        c.within(&format!("{p}.power.pue_min"), s.power.pue_min, 1.0, 10.0);
        c.within(&format!("{p}.power.pue_max"), s.power.pue_max, 1.0, 10.0);
        if s.power.pue_max < s.power.pue_min {
            c.push(
                format!("{p}.power.pue_max"),
                format!(
                    "must be >= pue_min ({}), got {}",
                    s.power.pue_min, s.power.pue_max
                ),
            );
        }
        c.within(
            &format!("{p}.power.calibration"),
            s.power.calibration,
            0.1,
            10.0,
        );
        if let Some(idle) = s.power.idle_kw {
            c.non_negative(&format!("{p}.power.idle_kw"), idle);
        }
        c.positive(&format!("{p}.cooling.nominal_kw"), s.cooling.nominal_kw);
        if !(s.cooling.derate_min > 0.0 && s.cooling.derate_min <= 1.0) {
            c.push(
                format!("{p}.cooling.derate_min"),
                format!("must be within (0, 1], got {}", s.cooling.derate_min),
            );
        }
        if !(s.cooling.humidity_derate > 0.0 && s.cooling.humidity_derate <= 1.0) {
            c.push(
                format!("{p}.cooling.humidity_derate"),
                format!("must be within (0, 1], got {}", s.cooling.humidity_derate),
            );
        }
        c.finite(
            &format!("{p}.cooling.free_cooling_limit_c"),
            s.cooling.free_cooling_limit_c,
        );
        c.finite(
            &format!("{p}.cooling.max_ambient_c"),
            s.cooling.max_ambient_c,
        );
        if s.cooling.max_ambient_c <= s.cooling.free_cooling_limit_c {
            c.push(
                format!("{p}.cooling.max_ambient_c"),
                format!(
                    "must be above free_cooling_limit_c ({}), got {}",
                    s.cooling.free_cooling_limit_c, s.cooling.max_ambient_c
                ),
            );
        }
        let t = &s.thermal;
        if let Some(l) = t.inlet_limit_c {
            c.within(&format!("{p}.thermal.inlet_limit_c"), l, 0.0, 60.0);
        }
        c.non_negative(&format!("{p}.thermal.margin_c"), t.margin_c);
        c.within(
            &format!("{p}.thermal.supply_setpoint_c"),
            t.supply_setpoint_c,
            0.0,
            60.0,
        );
        c.non_negative(&format!("{p}.thermal.approach_c"), t.approach_c);
        c.non_negative(&format!("{p}.thermal.recirc_c_per_kw"), t.recirc_c_per_kw);
        if t.racks == 0 {
            c.push(format!("{p}.thermal.racks"), "must be > 0, got 0");
        }
        // Spot prices go negative (DE-LU 2023: −539 USD/MWh): any finite
        // price is real; the objective and the fast path take either sign.
        for (field, start) in [
            ("energy.series_start_unix_s", s.energy.series_start_unix_s),
            (
                "ambient.forecast_start_unix_s",
                s.ambient.forecast_start_unix_s,
            ),
        ] {
            if let Some(t) = start {
                c.finite(&format!("{p}.{field}"), t);
            }
        }
        match &s.energy.price_per_kwh {
            Price::Flat(v) => c.finite(&format!("{p}.energy.price_per_kwh"), *v),
            Price::Series(points) => {
                if points.is_empty() {
                    c.push(
                        format!("{p}.energy.price_per_kwh"),
                        "a price series needs at least one point",
                    );
                }
                for (k, pt) in points.iter().enumerate() {
                    c.non_negative(&format!("{p}.energy.price_per_kwh[{k}].hour"), pt.hour);
                    c.finite(
                        &format!("{p}.energy.price_per_kwh[{k}].price_per_kwh"),
                        pt.price_per_kwh,
                    );
                    // Each point holds until the next: hours out of order
                    // or repeated leave it unclear which price holds when.
                    if let Some(prev) = k.checked_sub(1).and_then(|j| points.get(j)) {
                        if pt.hour.is_finite() && prev.hour.is_finite() && pt.hour <= prev.hour {
                            c.push(
                                format!("{p}.energy.price_per_kwh[{k}].hour"),
                                format!(
                                    "must be above the previous point's hour ({}), got {}",
                                    prev.hour, pt.hour
                                ),
                            );
                        }
                    }
                }
            }
        }
        c.non_negative(
            &format!("{p}.energy.carbon_g_per_kwh"),
            s.energy.carbon_g_per_kwh,
        );
        c.within(
            &format!("{p}.ambient.current_c"),
            s.ambient.current_c,
            -80.0,
            70.0,
        );
        for (k, v) in s.ambient.forecast_c.iter().enumerate() {
            c.within(&format!("{p}.ambient.forecast_c[{k}]"), *v, -80.0, 70.0);
        }
        if let Some(h) = s.ambient.humidity_pct {
            c.within(&format!("{p}.ambient.humidity_pct"), h, 0.0, 100.0);
        }
        if let Some(d) = s.ambient.dew_point_c {
            c.within(&format!("{p}.ambient.dew_point_c"), d, -80.0, 70.0);
        }
    }

    for (i, l) in inst.network.links.iter().enumerate() {
        let p = format!("network.links[{i}]");
        for (end, id) in [("a", &l.a), ("b", &l.b)] {
            if !nodes.contains(id.as_str()) {
                c.push(format!("{p}.{end}"), format!("unknown network node {id:?}"));
            }
        }
        c.non_negative(&format!("{p}.rtt_ms"), l.rtt_ms);
        c.positive(&format!("{p}.bandwidth_gbps"), l.bandwidth_gbps);
    }
    for (i, r) in inst.regions.iter().enumerate() {
        if !nodes.contains(r.node.as_str()) {
            c.push(
                format!("regions[{i}].node"),
                format!("unknown network node {:?} (region {:?})", r.node, r.id),
            );
        }
    }

    for (i, w) in inst.workloads.iter().enumerate() {
        let p = format!("workloads[{i}]");
        for (r, v) in &w.resources {
            c.non_negative(&format!("{p}.resources.{r}"), *v);
            if reserved_name(c, &format!("{p}.resources.{r}"), r) {
                continue;
            }
            if !offered.contains(r.as_str()) {
                c.push(
                    format!("{p}.resources.{r}"),
                    format!("no site offers resource {r:?} (workload {:?})", w.id),
                );
            }
        }
        c.within(&format!("{p}.utilization"), w.utilization, 0.0, 1.0);
        if let Some(u) = w.gpu_utilization {
            c.within(&format!("{p}.gpu_utilization"), u, 0.0, 1.0);
        }
        for (k, t) in w.traffic.iter().enumerate() {
            if !region_ids.contains(t.region.as_str()) {
                c.push(
                    format!("{p}.traffic[{k}].region"),
                    format!("unknown region {:?}", t.region),
                );
            }
            c.positive(&format!("{p}.traffic[{k}].weight"), t.weight);
        }
        if let Some(slo) = &w.slo {
            c.positive(&format!("{p}.slo.rtt_ms"), slo.rtt_ms);
            if !(slo.percentile > 0.0 && slo.percentile <= 100.0) {
                c.push(
                    format!("{p}.slo.percentile"),
                    format!("must be within (0, 100], got {}", slo.percentile),
                );
            }
            if w.traffic.is_empty() {
                c.push(
                    format!("{p}.slo"),
                    "a latency SLO needs traffic regions to measure against",
                );
            }
        }
        if w.max_per_site == Some(0) {
            c.push(format!("{p}.max_per_site"), "must be > 0, got 0");
        }
        if w.max_per_failure_domain == Some(0) {
            c.push(format!("{p}.max_per_failure_domain"), "must be > 0, got 0");
        }
        for (field, list) in [
            ("pinned_sites", &w.pinned_sites),
            ("forbidden_sites", &w.forbidden_sites),
        ] {
            for (k, s) in list.iter().enumerate() {
                if !site_ids.contains(s.as_str()) {
                    c.push(format!("{p}.{field}[{k}]"), format!("unknown site {s:?}"));
                }
            }
        }
        if w.priority == 0 {
            c.push(format!("{p}.priority"), "must be > 0, got 0");
        }
        c.non_negative(&format!("{p}.state_gib"), w.state_gib);
        c.non_negative(&format!("{p}.egress_gbps"), w.egress_gbps);
        if let Some(spot) = &w.spot {
            c.non_negative(
                &format!("{p}.spot.max_price_per_replica_hour"),
                spot.max_price_per_replica_hour,
            );
            c.non_negative(&format!("{p}.spot.notice_s"), spot.notice_s);
            // Spot replicas are admitted one workload at a time after the
            // on-demand solve; a group's rule spans workloads.
            for (field, group) in [
                ("affinity_group", &w.affinity_group),
                ("anti_affinity_group", &w.anti_affinity_group),
            ] {
                if group.is_some() {
                    c.push(
                        format!("{p}.{field}"),
                        "a spot workload cannot be in a group (groups span workloads; spot replicas are admitted one workload at a time)",
                    );
                }
            }
        }
        // More replicas running than the spec asks for is a scale-down in
        // progress (where replicas run is observed): plans stop the surplus.
        for s in w.current.keys() {
            if !site_ids.contains(s.as_str()) {
                c.push(format!("{p}.current.{s}"), format!("unknown site {s:?}"));
            }
        }
    }
}

fn hostability(inst: &Instance, c: &mut Checker) -> Option<Problem> {
    let problem = match Problem::build(inst) {
        Ok(p) => p,
        Err(e) => {
            c.push("instance", e.to_string());
            return None;
        }
    };
    for (wi, w) in problem.workloads.iter_enumerated() {
        // Scaled to zero (`replicas: 0`): nothing to host, nothing to judge.
        if w.candidates.is_empty() && w.replicas > 0 {
            let why = problem.ineligibility_summary(wi);
            c.push(
                format!("workloads[{wi}]"),
                format!("no site could ever host workload {:?}: {why}", w.id),
            );
        }
    }
    Some(problem)
}
