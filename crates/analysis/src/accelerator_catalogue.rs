//! The built-in accelerator catalogue (`models/accelerators.json`), made
//! from its input (`models/accelerators.in.json`) and measured samples
//! (`data/gpu_power_hourly.csv`): measured devices get a curve fitted by
//! [`fit_curve`] with its quality; the others their vendor's board power
//! and the mean shape of the measured curves. `edgeplan models
//! fit-accelerators` runs it; a test holds the shipped file equal to it.
//! Pure: text in, values out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use edgeplan_model::accelerator_models::{fit_curve, AcceleratorModel, CurveBasis, CURVE_POINTS};
use edgeplan_model::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueInput {
    #[serde(default)]
    pub about: String,
    pub samples_source: String,
    pub measured: Vec<MeasuredDevice>,
    #[serde(default)]
    pub vendor: Vec<VendorDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredDevice {
    pub name: String,
    pub vendor: String,
    pub device: String,
    pub memory_gib: f64,
    pub tdp_watts: f64,
    /// Servers whose samples are this device's.
    pub servers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorDevice {
    pub name: String,
    pub vendor: String,
    pub device: String,
    pub memory_gib: f64,
    pub tdp_watts: f64,
    pub source: String,
}

/// The catalogue file's shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct Catalogue {
    pub source: String,
    pub accelerators: Vec<AcceleratorModel>,
}

fn bad(path: &str, message: impl std::fmt::Display) -> Error {
    Error::Parse {
        path: path.to_string(),
        message: message.to_string(),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Samples by server from `server,gpu_util_pct,gpu_power_w` rows
/// (utilisation turned into 0–1).
fn samples_by_server(csv_text: &str) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let mut by_server: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| bad(&format!("samples row {}", i + 2), e))?;
        let field = |k: usize| -> Result<f64> {
            row.get(k)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| {
                    bad(
                        &format!("samples row {}, column {k}", i + 2),
                        "not a number",
                    )
                })
        };
        let server = row.get(0).unwrap_or_default().to_string();
        by_server
            .entry(server)
            .or_default()
            .push((field(1)? / 100.0, field(2)?));
    }
    Ok(by_server)
}

/// Build the catalogue. Every measured device's curve comes from its
/// servers' samples; each vendor device's curve is its idle share of board
/// power and the measured curves' mean rise, both normalised to board power.
pub fn build(input: &CatalogueInput, samples_csv: &str) -> Result<Catalogue> {
    let by_server = samples_by_server(samples_csv)?;
    let mut out = Vec::new();
    // Per measured device: idle / TDP and the rise's shape (0 at idle, 1 at 100 %).
    let mut idle_shares = Vec::new();
    let mut shapes: Vec<Vec<f64>> = Vec::new();
    for d in &input.measured {
        let mut samples = Vec::new();
        for s in &d.servers {
            let rows = by_server.get(s).ok_or_else(|| {
                bad(
                    &format!("measured[{}].servers", d.name),
                    format!("no samples of server {s}"),
                )
            })?;
            samples.extend_from_slice(rows);
        }
        let fitted = fit_curve(&samples)
            .ok_or_else(|| bad(&format!("measured[{}]", d.name), "too few samples to fit"))?;
        let watts: Vec<f64> = fitted.watts.iter().map(|w| round2(*w)).collect();
        let (idle, full) = (watts[0], watts[CURVE_POINTS - 1]);
        idle_shares.push(idle / d.tdp_watts);
        if full > idle {
            shapes.push(watts.iter().map(|w| (w - idle) / (full - idle)).collect());
        }
        let mut fit = fitted.fit;
        fit.rmse_watts = round2(fit.rmse_watts);
        fit.mae_watts = round2(fit.mae_watts);
        fit.r2 = (fit.r2 * 1e4).round() / 1e4;
        out.push(AcceleratorModel {
            name: d.name.clone(),
            vendor: d.vendor.clone(),
            device: d.device.clone(),
            memory_gib: d.memory_gib,
            tdp_watts: d.tdp_watts,
            watts,
            basis: CurveBasis::Measured,
            fit: Some(fit),
            source: format!(
                "fitted to hourly per-GPU power and utilisation of {} ({} hourly samples): {}",
                d.servers.join(", "),
                samples.len(),
                input.samples_source
            ),
        });
    }
    if !input.vendor.is_empty() && (idle_shares.is_empty() || shapes.is_empty()) {
        return Err(bad(
            "vendor",
            "vendor devices need a measured curve for their shape",
        ));
    }
    let idle_share = idle_shares.iter().sum::<f64>() / idle_shares.len().max(1) as f64;
    let shape: Vec<f64> = (0..CURVE_POINTS)
        .map(|k| shapes.iter().map(|s| s[k]).sum::<f64>() / shapes.len().max(1) as f64)
        .collect();
    for d in &input.vendor {
        let idle = d.tdp_watts * idle_share;
        out.push(AcceleratorModel {
            name: d.name.clone(),
            vendor: d.vendor.clone(),
            device: d.device.clone(),
            memory_gib: d.memory_gib,
            tdp_watts: d.tdp_watts,
            watts: shape
                .iter()
                .map(|s| round2(idle + (d.tdp_watts - idle) * s))
                .collect(),
            basis: CurveBasis::VendorTdp,
            fit: None,
            source: format!(
                "not measured: {}; idle taken as {:.1} % of board power and the rise as the mean shape of the measured curves in this file",
                d.source,
                idle_share * 100.0
            ),
        });
    }
    Ok(Catalogue {
        source: "accelerator power per device: watts at idle, 10 %, ..., 100 % utilisation; made by `edgeplan models fit-accelerators` from models/accelerators.in.json and data/gpu_power_hourly.csv".into(),
        accelerators: out,
    })
}
