//! Spot capacity: per-site prices from the fast path's multipliers on the
//! on-demand problem (the marginal value of one more unit of each limit,
//! under the physics that sets it), a floor (the energy and carbon cost of
//! running the replica there), and the admission of spot replicas into the
//! room on-demand work leaves, where the price of their shape is at most
//! their bid. On-demand work is placed first and never moves for spot:
//! admission only adds. Pure: values in, values out.

use edgeplan_model::instance::Instance;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rows::{PowerLimit, Row};
use serde::Serialize;

use crate::fast::{self, FastOptions};

/// Work for the multipliers when the solve that placed on-demand work did
/// not run the fast path (the exact model has no multipliers to give).
pub const PRICE_WORK: u64 = 20_000_000;

/// Subgradient iterations of the multipliers at most: the step halves
/// after 15 without a better bound, so a search has settled well before.
pub const PRICE_ITERATIONS: usize = 400;

/// One limit's price at a site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitPrice {
    /// The resource's name, or `it_kw` for IT power.
    pub row: String,
    /// Per unit-hour (per vCPU-hour, GiB-hour, GPU-hour, kW-hour of IT power).
    pub price_per_unit_hour: f64,
    /// On-demand use of the limit, and the limit.
    pub used: f64,
    pub limit: f64,
}

/// A site's prices, with the words for them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SitePrices {
    pub site: String,
    pub name: String,
    pub units: Vec<UnitPrice>,
    /// Why the prices are what they are ("cooling binds at 34.0 °C").
    pub text: String,
}

/// A spot workload's replica shape priced at one site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapePrice {
    pub workload: String,
    pub site: String,
    /// Energy and carbon of one replica there, per hour.
    pub floor_per_replica_hour: f64,
    /// The limits' prices times what one replica uses of them.
    pub capacity_per_replica_hour: f64,
    pub price_per_replica_hour: f64,
}

/// Spot replicas placed at a site, at its price.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admission {
    pub workload: String,
    pub site: String,
    pub replicas: u32,
    pub price_per_replica_hour: f64,
}

/// Spot replicas left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeftOut {
    pub workload: String,
    pub replicas: u32,
    pub text: String,
}

/// The market's answer: prices, and what spot work got at them.
#[derive(Debug, Clone, Serialize)]
pub struct Market {
    pub sites: Vec<SitePrices>,
    pub shapes: Vec<ShapePrice>,
    pub admitted: Vec<Admission>,
    pub left_out: Vec<LeftOut>,
    /// Σ admitted replicas × the price where they run, per hour.
    pub revenue_per_hour: f64,
    /// The whole placement: on-demand as given, spot admitted.
    #[serde(skip)]
    pub x: Replicas,
    /// The multipliers the prices came from (per site and row, as the
    /// fast path lays them out): an incremental re-plan prices with them
    /// again ([`admit_from`]).
    #[serde(skip)]
    pub duals: Vec<f64>,
}

/// The fast path's multipliers for `on_demand` (a problem without spot
/// workloads), run to convergence on a fixed work budget (deterministic),
/// with candidates capped by the rules alone (see
/// `Problem::caps_without_limits`).
pub fn multipliers(on_demand: &Problem) -> Vec<f64> {
    fast::solve(
        &on_demand.caps_without_limits(),
        &FastOptions {
            target_gap: 0.0,
            deterministic: true,
            work: Some(PRICE_WORK),
            max_iterations: PRICE_ITERATIONS,
            prices_only: true,
            ..FastOptions::default()
        },
    )
    .price
}

/// Per site and limit, the price per unit-hour: a multiplier (cost per hour
/// per whole limit) over the limit. `duals` are per (site, row) as the fast
/// path lays them out; `x` places `p`'s on-demand work (for `used`).
pub fn site_prices(p: &Problem, x: &Replicas, duals: &[f64]) -> Vec<SitePrices> {
    let rows = p.row_count();
    let resources = p.resources.len();
    let mut used: IndexVec<SiteIx, Vec<f64>> =
        IndexVec::from_elem_n(vec![0.0; rows], p.sites.len());
    for (wi, sites) in x.iter_enumerated() {
        for &(si, n) in sites {
            p.add_use(wi, si, &mut used[si], f64::from(n));
        }
    }
    // Per site and limit, the most one replica of any workload that may
    // run there needs of it.
    let mut largest: IndexVec<SiteIx, Vec<f64>> =
        IndexVec::from_elem_n(vec![0.0; rows], p.sites.len());
    for (wi, w) in p.workloads.iter_enumerated() {
        for c in &w.candidates {
            for row in p.rows() {
                let need = p.need(wi, c.site, row);
                let l = &mut largest[c.site][row.index(resources)];
                *l = l.max(need);
            }
        }
    }
    p.sites
        .iter_enumerated()
        .map(|(si, s)| {
            let units: Vec<UnitPrice> = p
                .rows()
                .map(|row| {
                    let i = row.index(resources);
                    let limit = p.limit(si, row);
                    let dual = duals
                        .get(si.ix() * rows + i)
                        .copied()
                        .unwrap_or(0.0)
                        .max(0.0);
                    // Complementary slackness: a limit with room left for
                    // one more replica of every shape that may use it is
                    // not scarce, whatever small multiplier the subgradient
                    // search left on it.
                    let slack = limit - used[si][i];
                    let price =
                        if limit.is_finite() && limit > 0.0 && slack <= largest[si][i] + 1e-9 {
                            dual / limit
                        } else {
                            0.0
                        };
                    UnitPrice {
                        row: row_name(p, row),
                        price_per_unit_hour: price,
                        used: used[si][i],
                        limit,
                    }
                })
                .collect();
            let text = explain(p, si, &units);
            SitePrices {
                site: s.id.clone(),
                name: s.name.clone(),
                units,
                text,
            }
        })
        .collect()
}

fn row_name(p: &Problem, row: Row) -> String {
    match row {
        Row::Resource(r) => p.resources[r].clone(),
        Row::Power => "it_kw".into(),
    }
}

/// The words for a site's prices: what binds (the dearest limit, by what
/// its whole limit is worth), or that nothing does.
fn explain(p: &Problem, si: SiteIx, units: &[UnitPrice]) -> String {
    let s = &p.sites[si];
    let dearest = units
        .iter()
        .filter(|u| u.price_per_unit_hour > 0.0)
        .max_by(|a, b| {
            (a.price_per_unit_hour * a.limit).total_cmp(&(b.price_per_unit_hour * b.limit))
        });
    let power = units.last().filter(|u| u.row == "it_kw");
    let share = power.map_or(0.0, |u| if u.limit > 0.0 { u.used / u.limit } else { 0.0 });
    match dearest {
        None => format!(
            "{}: nothing binds — {:.0} % of its IT power limit in use at {:.1} °C outside; spot pays the floor (energy and carbon)",
            s.name,
            100.0 * share,
            s.physics.ambient_c
        ),
        Some(u) if u.row == "it_kw" => {
            let why = match s.physics.binding {
                PowerLimit::PowerCap => format!("its {:.0} kW power cap binds", s.power_cap_kw),
                PowerLimit::Cooling => format!(
                    "cooling binds at {:.1} °C outside ({:.1} kW of cooling)",
                    s.physics.ambient_c, s.physics.cooling_kw
                ),
                PowerLimit::Inlet => format!(
                    "the {:.1} °C inlet limit binds at {:.1} °C outside",
                    s.physics.inlet_limit_c, s.physics.ambient_c
                ),
            };
            format!(
                "{}: {:.4} per kW-hour of IT power — {why}, {:.1} of {:.1} kW in use",
                s.name, u.price_per_unit_hour, u.used, u.limit
            )
        }
        Some(u) => format!(
            "{}: {:.4} per {}-hour — {} binds, {:.1} of {:.1} in use",
            s.name, u.price_per_unit_hour, u.row, u.row, u.used, u.limit
        ),
    }
}

/// One replica of `wi` at `si`: the floor (its energy and carbon there) and
/// the limits' prices times its needs; `None` where it may not run.
pub fn shape_price(
    p: &Problem,
    sites: &[SitePrices],
    wi: WorkloadIx,
    si: SiteIx,
) -> Option<ShapePrice> {
    let c = p.workloads[wi].candidate_at(si)?;
    let resources = p.resources.len();
    let units = &sites[si.ix()].units;
    let capacity: f64 = p
        .rows()
        .map(|row| p.need(wi, si, row) * units[row.index(resources)].price_per_unit_hour)
        .sum();
    let floor = c.energy_cost + c.carbon_cost;
    Some(ShapePrice {
        workload: p.workloads[wi].id.clone(),
        site: p.sites[si].id.clone(),
        floor_per_replica_hour: floor,
        capacity_per_replica_hour: capacity,
        price_per_replica_hour: floor + capacity,
    })
}

/// Admit `p`'s spot replicas into the room `on_demand` (a placement of
/// `p`, spot workloads empty) leaves, at the prices `sites`: highest bid
/// first, a replica where it runs today if the price there is within its
/// bid and it fits, else at the cheapest site that fits within its bid.
/// On-demand replicas never move.
pub fn admit_at(p: &Problem, on_demand: &Replicas, sites: Vec<SitePrices>) -> Market {
    admit(p, on_demand, sites, None)
}

/// [`admit_at`] with where spot replicas run today given (`today`, a
/// placement of `p`) rather than read from `p`'s `current`: a replay's
/// policy keeps its own placement.
fn admit(
    p: &Problem,
    on_demand: &Replicas,
    sites: Vec<SitePrices>,
    today: Option<&Replicas>,
) -> Market {
    let runs_today = |wi: WorkloadIx, si: SiteIx| match today {
        Some(t) => t[wi].iter().find(|(s, _)| *s == si).map_or(0, |e| e.1),
        None => p.workloads[wi].current_at(si),
    };
    let rows = p.row_count();
    let mut x = on_demand.clone();
    let mut used: IndexVec<SiteIx, Vec<f64>> =
        IndexVec::from_elem_n(vec![0.0; rows], p.sites.len());
    for (wi, placed) in x.iter_enumerated() {
        for &(si, n) in placed {
            p.add_use(wi, si, &mut used[si], f64::from(n));
        }
    }
    let mut spot: Vec<WorkloadIx> = p
        .workloads
        .indices()
        .filter(|&w| p.spot(w).is_some())
        .collect();
    let bid = |w: WorkloadIx| p.spot(w).map_or(0.0, |s| s.max_price_per_replica_hour);
    spot.sort_by(|&a, &b| bid(b).total_cmp(&bid(a)).then(a.cmp(&b)));
    let (mut shapes, mut admitted, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
    let mut revenue = 0.0;
    for wi in spot {
        let wl = &p.workloads[wi];
        let mut priced: Vec<(ShapePrice, SiteIx)> = wl
            .candidates
            .iter()
            .filter_map(|c| Some((shape_price(p, &sites, wi, c.site)?, c.site)))
            .collect();
        shapes.extend(priced.iter().map(|(s, _)| s.clone()));
        let cheapest = priced
            .iter()
            .map(|(s, _)| s.price_per_replica_hour)
            .fold(f64::INFINITY, f64::min);
        // Where it runs today first (no move for nothing), then cheapest.
        priced.retain(|(s, _)| s.price_per_replica_hour <= bid(wi));
        priced.sort_by(|(a, sa), (b, sb)| {
            (runs_today(wi, *sb) > 0)
                .cmp(&(runs_today(wi, *sa) > 0))
                .then(
                    a.price_per_replica_hour
                        .total_cmp(&b.price_per_replica_hour),
                )
                .then(sa.cmp(sb))
        });
        let mut at: Vec<(SiteIx, u32)> = Vec::new();
        let mut per_domain: Vec<u32> = vec![0; p.failure_domains.len()];
        for _ in 0..wl.replicas {
            let fits = priced.iter().find(|(_, si)| {
                let here = at.iter().find(|(s, _)| s == si).map_or(0, |(_, n)| *n);
                let cap = wl.candidate_at(*si).map_or(0, |c| c.max_count);
                let domain_ok = match (p.sites[*si].failure_domain, wl.max_per_failure_domain) {
                    (Some(d), Some(max)) => per_domain[d] < max,
                    _ => true,
                };
                here < cap && domain_ok && p.room_for(wi, *si, &used[*si]).is_ok()
            });
            let Some((shape, si)) = fits else { break };
            let si = *si;
            p.add_use(wi, si, &mut used[si], 1.0);
            if let Some(d) = p.sites[si].failure_domain {
                per_domain[d] += 1;
            }
            revenue += shape.price_per_replica_hour;
            match at.iter_mut().find(|(s, _)| *s == si) {
                Some((_, n)) => *n += 1,
                None => at.push((si, 1)),
            }
        }
        let placed: u32 = at.iter().map(|(_, n)| n).sum();
        for &(si, n) in &at {
            let price = priced
                .iter()
                .find(|(_, s)| *s == si)
                .map_or(0.0, |(sh, _)| sh.price_per_replica_hour);
            admitted.push(Admission {
                workload: wl.id.clone(),
                site: p.sites[si].id.clone(),
                replicas: n,
                price_per_replica_hour: price,
            });
        }
        if placed < wl.replicas {
            let text = if priced.is_empty() {
                if cheapest.is_finite() {
                    format!(
                        "{}: no site's spot price is within its bid of {:.4}/h (cheapest {:.4}/h)",
                        wl.id,
                        bid(wi),
                        cheapest
                    )
                } else {
                    format!("{}: no site may host it", wl.id)
                }
            } else {
                format!(
                    "{}: no room left for more at a spot price within its bid of {:.4}/h",
                    wl.id,
                    bid(wi)
                )
            };
            left_out.push(LeftOut {
                workload: wl.id.clone(),
                replicas: wl.replicas - placed,
                text,
            });
        }
        at.sort_unstable();
        x[wi] = at;
    }
    Market {
        sites,
        shapes,
        admitted,
        left_out,
        revenue_per_hour: revenue,
        x,
        duals: Vec::new(),
    }
}

/// Prices that do not flap: each unit price keeps `keep` (0–1) of the
/// previous one for the same site and limit (an exponential average), the
/// rest from `next`; the words are written again for the smoothed prices.
/// A site or limit new in `next` takes its price as it is.
pub fn smooth(p: &Problem, previous: &[SitePrices], next: &mut [SitePrices], keep: f64) {
    let keep = keep.clamp(0.0, 1.0);
    for (si, site) in next.iter_mut().enumerate() {
        let Some(before) = previous.iter().find(|b| b.site == site.site) else {
            continue;
        };
        for u in &mut site.units {
            if let Some(b) = before.units.iter().find(|b| b.row == u.row) {
                u.price_per_unit_hour =
                    keep * b.price_per_unit_hour + (1.0 - keep) * u.price_per_unit_hour;
            }
        }
        if si < p.sites.len() && p.sites[SiteIx::new(si)].id == site.site {
            site.text = explain(p, SiteIx::new(si), &site.units);
        }
    }
}

/// `p`'s on-demand work alone (its spot workloads left out), with each
/// kept workload's index in `p`.
pub fn on_demand(p: &Problem) -> (Problem, Vec<WorkloadIx>) {
    p.restrict(|w| p.spot(w).is_none())
}

/// `p`'s on-demand workloads (those [`on_demand`] keeps), in order.
pub fn on_demand_workloads(p: &Problem) -> Vec<WorkloadIx> {
    p.workloads
        .indices()
        .filter(|&w| p.spot(w).is_none())
        .collect()
}

/// A placement of [`on_demand`]'s problem (whose workloads are `p`'s
/// `kept`) as one of `p`, spot workloads unplaced.
pub fn lift(p: &Problem, kept: &[WorkloadIx], x: &Replicas) -> Replicas {
    let mut all = Replicas::empty(p.workloads.len());
    for (k, &wi) in kept.iter().enumerate() {
        all[wi] = x[WorkloadIx::new(k)].clone();
    }
    all
}

/// `x`, a placement of `p`, restricted to `p`'s `kept` workloads (a
/// placement of [`on_demand`]'s problem).
pub fn project(kept: &[WorkloadIx], x: &Replicas) -> Replicas {
    kept.iter().map(|&wi| x[wi].clone()).collect()
}

/// `inst` without its spot workloads: the instance [`on_demand`]'s
/// problem answers, workloads in the same order.
pub fn on_demand_instance(inst: &Instance) -> Instance {
    Instance {
        workloads: inst
            .workloads
            .iter()
            .filter(|w| w.spot.is_none())
            .cloned()
            .collect(),
        ..inst.clone()
    }
}

/// The market on placement `x`: its on-demand replicas where `x` puts
/// them, prices from [`multipliers`] on the on-demand problem (smoothed
/// against `previous` when given, keeping `keep` of it), spot admitted
/// afresh. On today's placement (`Problem::current_placement`) it is what
/// a spot customer would get now.
pub fn on(p: &Problem, x: &Replicas, previous: Option<&[SitePrices]>, keep: f64) -> Market {
    on_with(p, &on_demand(p).0, x, previous, keep)
}

/// [`on`] with `p`'s [`on_demand`] problem already made (a solve made it).
pub fn on_with(
    p: &Problem,
    on_demand: &Problem,
    x: &Replicas,
    previous: Option<&[SitePrices]>,
    keep: f64,
) -> Market {
    let duals = multipliers(on_demand);
    let x = without_spot(p, x);
    let mut sites = site_prices(p, &x, &duals);
    if let Some(previous) = previous {
        smooth(p, previous, &mut sites, keep);
    }
    Market {
        duals,
        ..admit_at(p, &x, sites)
    }
}

/// Spot admitted on placement `x` at multipliers `duals` made before (an
/// earlier [`Market::duals`] of the same sites): an incremental re-plan's
/// market, in milliseconds. The floors are `p`'s own (today's energy,
/// carbon and physics); only the limits' scarcity is the earlier one's.
/// A spot replica stays where `today` runs it (`p`'s `current` when
/// `None`) while its price there is within its bid.
pub fn admit_from(p: &Problem, x: &Replicas, duals: &[f64], today: Option<&Replicas>) -> Market {
    let x = without_spot(p, x);
    let sites = site_prices(p, &x, duals);
    Market {
        duals: duals.to_vec(),
        ..admit(p, &x, sites, today)
    }
}

fn without_spot(p: &Problem, x: &Replicas) -> Replicas {
    let mut x = x.clone();
    for wi in p.workloads.indices() {
        if p.spot(wi).is_some() {
            x[wi].clear();
        }
    }
    x
}
