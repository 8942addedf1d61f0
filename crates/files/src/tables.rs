//! KPI tables of what-if and replay results as polars frames, written as CSV, Parquet or
//! JSON. Shell: does file I/O.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use edgeplan_analysis::replay::{PolicyDay, PolicyHour, Replay, SiteHour};
use edgeplan_analysis::whatif::ScenarioResult;
use edgeplan_model::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Parquet,
    Json,
}

/// One row per scenario.
pub fn scenario_frame(results: &[ScenarioResult]) -> PolarsResult<DataFrame> {
    let f = |g: fn(&ScenarioResult) -> f64| results.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&ScenarioResult) -> u64| results.iter().map(g).collect::<Vec<u64>>();
    df!(
        "scenario" => results.iter().map(|r| r.scenario.as_str()).collect::<Vec<_>>(),
        "status" => results.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        "objective" => f(|r| r.objective),
        "gap" => f(|r| r.gap),
        "energy_cost_per_h" => f(|r| r.energy_cost_per_h),
        "carbon_kg_per_h" => f(|r| r.carbon_kg_per_h),
        "mean_latency_ms" => f(|r| r.mean_latency_ms),
        "p95_latency_ms" => f(|r| r.p95_latency_ms),
        "slo_violations" => u(|r| r.slo_violations),
        "placed_replicas" => u(|r| r.placed_replicas),
        "unplaced_replicas" => u(|r| r.unplaced_replicas),
        "unplaced_by_priority" => results
            .iter()
            .map(|r| r.unplaced_by_priority.iter().map(|(p, n)| format!("{p}:{n}")).collect::<Vec<_>>().join(";"))
            .collect::<Vec<_>>(),
        "moves" => u(|r| r.moves),
        "plan_steps" => u(|r| r.plan_steps as u64),
        "blocked_moves" => u(|r| r.blocked_moves as u64),
        "makespan_s" => f(|r| r.makespan_s),
        "min_inlet_headroom_c" => f(|r| r.min_inlet_headroom_c),
        "min_cooling_headroom_kw" => f(|r| r.min_cooling_headroom_kw),
        "max_power_use" => f(|r| r.max_power_use),
        "binding_sites" => results.iter().map(|r| r.binding_sites.join("; ")).collect::<Vec<_>>(),
        "spot_replicas" => u(|r| r.spot_replicas),
        "spot_revenue_per_h" => f(|r| r.spot_revenue_per_h),
        "spot_evictions" => u(|r| r.spot_evictions),
    )
}

/// One row per scenario and site.
pub fn site_frame(results: &[ScenarioResult]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&str, &edgeplan_problem::evaluate::SiteKpi)> = results
        .iter()
        .flat_map(|r| r.sites.iter().map(move |s| (r.scenario.as_str(), s)))
        .collect();
    let f = |g: fn(&edgeplan_problem::evaluate::SiteKpi) -> f64| {
        rows.iter().map(|(_, s)| g(s)).collect::<Vec<f64>>()
    };
    df!(
        "scenario" => rows.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "site" => rows.iter().map(|(_, s)| s.site.as_str()).collect::<Vec<_>>(),
        "cpu_utilization" => rows.iter().map(|(_, s)| s.utilization.get("cpu_cores").copied().unwrap_or(0.0)).collect::<Vec<f64>>(),
        "it_kw" => f(|s| s.it_kw),
        "it_limit_kw" => f(|s| s.it_limit_kw),
        "facility_kw" => f(|s| s.facility_kw),
        "power_cap_kw" => f(|s| s.power_cap_kw),
        "inlet_c" => f(|s| s.inlet_c),
        "inlet_limit_c" => f(|s| s.inlet_limit_c),
        "cooling_headroom_kw" => f(|s| s.cooling_headroom_kw),
        "ambient_c" => f(|s| s.ambient_c),
        "binding" => rows.iter().map(|(_, s)| s.binding.describe()).collect::<Vec<_>>(),
    )
}

/// `results.parquet` → `results-sites.parquet`.
pub fn sites_path(path: &Path) -> PathBuf {
    beside(path, "sites")
}

/// `NAME.EXT` → `NAME-SUFFIX.EXT`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("results");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("csv");
    path.with_file_name(format!("{stem}-{suffix}.{ext}"))
}

fn write_frame(path: &Path, df: &mut DataFrame, format: TableFormat) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Archive(format!("{}: {e}", path.display()));
    let file = File::create(path).map_err(|e| err(&e))?;
    match format {
        TableFormat::Csv => CsvWriter::new(file).finish(df).map_err(|e| err(&e)),
        TableFormat::Parquet => ParquetWriter::new(file)
            .finish(df)
            .map(|_| ())
            .map_err(|e| err(&e)),
        TableFormat::Json => JsonWriter::new(file)
            .with_json_format(JsonFormat::Json)
            .finish(df)
            .map_err(|e| err(&e)),
    }
}

/// Write the scenario table to `path` and the per-site table beside it.
pub fn write(path: &Path, results: &[ScenarioResult], format: TableFormat) -> Result<PathBuf> {
    let err = |e: PolarsError| Error::Archive(format!("{}: {e}", path.display()));
    write_frame(path, &mut scenario_frame(results).map_err(err)?, format)?;
    let sites = sites_path(path);
    write_frame(&sites, &mut site_frame(results).map_err(err)?, format)?;
    Ok(sites)
}

/// One row per hour and policy of a replay.
pub fn replay_hour_frame(replay: &Replay) -> PolarsResult<DataFrame> {
    let rows = &replay.policy_hours;
    let f = |g: fn(&PolicyHour) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&PolicyHour) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    df!(
        "hour" => u(|h| h.hour as u64),
        "utc" => rows.iter().map(|h| replay.hour_labels[replay.offset_of(h.hour)].as_str()).collect::<Vec<_>>(),
        "policy" => rows.iter().map(|h| h.policy).collect::<Vec<_>>(),
        "energy_cost" => f(|h| h.energy_cost),
        "carbon_kg" => f(|h| h.carbon_kg),
        "moves" => u(|h| h.moves as u64),
        "blocked_moves" => u(|h| h.blocked_moves as u64),
        "waves" => u(|h| h.waves as u64),
        "migration_s" => f(|h| h.migration_s),
        "migrated_gib" => f(|h| h.migrated_gib),
        "migration_cost" => f(|h| h.migration_cost),
        "unplaced_replicas" => u(|h| h.unplaced_replicas),
        "unplaced_by_priority" => rows.iter().map(|h| by_priority(&h.unplaced_by_priority)).collect::<Vec<_>>(),
        "slo_violations" => u(|h| h.slo_violations),
        "mean_rtt_ms" => f(|h| h.mean_rtt_ms),
        "inlet_breaches" => u(|h| h.inlet_breaches as u64),
        "power_breaches" => u(|h| h.power_breaches as u64),
        "cooling_shortfalls" => u(|h| h.cooling_shortfalls as u64),
        "worst_inlet_excess_c" => f(|h| h.worst_inlet_excess_c),
        "worst_power_excess_kw" => f(|h| h.worst_power_excess_kw),
        "spot_replicas" => u(|h| h.spot_replicas),
        "spot_left_out" => u(|h| h.spot_left_out),
        "spot_evictions" => u(|h| u64::from(h.spot_evictions)),
        "spot_revenue" => f(|h| h.spot_revenue),
    )
}

/// One row per hour, site and policy of a replay.
pub fn replay_site_frame(replay: &Replay) -> PolarsResult<DataFrame> {
    let rows = &replay.site_hours;
    let f = |g: fn(&SiteHour) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    df!(
        "hour" => rows.iter().map(|h| h.hour as u64).collect::<Vec<u64>>(),
        "policy" => rows.iter().map(|h| h.policy).collect::<Vec<_>>(),
        "site" => rows.iter().map(|h| replay.site_zones[h.site].0.as_str()).collect::<Vec<_>>(),
        "zone" => rows.iter().map(|h| replay.site_zones[h.site].1.as_str()).collect::<Vec<_>>(),
        "ambient_c" => f(|h| h.ambient_c),
        "price_per_kwh" => f(|h| h.price_per_kwh),
        "carbon_g_per_kwh" => f(|h| h.carbon_g_per_kwh),
        "it_kw" => f(|h| h.it_kw),
        "facility_kw" => f(|h| h.facility_kw),
        "power_cap_kw" => f(|h| h.power_cap_kw),
        "inlet_c" => f(|h| h.inlet_c),
        "inlet_limit_c" => f(|h| h.inlet_limit_c),
    )
}

/// `priority:count;…` (empty: none), as the what-if table writes it.
fn by_priority(m: &std::collections::BTreeMap<u32, u64>) -> String {
    m.iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// One row per UTC day and policy of a replay.
pub fn replay_day_frame(replay: &Replay) -> PolarsResult<DataFrame> {
    let rows = replay.days();
    let f = |g: fn(&PolicyDay) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&PolicyDay) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    df!(
        "day" => rows.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(),
        "policy" => rows.iter().map(|d| d.policy).collect::<Vec<_>>(),
        "hours" => u(|d| d.hours as u64),
        "energy_cost" => f(|d| d.energy_cost),
        "carbon_kg" => f(|d| d.carbon_kg),
        "moves" => u(|d| d.moves),
        "blocked_moves" => u(|d| d.blocked_moves),
        "migration_hours" => f(|d| d.migration_hours),
        "migrated_gib" => f(|d| d.migrated_gib),
        "migration_cost" => f(|d| d.migration_cost),
        "unplaced_replica_hours" => u(|d| d.unplaced_replica_hours),
        "unplaced_by_priority" => rows.iter().map(|d| by_priority(&d.unplaced_by_priority)).collect::<Vec<_>>(),
        "slo_violating_replica_hours" => u(|d| d.slo_violating_replica_hours),
        "inlet_breach_site_hours" => u(|d| d.inlet_breach_site_hours),
        "power_breach_site_hours" => u(|d| d.power_breach_site_hours),
        "cooling_shortfall_site_hours" => u(|d| d.cooling_shortfall_site_hours),
        "worst_inlet_excess_c" => f(|d| d.worst_inlet_excess_c),
        "worst_power_excess_kw" => f(|d| d.worst_power_excess_kw),
    )
}

/// `results.parquet` → `results-days.parquet`.
pub fn days_path(path: &Path) -> PathBuf {
    beside(path, "days")
}

/// Write a replay's hour × policy table to `path`, its day × policy table
/// beside it (`NAME-days.EXT`) and, if it kept them, its hour × site ×
/// policy rows (`NAME-sites.EXT`). The paths written, in that order.
pub fn write_replay(path: &Path, replay: &Replay, format: TableFormat) -> Result<Vec<PathBuf>> {
    let err = |e: PolarsError| Error::Archive(format!("{}: {e}", path.display()));
    write_frame(path, &mut replay_hour_frame(replay).map_err(err)?, format)?;
    let days = days_path(path);
    write_frame(&days, &mut replay_day_frame(replay).map_err(err)?, format)?;
    let mut written = vec![path.to_path_buf(), days];
    if !replay.site_hours.is_empty() {
        let sites = sites_path(path);
        write_frame(&sites, &mut replay_site_frame(replay).map_err(err)?, format)?;
        written.push(sites);
    }
    Ok(written)
}
