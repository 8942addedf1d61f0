//! The telemetry archive: accepted raw readings rolled into a Parquet file
//! (through polars) for later analysis and reports, and read back as
//! readings. Shell: does file I/O; the core never calls it.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use edgeplan_model::error::{Error, Result};
use edgeplan_telemetry::telemetry::{Reading, SensorKind};

fn archive_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Archive(format!("{}: {e}", path.display()))
}

fn kind_name(kind: SensorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The readings as a frame with one column per field.
pub fn frame(readings: &[Reading]) -> PolarsResult<DataFrame> {
    df!(
        "timestamp_s" => readings.iter().map(|r| r.timestamp_s).collect::<Vec<f64>>(),
        "sensor" => readings.iter().map(|r| r.sensor.as_str()).collect::<Vec<&str>>(),
        "site" => readings.iter().map(|r| r.site.as_str()).collect::<Vec<&str>>(),
        "rack" => readings.iter().map(|r| r.rack.as_deref()).collect::<Vec<Option<&str>>>(),
        "kind" => readings.iter().map(|r| kind_name(r.kind)).collect::<Vec<String>>(),
        "unit" => readings.iter().map(|r| r.unit.as_str()).collect::<Vec<&str>>(),
        "value" => readings.iter().map(|r| r.value).collect::<Vec<f64>>(),
    )
}

/// Write readings to a Parquet file.
pub fn write(path: &Path, readings: &[Reading]) -> Result<()> {
    let mut df = frame(readings).map_err(|e| archive_err(path, e))?;
    let file = File::create(path).map_err(|e| archive_err(path, e))?;
    ParquetWriter::new(file)
        .finish(&mut df)
        .map_err(|e| archive_err(path, e))?;
    Ok(())
}

/// Read readings back from a Parquet archive; rows that do not parse are
/// returned as errors naming the row.
pub fn read(path: &Path) -> Result<(Vec<Reading>, Vec<String>)> {
    let file = File::open(path).map_err(|e| archive_err(path, e))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| archive_err(path, e))?;
    let col = |name: &str| df.column(name).map_err(|e| archive_err(path, e));
    let ts = col("timestamp_s")?
        .f64()
        .map_err(|e| archive_err(path, e))?
        .clone();
    let value = col("value")?
        .f64()
        .map_err(|e| archive_err(path, e))?
        .clone();
    let text = |name: &str| -> Result<StringChunked> {
        Ok(col(name)?.str().map_err(|e| archive_err(path, e))?.clone())
    };
    let (sensor, site, rack, kind, unit) = (
        text("sensor")?,
        text("site")?,
        text("rack")?,
        text("kind")?,
        text("unit")?,
    );
    let mut out = Vec::with_capacity(df.height());
    let mut errors = Vec::new();
    for i in 0..df.height() {
        let kind = kind.get(i).and_then(|k| {
            serde_json::from_value::<SensorKind>(serde_json::Value::String(k.to_string())).ok()
        });
        match (
            ts.get(i),
            value.get(i),
            sensor.get(i),
            site.get(i),
            kind,
            unit.get(i),
        ) {
            (Some(t), Some(v), Some(sensor), Some(site), Some(kind), Some(unit)) => {
                out.push(Reading {
                    sensor: sensor.to_string(),
                    site: site.to_string(),
                    rack: rack.get(i).map(str::to_string),
                    kind,
                    unit: unit.to_string(),
                    value: v,
                    timestamp_s: t,
                })
            }
            _ => errors.push(format!(
                "{}: row {i} is incomplete or has an unknown kind",
                path.display()
            )),
        }
    }
    Ok((out, errors))
}
