//! The figures of a placement that everything downstream reports: the
//! objective term by term and the fleet's efficacy indicators.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The efficacy indicators operators judge a placement (and a plan) by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Kpis {
    /// Facility energy bill, currency per hour.
    pub energy_cost_per_h: f64,
    pub carbon_kg_per_h: f64,
    /// Traffic-weighted mean RTT per placed replica, ms.
    pub mean_latency_ms: f64,
    /// Replicas on sites that miss their latency SLO.
    pub slo_violations: u64,
    /// Smallest (inlet limit − predicted inlet) over sites, °C.
    pub min_inlet_headroom_c: f64,
    pub min_cooling_headroom_kw: f64,
    /// Largest facility power / cap over sites.
    pub max_power_use: f64,
    pub placed_replicas: u64,
    pub unplaced_replicas: u64,
    /// Replicas started where they did not run.
    pub moves: u64,
}

/// The objective, term by term (all per hour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectiveTerms {
    pub total: f64,
    pub energy: f64,
    pub carbon: f64,
    pub latency: f64,
    pub migration: f64,
    pub thermal: f64,
    pub unplaced: f64,
}
