//! Telemetry state: readings from site sensors pass sanity checks, then feed
//! bounded per-sensor windows (last value, EWMA, percentiles over the last
//! samples), hourly series for forecasts, and paired samples for the fitted
//! thermal and power models. Memory is bounded by the number of sensors,
//! not the number of samples. Pure: time arrives with the readings and the
//! queries (`now_s`), never from a clock.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a sensor measures (the role of the reading, with its canonical unit).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Outside air at the site, °C (°F accepted).
    Ambient,
    /// Relative humidity of the outside air, %.
    Humidity,
    /// Rack inlet air, °C (°F accepted); needs `rack`.
    Inlet,
    /// Supply air from the cooling plant, °C (°F accepted).
    Supply,
    /// IT power of one rack, kW (W accepted); needs `rack`.
    RackPower,
    /// IT power of the whole site, kW (W accepted).
    SitePower,
    /// Mean CPU utilisation of the site's servers, 0–1 (% accepted).
    Utilization,
    /// CPU utilisation of one workload's replicas, 0–1 (% accepted); `sensor` is the workload id.
    WorkloadUtilization,
    /// Power of all the site's accelerators, kW (W accepted).
    GpuPower,
    /// Mean utilisation of the site's accelerators, 0–1 (% accepted).
    GpuUtilization,
    /// Air volume through a rack or plant, m³/h (cfm accepted). Kept and shown, not modelled.
    Airflow,
    /// Fan speed, rpm. Kept and shown, not modelled.
    FanSpeed,
}

/// One reading, shaped like a Synse reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reading {
    pub sensor: String,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    pub kind: SensorKind,
    pub unit: String,
    pub value: f64,
    /// Seconds since the Unix epoch.
    pub timestamp_s: f64,
}

/// A reading borrowed from wherever it was decoded (the ingest hot path
/// builds no owned strings for it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingRef<'a> {
    pub sensor: &'a str,
    pub site: &'a str,
    pub rack: Option<&'a str>,
    pub kind: SensorKind,
    pub unit: &'a str,
    pub value: f64,
    pub timestamp_s: f64,
}

impl Reading {
    pub fn as_ref(&self) -> ReadingRef<'_> {
        ReadingRef {
            sensor: &self.sensor,
            site: &self.site,
            rack: self.rack.as_deref(),
            kind: self.kind,
            unit: &self.unit,
            value: self.value,
            timestamp_s: self.timestamp_s,
        }
    }
}

/// Why a reading was rejected.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    NotFinite,
    UnknownSite,
    UnknownUnit,
    MissingRack,
    OutOfRange,
    Duplicate,
    OutOfOrder,
    ImpossibleJump,
    /// Dated more than `SanityLimits::max_future_skew_s` past the server's clock.
    FromTheFuture,
    /// A new sensor id at a site that has `SanityLimits::max_sensors_per_site`.
    TooManySensors,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Rejection::NotFinite => "value is NaN or infinite",
            Rejection::UnknownSite => "unknown site",
            Rejection::UnknownUnit => "unit does not fit the sensor kind",
            Rejection::MissingRack => "rack sensor without a rack",
            Rejection::OutOfRange => "outside the physical range",
            Rejection::Duplicate => "duplicate timestamp for this sensor",
            Rejection::OutOfOrder => "older than the sensor's last reading",
            Rejection::ImpossibleJump => "changes faster than physically possible",
            Rejection::FromTheFuture => "dated in the future past the allowed clock skew",
            Rejection::TooManySensors => {
                "the site has the most sensors allowed; a new sensor id is refused"
            }
        };
        f.write_str(s)
    }
}

/// Thresholds of the sanity checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SanityLimits {
    pub min_temperature_c: f64,
    pub max_temperature_c: f64,
    pub max_power_kw: f64,
    /// Fastest believable temperature change, °C per second.
    pub max_temperature_rate_c_per_s: f64,
    /// A sensor silent this long is stale.
    pub stale_after_s: f64,
    /// Samples per sensor kept for percentiles (bounded memory per sensor).
    pub window_samples: usize,
    /// Weight of the newest sample in the EWMA (0–1).
    pub ewma_alpha: f64,
    /// A reading up to this much older than its sensor's last is accepted
    /// as late: counted and in the hourly series, but it moves neither the
    /// last value nor the EWMA. 0: any older reading is out of order. Set
    /// it when readings can arrive out of order (several replicas taking a
    /// bus's messages, redeliveries).
    pub late_window_s: f64,
    /// A reading dated more than this past the server's clock is refused
    /// (`from_the_future`): taken, it would make every real reading of its
    /// sensor "older than the last" and keep the sensor fresh until then
    /// (a gateway sending milliseconds as seconds silences it for good).
    /// Applies where a clock is given (`ingest_at`; the service always).
    pub max_future_skew_s: f64,
    /// New sensor ids a site may have at most (bounds memory against a
    /// caller inventing ids); known sensors are never refused. 0: no limit.
    pub max_sensors_per_site: usize,
}

impl SanityLimits {
    /// Every threshold a finite number in range; the offending setting
    /// named (as `telemetry.<name>` in the service's config) otherwise.
    pub fn check(&self) -> Result<(), String> {
        edgeplan_model::settings::non_negative(
            "telemetry.",
            &[
                (
                    "max_temperature_rate_c_per_s",
                    self.max_temperature_rate_c_per_s,
                ),
                ("stale_after_s", self.stale_after_s),
                ("late_window_s", self.late_window_s),
                ("max_future_skew_s", self.max_future_skew_s),
                ("max_power_kw", self.max_power_kw),
            ],
        )?;
        if !(self.min_temperature_c.is_finite()
            && self.max_temperature_c.is_finite()
            && self.min_temperature_c < self.max_temperature_c)
        {
            return Err(format!(
                "telemetry.min_temperature_c / max_temperature_c: must be finite with min < max, got {} / {}",
                self.min_temperature_c, self.max_temperature_c
            ));
        }
        if !(0.0..=1.0).contains(&self.ewma_alpha) {
            return Err(format!(
                "telemetry.ewma_alpha: must be within 0..=1, got {}",
                self.ewma_alpha
            ));
        }
        Ok(())
    }
}

impl Default for SanityLimits {
    fn default() -> Self {
        Self {
            min_temperature_c: -60.0,
            max_temperature_c: 80.0,
            max_power_kw: 10_000.0,
            max_temperature_rate_c_per_s: 0.2,
            stale_after_s: 600.0,
            window_samples: WINDOW,
            ewma_alpha: 0.1,
            late_window_s: 0.0,
            max_future_skew_s: 300.0,
            max_sensors_per_site: 10_000,
        }
    }
}

/// Default samples kept per sensor for percentiles.
pub const WINDOW: usize = 256;
/// Hourly points kept per series (two weeks).
pub const HOURS_KEPT: usize = 24 * 14;
/// Readings of different sensors this close in time count as simultaneous.
pub const PAIR_WINDOW_S: f64 = 30.0;
/// Paired samples kept per rack for the thermal fit.
pub const PAIRS_KEPT: usize = 2048;

/// A sensor's bounded state. The window is not stored (it refills in
/// minutes); the rest is, so a restart keeps last values and EWMAs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorState {
    pub site: String,
    pub rack: Option<String>,
    pub kind: SensorKind,
    pub last: f64,
    pub last_s: f64,
    pub ewma: f64,
    pub count: u64,
    #[serde(skip)]
    window: VecDeque<f64>,
}

impl SensorState {
    /// The `q`-quantile (0–1) of the last [`WINDOW`] samples.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return self.last;
        }
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v[i]
    }
}

/// A site's state as its fresh sensors report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiteSummary {
    /// EWMA of the warmest ambient sensor, °C.
    pub ambient_c: Option<f64>,
    pub humidity_pct: Option<f64>,
    /// The hottest rack's 95th-percentile inlet over its window, °C.
    pub max_inlet_p95_c: Option<f64>,
    /// Sum of the racks' latest power, kW.
    pub rack_power_kw: Option<f64>,
    pub site_power_kw: Option<f64>,
    pub stale_sensors: usize,
}

/// An hourly series built from readings (mean per hour), bounded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourlySeries {
    /// (hour index since epoch, mean) — consecutive hours; gaps repeat the last value.
    pub points: VecDeque<(i64, f64)>,
    current: Option<(i64, f64, u32)>,
}

impl HourlySeries {
    fn add(&mut self, t_s: f64, v: f64) {
        let hour = (t_s / 3600.0).floor() as i64;
        match &mut self.current {
            Some((h, sum, n)) if *h == hour => {
                *sum += v;
                *n += 1;
            }
            Some((h, sum, n)) if hour > *h => {
                let (h, mean) = (*h, *sum / *n as f64);
                self.push(h, mean);
                self.current = Some((hour, v, 1));
            }
            Some(_) => {} // older hour: already closed
            None => self.current = Some((hour, v, 1)),
        }
    }

    fn push(&mut self, hour: i64, mean: f64) {
        if let Some(&(last_h, last_v)) = self.points.back() {
            // Only the last HOURS_KEPT hours survive: a gap of years (a
            // clock far ahead) fills no more than that.
            let from = last_h
                .saturating_add(1)
                .max(hour.saturating_sub(HOURS_KEPT as i64));
            for h in from..hour {
                self.points.push_back((h, last_v));
            }
        }
        self.points.push_back((hour, mean));
        while self.points.len() > HOURS_KEPT {
            self.points.pop_front();
        }
    }

    /// Closed hours plus the hour in progress.
    pub fn values(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        if let Some((_, sum, n)) = self.current {
            v.push(sum / n as f64);
        }
        v
    }
}

/// A sensor as a site lists it: enough to filter by role before looking its state up.
#[derive(Debug, Clone, PartialEq)]
struct SensorRef {
    id: String,
    kind: SensorKind,
    rack: Option<String>,
}

/// All telemetry of a fleet. Serializes without the per-sensor windows and
/// the fit pairs, which refill from new readings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TelemetryState {
    pub limits: SanityLimits,
    /// Sensor id → state (Fx hashing: the ingest hot path looks up every reading).
    pub sensors: FxHashMap<String, SensorState>,
    /// Site → its sensors' ids, so per-site lookups do not scan the fleet.
    #[serde(skip)]
    site_sensors: FxHashMap<String, Vec<SensorRef>>,
    pub accepted: u64,
    /// Of the accepted, those taken as late (see `SanityLimits::late_window_s`).
    #[serde(default)]
    pub late: u64,
    pub rejected: BTreeMap<Rejection, u64>,
    /// Site → hourly ambient.
    pub ambient_hourly: HashMap<String, HourlySeries>,
    /// Workload → hourly utilisation.
    pub demand_hourly: HashMap<String, HourlySeries>,
    /// Site → rack → recent (rack kW, inlet − supply °C) pairs.
    #[serde(skip)]
    pub thermal_pairs: FxHashMap<String, FxHashMap<String, VecDeque<(f64, f64)>>>,
    /// Site → recent (utilisation, site IT kW) pairs.
    #[serde(skip)]
    pub power_pairs: FxHashMap<String, VecDeque<(f64, f64)>>,
    /// Site → recent (accelerator utilisation, accelerator kW) pairs.
    #[serde(skip)]
    pub gpu_pairs: FxHashMap<String, VecDeque<(f64, f64)>>,
    /// Client batch ids taken lately, oldest first (the newest
    /// [`BATCH_IDS_KEPT`]): a batch sent again after a lost acknowledgement
    /// is recognised and not applied twice.
    #[serde(default)]
    batch_ids: VecDeque<String>,
    #[serde(skip)]
    batch_id_set: rustc_hash::FxHashSet<String>,
}

/// Batch ids remembered for deduplication (about 40 bytes each).
pub const BATCH_IDS_KEPT: usize = 100_000;

impl TelemetryState {
    /// Remember a client's batch id; false when it was taken before (within
    /// the last [`BATCH_IDS_KEPT`]), so the batch must not be applied again.
    pub fn first_time(&mut self, batch_id: &str) -> bool {
        if self.batch_id_set.len() != self.batch_ids.len() {
            self.batch_id_set = self.batch_ids.iter().cloned().collect();
        }
        if self.batch_id_set.contains(batch_id) {
            return false;
        }
        if self.batch_ids.len() == BATCH_IDS_KEPT {
            if let Some(old) = self.batch_ids.pop_front() {
                self.batch_id_set.remove(&old);
            }
        }
        self.batch_ids.push_back(batch_id.to_string());
        self.batch_id_set.insert(batch_id.to_string());
        true
    }
}

/// The value under `key`, created on first use (no key allocated after that).
fn pairs_at<'a, V>(
    map: &'a mut FxHashMap<String, V>,
    key: &str,
    make: impl FnOnce() -> V,
) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), make());
    }
    map.get_mut(key).expect("inserted above")
}

/// The series under `key`, created on first use (no key allocation after that).
fn series<'a>(map: &'a mut HashMap<String, HourlySeries>, key: &str) -> &'a mut HourlySeries {
    if !map.contains_key(key) {
        map.insert(key.to_string(), HourlySeries::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl SensorKind {
    /// The unit readings of this kind are kept in.
    pub fn canonical_unit(self) -> &'static str {
        use SensorKind::*;
        match self {
            Ambient | Inlet | Supply => "C",
            Humidity => "%",
            RackPower | SitePower | GpuPower => "kW",
            Utilization | WorkloadUtilization | GpuUtilization => "ratio",
            Airflow => "m3/h",
            FanSpeed => "rpm",
        }
    }
}

/// Convert to the kind's canonical unit, or `None` if the unit does not fit.
fn canonical(kind: SensorKind, unit: &str, v: f64) -> Option<f64> {
    // Units are short: lowercase on the stack, no allocation per reading.
    let unit = unit.trim();
    let mut buf = [0u8; 16];
    let u = if unit.len() <= buf.len() {
        let b = &mut buf[..unit.len()];
        b.copy_from_slice(unit.as_bytes());
        b.make_ascii_lowercase();
        std::str::from_utf8(b).unwrap_or("?")
    } else {
        "?"
    };
    use SensorKind::*;
    match kind {
        Ambient | Inlet | Supply => match u {
            "c" | "°c" | "celsius" => Some(v),
            "f" | "°f" | "fahrenheit" => Some((v - 32.0) * 5.0 / 9.0),
            _ => None,
        },
        Humidity => matches!(u, "%" | "pct" | "percent").then_some(v),
        RackPower | SitePower | GpuPower => match u {
            "kw" => Some(v),
            "w" => Some(v / 1000.0),
            _ => None,
        },
        Utilization | WorkloadUtilization | GpuUtilization => match u {
            "" | "ratio" | "fraction" => Some(v),
            "%" | "pct" | "percent" => Some(v / 100.0),
            _ => None,
        },
        Airflow => match u {
            "m3/h" | "m³/h" => Some(v),
            "cfm" => Some(v * 1.699_011),
            _ => None,
        },
        FanSpeed => matches!(u, "rpm").then_some(v),
    }
}

impl TelemetryState {
    pub fn new(limits: SanityLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Rebuild the indexes of a deserialized state.
    pub fn reindex(&mut self) {
        self.site_sensors.clear();
        let mut ids: Vec<&String> = self.sensors.keys().collect();
        ids.sort();
        for id in ids {
            let s = &self.sensors[id];
            self.site_sensors
                .entry(s.site.clone())
                .or_default()
                .push(SensorRef {
                    id: id.clone(),
                    kind: s.kind,
                    rack: s.rack.clone(),
                });
        }
    }

    /// The sensors of one site.
    fn at_site<'a>(&'a self, site: &str) -> impl Iterator<Item = (&'a str, &'a SensorState)> + 'a {
        self.site_sensors
            .get(site)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| self.sensors.get(&r.id).map(|s| (r.id.as_str(), s)))
    }

    /// Check and take one reading; a rejected reading changes nothing but
    /// its counter. No clock: readings dated in the future are not refused
    /// (replays of past data); a server uses [`ingest_at`](Self::ingest_at).
    pub fn ingest(
        &mut self,
        r: &Reading,
        known_site: impl Fn(&str) -> bool,
    ) -> Result<(), Rejection> {
        self.ingest_ref(&r.as_ref(), known_site)
    }

    /// As [`ingest`](Self::ingest), with the server's clock `now_s`:
    /// readings dated more than `max_future_skew_s` past it are refused.
    pub fn ingest_at(
        &mut self,
        r: &Reading,
        known_site: impl Fn(&str) -> bool,
        now_s: f64,
    ) -> Result<(), Rejection> {
        self.ingest_ref_at(&r.as_ref(), known_site, Some(now_s))
    }

    /// As [`ingest`](Self::ingest), on a borrowed reading.
    pub fn ingest_ref(
        &mut self,
        r: &ReadingRef<'_>,
        known_site: impl Fn(&str) -> bool,
    ) -> Result<(), Rejection> {
        self.ingest_ref_at(r, known_site, None)
    }

    /// As [`ingest_at`](Self::ingest_at), on a borrowed reading; `None`:
    /// no clock, no future rule.
    pub fn ingest_ref_at(
        &mut self,
        r: &ReadingRef<'_>,
        known_site: impl Fn(&str) -> bool,
        now_s: Option<f64>,
    ) -> Result<(), Rejection> {
        let result = self
            .check(r, &known_site, now_s)
            .map(|(v, late)| self.take(r, v, late));
        match result {
            Ok(()) => self.accepted += 1,
            Err(e) => *self.rejected.entry(e).or_default() += 1,
        }
        result
    }

    fn check(
        &self,
        r: &ReadingRef<'_>,
        known_site: &impl Fn(&str) -> bool,
        now_s: Option<f64>,
    ) -> Result<(f64, bool), Rejection> {
        if !r.value.is_finite() || !r.timestamp_s.is_finite() {
            return Err(Rejection::NotFinite);
        }
        if !known_site(r.site) {
            return Err(Rejection::UnknownSite);
        }
        let v = canonical(r.kind, r.unit, r.value).ok_or(Rejection::UnknownUnit)?;
        use SensorKind::*;
        if matches!(r.kind, Inlet | RackPower) && r.rack.is_none_or(str::is_empty) {
            return Err(Rejection::MissingRack);
        }
        let l = &self.limits;
        let in_range = match r.kind {
            Ambient | Inlet | Supply => (l.min_temperature_c..=l.max_temperature_c).contains(&v),
            Humidity => (0.0..=100.0).contains(&v),
            RackPower | SitePower | GpuPower => (0.0..=l.max_power_kw).contains(&v),
            Utilization | WorkloadUtilization | GpuUtilization => (0.0..=1.0).contains(&v),
            Airflow | FanSpeed => (0.0..=1e7).contains(&v),
        };
        if !in_range {
            return Err(Rejection::OutOfRange);
        }
        // A reading far ahead would become the sensor's last: every real
        // reading after it "out of order", the sensor fresh until then.
        if now_s.is_some_and(|now| r.timestamp_s - now > l.max_future_skew_s) {
            return Err(Rejection::FromTheFuture);
        }
        let Some(s) = self.sensors.get(r.sensor) else {
            // A new sensor: the site's count is bounded (ids cost memory).
            let at_site = self.site_sensors.get(r.site).map_or(0, Vec::len);
            if l.max_sensors_per_site > 0 && at_site >= l.max_sensors_per_site {
                return Err(Rejection::TooManySensors);
            }
            return Ok((v, false));
        };
        if r.timestamp_s == s.last_s {
            return Err(Rejection::Duplicate);
        }
        if r.timestamp_s < s.last_s {
            return if s.last_s - r.timestamp_s <= l.late_window_s {
                Ok((v, true))
            } else {
                Err(Rejection::OutOfOrder)
            };
        }
        if matches!(r.kind, Ambient | Inlet | Supply) {
            let rate = (v - s.last).abs() / (r.timestamp_s - s.last_s);
            if rate > l.max_temperature_rate_c_per_s {
                return Err(Rejection::ImpossibleJump);
            }
        }
        Ok((v, false))
    }

    fn take(&mut self, r: &ReadingRef<'_>, v: f64, late: bool) {
        if late {
            // Counted and in the hourly means; the latest values stay.
            self.late += 1;
            if let Some(s) = self.sensors.get_mut(r.sensor) {
                s.count += 1;
            }
            match r.kind {
                SensorKind::Ambient => {
                    series(&mut self.ambient_hourly, r.site).add(r.timestamp_s, v)
                }
                SensorKind::WorkloadUtilization => {
                    series(&mut self.demand_hourly, r.sensor).add(r.timestamp_s, v)
                }
                _ => {}
            }
            return;
        }
        let (alpha, keep) = (self.limits.ewma_alpha, self.limits.window_samples.max(1));
        // One lookup on the hot path, and no key allocated for a known sensor.
        match self.sensors.get_mut(r.sensor) {
            Some(s) => {
                s.last = v;
                s.last_s = r.timestamp_s;
                s.ewma = alpha * v + (1.0 - alpha) * s.ewma;
                s.count += 1;
                while s.window.len() >= keep {
                    s.window.pop_front();
                }
                s.window.push_back(v);
            }
            None => {
                self.site_sensors
                    .entry(r.site.to_string())
                    .or_default()
                    .push(SensorRef {
                        id: r.sensor.to_string(),
                        kind: r.kind,
                        rack: r.rack.map(str::to_string),
                    });
                self.sensors.insert(
                    r.sensor.to_string(),
                    SensorState {
                        site: r.site.to_string(),
                        rack: r.rack.map(str::to_string),
                        kind: r.kind,
                        last: v,
                        last_s: r.timestamp_s,
                        ewma: v,
                        count: 1,
                        window: VecDeque::from([v]),
                    },
                );
            }
        }
        match r.kind {
            SensorKind::Ambient => series(&mut self.ambient_hourly, r.site).add(r.timestamp_s, v),
            SensorKind::WorkloadUtilization => {
                series(&mut self.demand_hourly, r.sensor).add(r.timestamp_s, v)
            }
            SensorKind::Inlet => self.pair_thermal(r),
            SensorKind::SitePower | SensorKind::Utilization => self.pair_power(r.site),
            SensorKind::GpuPower | SensorKind::GpuUtilization => self.pair_gpu(r.site),
            SensorKind::Supply
            | SensorKind::Humidity
            | SensorKind::RackPower
            | SensorKind::Airflow
            | SensorKind::FanSpeed => {}
        }
    }

    /// Latest fresh reading of a kind at a site (rack-level kinds: any rack).
    pub fn latest(&self, site: &str, kind: SensorKind, rack: Option<&str>) -> Option<&SensorState> {
        // Filter by role on the site's list first: few state lookups per call.
        self.site_sensors
            .get(site)?
            .iter()
            .filter(|s| s.kind == kind && (rack.is_none() || s.rack.as_deref() == rack))
            .filter_map(|s| self.sensors.get(&s.id))
            .max_by(|a, b| a.last_s.total_cmp(&b.last_s))
    }

    /// On an inlet reading: a pair with the rack's power and the supply air,
    /// if both were read within [`PAIR_WINDOW_S`] of it.
    fn pair_thermal(&mut self, r: &ReadingRef<'_>) {
        let Some(rack) = r.rack else {
            return;
        };
        let (Some(inlet), Some(power), Some(supply)) = (
            self.latest(r.site, SensorKind::Inlet, Some(rack)),
            self.latest(r.site, SensorKind::RackPower, Some(rack)),
            self.latest(r.site, SensorKind::Supply, None),
        ) else {
            return;
        };
        if (power.last_s - inlet.last_s).abs() > PAIR_WINDOW_S
            || (supply.last_s - inlet.last_s).abs() > PAIR_WINDOW_S
        {
            return;
        }
        let pair = (power.last, inlet.last - supply.last);
        let q = pairs_at(
            pairs_at(&mut self.thermal_pairs, r.site, FxHashMap::default),
            rack,
            VecDeque::new,
        );
        if q.len() == PAIRS_KEPT {
            q.pop_front();
        }
        q.push_back(pair);
    }

    fn pair_power(&mut self, site: &str) {
        self.pair_site(site, SensorKind::Utilization, SensorKind::SitePower);
    }

    fn pair_gpu(&mut self, site: &str) {
        self.pair_site(site, SensorKind::GpuUtilization, SensorKind::GpuPower);
    }

    /// On a site-level utilisation or power reading: a (utilisation, kW)
    /// pair, if both were read within [`PAIR_WINDOW_S`] of each other.
    fn pair_site(&mut self, site: &str, util: SensorKind, power: SensorKind) {
        let (Some(u), Some(p)) = (
            self.latest(site, util, None),
            self.latest(site, power, None),
        ) else {
            return;
        };
        if (u.last_s - p.last_s).abs() > PAIR_WINDOW_S {
            return;
        }
        let pair = (u.last, p.last);
        let pairs = if power == SensorKind::GpuPower {
            &mut self.gpu_pairs
        } else {
            &mut self.power_pairs
        };
        let q = pairs_at(pairs, site, VecDeque::new);
        if q.len() == PAIRS_KEPT {
            q.pop_front();
        }
        q.push_back(pair);
    }

    /// The site's state from its fresh sensors at `now_s`.
    pub fn site_summary(&self, site: &str, now_s: f64) -> SiteSummary {
        let fresh = |k: SensorKind| {
            self.at_site(site)
                .map(|(_, s)| s)
                .filter(move |s| s.kind == k && now_s - s.last_s <= self.limits.stale_after_s)
        };
        SiteSummary {
            ambient_c: fresh(SensorKind::Ambient).map(|s| s.ewma).reduce(f64::max),
            humidity_pct: fresh(SensorKind::Humidity).map(|s| s.ewma).reduce(f64::max),
            max_inlet_p95_c: fresh(SensorKind::Inlet)
                .map(|s| s.quantile(0.95))
                .reduce(f64::max),
            rack_power_kw: fresh(SensorKind::RackPower)
                .map(|s| s.last)
                .reduce(|a, b| a + b),
            site_power_kw: fresh(SensorKind::SitePower)
                .map(|s| s.last)
                .reduce(f64::max),
            stale_sensors: self.stale_sensors(site, now_s).len(),
        }
    }

    /// Sensors of a site that have gone silent by `now_s`.
    pub fn stale_sensors(&self, site: &str, now_s: f64) -> Vec<(&str, SensorKind)> {
        let mut v: Vec<(&str, SensorKind)> = self
            .at_site(site)
            .filter(|(_, s)| now_s - s.last_s > self.limits.stale_after_s)
            .map(|(id, s)| (id, s.kind))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod batch_id_tests {
    use super::*;

    #[test]
    fn a_batch_id_is_taken_once_survives_a_restart_and_is_forgotten_only_when_old() {
        let mut state = TelemetryState::default();
        assert!(state.first_time("gw-1/1"));
        assert!(!state.first_time("gw-1/1"));
        // Written and read back (a restart): still known.
        let back: TelemetryState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let mut state = back;
        assert!(!state.first_time("gw-1/1"));
        for i in 0..BATCH_IDS_KEPT {
            assert!(state.first_time(&format!("gw-2/{i}")));
        }
        // The oldest fell out of the window; the newest are still known.
        assert!(state.first_time("gw-1/1"));
        assert!(!state.first_time(&format!("gw-2/{}", BATCH_IDS_KEPT - 1)));
    }
}
