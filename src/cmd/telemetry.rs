//! `edgeplan telemetry`: sensor readings (CSV or a Parquet archive) applied
//! to an instance, giving the effective instance and a report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use edgeplan::instance::Instance;
use edgeplan::validate::validate;

use super::io::{load, write, write_out};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// CSV with columns timestamp_s,sensor,site,rack,kind,unit,value, or a
    /// Parquet archive written by `--archive`.
    #[arg(long)]
    pub readings: PathBuf,
    /// Also write the accepted readings to this Parquet file.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// The time to evaluate at (Unix s); defaults to the newest reading.
    #[arg(long)]
    pub now: Option<f64>,
    /// Where to write the effective instance (stdout if absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write the report (fits, forecasts, fallbacks, rejections) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        readings,
        archive,
        now,
        out,
        report,
    } = args;
    let inst = load(&instance)?;
    let (state, accepted, malformed) = read_telemetry(&inst, &readings)?;
    if let Some(path) = &archive {
        edgeplan::archive::write(path, &accepted)?;
        eprintln!("archived {} readings to {}", accepted.len(), path.display());
    }
    let now_s = now.unwrap_or_else(|| state.sensors.values().map(|s| s.last_s).fold(0.0, f64::max));
    let (effective, rep) = edgeplan::effective::effective_instance(
        &inst,
        &state,
        now_s,
        &edgeplan::effective::EffectiveOptions::default(),
    );
    let issues = validate(&effective);
    if !issues.is_empty() {
        for i in &issues {
            eprintln!("effective instance: {i}");
        }
        bail!("telemetry makes the instance invalid; nothing written");
    }
    write_out(
        out.as_deref(),
        &(serde_json::to_string_pretty(&effective)? + "\n"),
    )?;
    if let Some(path) = report {
        write(&path, &(serde_json::to_string_pretty(&rep)? + "\n"))?;
    }
    eprintln!(
        "telemetry: {} readings accepted, {} rejected, {malformed} malformed",
        rep.accepted,
        rep.rejected.values().sum::<u64>()
    );
    for (reason, n) in &rep.rejected {
        eprintln!("  rejected {n}: {reason}");
    }
    for s in &rep.sites {
        eprintln!(
            "  {}: IT limit {:.2} → {:.2} kW at {:.1} °C (ambient {:?}, recirculation {:?} {:.3} °C/kW, calibration {:.3})",
            s.site, s.it_limit_kw_declared, s.it_limit_kw, s.ambient_c, s.ambient_source, s.recirc_source, s.recirc_c_per_kw, s.calibration
        );
        for n in &s.notes {
            eprintln!("    {n}");
        }
    }
    Ok(())
}

/// One CSV row of telemetry.
#[derive(serde::Deserialize)]
struct Row {
    timestamp_s: f64,
    sensor: String,
    site: String,
    rack: Option<String>,
    kind: edgeplan::telemetry::SensorKind,
    unit: String,
    value: f64,
}

/// Readings from a CSV file or a Parquet archive (by extension); malformed
/// rows are reported (the first few by line) and counted.
fn read_readings(path: &Path) -> Result<(Vec<edgeplan::telemetry::Reading>, u64)> {
    if path.extension().and_then(|e| e.to_str()) == Some("parquet") {
        let (readings, errors) = edgeplan::archive::read(path)?;
        for e in errors.iter().take(5) {
            eprintln!("{e}");
        }
        return Ok((readings, errors.len() as u64));
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut readings = Vec::new();
    let mut malformed = 0u64;
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        match row {
            Ok(r) => readings.push(edgeplan::telemetry::Reading {
                sensor: r.sensor,
                site: r.site,
                rack: r.rack.filter(|s| !s.is_empty()),
                kind: r.kind,
                unit: r.unit,
                value: r.value,
                timestamp_s: r.timestamp_s,
            }),
            Err(e) => {
                malformed += 1;
                if malformed <= 5 {
                    eprintln!("{}: line {}: {e}", path.display(), i + 2);
                }
            }
        }
    }
    Ok((readings, malformed))
}

/// Ingest readings; returns the state, the accepted readings and the malformed count.
fn read_telemetry(
    inst: &Instance,
    path: &Path,
) -> Result<(
    edgeplan::telemetry::TelemetryState,
    Vec<edgeplan::telemetry::Reading>,
    u64,
)> {
    let (readings, malformed) = read_readings(path)?;
    let mut state = edgeplan::telemetry::TelemetryState::new(Default::default());
    let sites: std::collections::HashSet<&str> = inst.sites.iter().map(|s| s.id.as_str()).collect();
    let accepted = readings
        .into_iter()
        .filter(|r| state.ingest(r, |s| sites.contains(s)).is_ok())
        .collect();
    Ok((state, accepted, malformed))
}
