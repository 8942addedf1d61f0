//! Effective capacity: what telemetry says a site may take. Fits the thermal
//! model (inlet − supply against rack power, least squares) and the power
//! calibration per site, forecasts ambient and workload utilisation over the
//! horizon, and writes the result into a copy of the instance, which the
//! problem builder then turns into limits. One function, used by `solve`,
//! what-if and reports alike. Falls back to declared values until enough data
//! has arrived, and to conservative values when sensors go stale. Pure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::forecast::HoltWinters;
use crate::telemetry::{Rejection, SensorKind, TelemetryState};
use edgeplan_model::accelerator_models;
use edgeplan_model::instance::Instance;
use edgeplan_model::server_models::catalogue_with;
use edgeplan_physics::physics::{worst_ambient_c, SitePhysics};
use edgeplan_physics::power::SitePowerModel;

/// Knobs of the effective-capacity model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EffectiveOptions {
    /// Paired samples needed before a fit replaces the declared coefficients.
    pub min_fit_samples: usize,
    /// Fits explaining less than this share of the variance are not used.
    pub min_r2: f64,
    /// Added to forecast ambient, °C.
    pub forecast_margin_c: f64,
    /// Added to the worst known ambient when the ambient sensor is stale, °C.
    pub stale_margin_c: f64,
}

impl Default for EffectiveOptions {
    fn default() -> Self {
        Self {
            min_fit_samples: 30,
            min_r2: 0.3,
            forecast_margin_c: 1.0,
            stale_margin_c: 3.0,
        }
    }
}

/// A straight-line fit `y = intercept + slope · x`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineFit {
    pub intercept: f64,
    pub slope: f64,
    pub r2: f64,
    /// Standard deviation of the residuals.
    pub residual: f64,
    pub samples: usize,
}

/// Ordinary least squares over the points; `None` for fewer than 3 points
/// or no spread in x.
pub fn fit_line(points: impl IntoIterator<Item = (f64, f64)>) -> Option<LineFit> {
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    let n = xs.len();
    if n < 3 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(&xs), mean(&ys));
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        let (dx, dy) = (x - mx, y - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 1e-12 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (y - slope * x - intercept).powi(2))
        .sum();
    Some(LineFit {
        intercept,
        slope,
        r2: if syy > 0.0 { 1.0 - sse / syy } else { 1.0 },
        residual: (sse / (n as f64 - 2.0).max(1.0)).sqrt(),
        samples: n,
    })
}

/// A scale through the origin, `measured ≈ factor · modelled`, by least
/// squares: how far a device's real power sits from its curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScaleFit {
    pub factor: f64,
    /// Share of the measured variance the scaled model explains.
    pub r2: f64,
    /// Root mean square of the residuals, in the measurement's unit.
    pub residual: f64,
    pub samples: usize,
}

/// Least-squares `factor` over (modelled, measured) points; `None` for
/// fewer than 3 points or a model that is zero throughout.
pub fn fit_scale(points: impl IntoIterator<Item = (f64, f64)>) -> Option<ScaleFit> {
    let points: Vec<(f64, f64)> = points.into_iter().collect();
    let n = points.len();
    if n < 3 {
        return None;
    }
    let (spp, spm) = points
        .iter()
        .fold((0.0, 0.0), |(pp, pm), (p, m)| (pp + p * p, pm + p * m));
    if spp <= 1e-12 {
        return None;
    }
    let factor = spm / spp;
    let mean = points.iter().map(|(_, m)| m).sum::<f64>() / n as f64;
    let (sse, sst) = points.iter().fold((0.0, 0.0), |(e, t), (p, m)| {
        (e + (m - factor * p).powi(2), t + (m - mean).powi(2))
    });
    Some(ScaleFit {
        factor,
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 1.0 },
        residual: (sse / n as f64).sqrt(),
        samples: n,
    })
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Fitted or forecast from telemetry.
    Telemetry,
    /// The instance's declared value (not enough data yet).
    Declared,
    /// A conservative stand-in (stale sensors).
    Conservative,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiteEffect {
    pub site: String,
    pub ambient_source: Source,
    /// The ambient that sets the limits (worst of the horizon, margin included), °C.
    pub ambient_c: f64,
    pub recirc_source: Source,
    pub recirc_c_per_kw: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thermal_fit: Option<LineFit>,
    pub calibration_source: Source,
    pub calibration: f64,
    /// The accelerators' calibration (1 at a site without accelerators).
    pub gpu_calibration_source: Source,
    pub gpu_calibration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_fit: Option<ScaleFit>,
    pub stale_sensors: Vec<String>,
    /// Effective IT limit before and after telemetry, kW.
    pub it_limit_kw_declared: f64,
    pub it_limit_kw: f64,
    /// In words, for operators.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadEffect {
    pub workload: String,
    pub source: Source,
    pub utilization_declared: f64,
    pub utilization: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EffectiveReport {
    pub accepted: u64,
    pub rejected: std::collections::BTreeMap<Rejection, u64>,
    pub sites: Vec<SiteEffect>,
    pub workloads: Vec<WorkloadEffect>,
}

/// The instance as telemetry says it is at `now_s`.
pub fn effective_instance(
    base: &Instance,
    t: &TelemetryState,
    now_s: f64,
    opts: &EffectiveOptions,
) -> (Instance, EffectiveReport) {
    let mut inst = base.clone();
    // Series anchored to a start time are read at `now_s` first, so
    // declared and measured values speak of the same hours.
    inst.read_at(now_s);
    let horizon = base.limits.horizon_hours.max(1) as usize;
    let hw = HoltWinters::default();
    let models = catalogue_with(&base.server_models);
    let accelerators = accelerator_models::catalogue_with(&base.accelerator_models);
    // Per site: the accelerators' modelled power as declared (idle plus
    // today's replicas), which the server calibration leaves out of the
    // site's measured power when no accelerator meter says better.
    let declared_gpu_kw: Vec<f64> = inst
        .sites
        .iter()
        .map(|site| {
            let Ok(power) = SitePowerModel::of(site, &models, &accelerators) else {
                return 0.0;
            };
            power.accelerators_idle_kw()
                + inst
                    .workloads
                    .iter()
                    .map(|w| {
                        w.current.get(&site.id).copied().unwrap_or(0) as f64
                            * power.replica_gpu_kw(w)
                    })
                    .sum::<f64>()
        })
        .collect();
    let mut sites = Vec::with_capacity(inst.sites.len());
    for (site, declared_gpu_kw) in inst.sites.iter_mut().zip(declared_gpu_kw) {
        let declared = site.clone();
        let mut notes = Vec::new();
        let stale: Vec<(String, SensorKind)> = t
            .stale_sensors(&site.id, now_s)
            .into_iter()
            .map(|(id, k)| (id.to_string(), k))
            .collect();
        let is_stale = |k: SensorKind| stale.iter().any(|(_, kind)| *kind == k);

        // Ambient: forecast, latest, or conservative.
        let latest = t
            .latest(&site.id, SensorKind::Ambient, None)
            .map(|s| s.last);
        let ambient_source = if is_stale(SensorKind::Ambient) {
            let worst = worst_ambient_c(&declared.ambient, base.limits.horizon_hours)
                .max(latest.unwrap_or(f64::MIN));
            site.ambient.current_c = worst + opts.stale_margin_c;
            site.ambient.forecast_c.clear();
            notes.push(format!(
                "ambient sensor silent: assuming {:.1} °C (worst known + {} °C)",
                site.ambient.current_c, opts.stale_margin_c
            ));
            Source::Conservative
        } else if let Some(series) = t.ambient_hourly.get(&site.id).map(|s| s.values()) {
            match hw.fit(&series) {
                Some(state) => {
                    site.ambient.current_c = latest.unwrap_or(site.ambient.current_c);
                    site.ambient.forecast_c = state
                        .forecasts(horizon)
                        .into_iter()
                        .map(|f| round2(f + opts.forecast_margin_c))
                        .collect();
                    Source::Telemetry
                }
                None => {
                    // Too short for a seasonal model: the declared forecast, never below what is measured.
                    let now = latest.unwrap_or(site.ambient.current_c);
                    site.ambient.current_c = now;
                    for f in &mut site.ambient.forecast_c {
                        *f = f.max(now);
                    }
                    notes.push(format!(
                        "{} h of ambient history, a forecast needs {}: declared forecast, floored at the latest reading",
                        series.len(),
                        2 * hw.period
                    ));
                    Source::Declared
                }
            }
        } else {
            Source::Declared
        };
        if let Some(h) = t.latest(&site.id, SensorKind::Humidity, None) {
            if !is_stale(SensorKind::Humidity) {
                site.ambient.humidity_pct = Some(h.last);
                site.ambient.dew_point_c = None;
            }
        }

        // Thermal: pooled pairs of all racks.
        let pairs = t
            .thermal_pairs
            .get(&site.id)
            .into_iter()
            .flat_map(|racks| racks.values())
            .flat_map(|q| q.iter().copied());
        let fit = fit_line(pairs);
        let usable = fit
            .filter(|f| f.samples >= opts.min_fit_samples && f.r2 >= opts.min_r2 && f.slope >= 0.0);
        let inlet_stale = is_stale(SensorKind::Inlet)
            || is_stale(SensorKind::RackPower)
            || is_stale(SensorKind::Supply);
        let recirc_source = match usable {
            Some(f) if inlet_stale => {
                site.thermal.recirc_c_per_kw = f.slope.max(declared.thermal.recirc_c_per_kw);
                notes.push(
                    "rack sensors silent: the larger of fitted and declared recirculation".into(),
                );
                Source::Conservative
            }
            Some(f) => {
                site.thermal.recirc_c_per_kw = round4(f.slope);
                // A positive offset at zero load eats into the margin.
                site.thermal.margin_c = declared.thermal.margin_c + f.intercept.max(0.0);
                Source::Telemetry
            }
            None => {
                let n = fit.map_or(0, |f| f.samples);
                if n < opts.min_fit_samples {
                    notes.push(format!(
                        "thermal model: declared coefficients (only {n} paired samples, need {})",
                        opts.min_fit_samples
                    ));
                } else {
                    notes.push(format!(
                        "thermal model: declared coefficients (fit R² {:.2} below {})",
                        fit.map_or(0.0, |f| f.r2),
                        opts.min_r2
                    ));
                }
                Source::Declared
            }
        };

        // Accelerator calibration first: the server calibration below
        // takes the accelerators' power out of the site's.
        let gpu_pairs = t.gpu_pairs.get(&site.id);
        let (gpu_calibration_source, gpu_fit, measured_gpu_kw) = gpu_calibration(
            site,
            &accelerators,
            gpu_pairs,
            is_stale(SensorKind::GpuPower),
            opts,
            &mut notes,
        );
        let gpu_kw_now = measured_gpu_kw.unwrap_or(declared_gpu_kw);

        // Power calibration: measured site IT kW (less the accelerators')
        // over the server model at the same utilisation.
        let model = models.get(&site.servers.model);
        let mut calibration_source = Source::Declared;
        if let (Some(model), Some(q)) = (model, t.power_pairs.get(&site.id)) {
            if q.len() >= opts.min_fit_samples && !is_stale(SensorKind::SitePower) {
                let servers = site.servers.count as f64;
                let (measured, modelled) = q.iter().fold((0.0, 0.0), |(m, p), &(u, kw)| {
                    (
                        m + kw - gpu_kw_now,
                        p + servers * model.watts_at(u) / 1000.0,
                    )
                });
                if modelled > 0.0 {
                    site.power.calibration = round4((measured / modelled).clamp(0.5, 2.0));
                    calibration_source = Source::Telemetry;
                }
            }
        }

        let limit_of = |s: &edgeplan_model::instance::Site| {
            SitePowerModel::of(s, &models, &accelerators).map_or(0.0, |p| {
                SitePhysics::of(s, &p, base.limits.horizon_hours).it_limit_kw
            })
        };
        sites.push(SiteEffect {
            site: site.id.clone(),
            ambient_source,
            ambient_c: worst_ambient_c(&site.ambient, base.limits.horizon_hours),
            recirc_source,
            recirc_c_per_kw: site.thermal.recirc_c_per_kw,
            thermal_fit: fit,
            calibration_source,
            calibration: site.power.calibration,
            gpu_calibration_source,
            gpu_calibration: site.accelerators.as_ref().map_or(1.0, |a| a.calibration),
            gpu_fit,
            stale_sensors: stale.iter().map(|(id, _)| id.clone()).collect(),
            it_limit_kw_declared: limit_of(&declared),
            it_limit_kw: limit_of(site),
            notes,
        });
    }

    // Demand: the highest forecast utilisation over the horizon.
    let mut workloads = Vec::new();
    for w in &mut inst.workloads {
        let declared = w.utilization;
        let source = match t.demand_hourly.get(&w.id).map(|s| s.values()) {
            Some(series) => match hw.fit(&series) {
                Some(state) => {
                    let peak = state
                        .forecasts(horizon)
                        .into_iter()
                        .fold(f64::MIN, f64::max);
                    w.utilization = round4(peak.clamp(0.01, 1.0));
                    Source::Telemetry
                }
                None => {
                    // Short history: its 95th percentile, never below the declared value.
                    let p95 = t.sensors.get(&w.id).map_or(declared, |s| s.quantile(0.95));
                    w.utilization = round4(p95.max(declared).clamp(0.0, 1.0));
                    Source::Declared
                }
            },
            None => Source::Declared,
        };
        workloads.push(WorkloadEffect {
            workload: w.id.clone(),
            source,
            utilization_declared: declared,
            utilization: w.utilization,
        });
    }
    let report = EffectiveReport {
        accepted: t.accepted,
        rejected: t.rejected.clone(),
        sites,
        workloads,
    };
    (inst, report)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// A site's accelerator calibration from (utilisation, kW) pairs: the
/// least-squares scale of its curve, used when enough pairs fit well; the
/// larger of declared and fitted (never less power than either says) when
/// the meter went silent or the fit is poor; declared otherwise. Returns
/// the source, the fit, and the accelerators' mean measured kW.
fn gpu_calibration(
    site: &mut edgeplan_model::instance::Site,
    catalogue: &std::collections::BTreeMap<String, accelerator_models::AcceleratorModel>,
    pairs: Option<&std::collections::VecDeque<(f64, f64)>>,
    stale: bool,
    opts: &EffectiveOptions,
    notes: &mut Vec<String>,
) -> (Source, Option<ScaleFit>, Option<f64>) {
    let (Some(fleet), Some(pairs)) = (site.accelerators.as_mut(), pairs) else {
        return (Source::Declared, None, None);
    };
    let Some(model) = catalogue.get(&fleet.model) else {
        return (Source::Declared, None, None);
    };
    let count = fleet.count as f64;
    let fit = fit_scale(
        pairs
            .iter()
            .map(|&(u, kw)| (count * model.watts_at(u) / 1000.0, kw)),
    );
    let measured_kw =
        (!pairs.is_empty()).then(|| pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64);
    let Some(f) = fit else {
        return (Source::Declared, None, measured_kw);
    };
    let factor = round4(f.factor.clamp(0.5, 2.0));
    if f.samples < opts.min_fit_samples {
        notes.push(format!(
            "accelerator power: declared curve (only {} paired samples, need {})",
            f.samples, opts.min_fit_samples
        ));
        return (Source::Declared, Some(f), measured_kw);
    }
    if stale || f.r2 < opts.min_r2 {
        let why = if stale {
            "accelerator meter silent".to_string()
        } else {
            format!("fit R² {:.2} below {}", f.r2, opts.min_r2)
        };
        fleet.calibration = fleet.calibration.max(factor);
        notes.push(format!(
            "accelerator power: {why}: the larger of declared and fitted calibration ({:.3})",
            fleet.calibration
        ));
        // A silent meter's past mean says nothing of now.
        return (
            Source::Conservative,
            Some(f),
            (!stale).then_some(measured_kw).flatten(),
        );
    }
    fleet.calibration = factor;
    (Source::Telemetry, Some(f), measured_kw)
}
