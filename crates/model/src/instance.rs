//! The instance: everything the optimizer is told about the fleet, as the
//! user writes it (JSON or YAML). Plain data with serde and a JSON Schema;
//! no logic beyond parsing. Semantic checks live in `validate`, derived
//! quantities in `physics`, `topology` and `problem`.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::accelerator_models::AcceleratorModel;
use crate::error::{Error, Result};
use crate::server_models::ServerModel;

/// A whole planning instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Free-form name, shown in reports.
    #[serde(default)]
    pub name: String,
    /// Extra server power models, beside the built-in SPECpower catalogue
    /// (`models/servers.json`). A name here overrides a built-in one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_models: Vec<ServerModel>,
    /// Extra accelerator power models, beside the built-in catalogue
    /// (`models/accelerators.json`). A name here overrides a built-in one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accelerator_models: Vec<AcceleratorModel>,
    pub sites: Vec<Site>,
    pub network: Network,
    pub regions: Vec<Region>,
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub objective: ObjectiveWeights,
    #[serde(default)]
    pub limits: Limits,
}

/// A micro data center.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    /// Network node the site is attached to; defaults to the site id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Human name (a city, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    /// Failure domain (power feed, metro, …); replicas may be spread across them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Resource capacities, e.g. `cpu_cores`, `memory_gib`, `gpus`.
    pub capacity: BTreeMap<String, f64>,
    /// Fraction of each resource held back (0 ≤ f < 1); missing resources keep none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserve_fraction: BTreeMap<String, f64>,
    /// Hardware features offered (e.g. `gpu-a100`, `nvme`, `sgx`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<String>,
    /// Backhaul uplink capacity, Gbps: the replicas' egress here may not
    /// exceed it. Unset: the uplink is not a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_gbps: Option<f64>,
    pub servers: ServerFleet,
    /// The site's accelerators (GPUs), all of one model: their idle power
    /// counts in the site's, and each replica's `gpus` draw their model's
    /// power at the workload's `gpu_utilization`. `capacity.gpus` must be
    /// declared and at most `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerators: Option<AcceleratorFleet>,
    pub power: PowerSpec,
    pub cooling: CoolingSpec,
    pub thermal: ThermalSpec,
    pub energy: EnergySpec,
    pub ambient: AmbientSpec,
}

impl Site {
    /// The network node this site hangs off.
    pub fn node_id(&self) -> &str {
        self.node.as_deref().unwrap_or(&self.id)
    }

    /// Read the site's anchored series at `now_unix_s`: hour 0 becomes
    /// now, the hours already past are gone (the price in force now holds
    /// from hour 0), and the anchors are cleared. Unanchored series are as
    /// they were.
    pub fn read_at(&mut self, now_unix_s: f64) {
        let site = self;
        if let Some(start) = site.energy.series_start_unix_s.take() {
            if let Price::Series(points) = &mut site.energy.price_per_kwh {
                let elapsed_h = (now_unix_s - start) / 3600.0;
                for p in points.iter_mut() {
                    p.hour -= elapsed_h;
                }
                // The last point at or before now holds from hour 0.
                let in_force = points.iter().rposition(|p| p.hour <= 0.0);
                if let Some(k) = in_force {
                    points.drain(..k);
                    points[0].hour = 0.0;
                }
            }
        }
        if let Some(start) = site.ambient.forecast_start_unix_s.take() {
            // Whole hours past; a forecast that starts later is read as
            // starting now (its hours before are not known).
            let past = ((now_unix_s - start) / 3600.0).floor().max(0.0) as usize;
            let f = &mut site.ambient.forecast_c;
            f.drain(..past.min(f.len()));
        }
    }
}

impl Instance {
    /// Every site's anchored series read at `now_unix_s` ([`Site::read_at`]).
    pub fn read_at(&mut self, now_unix_s: f64) {
        for s in &mut self.sites {
            s.read_at(now_unix_s);
        }
    }
}

/// The servers of a site, all of one model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerFleet {
    /// Name of a server model (`edgeplan models` lists the built-in ones).
    pub model: String,
    pub count: u32,
}

/// The accelerators of a site, all of one model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorFleet {
    /// Name of an accelerator model (`edgeplan models` lists the built-in ones).
    pub model: String,
    pub count: u32,
    /// Measured / modelled power of this site's accelerators (from
    /// telemetry); scales the accelerator curve.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub calibration: f64,
}

/// Electrical limits and efficiency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerSpec {
    /// Facility power cap (utility feed / UPS), kW.
    pub cap_kw: f64,
    /// PUE at or below the free-cooling limit.
    pub pue_min: f64,
    /// PUE at the maximum ambient temperature.
    pub pue_max: f64,
    /// IT power of the servers with no workload, kW; defaults to servers ×
    /// the model's idle watts × `calibration`. Idle accelerators add theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_kw: Option<f64>,
    /// Measured / modelled power of this site's servers (from telemetry);
    /// scales the server curve.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub calibration: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// Cooling plant and how it derates with ambient temperature.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoolingSpec {
    /// Heat the plant removes at or below the free-cooling limit, kW.
    pub nominal_kw: f64,
    /// Fraction of nominal capacity left at `max_ambient_c` (0 < f ≤ 1).
    pub derate_min: f64,
    /// Ambient up to which free cooling works at full capacity and minimum PUE, °C.
    pub free_cooling_limit_c: f64,
    /// Ambient at which PUE reaches `pue_max` and cooling `derate_min`, °C.
    pub max_ambient_c: f64,
    /// Fraction of every limit left when the air is outside the class's
    /// humidity envelope (0 < f ≤ 1).
    #[serde(default = "default_humidity_derate")]
    pub humidity_derate: f64,
}

fn default_humidity_derate() -> f64 {
    0.8
}

/// ASHRAE TC 9.9 equipment class.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum AshraeClass {
    A1,
    A2,
    A3,
    A4,
}

/// Rack inlet temperature model: `inlet_c = supply_c + recirc_c_per_kw · it_kw / racks`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThermalSpec {
    /// Equipment class; gives the allowable inlet limit (A1 32, A2 35, A3 40, A4 45 °C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ashrae_class: Option<AshraeClass>,
    /// Explicit inlet limit, °C; overrides the class limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inlet_limit_c: Option<f64>,
    /// Safety margin below the limit, °C.
    #[serde(default = "default_margin_c")]
    pub margin_c: f64,
    /// Supply air set point, °C.
    #[serde(default = "default_supply_setpoint_c")]
    pub supply_setpoint_c: f64,
    /// Under free cooling, supply is at least ambient + approach, °C.
    #[serde(default = "default_approach_c")]
    pub approach_c: f64,
    /// Inlet rise per kW of IT power per rack (heat recirculation), °C/kW.
    pub recirc_c_per_kw: f64,
    pub racks: u32,
}

fn default_margin_c() -> f64 {
    2.0
}
fn default_supply_setpoint_c() -> f64 {
    18.0
}
fn default_approach_c() -> f64 {
    3.0
}

/// Electricity price and carbon intensity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnergySpec {
    pub price_per_kwh: Price,
    /// Grid carbon intensity, gCO2/kWh.
    pub carbon_g_per_kwh: f64,
    /// When a price series' hour 0 is, Unix seconds. Set, the series is
    /// read at the time of each solve ([`Instance::read_at`]), so its
    /// meaning does not drift between upload and solve; unset, its hours
    /// count from whenever the instance is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_start_unix_s: Option<f64>,
}

/// A flat price, or a time series (as on a spot market).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Price {
    Flat(f64),
    Series(Vec<PricePoint>),
}

/// Price from `hour` (hours from now) until the next point.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PricePoint {
    pub hour: f64,
    pub price_per_kwh: f64,
}

/// Outside air at the site: the current reading and a forecast.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AmbientSpec {
    pub current_c: f64,
    /// Hourly forecast from now, °C; the worst value within the horizon drives the limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forecast_c: Vec<f64>,
    /// Current dew point, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dew_point_c: Option<f64>,
    /// Current relative humidity, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humidity_pct: Option<f64>,
    /// When the forecast's first hour is, Unix seconds (as
    /// `EnergySpec::series_start_unix_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_start_unix_s: Option<f64>,
}

/// The network: nodes (sites' and users' attachment points) and links.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
}

/// An undirected link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub a: String,
    pub b: String,
    pub rtt_ms: f64,
    pub bandwidth_gbps: f64,
}

/// Where users are.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub id: String,
    pub node: String,
}

/// A demand: `replicas` identical instances of one service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub id: String,
    pub replicas: u32,
    /// Resources per replica, by the names sites use.
    pub resources: BTreeMap<String, f64>,
    /// Expected CPU utilisation of the replica's cores (0–1); sets its power.
    #[serde(default = "default_utilization")]
    pub utilization: f64,
    /// Expected utilisation of the replica's accelerators (`resources.gpus`),
    /// 0–1; sets their power. Defaults to `utilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
    /// Where the traffic comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<Traffic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// At most this many replicas on one site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_site: Option<u32>,
    /// At most this many replicas in one failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_failure_domain: Option<u32>,
    /// Workloads sharing an anti-affinity group put at most one replica, all of them together, on a site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity_group: Option<String>,
    /// Workloads sharing an affinity group run on exactly the same set of sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_group: Option<String>,
    /// If not empty, only these sites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_sites: Vec<String>,
    /// Hardware features a site must offer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<String>,
    /// Higher is more important; the unplaced penalty scales with it.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// State moved with a replica on migration, GiB.
    #[serde(default)]
    pub state_gib: f64,
    /// Egress traffic per replica over its site's uplink, Gbps (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_gbps: f64,
    /// Where its replicas run today: site id → replicas.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub current: BTreeMap<String, u32>,
    /// May a replica be stopped before its replacement runs (break-before-make)?
    /// Otherwise migrations are make-before-break.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruption_allowed: bool,
    /// Preemptible: placed after every on-demand workload, only where a
    /// site's spot price for its shape is at most its bid, and the first
    /// to go when the room is taken back (see `Spot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<Spot>,
}

/// A spot workload's terms: what it pays at most, and the notice it needs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spot {
    /// Its bid: the most it pays per replica-hour (the objective's currency).
    pub max_price_per_replica_hour: f64,
    /// Seconds between an eviction's notice and the room counted free.
    #[serde(default)]
    pub notice_s: f64,
}

impl Workload {
    /// Expected utilisation of the replica's accelerators.
    pub fn gpu_utilization(&self) -> f64 {
        self.gpu_utilization.unwrap_or(self.utilization)
    }
}

fn default_utilization() -> f64 {
    0.5
}
fn default_priority() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub region: String,
    /// Relative share of the workload's traffic (> 0).
    pub weight: f64,
}

/// "`percentile` % of traffic within `rtt_ms`".
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub rtt_ms: f64,
    #[serde(default = "default_percentile")]
    pub percentile: f64,
}

fn default_percentile() -> f64 {
    95.0
}

/// Weights of the objective terms; every term is a cost per hour.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveWeights {
    /// Multiplier on the energy bill (currency/h).
    pub energy: f64,
    /// Price of carbon, currency per tonne CO2.
    pub carbon_per_tonne: f64,
    /// Cost per replica per ms of traffic-weighted mean RTT, per hour.
    pub latency_per_ms: f64,
    /// Cost of moving one replica.
    pub migration_per_move: f64,
    /// Cost per GiB of state moved.
    pub migration_per_gib: f64,
    /// Cost per site of a fully used thermal headroom (IT kW / thermal limit kW).
    pub thermal_risk: f64,
    /// Cost of one unplaced replica per unit of priority.
    pub unplaced_per_priority: f64,
}

impl Default for ObjectiveWeights {
    fn default() -> Self {
        Self {
            energy: 1.0,
            carbon_per_tonne: 80.0,
            latency_per_ms: 0.00005,
            migration_per_move: 0.01,
            migration_per_gib: 0.0005,
            thermal_risk: 0.05,
            unplaced_per_priority: 1000.0,
        }
    }
}

/// What the service keeps beside the fleet: the objective weights, the
/// limits and the fleet's name (an instance's `objective`, `limits` and
/// `name`, set as one through `SetPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub name: String,
    pub objective: ObjectiveWeights,
    pub limits: Limits,
}

/// The network nodes the sites, regions and links name, sorted.
pub fn nodes_of(sites: &[Site], regions: &[Region], links: &[Link]) -> Vec<Node> {
    let mut ids: Vec<&str> = sites
        .iter()
        .map(|s| s.node_id())
        .chain(regions.iter().map(|r| r.node.as_str()))
        .chain(links.iter().flat_map(|l| [l.a.as_str(), l.b.as_str()]))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| Node { id: id.to_string() })
        .collect()
}

/// Limits on change and the planning horizon.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// At most this many replicas change site (a replica started where none ran counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_moves: Option<u32>,
    /// Hours over which forecasts are read; the worst ambient in it sets the limits.
    pub horizon_hours: u32,
    /// Migration plans: steps in flight at once, fleet-wide.
    pub max_in_flight: u32,
    /// Migration plans: steps arriving at one site at once.
    pub max_in_per_site: u32,
    /// Migration plans: steps leaving one site at once.
    pub max_out_per_site: u32,
    /// Share of a link's bandwidth one migration uses (0 < f ≤ 1); at most
    /// ⌊1/f⌋ migrations cross a link at once.
    pub migration_bandwidth_share: f64,
    /// Fixed time of every step (start, health check, cut-over), seconds.
    pub step_overhead_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_moves: None,
            horizon_hours: 24,
            max_in_flight: 64,
            max_in_per_site: 4,
            max_out_per_site: 4,
            migration_bandwidth_share: 0.25,
            step_overhead_s: 30.0,
        }
    }
}

/// Parse an instance from JSON or YAML text; type errors carry their path.
pub fn parse(text: &str, format: Format) -> Result<Instance> {
    match format {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| Error::Parse {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })
        }
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| Error::Parse {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })
        }
    }
}

/// File format, from the extension (`.yaml`/`.yml` are YAML, anything else JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Json,
        }
    }
}

/// The JSON Schema of the instance format.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Instance);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[cfg(test)]
mod read_at_tests {
    use super::*;

    fn site(price: Price, forecast: Vec<f64>, start: Option<f64>) -> Site {
        let json = serde_json::json!({
            "id": "s", "lat": 0.0, "lon": 0.0, "capacity": {"cpu_cores": 1.0},
            "servers": {"model": "m", "count": 1},
            "power": {"cap_kw": 1.0, "pue_min": 1.1, "pue_max": 1.3},
            "cooling": {"nominal_kw": 1.0, "derate_min": 0.5, "free_cooling_limit_c": 20.0, "max_ambient_c": 40.0},
            "thermal": {"ashrae_class": "A2", "inlet_limit_c": 35.0, "recirc_c_per_kw": 0.1, "racks": 1},
            "energy": {"price_per_kwh": price, "carbon_g_per_kwh": 0.0, "series_start_unix_s": start},
            "ambient": {"current_c": 10.0, "forecast_c": forecast, "forecast_start_unix_s": start}
        });
        serde_json::from_value(json).expect("a site")
    }

    fn series(points: &[(f64, f64)]) -> Price {
        Price::Series(
            points
                .iter()
                .map(|&(hour, price_per_kwh)| PricePoint {
                    hour,
                    price_per_kwh,
                })
                .collect(),
        )
    }

    #[test]
    fn anchored_series_are_read_at_the_time_given_and_unanchored_ones_are_not() {
        let t0 = 1_700_000_000.0;
        let prices = series(&[(0.0, 0.1), (1.0, 0.2), (2.0, 0.3), (3.0, 0.4), (4.0, 0.5)]);
        let forecast = vec![10.0, 11.0, 12.0, 13.0];
        // 2.5 h after the start: the hour-2 price holds now, the rest follow
        // half an hour apart; two whole forecast hours are past.
        let mut s = site(prices.clone(), forecast.clone(), Some(t0));
        s.read_at(t0 + 2.5 * 3600.0);
        assert_eq!(
            s.energy.price_per_kwh,
            series(&[(0.0, 0.3), (0.5, 0.4), (1.5, 0.5)])
        );
        assert_eq!(s.ambient.forecast_c, vec![12.0, 13.0]);
        assert_eq!(
            (
                s.energy.series_start_unix_s,
                s.ambient.forecast_start_unix_s
            ),
            (None, None)
        );
        // Read again: nothing anchored is left to move.
        let once = s.clone();
        s.read_at(t0 + 10.0 * 3600.0);
        assert_eq!(s, once);
        // Unanchored: hours from whenever it is read, untouched.
        let mut u = site(prices.clone(), forecast.clone(), None);
        u.read_at(t0 + 2.5 * 3600.0);
        assert_eq!(
            (u.energy.price_per_kwh, u.ambient.forecast_c),
            (prices.clone(), forecast)
        );
        // A series that starts in an hour: its first price from hour 1.
        let mut f = site(series(&[(0.0, 0.1)]), vec![], Some(t0 + 3600.0));
        f.read_at(t0);
        assert_eq!(f.energy.price_per_kwh, series(&[(1.0, 0.1)]));
    }
}
