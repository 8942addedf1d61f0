//! The physical model of a site at its forecast ambient: PUE, cooling
//! derating, supply and inlet temperature, humidity envelope, and from them
//! one effective IT-power limit with the name of what binds. Pure functions
//! of the instance; every relation is linear in IT power at a fixed ambient,
//! which keeps the solver a linear program.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::instance::{AmbientSpec, AshraeClass, Price, Site};

use crate::power::SitePowerModel;

/// Which physical limit caps a site's IT power.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PowerLimit {
    /// Facility power (IT × PUE) reaches the feed / UPS cap.
    PowerCap,
    /// Heat reaches the (derated) cooling capacity.
    Cooling,
    /// Predicted rack inlet reaches the class limit minus margin.
    Inlet,
}

impl PowerLimit {
    pub fn describe(self) -> &'static str {
        match self {
            PowerLimit::PowerCap => "power cap",
            PowerLimit::Cooling => "cooling capacity",
            PowerLimit::Inlet => "inlet temperature limit",
        }
    }
}

/// A site's physics at the worst forecast ambient of the horizon.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SitePhysics {
    pub ambient_c: f64,
    pub pue: f64,
    pub cooling_kw: f64,
    pub supply_c: f64,
    /// Inlet limit after the safety margin, °C.
    pub inlet_limit_c: f64,
    /// 1 inside the humidity envelope, the site's derate outside it.
    pub humidity_factor: f64,
    /// IT power with no workload (servers and accelerators), kW.
    pub idle_kw: f64,
    /// The accelerators' part of `idle_kw`, kW.
    pub accelerator_idle_kw: f64,
    /// IT kW allowed by each limit (after the humidity factor).
    pub it_kw_by_power_cap: f64,
    pub it_kw_by_cooling: f64,
    pub it_kw_by_inlet: f64,
    /// The smallest of the three, and which one it is.
    pub it_limit_kw: f64,
    pub binding: PowerLimit,
    /// Mean electricity price over the horizon, per kWh.
    pub price_per_kwh: f64,
}

impl SitePhysics {
    pub fn of(site: &Site, power: &SitePowerModel, horizon_hours: u32) -> SitePhysics {
        let ambient_c = worst_ambient_c(&site.ambient, horizon_hours);
        let pue = pue_at(site, ambient_c);
        let cooling_kw = cooling_kw_at(site, ambient_c);
        let supply_c = supply_c_at(site, ambient_c);
        let inlet_limit_c = inlet_limit_c(site);
        let humidity_factor = if in_humidity_envelope(site) {
            1.0
        } else {
            site.cooling.humidity_derate
        };
        let accelerator_idle_kw = power.accelerators_idle_kw();
        let idle_kw = site
            .power
            .idle_kw
            .unwrap_or_else(|| power.servers_idle_kw())
            + accelerator_idle_kw;
        let it_kw_by_power_cap = humidity_factor * site.power.cap_kw / pue;
        let it_kw_by_cooling = humidity_factor * cooling_kw;
        let it_kw_by_inlet = if site.thermal.recirc_c_per_kw > 0.0 {
            humidity_factor * (inlet_limit_c - supply_c).max(0.0) * site.thermal.racks as f64
                / site.thermal.recirc_c_per_kw
        } else {
            f64::INFINITY
        };
        let (it_limit_kw, binding) = [
            (it_kw_by_power_cap, PowerLimit::PowerCap),
            (it_kw_by_cooling, PowerLimit::Cooling),
            (it_kw_by_inlet, PowerLimit::Inlet),
        ]
        .into_iter()
        .fold((f64::INFINITY, PowerLimit::PowerCap), |best, c| {
            if c.0 < best.0 {
                c
            } else {
                best
            }
        });
        SitePhysics {
            ambient_c,
            pue,
            cooling_kw,
            supply_c,
            inlet_limit_c,
            humidity_factor,
            idle_kw,
            accelerator_idle_kw,
            it_kw_by_power_cap,
            it_kw_by_cooling,
            it_kw_by_inlet,
            it_limit_kw,
            binding,
            price_per_kwh: mean_price(&site.energy.price_per_kwh, horizon_hours),
        }
    }

    /// The IT power the thermal limits alone allow (cooling and inlet), for the thermal-risk term.
    pub fn thermal_limit_kw(&self) -> f64 {
        self.it_kw_by_cooling.min(self.it_kw_by_inlet)
    }
}

/// The worst (highest) of the current reading and the forecast within the horizon.
pub fn worst_ambient_c(ambient: &AmbientSpec, horizon_hours: u32) -> f64 {
    ambient
        .forecast_c
        .iter()
        .take(horizon_hours as usize)
        .fold(ambient.current_c, |a, &b| a.max(b))
}

/// Fraction of the way from the free-cooling limit to the maximum ambient (0–1).
fn heat_fraction(site: &Site, ambient_c: f64) -> f64 {
    let c = &site.cooling;
    let span = c.max_ambient_c - c.free_cooling_limit_c;
    if span <= 0.0 {
        return if ambient_c > c.free_cooling_limit_c {
            1.0
        } else {
            0.0
        };
    }
    ((ambient_c - c.free_cooling_limit_c) / span).clamp(0.0, 1.0)
}

pub fn pue_at(site: &Site, ambient_c: f64) -> f64 {
    let p = &site.power;
    p.pue_min + (p.pue_max - p.pue_min) * heat_fraction(site, ambient_c)
}

pub fn cooling_kw_at(site: &Site, ambient_c: f64) -> f64 {
    let c = &site.cooling;
    c.nominal_kw * (1.0 - (1.0 - c.derate_min) * heat_fraction(site, ambient_c))
}

/// Supply air: the set point, or ambient plus the approach while free cooling
/// can't reach it; above the free-cooling limit, mechanical cooling holds
/// supply at that limit plus the approach.
pub fn supply_c_at(site: &Site, ambient_c: f64) -> f64 {
    let free = ambient_c.min(site.cooling.free_cooling_limit_c);
    site.thermal
        .supply_setpoint_c
        .max(free + site.thermal.approach_c)
}

/// Allowable inlet for an ASHRAE class, °C.
pub fn class_limit_c(class: AshraeClass) -> f64 {
    match class {
        AshraeClass::A1 => 32.0,
        AshraeClass::A2 => 35.0,
        AshraeClass::A3 => 40.0,
        AshraeClass::A4 => 45.0,
    }
}

/// ASHRAE's recommended upper inlet, used when a site names neither class nor limit.
pub const RECOMMENDED_MAX_INLET_C: f64 = 27.0;

/// The site's inlet limit minus its safety margin, °C.
pub fn inlet_limit_c(site: &Site) -> f64 {
    let t = &site.thermal;
    let limit = t
        .inlet_limit_c
        .or(t.ashrae_class.map(class_limit_c))
        .unwrap_or(RECOMMENDED_MAX_INLET_C);
    limit - t.margin_c
}

/// Dew point from temperature and relative humidity (Magnus formula), °C.
pub fn dew_point_c(temp_c: f64, humidity_pct: f64) -> f64 {
    const B: f64 = 17.62;
    const C: f64 = 243.12;
    let gamma = (humidity_pct.max(0.1) / 100.0).ln() + B * temp_c / (C + temp_c);
    C * gamma / (B - gamma)
}

/// Allowable envelope: (min dew point, max dew point, min RH, max RH).
fn envelope(class: AshraeClass) -> (f64, f64, f64, f64) {
    match class {
        AshraeClass::A1 => (-12.0, 17.0, 8.0, 80.0),
        AshraeClass::A2 => (-12.0, 21.0, 8.0, 80.0),
        AshraeClass::A3 => (-12.0, 24.0, 8.0, 85.0),
        AshraeClass::A4 => (-12.0, 24.0, 8.0, 90.0),
    }
}

/// Whether the outside air is within the class's humidity envelope (A1 when no class is named).
pub fn in_humidity_envelope(site: &Site) -> bool {
    let (dp_min, dp_max, rh_min, rh_max) =
        envelope(site.thermal.ashrae_class.unwrap_or(AshraeClass::A1));
    let a = &site.ambient;
    let dew = a
        .dew_point_c
        .or_else(|| a.humidity_pct.map(|rh| dew_point_c(a.current_c, rh)));
    let dew_ok = dew.is_none_or(|d| (dp_min..=dp_max).contains(&d));
    let rh_ok = a
        .humidity_pct
        .is_none_or(|rh| (rh_min..=rh_max).contains(&rh));
    dew_ok && rh_ok
}

/// Mean price over `[0, horizon)` hours; a series holds each price until the next point.
pub fn mean_price(price: &Price, horizon_hours: u32) -> f64 {
    match price {
        Price::Flat(p) => *p,
        Price::Series(points) => {
            let hours = horizon_hours.max(1);
            let total: f64 = (0..hours)
                .map(|h| {
                    let t = h as f64;
                    points
                        .iter()
                        .filter(|p| p.hour <= t)
                        .max_by(|a, b| a.hour.total_cmp(&b.hour))
                        .or(points.first())
                        .map_or(0.0, |p| p.price_per_kwh)
                })
                .sum();
            total / hours as f64
        }
    }
}
