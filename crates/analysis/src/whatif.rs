//! What-if analyses: named scenarios, each a list of perturbations of a base
//! instance (outages, cooling loss, heat waves, power-cap cuts, price and
//! carbon changes, demand growth, new or removed sites, cut links, added
//! latency), plus sweeps that vary one parameter. Every scenario re-solves
//! from the base placement and plans the migration from it; results are KPI
//! rows. Reuses problem, solver, plan and effective capacity; computes no KPI
//! of its own. Pure and deterministic for a seed (parallel or not).

use std::collections::BTreeMap;

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::SolveReport;
use edgeplan_model::instance::{Instance, Link, Price};
use edgeplan_plan::plan::plan;
use edgeplan_problem::problem::Problem;
use edgeplan_problem::validate::{validate_structure, Issue};
use edgeplan_solve::solver::{solve, Method, SolveOptions};

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Path of the base instance, relative to the scenario file.
    pub base: String,
    #[serde(default)]
    pub seed: u32,
    /// Ignored (kept so older files parse): what-if stops each solve on
    /// its work budget alone, so its tables are the same on any machine.
    #[serde(default = "default_time_limit")]
    pub time_limit_s: f64,
    /// Work budget of each scenario's solve (see `fast::Limit`);
    /// `fast::DEFAULT_WORK` when unset.
    #[serde(default)]
    pub work: Option<u64>,
    /// Solve method of each scenario (auto, exact or fast).
    #[serde(default)]
    pub method: Method,
    /// Relative gap at which each scenario's solve stops.
    #[serde(default)]
    pub gap: Option<f64>,
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    #[serde(default)]
    pub sweeps: Vec<Sweep>,
}

fn default_time_limit() -> f64 {
    10.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub perturbations: Vec<Perturbation>,
}

/// One scenario per value: `field` of `perturbation` set to each value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub name: String,
    pub field: String,
    pub values: Vec<f64>,
    pub perturbation: Perturbation,
}

/// Which workloads demand growth applies to (all when both are empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Workloads with traffic from these regions.
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub workloads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Perturbation {
    /// The site is gone: nothing may run there.
    SiteOutage { site: String },
    /// The site is removed for good (same effect on the plan as an outage).
    RemoveSite { site: String },
    /// A share (0–1) of the site's cooling is lost.
    CoolingLoss { site: String, fraction: f64 },
    /// Ambient rises by `delta_c` from `from_hour` for `hours` (all sites if none named).
    HeatWave {
        #[serde(default)]
        sites: Vec<String>,
        delta_c: f64,
        #[serde(default)]
        from_hour: u32,
        #[serde(default)]
        hours: Option<u32>,
    },
    /// A real ambient series (hourly, °C) replaces the site's forecast.
    Weather { site: String, series_c: Vec<f64> },
    /// The facility power cap is multiplied by `factor`.
    PowerCap { site: String, factor: f64 },
    /// Electricity price × `multiplier` (all sites if none named), or a new spot series.
    Price {
        #[serde(default)]
        sites: Vec<String>,
        #[serde(default = "one")]
        multiplier: f64,
        #[serde(default)]
        series: Option<Vec<edgeplan_model::instance::PricePoint>>,
    },
    /// Carbon intensity × `multiplier` (all sites if none named).
    Carbon {
        #[serde(default)]
        sites: Vec<String>,
        multiplier: f64,
    },
    /// Replicas × `factor` (rounded up) for the selected workloads.
    DemandGrowth {
        factor: f64,
        #[serde(default, flatten)]
        selection: Selection,
    },
    /// A new site, a copy of `template` with a new id (on the template's node unless given).
    NewSite {
        template: String,
        id: String,
        #[serde(default)]
        node: Option<String>,
    },
    /// The link between two nodes is cut.
    CutLink { a: String, b: String },
    /// The link between two nodes gets slower by `rtt_ms`.
    AddLatency { a: String, b: String, rtt_ms: f64 },
}

fn one() -> f64 {
    1.0
}

/// Parse a scenario file (YAML or JSON). Goes through a JSON value so that
/// perturbations are written as `kind: {fields}` maps; errors carry the path.
pub fn parse(text: &str) -> Result<ScenarioFile, Issue> {
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| Issue {
        path: String::from("(file)"),
        message: e.to_string(),
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| Issue {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// All scenarios of a file, sweeps expanded, in file order.
pub fn expand(file: &ScenarioFile) -> Result<Vec<Scenario>, Vec<Issue>> {
    let mut out = file.scenarios.clone();
    let mut issues = Vec::new();
    for (i, sweep) in file.sweeps.iter().enumerate() {
        for v in &sweep.values {
            let mut p = serde_json::to_value(&sweep.perturbation).unwrap_or_default();
            let inner = p
                .as_object_mut()
                .and_then(|o| o.values_mut().next())
                .and_then(|x| x.as_object_mut());
            match inner {
                Some(fields) if fields.contains_key(&sweep.field) => {
                    fields.insert(sweep.field.clone(), serde_json::json!(v));
                }
                _ => {
                    issues.push(Issue {
                        path: format!("sweeps[{i}].field"),
                        message: format!("the perturbation has no numeric field {:?}", sweep.field),
                    });
                    break;
                }
            }
            match serde_json::from_value::<Perturbation>(p) {
                Ok(p) => out.push(Scenario {
                    name: format!("{}={v}", sweep.name),
                    perturbations: vec![p],
                }),
                Err(e) => issues.push(Issue {
                    path: format!("sweeps[{i}]"),
                    message: e.to_string(),
                }),
            }
        }
    }
    // "base" names the base row of every result.
    let mut seen = std::collections::HashSet::from(["base"]);
    for (i, s) in out.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            issues.push(Issue {
                path: format!("scenarios[{i}].name"),
                message: format!("duplicate scenario name {:?}", s.name),
            });
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Apply a scenario to the base; every unknown id is reported with its path.
pub fn apply(base: &Instance, scenario: &Scenario, path: &str) -> Result<Instance, Vec<Issue>> {
    let mut inst = base.clone();
    let mut issues = Vec::new();
    let horizon = base.limits.horizon_hours.max(1);
    for (k, p) in scenario.perturbations.iter().enumerate() {
        let here = format!("{path}.perturbations[{k}]");
        let site_ix = |id: &str, issues: &mut Vec<Issue>, inst: &Instance| -> Option<usize> {
            let i = inst.sites.iter().position(|s| s.id == id);
            if i.is_none() {
                issues.push(Issue {
                    path: here.clone(),
                    message: format!("unknown site {id:?}"),
                });
            }
            i
        };
        let sites_or_all =
            |ids: &[String], issues: &mut Vec<Issue>, inst: &Instance| -> Vec<usize> {
                if ids.is_empty() {
                    return (0..inst.sites.len()).collect();
                }
                ids.iter()
                    .filter_map(|id| {
                        let i = inst.sites.iter().position(|s| s.id == *id);
                        if i.is_none() {
                            issues.push(Issue {
                                path: here.clone(),
                                message: format!("unknown site {id:?}"),
                            });
                        }
                        i
                    })
                    .collect()
            };
        match p {
            Perturbation::SiteOutage { site } | Perturbation::RemoveSite { site } => {
                if site_ix(site, &mut issues, &inst).is_some() {
                    for w in &mut inst.workloads {
                        if !w.forbidden_sites.contains(site) {
                            w.forbidden_sites.push(site.clone());
                        }
                        w.pinned_sites.retain(|s| s != site);
                    }
                }
            }
            Perturbation::CoolingLoss { site, fraction } => {
                if !(0.0..1.0).contains(fraction) {
                    issues.push(Issue {
                        path: format!("{here}.cooling_loss.fraction"),
                        message: format!("must be within 0..1, got {fraction}"),
                    });
                } else if let Some(i) = site_ix(site, &mut issues, &inst) {
                    inst.sites[i].cooling.nominal_kw *= 1.0 - fraction;
                }
            }
            Perturbation::HeatWave {
                sites,
                delta_c,
                from_hour,
                hours,
            } => {
                for i in sites_or_all(sites, &mut issues, &inst) {
                    let a = &mut inst.sites[i].ambient;
                    if a.forecast_c.len() < horizon as usize {
                        let last = a.forecast_c.last().copied().unwrap_or(a.current_c);
                        a.forecast_c.resize(horizon as usize, last);
                    }
                    let end =
                        hours.map_or(a.forecast_c.len(), |h| from_hour.saturating_add(h) as usize);
                    for (h, t) in a.forecast_c.iter_mut().enumerate() {
                        if h >= *from_hour as usize && h < end {
                            *t += delta_c;
                        }
                    }
                    if *from_hour == 0 {
                        a.current_c += delta_c;
                    }
                }
            }
            Perturbation::Weather { site, series_c } => {
                if let Some(i) = site_ix(site, &mut issues, &inst) {
                    inst.sites[i].ambient.forecast_c = series_c.clone();
                }
            }
            Perturbation::PowerCap { site, factor } => {
                if let Some(i) = site_ix(site, &mut issues, &inst) {
                    inst.sites[i].power.cap_kw *= factor;
                }
            }
            Perturbation::Price {
                sites,
                multiplier,
                series,
            } => {
                for i in sites_or_all(sites, &mut issues, &inst) {
                    let e = &mut inst.sites[i].energy;
                    e.price_per_kwh = match (series, &e.price_per_kwh) {
                        (Some(s), _) => Price::Series(s.clone()),
                        (None, Price::Flat(p)) => Price::Flat(p * multiplier),
                        (None, Price::Series(s)) => Price::Series(
                            s.iter()
                                .map(|pt| edgeplan_model::instance::PricePoint {
                                    hour: pt.hour,
                                    price_per_kwh: pt.price_per_kwh * multiplier,
                                })
                                .collect(),
                        ),
                    };
                }
            }
            Perturbation::Carbon { sites, multiplier } => {
                for i in sites_or_all(sites, &mut issues, &inst) {
                    inst.sites[i].energy.carbon_g_per_kwh *= multiplier;
                }
            }
            Perturbation::DemandGrowth { factor, selection } => {
                for w in &mut inst.workloads {
                    let chosen = (selection.regions.is_empty() && selection.workloads.is_empty())
                        || selection.workloads.contains(&w.id)
                        || w.traffic
                            .iter()
                            .any(|t| selection.regions.contains(&t.region));
                    if chosen {
                        w.replicas = ((w.replicas as f64 * factor).ceil() as u32).max(1);
                        let placed: u32 = w.current.values().sum();
                        if placed > w.replicas {
                            // Shrinking demand: today's surplus replicas are simply stopped.
                            w.current.clear();
                        }
                    }
                }
            }
            Perturbation::NewSite { template, id, node } => {
                if let Some(i) = site_ix(template, &mut issues, &inst) {
                    let mut s = inst.sites[i].clone();
                    s.id = id.clone();
                    s.name = Some(id.clone());
                    s.node = Some(
                        node.clone()
                            .unwrap_or_else(|| inst.sites[i].node_id().to_string()),
                    );
                    inst.sites.push(s);
                }
            }
            Perturbation::CutLink { a, b } => {
                let before = inst.network.links.len();
                inst.network.links.retain(|l| !same_link(l, a, b));
                if inst.network.links.len() == before {
                    issues.push(Issue {
                        path: here.clone(),
                        message: format!("no link between {a:?} and {b:?}"),
                    });
                }
            }
            Perturbation::AddLatency { a, b, rtt_ms } => {
                let mut found = false;
                for l in inst.network.links.iter_mut().filter(|l| same_link(l, a, b)) {
                    l.rtt_ms += rtt_ms;
                    found = true;
                }
                if !found {
                    issues.push(Issue {
                        path: here.clone(),
                        message: format!("no link between {a:?} and {b:?}"),
                    });
                }
            }
        }
    }
    // Structural problems only: a workload no site can host any more is a
    // finding of the scenario (unplaced), not an error.
    issues.extend(validate_structure(&inst));
    if issues.is_empty() {
        Ok(inst)
    } else {
        Err(issues)
    }
}

fn same_link(l: &Link, a: &str, b: &str) -> bool {
    (l.a == a && l.b == b) || (l.a == b && l.b == a)
}

/// KPIs of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioResult {
    pub scenario: String,
    pub status: String,
    pub objective: f64,
    pub gap: f64,
    pub energy_cost_per_h: f64,
    pub carbon_kg_per_h: f64,
    pub mean_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub slo_violations: u64,
    pub placed_replicas: u64,
    pub unplaced_replicas: u64,
    /// Priority → unplaced replicas.
    pub unplaced_by_priority: BTreeMap<u32, u64>,
    pub moves: u64,
    pub plan_steps: usize,
    pub blocked_moves: usize,
    pub makespan_s: f64,
    pub min_inlet_headroom_c: f64,
    pub min_cooling_headroom_kw: f64,
    pub max_power_use: f64,
    /// Sites where some limit binds, with what binds.
    pub binding_sites: Vec<String>,
    pub sites: Vec<edgeplan_problem::evaluate::SiteKpi>,
    /// Spot replicas admitted, and what they pay per hour at the published
    /// prices (0 without spot workloads).
    #[serde(default)]
    pub spot_replicas: u64,
    #[serde(default)]
    pub spot_revenue_per_h: f64,
    /// Spot replicas the plan from the base placement evicts (with notice).
    #[serde(default)]
    pub spot_evictions: u64,
}

/// Run the base and every scenario (in parallel when `parallel`), each from
/// the base placement. The first result is the base itself. `progress` hears
/// of each result as it finishes, with its index (0 the base, then the
/// scenarios' positions + 1).
pub fn run(
    base: &Instance,
    scenarios: &[Scenario],
    options: &SolveOptions,
    parallel: bool,
    progress: &(dyn Fn(usize, &ScenarioResult) + Sync),
) -> edgeplan_model::Result<Vec<ScenarioResult>> {
    run_until(base, scenarios, options, parallel, progress, &|| false)
}

/// As [`run`], asking `stop` before each solve: once it says so, the
/// scenarios not started yet are skipped and the run ends with
/// [`Error::Cancelled`](edgeplan_model::Error::Cancelled) (a service's client went
/// away; each solve is bounded by its work budget).
pub fn run_until(
    base: &Instance,
    scenarios: &[Scenario],
    options: &SolveOptions,
    parallel: bool,
    progress: &(dyn Fn(usize, &ScenarioResult) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> edgeplan_model::Result<Vec<ScenarioResult>> {
    if stop() {
        return Err(edgeplan_model::Error::Cancelled);
    }
    // On the work budget alone, never the clock: the same tables on any
    // machine, however loaded.
    let options = &SolveOptions {
        deterministic: true,
        work: options.work.or(Some(edgeplan_solve::fast::DEFAULT_WORK)),
        ..options.clone()
    };
    // The base placement: where every scenario (the base row included) starts.
    let base_problem = Problem::build(base)?;
    let base_placement = base_problem.placement_of(&solve(&base_problem, options)?.x);
    let one = |index: usize, s: &Scenario| -> edgeplan_model::Result<ScenarioResult> {
        if stop() {
            return Err(edgeplan_model::Error::Cancelled);
        }
        let mut inst = apply(base, s, &format!("scenario {:?}", s.name))
            .map_err(edgeplan_model::Error::Invalid)?;
        for w in &mut inst.workloads {
            w.current = base_placement
                .assignments
                .get(&w.id)
                .cloned()
                .unwrap_or_default();
            w.current
                .retain(|site, _| !w.forbidden_sites.contains(site));
            let placed: u32 = w.current.values().sum();
            if placed > w.replicas {
                w.current.clear();
            }
        }
        let problem = Problem::build(&inst)?;
        let solved = solve(&problem, options)?;
        let r = evaluate(&s.name, &inst, &problem, &solved)?;
        progress(index, &r);
        Ok(r)
    };
    let base_result = one(
        0,
        &Scenario {
            name: "base".into(),
            perturbations: Vec::new(),
        },
    )?;
    let rest: Vec<edgeplan_model::Result<ScenarioResult>> = if parallel {
        scenarios
            .par_iter()
            .enumerate()
            .map(|(i, s)| one(i + 1, s))
            .collect()
    } else {
        scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| one(i + 1, s))
            .collect()
    };
    let mut out = vec![base_result];
    for r in rest {
        out.push(r?);
    }
    Ok(out)
}

fn evaluate(
    name: &str,
    inst: &Instance,
    problem: &Problem,
    solved: &edgeplan_solve::solver::Solved,
) -> edgeplan_model::Result<ScenarioResult> {
    let report = SolveReport::new(problem, solved);
    let kpis = problem.kpis(&solved.x);
    let migration = plan(inst, problem, &report.placement)?;
    let mut unplaced_by_priority = BTreeMap::new();
    for u in &report.unplaced {
        *unplaced_by_priority.entry(u.priority).or_insert(0) += u.unplaced as u64;
    }
    Ok(ScenarioResult {
        scenario: name.to_string(),
        status: format!("{:?}", report.status).to_lowercase(),
        objective: report.objective.total,
        gap: report.gap,
        energy_cost_per_h: kpis.energy_cost_per_h,
        carbon_kg_per_h: kpis.carbon_kg_per_h,
        mean_latency_ms: kpis.mean_latency_ms,
        p95_latency_ms: problem.latency_quantile_ms(&solved.x, 0.95),
        slo_violations: kpis.slo_violations,
        placed_replicas: kpis.placed_replicas,
        unplaced_replicas: kpis.unplaced_replicas,
        unplaced_by_priority,
        moves: kpis.moves,
        plan_steps: migration.steps.len(),
        blocked_moves: migration.blocked.len(),
        makespan_s: migration.makespan_s,
        min_inlet_headroom_c: kpis.min_inlet_headroom_c,
        min_cooling_headroom_kw: kpis.min_cooling_headroom_kw,
        max_power_use: kpis.max_power_use,
        binding_sites: report
            .binding
            .iter()
            .filter(|b| !b.binding.is_empty())
            .map(|b| format!("{} ({})", b.site, b.binding.join(", ")))
            .collect(),
        sites: report.sites,
        spot_replicas: solved.market.as_deref().map_or(0, |m| {
            m.admitted.iter().map(|a| u64::from(a.replicas)).sum()
        }),
        spot_revenue_per_h: solved.market.as_deref().map_or(0.0, |m| m.revenue_per_hour),
        spot_evictions: migration
            .steps
            .iter()
            .filter(|s| s.kind == edgeplan_model::plan::StepKind::Evict)
            .count() as u64,
    })
}

/// Scenarios as rows, KPIs as columns, deltas against the base (the first row).
pub fn comparison_table(results: &[ScenarioResult]) -> String {
    let Some(base) = results.first() else {
        return String::new();
    };
    type Col = (&'static str, fn(&ScenarioResult) -> f64, usize);
    let mut cols: Vec<Col> = vec![
        ("energy/h", |r| r.energy_cost_per_h, 3),
        ("CO2 kg/h", |r| r.carbon_kg_per_h, 2),
        ("p95 ms", |r| r.p95_latency_ms, 1),
        ("SLO viol", |r| r.slo_violations as f64, 0),
        ("unplaced", |r| r.unplaced_replicas as f64, 0),
        ("moves", |r| r.moves as f64, 0),
        ("makespan s", |r| r.makespan_s, 0),
        ("inlet room °C", |r| r.min_inlet_headroom_c, 1),
        ("max power %", |r| r.max_power_use * 100.0, 0),
    ];
    // Spot figures only where there is spot work.
    if results
        .iter()
        .any(|r| r.spot_replicas > 0 || r.spot_evictions > 0)
    {
        cols.push(("spot", |r| r.spot_replicas as f64, 0));
        cols.push(("spot rev/h", |r| r.spot_revenue_per_h, 4));
        cols.push(("evicted", |r| r.spot_evictions as f64, 0));
    }
    let name_w = results
        .iter()
        .map(|r| r.scenario.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!("{:<name_w$}", "scenario");
    let cells: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            cols.iter()
                .map(|(_, f, p)| {
                    let (v, b) = (f(r), f(base));
                    let (shown, base_shown) = (format!("{v:.p$}"), format!("{b:.p$}"));
                    if shown == base_shown {
                        shown
                    } else {
                        format!("{shown} ({:+.p$})", v - b)
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(c, (h, _, _))| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.chars().count())
        })
        .collect();
    for ((h, _, _), w) in cols.iter().zip(&widths) {
        out.push_str(&format!("  {h:>w$}"));
    }
    out.push('\n');
    for (r, row) in results.iter().zip(&cells) {
        out.push_str(&format!("{:<name_w$}", r.scenario));
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!("  {cell:>w$}"));
        }
        out.push('\n');
    }
    out
}
