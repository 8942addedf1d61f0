//! The per-site rows ([`Row`]: every resource, the uplink (`UPLINK`)
//! among them, and IT power) and the one capacity test every solver, the
//! planner's room test and the explanations ask ([`within`]), with the
//! words for a site that lacks room.

pub use edgeplan_physics::physics::PowerLimit;

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

/// One per-site limit, linear in the replicas placed: a resource (its
/// index in `Problem::resources`; the uplink is one of them) or IT power
/// (the effective limit under the power cap, cooling and inlet, less idle
/// power). A replica's need on a resource row is the same everywhere; on
/// the power row it depends on the site's servers. Every solver, the room
/// test, the caps, the exact model's rows and the explanations iterate
/// [`Problem::rows`], so a new row needs no new code there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Row {
    Resource(usize),
    Power,
}

impl Row {
    /// Its position in a per-site vector of row use (resources, then power).
    pub fn index(self, resources: usize) -> usize {
        match self {
            Row::Resource(r) => r,
            Row::Power => resources,
        }
    }

    /// One replica's need on this row, given its resource demand and its
    /// IT kW at the site.
    pub fn need_of(self, demand: &[f64], dynamic_kw: f64) -> f64 {
        match self {
            Row::Resource(r) => demand[r],
            Row::Power => dynamic_kw,
        }
    }
}

impl Problem {
    /// Every per-site row: each resource, then IT power.
    pub fn rows(&self) -> impl DoubleEndedIterator<Item = Row> + Clone + 'static {
        (0..self.resources.len())
            .map(Row::Resource)
            .chain(std::iter::once(Row::Power))
    }

    /// How many rows a site has (a per-site use vector's length).
    pub fn row_count(&self) -> usize {
        self.resources.len() + 1
    }

    /// Site `si`'s limit on `row`.
    pub fn limit(&self, si: SiteIx, row: Row) -> f64 {
        let site = &self.sites[si];
        match row {
            Row::Resource(r) => site.capacity[r],
            Row::Power => site.dynamic_kw_limit,
        }
    }

    /// One replica of `wi`'s need on `row` at site `si`.
    pub fn need(&self, wi: WorkloadIx, si: SiteIx, row: Row) -> f64 {
        match row {
            Row::Resource(r) => self.workloads[wi].demand[r],
            Row::Power => self.replica_kw(wi, si),
        }
    }

    /// Add `n` replicas of `wi` (negative: remove) to a site's row use
    /// `used` (one entry per row, [`row_count`](Self::row_count) long).
    pub fn add_use(&self, wi: WorkloadIx, si: SiteIx, used: &mut [f64], n: f64) {
        let resources = self.resources.len();
        for row in self.rows() {
            used[row.index(resources)] += n * self.need(wi, si, row);
        }
    }

    /// The one capacity rule: may site `si`, with `used` on its rows
    /// (resources, then IT power), take one more replica of `wi`?
    pub fn room_for(
        &self,
        wi: WorkloadIx,
        si: SiteIx,
        used: &[f64],
    ) -> std::result::Result<(), Shortfall> {
        let resources = self.resources.len();
        for row in self.rows() {
            let need = self.need(wi, si, row);
            let (u, limit) = (used[row.index(resources)], self.limit(si, row));
            if need > 0.0 && !within(u + need, limit) {
                return Err(Shortfall {
                    row,
                    need,
                    free: limit - u,
                    gpu_kw: match row {
                        Row::Power => self.replica_gpu_kw(wi, si),
                        Row::Resource(_) => 0.0,
                    },
                });
            }
        }
        Ok(())
    }

    /// Is site `si`, with `used` on its rows, over any of its limits
    /// already? The same limits and tolerance as
    /// [`room_for`](Self::room_for) (a heat wave that cut a site's cooling
    /// leaves it over before any plan runs).
    pub fn over_limit(&self, si: SiteIx, used: &[f64]) -> bool {
        let resources = self.resources.len();
        self.rows()
            .any(|row| !within(used[row.index(resources)], self.limit(si, row)))
    }
}

/// What a site lacks to take one more replica: room on one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    pub row: Row,
    pub need: f64,
    pub free: f64,
    /// On the power row: the replica's accelerators' part of `need`, kW.
    pub gpu_kw: f64,
}

impl Shortfall {
    pub fn describe(&self, p: &Problem, si: SiteIx) -> String {
        let site = &p.sites[si];
        let (need, free) = (self.need, self.free.max(0.0));
        match self.row {
            Row::Resource(r) if p.resources[r] == UPLINK => format!(
                "{}'s {} Gbps uplink is full: one replica needs {} Gbps, {} left",
                site.name,
                round2(site.capacity[r]),
                round2(need),
                round2(free)
            ),
            Row::Resource(r) => format!(
                "{} is out of {}: one replica needs {}, {} free",
                site.name,
                p.resources[r],
                round2(need),
                round2(free)
            ),
            Row::Power => {
                let what = match site.physics.binding {
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
                if self.gpu_kw > 0.0 {
                    format!(
                        "{what}: one replica needs {need:.3} kW ({:.3} kW of it its GPUs), {free:.3} kW left",
                        self.gpu_kw
                    )
                } else {
                    format!("{what}: one replica needs {need:.3} kW, {free:.3} kW left")
                }
            }
        }
    }
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
