//! Alarms with hysteresis: when a site's thermal or power headroom, or the
//! fleet's latency SLOs, cross a threshold. An alarm rises once, stays up
//! until the value is back past the threshold by the hysteresis band, and
//! only a rising alarm asks for a new plan, so a value hovering at the
//! threshold does not make plans flap. Pure.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use edgeplan_problem::evaluate::SiteKpi;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Alarm below this inlet headroom, °C; clear above it + `inlet_hysteresis_c`.
    pub min_inlet_headroom_c: f64,
    pub inlet_hysteresis_c: f64,
    /// Alarm above this share of the effective IT limit; clear below it − `power_hysteresis`.
    pub max_power_use: f64,
    pub power_hysteresis: f64,
    /// Alarm while replicas miss their latency SLO.
    pub slo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    Thermal,
    Power,
    Slo,
}

/// A risen alarm, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The site, or `fleet` for SLOs.
    pub subject: String,
    pub kind: AlarmKind,
    pub text: String,
}

/// The alarms that are up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alarms {
    up: BTreeSet<(String, AlarmKind)>,
}

impl Alarms {
    /// Take the fleet's figures now; returns the alarms that rose.
    pub fn update(&mut self, sites: &[SiteKpi], slo_violations: u64, t: &Thresholds) -> Vec<Alarm> {
        let mut risen = Vec::new();
        for s in sites {
            let headroom_c = s.inlet_limit_c - s.inlet_c;
            self.edge(
                (s.site.clone(), AlarmKind::Thermal),
                headroom_c < t.min_inlet_headroom_c,
                headroom_c > t.min_inlet_headroom_c + t.inlet_hysteresis_c,
                || {
                    format!(
                        "{}: inlet headroom {:.1} °C is below {:.1} °C (predicted inlet {:.1} °C, limit {:.1} °C, ambient {:.1} °C)",
                        s.site, headroom_c, t.min_inlet_headroom_c, s.inlet_c, s.inlet_limit_c, s.ambient_c
                    )
                },
                &mut risen,
            );
            let use_ = if s.it_limit_kw > 0.0 {
                s.it_kw / s.it_limit_kw
            } else {
                f64::INFINITY
            };
            self.edge(
                (s.site.clone(), AlarmKind::Power),
                use_ > t.max_power_use,
                use_ < t.max_power_use - t.power_hysteresis,
                || {
                    format!(
                        "{}: IT power {:.1} kW is {:.0} % of its effective limit {:.1} kW ({:?} binds)",
                        s.site,
                        s.it_kw,
                        use_ * 100.0,
                        s.it_limit_kw,
                        s.binding
                    )
                },
                &mut risen,
            );
        }
        if t.slo {
            self.edge(
                ("fleet".into(), AlarmKind::Slo),
                slo_violations > 0,
                slo_violations == 0,
                || format!("{slo_violations} replica(s) miss their latency SLO"),
                &mut risen,
            );
        }
        // Sites that left the fleet take their alarms with them.
        self.up.retain(|(subject, kind)| {
            *kind == AlarmKind::Slo || sites.iter().any(|s| &s.site == subject)
        });
        risen
    }

    fn edge(
        &mut self,
        key: (String, AlarmKind),
        raise: bool,
        clear: bool,
        text: impl FnOnce() -> String,
        risen: &mut Vec<Alarm>,
    ) {
        if self.up.contains(&key) {
            if clear {
                self.up.remove(&key);
            }
        } else if raise {
            risen.push(Alarm {
                subject: key.0.clone(),
                kind: key.1,
                text: text(),
            });
            self.up.insert(key);
        }
    }

    pub fn is_up(&self, subject: &str, kind: AlarmKind) -> bool {
        self.up.contains(&(subject.to_string(), kind))
    }

    pub fn any_up(&self) -> bool {
        !self.up.is_empty()
    }
}
