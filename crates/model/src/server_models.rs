//! Server power models: watts at active idle and at 10 % … 100 % load
//! (SPECpower_ssj2008 style), interpolated piecewise linearly. The built-in
//! catalogue is `models/servers.json`, compiled into the binary.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One server's measured power curve.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerModel {
    pub name: String,
    /// SPEC result id the curve comes from, when it is a published result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_result_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processor: String,
    /// Physical cores per server.
    pub cores: u32,
    #[serde(default)]
    pub memory_gib: f64,
    /// Watts at 0 % (active idle), 10 %, …, 100 % load: 11 values.
    pub watts: Vec<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl ServerModel {
    /// Watts at utilisation `u` (clamped to 0–1), linear between the 10 % points.
    pub fn watts_at(&self, u: f64) -> f64 {
        interpolate(&self.watts, u)
    }

    pub fn idle_watts(&self) -> f64 {
        self.watts.first().copied().unwrap_or(0.0)
    }

    /// Dynamic kW of a replica using `cores` cores at utilisation `u`: its
    /// share of a server's cores times the server's power above idle.
    pub fn replica_dynamic_kw(&self, cores: f64, u: f64) -> f64 {
        if self.cores == 0 {
            return 0.0;
        }
        cores / self.cores as f64 * (self.watts_at(u) - self.idle_watts()) / 1000.0
    }
}

/// Piecewise-linear interpolation on points evenly spaced over 0–1 (the
/// server and the accelerator curves alike).
pub fn interpolate(watts: &[f64], u: f64) -> f64 {
    let n = watts.len();
    if n == 0 {
        return 0.0;
    }
    if n == 1 {
        return watts[0];
    }
    let pos = u.clamp(0.0, 1.0) * (n - 1) as f64;
    let i = (pos.floor() as usize).min(n - 2);
    watts[i] + (watts[i + 1] - watts[i]) * (pos - i as f64)
}

#[derive(Deserialize)]
struct Catalogue {
    servers: Vec<ServerModel>,
}

/// The built-in catalogue, by name.
pub fn builtin() -> &'static BTreeMap<String, ServerModel> {
    static CATALOGUE: OnceLock<BTreeMap<String, ServerModel>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let text = include_str!("../../../models/servers.json");
        // The file ships with the binary and is tested; failing here is a build defect.
        let cat: Catalogue = serde_json::from_str(text).expect("models/servers.json is valid");
        cat.servers
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect()
    })
}

/// Built-in models overlaid with an instance's own.
pub fn catalogue_with(extra: &[ServerModel]) -> BTreeMap<String, ServerModel> {
    let mut all = builtin().clone();
    for m in extra {
        all.insert(m.name.clone(), m.clone());
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_at_least_twelve_real_servers() {
        let cat = builtin();
        assert!(cat.len() >= 12, "{} models", cat.len());
        for m in cat.values() {
            assert_eq!(m.watts.len(), 11, "{}", m.name);
            assert!(m
                .spec_result_id
                .as_deref()
                .unwrap_or("")
                .starts_with("power_ssj2008-"));
            assert!(
                m.watts.windows(2).all(|w| w[0] <= w[1] + 1e-9),
                "{} not monotone",
                m.name
            );
        }
    }

    #[test]
    fn interpolation_is_piecewise_linear() {
        // Dell R730 (E5-2699 v4), SPEC power_ssj2008-20160510-00732.
        let m = &builtin()["dell-r730-e5-2699v4"];
        assert_eq!(m.watts_at(0.0), m.watts[0]);
        assert_eq!(m.watts_at(1.0), m.watts[10]);
        assert!((m.watts_at(0.25) - (m.watts[2] + m.watts[3]) / 2.0).abs() < 1e-9);
        assert!((m.watts_at(0.5) - m.watts[5]).abs() < 1e-9);
        assert_eq!(m.watts_at(2.0), m.watts[10]);
    }
}
