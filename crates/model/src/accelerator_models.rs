//! Accelerator (GPU) power models: watts of one device from idle to full
//! utilisation at 0 %, 10 %, …, 100 %, interpolated piecewise linearly like
//! the SPECpower server curves. The built-in catalogue is
//! `models/accelerators.json`, compiled into the binary; measured entries
//! were fitted by [`fit_curve`] from real devices' telemetry, and say so.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::server_models::interpolate;

/// The resource that counts a site's and a replica's accelerators.
pub const GPU_RESOURCE: &str = "gpus";

/// Points on a curve: idle, 10 %, …, 100 %.
pub const CURVE_POINTS: usize = 11;

/// Where an accelerator curve comes from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CurveBasis {
    /// Fitted to measured power and utilisation of real devices.
    Measured,
    /// Built from the vendor's published board power (TDP) and the shape of
    /// the measured curves; no measurement of this device.
    VendorTdp,
    /// Given by whoever wrote the instance.
    #[default]
    Declared,
}

/// How well a fitted curve matches the samples it came from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CurveFit {
    pub samples: usize,
    /// Root mean square of the residuals, W.
    pub rmse_watts: f64,
    /// Mean absolute residual, W.
    pub mae_watts: f64,
    /// Share of the variance the curve explains.
    pub r2: f64,
    /// Samples per 10 % utilisation bin (0–10 %, …, 90–100 %): where the
    /// curve rests on few samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples_per_bin: Vec<usize>,
}

/// One accelerator's power curve.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_gib: f64,
    /// The vendor's maximum board power, W (0: not given).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tdp_watts: f64,
    /// Watts of one device at 0 % (idle), 10 %, …, 100 % utilisation: 11 values.
    pub watts: Vec<f64>,
    #[serde(default)]
    pub basis: CurveBasis,
    /// The fit's quality, for measured curves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<CurveFit>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl AcceleratorModel {
    /// Watts of one device at utilisation `u` (clamped to 0–1).
    pub fn watts_at(&self, u: f64) -> f64 {
        interpolate(&self.watts, u)
    }

    pub fn idle_watts(&self) -> f64 {
        self.watts.first().copied().unwrap_or(0.0)
    }

    /// Power of one device above idle at utilisation `u`, kW.
    pub fn dynamic_kw(&self, u: f64) -> f64 {
        (self.watts_at(u) - self.idle_watts()) / 1000.0
    }
}

#[derive(Deserialize)]
struct Catalogue {
    accelerators: Vec<AcceleratorModel>,
}

/// The built-in catalogue, by name.
pub fn builtin() -> &'static BTreeMap<String, AcceleratorModel> {
    static CATALOGUE: OnceLock<BTreeMap<String, AcceleratorModel>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let text = include_str!("../../../models/accelerators.json");
        // The file ships with the binary and is tested; failing here is a build defect.
        let cat: Catalogue = serde_json::from_str(text).expect("models/accelerators.json is valid");
        cat.accelerators
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect()
    })
}

/// Built-in models overlaid with an instance's own.
pub fn catalogue_with(extra: &[AcceleratorModel]) -> BTreeMap<String, AcceleratorModel> {
    let mut all = builtin().clone();
    for m in extra {
        all.insert(m.name.clone(), m.clone());
    }
    all
}

/// A curve fitted to (utilisation 0–1, watts) samples.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedCurve {
    /// Watts at 0 %, 10 %, …, 100 %.
    pub watts: Vec<f64>,
    pub fit: CurveFit,
}

/// Least-squares fit of a non-decreasing piecewise-linear curve with knots
/// at 0, 0.1, …, 1 to (utilisation, watts) samples. The curve is written
/// as an idle value plus non-negative rises per segment, so it never falls
/// as utilisation grows (more work never draws less power); the rises are
/// found by coordinate descent on the normal equations, which converges for
/// this convex problem. A segment no sample reaches keeps the curve flat.
/// `None` for fewer than [`CURVE_POINTS`] samples or no spread in
/// utilisation. Deterministic.
pub fn fit_curve(samples: &[(f64, f64)]) -> Option<FittedCurve> {
    let samples: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(u, w)| u.is_finite() && w.is_finite())
        .map(|&(u, w)| (u.clamp(0.0, 1.0), w))
        .collect();
    let n = samples.len();
    if n < CURVE_POINTS {
        return None;
    }
    let (lo, hi) = samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(u, _)| {
            (lo.min(u), hi.max(u))
        });
    if hi - lo < 1e-9 {
        return None;
    }
    // Parameters: p[0] = idle watts (free), p[k] = rise over segment k (≥ 0).
    // Feature k ≥ 1 of a sample is the part of segment k it has covered (0–1).
    const P: usize = CURVE_POINTS;
    let features = |u: f64| -> [f64; P] {
        let mut f = [0.0; P];
        f[0] = 1.0;
        let pos = u * (P - 1) as f64;
        for (k, fk) in f.iter_mut().enumerate().skip(1) {
            *fk = (pos - (k - 1) as f64).clamp(0.0, 1.0);
        }
        f
    };
    let mut gram = [[0.0; P]; P];
    let mut rhs = [0.0; P];
    for &(u, w) in &samples {
        let f = features(u);
        for i in 0..P {
            rhs[i] += f[i] * w;
            for j in 0..P {
                gram[i][j] += f[i] * f[j];
            }
        }
    }
    let mut p = [0.0; P];
    p[0] = samples.iter().map(|s| s.1).sum::<f64>() / n as f64;
    for _sweep in 0..20_000 {
        let mut change: f64 = 0.0;
        for k in 0..P {
            if gram[k][k] <= 1e-12 {
                continue;
            }
            let others: f64 = (0..P).filter(|&j| j != k).map(|j| gram[k][j] * p[j]).sum();
            let mut v = (rhs[k] - others) / gram[k][k];
            if k > 0 {
                v = v.max(0.0);
            }
            change = change.max((v - p[k]).abs());
            p[k] = v;
        }
        if change < 1e-9 {
            break;
        }
    }
    let mut watts = Vec::with_capacity(P);
    let mut level = p[0];
    watts.push(level);
    for rise in &p[1..] {
        level += rise;
        watts.push(level);
    }
    let mean = samples.iter().map(|s| s.1).sum::<f64>() / n as f64;
    let (mut sse, mut sae, mut sst) = (0.0, 0.0, 0.0);
    let mut samples_per_bin = vec![0; P - 1];
    for &(u, w) in &samples {
        let r = w - interpolate(&watts, u);
        sse += r * r;
        sae += r.abs();
        sst += (w - mean).powi(2);
        samples_per_bin[((u * (P - 1) as f64) as usize).min(P - 2)] += 1;
    }
    Some(FittedCurve {
        watts,
        fit: CurveFit {
            samples: n,
            rmse_watts: (sse / n as f64).sqrt(),
            mae_watts: sae / n as f64,
            r2: if sst > 0.0 { 1.0 - sse / sst } else { 1.0 },
            samples_per_bin,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_curves_are_monotone_and_sourced() {
        let cat = builtin();
        assert!(cat.len() >= 4, "{} models", cat.len());
        for m in cat.values() {
            assert_eq!(m.watts.len(), CURVE_POINTS, "{}", m.name);
            assert!(
                m.watts.windows(2).all(|w| w[0] <= w[1] + 1e-9),
                "{} not monotone",
                m.name
            );
            assert!(!m.source.is_empty(), "{} has no source", m.name);
            assert_ne!(m.basis, CurveBasis::Declared, "{}", m.name);
            assert_eq!(
                m.basis == CurveBasis::Measured,
                m.fit.is_some(),
                "{}",
                m.name
            );
        }
    }

    /// A small deterministic generator: the model crate takes no RNG dependency.
    fn noise(state: &mut u64) -> f64 {
        // xorshift64*, then Box–Muller for a standard normal.
        let mut next = || {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (a, b) = (next().max(1e-12), next());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }

    #[test]
    fn the_fit_recovers_a_known_curve_from_noisy_samples() {
        // A convex curve like a GPU's: 40 W idle, 300 W at full load.
        let truth: Vec<f64> = (0..CURVE_POINTS)
            .map(|k| {
                let u = k as f64 / 10.0;
                40.0 + 120.0 * u + 140.0 * u * u
            })
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let samples: Vec<(f64, f64)> = (0..20_000)
            .map(|i| {
                let u = (i as f64 * 0.618_033_988_7).fract();
                (u, interpolate(&truth, u) + 15.0 * noise(&mut state))
            })
            .collect();
        let fitted = fit_curve(&samples).expect("a fit");
        for (k, (got, want)) in fitted.watts.iter().zip(&truth).enumerate() {
            assert!(
                (got - want).abs() < 2.0,
                "point {k}: {got:.2} W, truth {want:.2} W"
            );
        }
        assert!(
            (fitted.fit.rmse_watts - 15.0).abs() < 0.5,
            "{:?}",
            fitted.fit
        );
        assert!(fitted.fit.r2 > 0.9, "{:?}", fitted.fit);
        assert_eq!(fitted.fit.samples_per_bin.iter().sum::<usize>(), 20_000);
    }

    #[test]
    fn the_fit_never_falls_and_stays_flat_where_no_sample_reaches() {
        // Noise that would make a free fit dip; no samples above 50 %.
        let samples: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let u = (i % 50) as f64 / 100.0;
                (u, 100.0 + if i % 2 == 0 { 30.0 } else { -30.0 })
            })
            .collect();
        let fitted = fit_curve(&samples).expect("a fit");
        assert!(fitted.watts.windows(2).all(|w| w[0] <= w[1] + 1e-9));
        assert!((fitted.watts[10] - fitted.watts[5]).abs() < 1e-9);
        assert!(fit_curve(&samples[..5]).is_none());
        assert!(fit_curve(&[(0.3, 1.0); 40]).is_none());
    }
}
