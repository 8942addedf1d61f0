//! The per-site rows — every resource, the uplink (`UPLINK`) and IT power —
//! and the one capacity test every solver, the planner's room test and the
//! explanations ask ([`within`]), with the words for a site that lacks room.

use edgeplan_physics::physics::PowerLimit;

use crate::ix::{SiteIx, WorkloadIx};
use crate::problem::Problem;

/// Relative slack for comparisons of sums against limits.
pub const EPS: f64 = 1e-9;

/// The row of the per-site uplink (backhaul) limit: a site's
/// `uplink_gbps` against the sum of its replicas' `egress_gbps`. It joins
/// the resource rows (and so every solver, the room test and the
/// explanations) when any site declares an uplink; a site that declares
/// none has an infinite limit there. The name is reserved: no resource may
/// take it (validation refuses it; the build and the verifier rely on
/// that).
pub const UPLINK: &str = "uplink_gbps";

/// The one capacity test, with its one tolerance: is `value` (a site's load
/// on one of its limits, after adding a replica) within `limit`? Every
/// solver, the planner's room test and the explanations ask this and
/// nothing else, so they never disagree at the edge. An infinite limit
/// (a site that declares no uplink) is never reached.
#[inline]
pub fn within(value: f64, limit: f64) -> bool {
    value <= limit + EPS * limit.abs().max(1.0)
}

/// The most replicas of size `need` that fit within `limit` by [`within`]
/// (`u32::MAX` for a need of zero or an infinite limit).
pub fn most_within(need: f64, limit: f64) -> u32 {
    if need <= 0.0 {
        return u32::MAX;
    }
    // `as` saturates: infinity gives u32::MAX, a negative limit 0.
    ((limit + EPS * limit.abs().max(1.0)) / need).floor() as u32
}

impl Problem {
    /// The one capacity rule: may site `si`, with `used` resources and
    /// `dynamic_kw` of workload power, take one more replica of `wi`?
    pub fn room_for(
        &self,
        wi: WorkloadIx,
        si: SiteIx,
        used: &[f64],
        dynamic_kw: f64,
    ) -> std::result::Result<(), Shortfall> {
        let site = &self.sites[si];
        for (r, d) in self.workloads[wi].demand.iter().enumerate() {
            let free = site.capacity[r] - used[r];
            if *d > 0.0 && !within(used[r] + d, site.capacity[r]) {
                return Err(Shortfall::Resource {
                    resource: r,
                    need: *d,
                    free,
                });
            }
        }
        let need_kw = self.replica_kw(wi, si);
        let free_kw = site.dynamic_kw_limit - dynamic_kw;
        if need_kw > 0.0 && !within(dynamic_kw + need_kw, site.dynamic_kw_limit) {
            return Err(Shortfall::Power {
                binding: site.physics.binding,
                need_kw,
                free_kw,
            });
        }
        Ok(())
    }

    /// Is site `si`, with `used` resources and `dynamic_kw` of workload
    /// power, over any of its limits already? The same limits and
    /// tolerance as [`room_for`](Self::room_for) (a heat wave that cut a
    /// site's cooling leaves it over before any plan runs).
    pub fn over_limit(&self, si: SiteIx, used: &[f64], dynamic_kw: f64) -> bool {
        let site = &self.sites[si];
        used.iter()
            .zip(&site.capacity)
            .any(|(u, c)| !within(*u, *c))
            || !within(dynamic_kw, site.dynamic_kw_limit)
    }
}

/// What a site lacks to take one more replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    Resource {
        resource: usize,
        need: f64,
        free: f64,
    },
    Power {
        binding: PowerLimit,
        need_kw: f64,
        free_kw: f64,
    },
}

impl Shortfall {
    pub fn describe(&self, p: &Problem, si: SiteIx) -> String {
        let site = &p.sites[si];
        match self {
            Shortfall::Resource {
                resource,
                need,
                free,
            } if p.resources[*resource] == UPLINK => format!(
                "{}'s {} Gbps uplink is full: one replica needs {} Gbps, {} left",
                site.name,
                round2(site.capacity[*resource]),
                round2(*need),
                round2(free.max(0.0))
            ),
            Shortfall::Resource {
                resource,
                need,
                free,
            } => format!(
                "{} is out of {}: one replica needs {}, {} free",
                site.name,
                p.resources[*resource],
                round2(*need),
                round2(free.max(0.0))
            ),
            Shortfall::Power {
                binding,
                need_kw,
                free_kw,
            } => {
                let what = match binding {
                    PowerLimit::PowerCap => format!(
                        "{} is at its {:.0} kW power cap (PUE {:.2} at {:.1} °C)",
                        site.name, site.power_cap_kw, site.physics.pue, site.physics.ambient_c
                    ),
                    PowerLimit::Cooling => format!(
                        "{} is at its cooling capacity ({:.1} kW at {:.1} °C ambient)",
                        site.name, site.physics.cooling_kw, site.physics.ambient_c
                    ),
                    PowerLimit::Inlet => format!(
                        "{} is at its inlet limit (predicted inlet would pass {:.1} °C at {:.1} °C ambient)",
                        site.name, site.physics.inlet_limit_c, site.physics.ambient_c
                    ),
                };
                format!(
                    "{what}: one replica needs {need_kw:.3} kW, {:.3} kW left",
                    free_kw.max(0.0)
                )
            }
        }
    }
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
