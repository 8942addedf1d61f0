//! A year replayed: a fleet stepped hour by hour through real prices,
//! carbon and weather, each policy deciding on what it could know then and
//! judged on what happened. Pure: values in, values out, deterministic
//! (the optimizer runs on work budgets, never on the clock).
//!
//! Per hour `t`, for every site (tied to one grid zone of the year):
//! - **what a policy knows** (`Seen::Forecast`): the last reading (hour
//!   `t − 1`) of temperature, humidity and carbon; a Holt-Winters forecast
//!   of temperature fitted on the hours before `t`; the day-ahead prices
//!   of `t … t + 23` (what a day-ahead market has published);
//! - **what happened** (`Seen::Actual`): hour `t`'s temperature, humidity,
//!   carbon and price. The hour is judged on it — cost, carbon, inlet,
//!   facility power — with the very model the optimizer uses
//!   (`Problem::evaluate`), so a breach is counted when the real weather
//!   pushes a site past its limit even if the forecast said otherwise;
//! - `Seen::Foresight` is what a decision knows with the forecasts
//!   replaced by what happened (temperature of `t …`, carbon of `t`): the
//!   bound that prices forecasting (`edgeplan-foresight`).

pub mod policy;
pub mod year;

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use edgeplan_model::clock::Deadline;
use edgeplan_model::error::{Error, Issue, Result};
use edgeplan_model::instance::{Instance, Price, PricePoint};
use edgeplan_plan::plan::schedule;
use edgeplan_problem::evaluate::Evaluation;
use edgeplan_problem::ix::{SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_solve::fast::{Change, Replanner, DEFAULT_REPLAN_WORK};
use edgeplan_solve::solver::{solve, Method, SolveOptions};
use edgeplan_solve::spot;
use edgeplan_telemetry::forecast::{HoltWinters, HwState};

pub use policy::PolicyKind;
use policy::{decide, moves, RuleInput};
pub use year::{Year, YearFiles, Zone, ZoneHours};

/// Hours of weather a forecast is fitted on before the first decision.
pub const HISTORY_HOURS: usize = 48;

/// Hours of day-ahead prices a decision sees.
pub const DAY_AHEAD_HOURS: usize = 24;

/// Hours a move is priced over by default (see
/// `ReplayOptions::move_amortization_hours`): a day.
pub const DEFAULT_MOVE_AMORTIZATION_HOURS: f64 = 24.0;

/// Relative change of a workload's utilisation the optimizer re-plans for
/// (see `optimize`); the judge always takes the hour's demand.
pub const DEMAND_DEADBAND: f64 = 0.05;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// First hour (index into the year); at least `HISTORY_HOURS`.
    pub from_hour: usize,
    pub hours: usize,
    pub policies: Vec<PolicyKind>,
    /// Work budget of the optimizer's first solve (see `fast::Limit`).
    pub first_solve_work: u64,
    /// Work budget of each hourly re-plan.
    pub replan_work: u64,
    /// Hours a move is priced over when the optimizer decides: the
    /// instance's migration cost is one-off but its objective is per hour,
    /// so re-planned hourly a move must pay for itself within the hour
    /// (1: that myopic reading). At `h` a decision sees `1/h` of the
    /// migration cost — a move held `h` hours. The outcome is judged at the
    /// full cost either way.
    pub move_amortization_hours: f64,
    /// Zone of a site by id; a site not named takes the zone whose weather
    /// station is nearest.
    pub zones: BTreeMap<String, String>,
    /// Keep a row per hour × site × policy (`Replay::site_hours`).
    pub site_hours: bool,
    /// Hours between decisions (1: every hour). Between decisions every
    /// policy holds its placement; every hour is judged.
    pub step_hours: usize,
    /// How workloads' utilisation moves through the day.
    pub demand: Demand,
}

/// Workload demand over the replayed hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Each workload at the fleet's utilisation every hour.
    Flat,
    /// The fleet's utilisation times the Azure 2019 mean day
    /// (`gen::azure_mean_day`, 0.93–1.05) at the local hour of the
    /// workload's main user region (from its sites' longitude), capped at
    /// full use. The curve repeats daily, so a decision knows it (a
    /// same-hour-yesterday forecast is exact) and plans for its peak over
    /// the fleet's horizon; forecast error stays in the weather.
    Diurnal,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            from_hour: HISTORY_HOURS,
            hours: 24,
            policies: PolicyKind::ALL.to_vec(),
            first_solve_work: 2_000_000,
            replan_work: DEFAULT_REPLAN_WORK,
            move_amortization_hours: DEFAULT_MOVE_AMORTIZATION_HOURS,
            zones: BTreeMap::new(),
            site_hours: false,
            step_hours: 1,
            demand: Demand::Diurnal,
        }
    }
}

/// One policy's hour, judged on what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyHour {
    pub hour: usize,
    pub policy: &'static str,
    pub energy_cost: f64,
    pub carbon_kg: f64,
    /// Replicas moved from one site to another at the hour's start.
    pub moves: u32,
    /// Moves the policy wanted that the migration planner could not make
    /// safely this hour (the placement keeps those replicas where they were).
    pub blocked_moves: u32,
    /// Waves of the hour's migration plan and how long it runs.
    pub waves: u32,
    pub migration_s: f64,
    pub migrated_gib: f64,
    /// The objective's price of those moves.
    pub migration_cost: f64,
    pub unplaced_replicas: u64,
    /// Unplaced replicas by workload priority (absent: none).
    pub unplaced_by_priority: BTreeMap<u32, u64>,
    /// Replicas on a site that misses their latency SLO.
    pub slo_violations: u64,
    pub mean_rtt_ms: f64,
    /// Sites whose real inlet passed their limit (the declared limit, not
    /// the planning margin below it).
    pub inlet_breaches: u32,
    /// Sites whose facility power passed their cap.
    pub power_breaches: u32,
    /// Sites whose IT power passed what their cooling removes that hour.
    pub cooling_shortfalls: u32,
    pub worst_inlet_excess_c: f64,
    pub worst_power_excess_kw: f64,
    /// Spot replicas running, left out (their workloads' replicas not
    /// running), and evicted at the hour's start (a spot replica that left
    /// a site); what the running ones pay at the market's prices (edgeplan
    /// policies; the rule policies run no market: 0).
    pub spot_replicas: u64,
    pub spot_left_out: u64,
    pub spot_evictions: u32,
    pub spot_revenue: f64,
}

/// One site's hour under one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteHour {
    pub hour: usize,
    pub policy: &'static str,
    /// Index into `Replay::site_zones`.
    pub site: usize,
    pub ambient_c: f64,
    pub price_per_kwh: f64,
    pub carbon_g_per_kwh: f64,
    pub it_kw: f64,
    pub facility_kw: f64,
    pub power_cap_kw: f64,
    pub inlet_c: f64,
    pub inlet_limit_c: f64,
}

/// One policy over the whole replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyTotals {
    pub policy: &'static str,
    pub energy_cost: f64,
    pub carbon_kg: f64,
    pub moves: u64,
    pub blocked_moves: u64,
    /// Hours migration plans ran, summed, and the longest plan.
    pub migration_hours: f64,
    pub longest_migration_s: f64,
    pub migrated_gib: f64,
    pub migration_cost: f64,
    pub unplaced_replica_hours: u64,
    /// Unplaced replica-hours by workload priority.
    pub unplaced_by_priority: BTreeMap<u32, u64>,
    pub slo_violating_replica_hours: u64,
    /// Replica-weighted mean RTT over the hours.
    pub mean_rtt_ms: f64,
    pub inlet_breach_site_hours: u64,
    pub power_breach_site_hours: u64,
    pub cooling_shortfall_site_hours: u64,
    pub worst_inlet_excess_c: f64,
    pub worst_power_excess_kw: f64,
    /// Spot: replica-hours run and left out, evictions, revenue (see
    /// `PolicyHour`).
    pub spot_replica_hours: u64,
    pub spot_left_out_replica_hours: u64,
    pub spot_evictions: u64,
    pub spot_revenue: f64,
}

/// Where every policy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// The fleet's own placement (its workloads' `current`).
    Fleet,
    /// The fleet placed nothing: every policy starts from the latency-only
    /// placement of the first hour (what a latency-first scheduler did).
    LatencyOnly,
}

/// The replay's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub first_hour: String,
    pub last_hour: String,
    pub hours: usize,
    /// (site, zone) for every site.
    pub site_zones: Vec<(String, String)>,
    pub start: Start,
    pub totals: Vec<PolicyTotals>,
    /// Per hour, per policy.
    pub policy_hours: Vec<PolicyHour>,
    /// Per hour × site × policy, if asked for.
    pub site_hours: Vec<SiteHour>,
    /// UTC label of every replayed hour.
    pub hour_labels: Vec<String>,
    /// What happened at every zone a site is tied to, hour by hour.
    pub zones: Vec<ZoneSeries>,
}

/// A zone's replayed hours, as they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneSeries {
    pub zone: String,
    pub city: String,
    pub price_per_kwh: Vec<f64>,
    pub carbon_g_per_kwh: Vec<f64>,
    pub temperature_c: Vec<f64>,
}

/// One policy's day (UTC), summed from its hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub policy: &'static str,
    pub hours: u32,
    pub energy_cost: f64,
    pub carbon_kg: f64,
    pub moves: u64,
    pub blocked_moves: u64,
    pub migration_hours: f64,
    pub migrated_gib: f64,
    pub migration_cost: f64,
    pub unplaced_replica_hours: u64,
    /// Unplaced replica-hours by workload priority.
    pub unplaced_by_priority: BTreeMap<u32, u64>,
    pub slo_violating_replica_hours: u64,
    pub inlet_breach_site_hours: u64,
    pub power_breach_site_hours: u64,
    pub cooling_shortfall_site_hours: u64,
    pub worst_inlet_excess_c: f64,
    pub worst_power_excess_kw: f64,
}

impl Replay {
    pub fn totals_of(&self, policy: PolicyKind) -> Option<&PolicyTotals> {
        self.totals.iter().find(|t| t.policy == policy.name())
    }

    /// Index of `hour` (of the year) among the replayed hours.
    pub fn offset_of(&self, hour: usize) -> usize {
        hour - self.policy_hours.first().map_or(hour, |h| h.hour)
    }

    /// Per UTC day and policy (days in order, policies in replay order):
    /// the hours' KPIs summed, worst excesses the day's worst.
    pub fn days(&self) -> Vec<PolicyDay> {
        let mut days: Vec<PolicyDay> = Vec::new();
        let mut open: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &self.policy_hours {
            let label = &self.hour_labels[self.offset_of(h.hour)];
            let day = label.get(..10).unwrap_or(label);
            let k = match open.get(h.policy) {
                Some(&k) if days[k].day == day => k,
                _ => {
                    days.push(PolicyDay::new(day, h.policy));
                    open.insert(h.policy, days.len() - 1);
                    days.len() - 1
                }
            };
            days[k].add(h);
        }
        // Grouped by day, policies in the order they ran.
        let order: BTreeMap<&str, usize> = self
            .totals
            .iter()
            .enumerate()
            .map(|(i, t)| (t.policy, i))
            .collect();
        days.sort_by(|a, b| {
            a.day
                .cmp(&b.day)
                .then(order.get(a.policy).cmp(&order.get(b.policy)))
        });
        days
    }
}

impl PolicyDay {
    fn new(day: &str, policy: &'static str) -> PolicyDay {
        PolicyDay {
            day: day.to_string(),
            policy,
            hours: 0,
            energy_cost: 0.0,
            carbon_kg: 0.0,
            moves: 0,
            blocked_moves: 0,
            migration_hours: 0.0,
            migrated_gib: 0.0,
            migration_cost: 0.0,
            unplaced_replica_hours: 0,
            unplaced_by_priority: BTreeMap::new(),
            slo_violating_replica_hours: 0,
            inlet_breach_site_hours: 0,
            power_breach_site_hours: 0,
            cooling_shortfall_site_hours: 0,
            worst_inlet_excess_c: 0.0,
            worst_power_excess_kw: 0.0,
        }
    }

    fn add(&mut self, h: &PolicyHour) {
        self.hours += 1;
        self.energy_cost += h.energy_cost;
        self.carbon_kg += h.carbon_kg;
        self.moves += h.moves as u64;
        self.blocked_moves += h.blocked_moves as u64;
        self.migration_hours += h.migration_s / 3600.0;
        self.migrated_gib += h.migrated_gib;
        self.migration_cost += h.migration_cost;
        self.unplaced_replica_hours += h.unplaced_replicas;
        for (&p, &n) in &h.unplaced_by_priority {
            *self.unplaced_by_priority.entry(p).or_default() += n;
        }
        self.slo_violating_replica_hours += h.slo_violations;
        self.inlet_breach_site_hours += h.inlet_breaches as u64;
        self.power_breach_site_hours += h.power_breaches as u64;
        self.cooling_shortfall_site_hours += h.cooling_shortfalls as u64;
        self.worst_inlet_excess_c = self.worst_inlet_excess_c.max(h.worst_inlet_excess_c);
        self.worst_power_excess_kw = self.worst_power_excess_kw.max(h.worst_power_excess_kw);
    }
}

/// What a decision (or the judge) sees of hour `t`.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Forecast(&'a [HwState]),
    Foresight,
    Actual,
}

fn invalid(path: &str, message: String) -> Error {
    Error::Invalid(vec![Issue {
        path: path.into(),
        message,
    }])
}

/// Replay `fleet` through `year` under every policy of `opts`; `on_hour`
/// is called after each hour (a progress bar).
pub fn replay(
    fleet: &Instance,
    year: &Year,
    opts: &ReplayOptions,
    on_hour: &dyn Fn(usize),
) -> Result<Replay> {
    if opts.from_hour < HISTORY_HOURS {
        return Err(invalid(
            "from",
            format!(
                "the replay starts at hour {} of the year, but forecasts need {HISTORY_HOURS} hours of history: start on {} or later",
                opts.from_hour,
                year.labels.get(HISTORY_HOURS).map_or("", String::as_str)
            ),
        ));
    }
    if opts.hours == 0 || opts.from_hour + opts.hours > year.len() {
        return Err(invalid(
            "days",
            format!(
                "{} hours from hour {} pass the year's end ({} hours)",
                opts.hours,
                opts.from_hour,
                year.len()
            ),
        ));
    }
    if !(opts.move_amortization_hours >= 1.0 && opts.move_amortization_hours.is_finite()) {
        return Err(invalid(
            "amortize_hours",
            format!(
                "moves are priced over at least one hour, got {}",
                opts.move_amortization_hours
            ),
        ));
    }
    if opts.step_hours == 0 {
        return Err(invalid(
            "step",
            "decisions are at least one hour apart".into(),
        ));
    }
    // A policy named twice runs once (its first place kept).
    let mut policies: Vec<PolicyKind> = Vec::new();
    for &p in &opts.policies {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    if policies.is_empty() {
        return Err(invalid("policies", "no policy to replay".into()));
    }
    let mut site_zone = Vec::with_capacity(fleet.sites.len());
    // (`site_zones` for the nearest alone)
    for s in &fleet.sites {
        let z = match opts.zones.get(&s.id) {
            Some(id) => year.zone_index(id).ok_or_else(|| {
                invalid(
                    &format!("zones.{}", s.id),
                    format!("no zone {id:?} in the year"),
                )
            })?,
            None => year.nearest_zone(s.lat, s.lon),
        };
        site_zone.push(z);
    }
    let horizon = fleet.limits.horizon_hours.max(1) as usize;
    let hw = HoltWinters::default();
    let mut forecasters: Vec<HwState> = year
        .hours
        .iter()
        .map(|z| hw.fit(&z.temperature_c[..opts.from_hour]))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("from", "too little history to fit a forecast".into()))?;

    let demand = DemandCurve::new(fleet, year, opts.demand);
    let t0 = opts.from_hour;
    let mut knowable = fleet.clone();
    set_hour(
        &mut knowable,
        year,
        &site_zone,
        t0,
        horizon,
        Seen::Forecast(&forecasters),
    );
    let mut actual = fleet.clone();
    set_hour(&mut actual, year, &site_zone, t0, horizon, Seen::Actual);
    demand.set(&mut knowable, t0, horizon);
    demand.set(&mut actual, t0, 1);
    let mut foresight = fleet.clone();
    let mut kp = Problem::build(&knowable)?;
    let mut judge = Problem::build(&actual)?;

    let mut start = Start::Fleet;
    let mut x0 = kp.current_placement();
    if x0.iter().all(|sites| sites.is_empty()) {
        start = Start::LatencyOnly;
        x0 = latency_only_start(&kp);
    }
    let mut runs: Vec<Run> = policies
        .iter()
        .map(|&kind| Run {
            kind,
            x: x0.clone(),
            optimizer: None,
            hot: vec![false; fleet.sites.len()],
            turn: 0,
            totals: PolicyTotals::new(kind),
            rtt_replica_hours: 0.0,
            placed_replica_hours: 0.0,
        })
        .collect();

    let mut policy_hours = Vec::new();
    let mut site_hours = Vec::new();
    for t in t0..t0 + opts.hours {
        if t > t0 {
            set_hour(
                &mut knowable,
                year,
                &site_zone,
                t,
                horizon,
                Seen::Forecast(&forecasters),
            );
            set_hour(&mut actual, year, &site_zone, t, horizon, Seen::Actual);
            // Each view re-models the workloads whose demand it saw change.
            let known_changed = demand.set(&mut knowable, t, horizon);
            let actual_changed = demand.set(&mut actual, t, 1);
            // The two views are independent: updated side by side (the
            // hour's only serial work besides the forecasts).
            let (k, j) = rayon::join(
                || update_view(&mut kp, &knowable, &known_changed),
                || update_view(&mut judge, &actual, &actual_changed),
            );
            k?;
            j?;
        }
        if policies.contains(&PolicyKind::EdgeplanForesight) {
            set_hour(
                &mut foresight,
                year,
                &site_zone,
                t,
                horizon,
                Seen::Foresight,
            );
            demand.set(&mut foresight, t, horizon);
        }
        // Policies are independent within an hour: in parallel, results
        // kept in policy order (the same tables on any number of cores).
        let shared = Hour {
            fleet,
            knowable: &knowable,
            foresight: &foresight,
            actual: &actual,
            kp: &kp,
            judge: &judge,
            opts,
            t,
        };
        let results: Vec<Result<(PolicyHour, Vec<SiteHour>)>> =
            runs.par_iter_mut().map(|run| shared.step(run)).collect();
        for result in results {
            let (hour, sites) = result?;
            policy_hours.push(hour);
            site_hours.extend(sites);
        }
        for (z, f) in forecasters.iter_mut().enumerate() {
            f.update(year.hours[z].temperature_c[t]);
        }
        on_hour(t - t0 + 1);
    }
    let totals = runs.into_iter().map(Run::finish).collect();
    let span = t0..t0 + opts.hours;
    let mut used: Vec<usize> = site_zone.clone();
    used.sort_unstable();
    used.dedup();
    let zones = used
        .into_iter()
        .map(|z| ZoneSeries {
            zone: year.zones[z].id.clone(),
            city: year.zones[z].city.clone(),
            price_per_kwh: year.hours[z].price_per_kwh[span.clone()].to_vec(),
            carbon_g_per_kwh: year.hours[z].carbon_g_per_kwh[span.clone()].to_vec(),
            temperature_c: year.hours[z].temperature_c[span.clone()].to_vec(),
        })
        .collect();
    Ok(Replay {
        hour_labels: year.labels[span].to_vec(),
        zones,
        first_hour: year.labels[t0].clone(),
        last_hour: year.labels[t0 + opts.hours - 1].clone(),
        hours: opts.hours,
        site_zones: fleet
            .sites
            .iter()
            .zip(&site_zone)
            .map(|(s, &z)| (s.id.clone(), year.zones[z].id.clone()))
            .collect(),
        start,
        totals,
        policy_hours,
        site_hours,
    })
}

/// What every policy's hour shares.
struct Hour<'a> {
    fleet: &'a Instance,
    knowable: &'a Instance,
    foresight: &'a Instance,
    actual: &'a Instance,
    kp: &'a Problem,
    judge: &'a Problem,
    opts: &'a ReplayOptions,
    t: usize,
}

impl Hour<'_> {
    /// One policy decides the hour and is judged on it.
    fn step(&self, run: &mut Run) -> Result<(PolicyHour, Vec<SiteHour>)> {
        let before = std::mem::take(&mut run.x);
        let decides = (self.t - self.opts.from_hour).is_multiple_of(self.opts.step_hours);
        let target = match run.kind {
            _ if !decides => before.clone(),
            PolicyKind::Edgeplan => {
                optimize(run, &before, self.knowable, Some(self.kp), self.opts)?
            }
            PolicyKind::EdgeplanForesight => {
                optimize(run, &before, self.foresight, None, self.opts)?
            }
            kind => decide(
                self.kp,
                &before,
                kind,
                RuleInput {
                    hot_last_hour: &run.hot,
                    turn: &mut run.turn,
                    max_moves: self.fleet.limits.max_moves,
                },
            ),
        };
        // Every policy's moves go through the migration planner, on what
        // the decision could know: a move it cannot make safely is left
        // out, and the hour runs on the placement the plan reaches.
        let plan = if same_counts(&before, &target) {
            None
        } else {
            Some(schedule(&self.fleet.limits, self.kp, &before, &target))
        };
        let after = match &plan {
            Some(plan) => plan.reached.clone(),
            None => target,
        };
        if let Some(o) = &mut run.optimizer {
            o.settle(&before, &after);
        }
        let (mut hour, eval) =
            judge_hour(self.judge, self.fleet, &before, &after, self.t, run.kind);
        // What the running spot replicas pay at the hour's prices.
        if let Some(m) = run.optimizer.as_ref().and_then(|o| o.spot.as_ref()) {
            let p = self.kp;
            hour.spot_revenue = 0.0
                + p.workloads
                    .indices()
                    .filter(|&w| p.spot(w).is_some())
                    .flat_map(|wi| after[wi].iter().map(move |&(si, n)| (wi, si, n)))
                    .filter_map(|(wi, si, n)| {
                        Some(
                            f64::from(n)
                                * spot::shape_price(p, &m.sites, wi, si)?.price_per_replica_hour,
                        )
                    })
                    .sum::<f64>();
        }
        if let Some(plan) = &plan {
            hour.blocked_moves = plan.blocked.len() as u32;
            hour.waves = plan.waves.len() as u32;
            hour.migration_s = plan.makespan_s;
            hour.migrated_gib = plan.steps.iter().map(|s| s.state_gib).sum();
        }
        let mut site_hours = Vec::new();
        for (i, s) in eval.sites.iter().enumerate() {
            run.hot[i] = s.inlet_c > s.inlet_limit_c;
            if self.opts.site_hours {
                let site = &self.actual.sites[i];
                site_hours.push(SiteHour {
                    hour: self.t,
                    policy: run.kind.name(),
                    site: i,
                    ambient_c: site.ambient.current_c,
                    price_per_kwh: self.judge.sites[SiteIx::new(i)].physics.price_per_kwh,
                    carbon_g_per_kwh: site.energy.carbon_g_per_kwh,
                    it_kw: s.it_kw,
                    facility_kw: s.facility_kw,
                    power_cap_kw: s.power_cap_kw,
                    inlet_c: s.inlet_c,
                    inlet_limit_c: s.inlet_limit_c + site.thermal.margin_c,
                });
            }
        }
        run.add(&hour, &after);
        run.x = after;
        Ok((hour, site_hours))
    }
}

/// One policy's state between hours.
struct Run {
    kind: PolicyKind,
    x: Replicas,
    optimizer: Option<Optimizer>,
    /// Sites whose inlet passed the threshold in the last hour.
    hot: Vec<bool>,
    turn: usize,
    totals: PolicyTotals,
    rtt_replica_hours: f64,
    placed_replica_hours: f64,
}

/// The optimizer's own copy of the fleet (its workloads' `current` is its
/// placement) and its re-planner.
struct Optimizer {
    /// Without spot workloads when the fleet has some: the re-planner
    /// keeps the on-demand part, spot is admitted after each re-plan.
    inst: Instance,
    replanner: Replanner,
    /// Workloads whose placement changed last hour (of `inst`).
    changed: Vec<WorkloadIx>,
    spot: Option<SpotMarket>,
}

/// What the optimizer keeps of the spot market: the on-demand workloads'
/// indices in the fleet, the first solve's multipliers (re-plans price
/// with them: `spot::admit_from`), and the last hour's prices.
struct SpotMarket {
    kept: Vec<WorkloadIx>,
    duals: Vec<f64>,
    sites: Vec<spot::SitePrices>,
}

/// The optimizer's decision for the hour: a fast-path solve the first
/// hour, an incremental re-plan after.
fn optimize(
    run: &mut Run,
    before: &Replicas,
    seen: &Instance,
    seen_problem: Option<&Problem>,
    opts: &ReplayOptions,
) -> Result<Replicas> {
    let after = match &mut run.optimizer {
        None => {
            let mut inst = seen.clone();
            let hold = opts.move_amortization_hours.max(1.0);
            inst.objective.migration_per_move /= hold;
            inst.objective.migration_per_gib /= hold;
            set_current(&mut inst, before);
            let problem = Problem::build(&inst)?;
            let solved = solve(
                &problem,
                &SolveOptions {
                    method: Method::Fast,
                    deterministic: true,
                    work: Some(opts.first_solve_work),
                    ..SolveOptions::default()
                },
            )?;
            let (replanner, inst, market) = match solved.market {
                Some(market) => {
                    let (on_demand, kept) = spot::on_demand(&problem);
                    let x = spot::project(&kept, &solved.x);
                    let replanner = Replanner::new(on_demand, &x, solved.price);
                    let market = SpotMarket {
                        kept,
                        duals: market.duals,
                        sites: market.sites,
                    };
                    (replanner, spot::on_demand_instance(&inst), Some(market))
                }
                None => (Replanner::new(problem, &solved.x, solved.price), inst, None),
            };
            let mut replanner = replanner;
            replanner.set_work(Some(opts.replan_work));
            run.optimizer = Some(Optimizer {
                inst,
                replanner,
                changed: Vec::new(),
                spot: market,
            });
            solved.x
        }
        Some(o) => {
            o.inst.sites.clone_from(&seen.sites);
            let mut changes: Vec<Change> = (0..o.inst.sites.len())
                .map(|i| Change::Site(SiteIx::new(i)))
                .collect();
            // Workloads whose placement changed, or whose demand moved by
            // DEMAND_DEADBAND since the optimizer last took it: re-modelling
            // every workload every hour for a curve that moves 1–3 % an hour
            // would cost more than the rest of the re-plan.
            let mut workloads = o.changed.clone();
            let on_demand = seen.workloads.iter().filter(|w| w.spot.is_none());
            for (i, (mine, now)) in o.inst.workloads.iter_mut().zip(on_demand).enumerate() {
                if (now.utilization - mine.utilization).abs()
                    > DEMAND_DEADBAND * mine.utilization.max(1e-9)
                {
                    mine.utilization = now.utilization;
                    workloads.push(WorkloadIx::new(i));
                }
            }
            workloads.sort_unstable();
            workloads.dedup();
            changes.extend(workloads.into_iter().map(Change::Workload));
            o.replanner.apply(&o.inst, &changes, Deadline::NONE)?;
            let x = o.replanner.placement();
            match &mut o.spot {
                Some(m) => {
                    let built;
                    let p = match seen_problem {
                        Some(p) => p,
                        None => {
                            built = Problem::build(seen)?;
                            &built
                        }
                    };
                    let market =
                        spot::admit_from(p, &spot::lift(p, &m.kept, &x), &m.duals, Some(before));
                    m.sites = market.sites;
                    market.x
                }
                None => x,
            }
        }
    };
    Ok(after)
}

impl Optimizer {
    /// The hour ended on `after` (from `before`): the next re-plan starts
    /// there and its moves are sunk. Where the plan did not reach the
    /// optimizer's target, the re-planner is told where the fleet is.
    fn settle(&mut self, before: &Replicas, after: &Replicas) {
        let (before, after) = match &self.spot {
            Some(m) => (
                &spot::project(&m.kept, before),
                &spot::project(&m.kept, after),
            ),
            None => (before, after),
        };
        let target = self.replanner.placement();
        let reached = target
            .iter_enumerated()
            .all(|(wi, sites)| same_sites(sites, &after[wi]));
        if !reached {
            self.replanner.rebase(after);
        }
        self.changed = after
            .iter_enumerated()
            .filter(|(wi, sites)| !same_sites(sites, &before[*wi]))
            .map(|(wi, _)| wi)
            .collect();
        for &wi in &self.changed {
            self.inst.workloads[wi.ix()].current =
                site_counts(self.replanner.problem(), &after[wi]);
        }
    }
}

/// Whether every workload has the same replica count per site in both.
fn same_counts(a: &Replicas, b: &Replicas) -> bool {
    a.iter_enumerated()
        .all(|(wi, sites)| same_sites(sites, &b[wi]))
}

fn same_sites(a: &[(SiteIx, u32)], b: &[(SiteIx, u32)]) -> bool {
    let mut a: Vec<_> = a.iter().filter(|(_, n)| *n > 0).collect();
    let mut b: Vec<_> = b.iter().filter(|(_, n)| *n > 0).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn site_counts(p: &Problem, sites: &[(SiteIx, u32)]) -> BTreeMap<String, u32> {
    sites
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(si, n)| (p.sites[si].id.clone(), n))
        .collect()
}

/// Where a fleet with no placement starts: each replica at the nearest
/// site with room (the latency-only rule), as an operator would by hand.
pub fn latency_only_start(p: &Problem) -> Replicas {
    let mut turn = 0;
    decide(
        p,
        &Replicas::empty(p.workloads.len()),
        PolicyKind::LatencyOnly,
        RuleInput {
            hot_last_hour: &[],
            turn: &mut turn,
            max_moves: Some(0),
        },
    )
}

/// Each site's grid zone in `year`: the nearest by its weather station.
pub fn site_zones(fleet: &Instance, year: &Year) -> Vec<usize> {
    fleet
        .sites
        .iter()
        .map(|s| year.nearest_zone(s.lat, s.lon))
        .collect()
}

/// Hour `t` of `year` as it was: every site's outside air, humidity,
/// price and carbon (the demo's sensors and price feed read these).
pub fn set_actual_hour(inst: &mut Instance, year: &Year, site_zone: &[usize], t: usize) {
    set_hour(inst, year, site_zone, t, 1, Seen::Actual);
}

/// `x` as each workload's `current` placement.
pub fn set_current(inst: &mut Instance, x: &Replicas) {
    let ids: Vec<String> = inst.sites.iter().map(|s| s.id.clone()).collect();
    for (wi, sites) in x.iter_enumerated() {
        inst.workloads[wi.ix()].current = sites
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|&(si, n)| (ids[si.ix()].clone(), n))
            .collect();
    }
}

/// Put hour `t` as `seen` into every site's ambient and energy.
fn set_hour(
    inst: &mut Instance,
    year: &Year,
    site_zone: &[usize],
    t: usize,
    horizon: usize,
    seen: Seen,
) {
    let last = year.len() - 1;
    for (site, &z) in inst.sites.iter_mut().zip(site_zone) {
        let h = &year.hours[z];
        let day_ahead = Price::Series(
            (0..DAY_AHEAD_HOURS)
                .map(|k| PricePoint {
                    hour: k as f64,
                    price_per_kwh: h.price_per_kwh[(t + k).min(last)],
                })
                .collect(),
        );
        // (hour of the last reading, forecast from hour t on, price, carbon)
        let (now, forecast, price, carbon) = match seen {
            Seen::Forecast(states) => (
                t - 1,
                states[z].forecasts(horizon),
                day_ahead,
                h.carbon_g_per_kwh[t - 1],
            ),
            // The same shape as a forecast, told the truth.
            Seen::Foresight => (
                t - 1,
                (0..horizon)
                    .map(|k| h.temperature_c[(t + k).min(last)])
                    .collect(),
                day_ahead,
                h.carbon_g_per_kwh[t],
            ),
            Seen::Actual => (
                t,
                Vec::new(),
                Price::Flat(h.price_per_kwh[t]),
                h.carbon_g_per_kwh[t],
            ),
        };
        site.ambient.current_c = h.temperature_c[now];
        site.ambient.forecast_c = forecast;
        site.ambient.humidity_pct = Some(h.humidity_pct[now]);
        site.ambient.dew_point_c = None;
        site.energy.price_per_kwh = price;
        site.energy.carbon_g_per_kwh = carbon;
    }
}

/// Take every site of `inst` (telemetry changed, nothing structural) and
/// the workloads whose demand changed.
fn update_view(p: &mut Problem, inst: &Instance, workloads: &[WorkloadIx]) -> Result<()> {
    for i in 0..inst.sites.len() {
        let si = SiteIx::new(i);
        let update = p.site_update(inst, si)?;
        p.update_site(inst, si, update);
    }
    for &wi in workloads {
        p.update_workload(inst, wi);
    }
    Ok(())
}

/// Each workload's utilisation by hour (see [`Demand`]).
pub struct DemandCurve {
    /// (workload, its fleet utilisation, UTC offset of its users in hours)
    workloads: Vec<(WorkloadIx, f64, i64)>,
    day: [f64; 24],
    /// UTC hour of the year's first hour (from its label; a year need not
    /// start at midnight).
    first_utc_hour: i64,
}

impl DemandCurve {
    pub fn new(fleet: &Instance, year: &Year, demand: Demand) -> DemandCurve {
        let day = crate::gen::azure_mean_day();
        let workloads = match demand {
            Demand::Flat => Vec::new(),
            Demand::Diurnal => fleet
                .workloads
                .iter()
                .enumerate()
                .map(|(i, w)| (WorkloadIx::new(i), w.utilization, utc_offset_h(fleet, w)))
                .collect(),
        };
        let first_utc_hour = year
            .labels
            .first()
            .and_then(|l| l.get(11..13))
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        DemandCurve {
            workloads,
            day,
            first_utc_hour,
        }
    }

    /// Set in `inst` the highest utilisation of hours `t .. t + hours`
    /// (a decision plans for its horizon's peak demand, as for its worst
    /// forecast heat; the judge takes the hour alone); the workloads it
    /// changed.
    pub fn set(&self, inst: &mut Instance, t: usize, hours: usize) -> Vec<WorkloadIx> {
        let mut changed = Vec::new();
        for &(wi, base, offset) in &self.workloads {
            let peak = (0..hours.max(1))
                .map(|k| {
                    let local = self.first_utc_hour + t as i64 + k as i64 + offset;
                    self.day[local.rem_euclid(24) as usize]
                })
                .fold(0.0, f64::max);
            let u = (base * peak).min(1.0);
            let w = &mut inst.workloads[wi.ix()];
            if w.utilization != u {
                w.utilization = u;
                changed.push(wi);
            }
        }
        changed
    }
}

/// Hours ahead of UTC at a workload's main user region, from the
/// longitude of the sites at its node (15° an hour); 0 without users.
fn utc_offset_h(fleet: &Instance, w: &edgeplan_model::instance::Workload) -> i64 {
    let Some(main) = w
        .traffic
        .iter()
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
    else {
        return 0;
    };
    let Some(region) = fleet.regions.iter().find(|r| r.id == main.region) else {
        return 0;
    };
    let lons: Vec<f64> = fleet
        .sites
        .iter()
        .filter(|s| s.node.as_deref().unwrap_or(&s.id) == region.node)
        .map(|s| s.lon)
        .collect();
    if lons.is_empty() {
        return 0;
    }
    let lon = lons.iter().sum::<f64>() / lons.len() as f64;
    (lon / 15.0).round() as i64
}

/// Replicas of `x` left out, by workload priority.
fn unplaced_by_priority(judge: &Problem, x: &Replicas) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    // Spot replicas left out are not unplaced (see `spot_left_out`).
    for (wi, sites) in x
        .iter_enumerated()
        .filter(|(wi, _)| judge.spot(*wi).is_none())
    {
        let placed: u32 = sites.iter().map(|(_, n)| n).sum();
        let w = &judge.workloads[wi];
        let missing = w.replicas.saturating_sub(placed);
        if missing > 0 {
            *out.entry(w.priority).or_default() += missing as u64;
        }
    }
    out
}

/// The hour's KPIs of `after` (reached from `before`) on what happened.
fn judge_hour(
    judge: &Problem,
    fleet: &Instance,
    before: &Replicas,
    after: &Replicas,
    t: usize,
    kind: PolicyKind,
) -> (PolicyHour, Evaluation) {
    let eval = judge.evaluate(after);
    let kpis = judge.kpis_of(after, &eval);
    let moved = moves(before, after);
    let mut hour = PolicyHour {
        hour: t,
        policy: kind.name(),
        energy_cost: kpis.energy_cost_per_h,
        carbon_kg: kpis.carbon_kg_per_h,
        moves: moved.iter().sum(),
        blocked_moves: 0,
        waves: 0,
        migration_s: 0.0,
        migrated_gib: moved
            .iter_enumerated()
            .map(|(wi, &n)| n as f64 * judge.workloads[wi].state_gib)
            .sum(),
        migration_cost: moved
            .iter_enumerated()
            .map(|(wi, &n)| n as f64 * judge.workloads[wi].move_cost)
            .sum(),
        unplaced_replicas: kpis.unplaced_replicas,
        unplaced_by_priority: unplaced_by_priority(judge, after),
        slo_violations: kpis.slo_violations,
        mean_rtt_ms: kpis.mean_latency_ms,
        inlet_breaches: 0,
        power_breaches: 0,
        cooling_shortfalls: 0,
        worst_inlet_excess_c: 0.0,
        worst_power_excess_kw: 0.0,
        spot_replicas: 0,
        spot_left_out: 0,
        spot_evictions: 0,
        spot_revenue: 0.0,
    };
    for wi in judge
        .workloads
        .indices()
        .filter(|&w| judge.spot(w).is_some())
    {
        let running: u32 = after[wi].iter().map(|&(_, n)| n).sum();
        hour.spot_replicas += u64::from(running);
        hour.spot_left_out += u64::from(judge.workloads[wi].replicas.saturating_sub(running));
        for &(si, n) in &before[wi] {
            let stays = after[wi].iter().find(|(s, _)| *s == si).map_or(0, |e| e.1);
            hour.spot_evictions += n.saturating_sub(stays);
        }
    }
    for (s, site) in eval.sites.iter().zip(&fleet.sites) {
        let inlet_excess = s.inlet_c - (s.inlet_limit_c + site.thermal.margin_c);
        if inlet_excess > 1e-9 {
            hour.inlet_breaches += 1;
            hour.worst_inlet_excess_c = hour.worst_inlet_excess_c.max(inlet_excess);
        }
        let power_excess = s.facility_kw - s.power_cap_kw;
        if s.power_cap_kw > 0.0 && power_excess > 1e-9 {
            hour.power_breaches += 1;
            hour.worst_power_excess_kw = hour.worst_power_excess_kw.max(power_excess);
        }
        if s.cooling_headroom_kw < -1e-9 {
            hour.cooling_shortfalls += 1;
        }
    }
    (hour, eval)
}

impl PolicyTotals {
    fn new(kind: PolicyKind) -> PolicyTotals {
        PolicyTotals {
            policy: kind.name(),
            energy_cost: 0.0,
            carbon_kg: 0.0,
            moves: 0,
            blocked_moves: 0,
            migration_hours: 0.0,
            longest_migration_s: 0.0,
            migrated_gib: 0.0,
            migration_cost: 0.0,
            unplaced_replica_hours: 0,
            unplaced_by_priority: BTreeMap::new(),
            slo_violating_replica_hours: 0,
            mean_rtt_ms: 0.0,
            inlet_breach_site_hours: 0,
            power_breach_site_hours: 0,
            cooling_shortfall_site_hours: 0,
            worst_inlet_excess_c: 0.0,
            worst_power_excess_kw: 0.0,
            spot_replica_hours: 0,
            spot_left_out_replica_hours: 0,
            spot_evictions: 0,
            spot_revenue: 0.0,
        }
    }
}

impl Run {
    fn add(&mut self, h: &PolicyHour, x: &Replicas) {
        let t = &mut self.totals;
        t.energy_cost += h.energy_cost;
        t.carbon_kg += h.carbon_kg;
        t.moves += h.moves as u64;
        t.blocked_moves += h.blocked_moves as u64;
        t.migration_hours += h.migration_s / 3600.0;
        t.longest_migration_s = t.longest_migration_s.max(h.migration_s);
        t.migrated_gib += h.migrated_gib;
        t.migration_cost += h.migration_cost;
        t.unplaced_replica_hours += h.unplaced_replicas;
        t.slo_violating_replica_hours += h.slo_violations;
        t.inlet_breach_site_hours += h.inlet_breaches as u64;
        t.power_breach_site_hours += h.power_breaches as u64;
        t.cooling_shortfall_site_hours += h.cooling_shortfalls as u64;
        t.worst_inlet_excess_c = t.worst_inlet_excess_c.max(h.worst_inlet_excess_c);
        t.worst_power_excess_kw = t.worst_power_excess_kw.max(h.worst_power_excess_kw);
        t.spot_replica_hours += h.spot_replicas;
        t.spot_left_out_replica_hours += h.spot_left_out;
        t.spot_evictions += u64::from(h.spot_evictions);
        t.spot_revenue += h.spot_revenue;
        for (&p, &n) in &h.unplaced_by_priority {
            *t.unplaced_by_priority.entry(p).or_default() += n;
        }
        let placed: f64 = x
            .iter()
            .map(|sites| sites.iter().map(|(_, n)| *n as f64).sum::<f64>())
            .sum();
        self.rtt_replica_hours += h.mean_rtt_ms * placed;
        self.placed_replica_hours += placed;
    }

    fn finish(mut self) -> PolicyTotals {
        if self.placed_replica_hours > 0.0 {
            self.totals.mean_rtt_ms = self.rtt_replica_hours / self.placed_replica_hours;
        }
        self.totals
    }
}

/// The policies side by side, as the terminal shows them: totals, and
/// energy cost (alone and with the migration cost), carbon against
/// `latency-only` and `static` where they ran.
pub fn comparison_table(replay: &Replay) -> String {
    use std::fmt::Write;
    let base = |name: &str| replay.totals.iter().find(|t| t.policy == name);
    let (lat, stat) = (base("latency-only"), base("static"));
    let pct = |v: f64, b: Option<&PolicyTotals>, g: fn(&PolicyTotals) -> f64| match b {
        Some(b) if g(b).abs() > 1e-12 => format!("{:+.1}%", 100.0 * (v - g(b)) / g(b).abs()),
        _ => "-".into(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} to {} ({} h)",
        replay.first_hour, replay.last_hour, replay.hours
    );
    let _ = writeln!(
        out,
        "{:<19} {:>11} {:>7} {:>7} {:>10} {:>7} {:>7} {:>10} {:>7} {:>7} {:>6} {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:>7}",
        "policy",
        "energy",
        "vs_lat",
        "vs_stat",
        "+moves",
        "vs_lat",
        "vs_stat",
        "carbon_kg",
        "vs_lat",
        "vs_stat",
        "moves",
        "GiB",
        "unplc_h",
        "slo_h",
        "rtt_ms",
        "inlet",
        "power",
        "cooling"
    );
    let with_moves = |b: &PolicyTotals| b.energy_cost + b.migration_cost;
    for t in &replay.totals {
        let _ = writeln!(
            out,
            "{:<19} {:>11.2} {:>7} {:>7} {:>10.2} {:>7} {:>7} {:>10.1} {:>7} {:>7} {:>6} {:>8.0} {:>8} {:>6} {:>6.1} {:>5} {:>5} {:>7}",
            t.policy,
            t.energy_cost,
            pct(t.energy_cost, lat, |b| b.energy_cost),
            pct(t.energy_cost, stat, |b| b.energy_cost),
            with_moves(t),
            pct(with_moves(t), lat, with_moves),
            pct(with_moves(t), stat, with_moves),
            t.carbon_kg,
            pct(t.carbon_kg, lat, |b| b.carbon_kg),
            pct(t.carbon_kg, stat, |b| b.carbon_kg),
            t.moves,
            t.migrated_gib,
            t.unplaced_replica_hours,
            t.slo_violating_replica_hours,
            t.mean_rtt_ms,
            t.inlet_breach_site_hours,
            t.power_breach_site_hours,
            t.cooling_shortfall_site_hours
        );
    }
    let _ = writeln!(
        out,
        "energy: the facilities' energy bill; +moves: with the objective's migration cost; inlet, power, cooling: site-hours past a limit"
    );
    if replay
        .totals
        .iter()
        .any(|t| t.spot_replica_hours + t.spot_left_out_replica_hours > 0)
    {
        for t in &replay.totals {
            let replicas = (t.spot_replica_hours + t.spot_left_out_replica_hours) as f64
                / replay.hours.max(1) as f64;
            let _ = writeln!(
                out,
                "spot, {}: {} replica-hours run, {} left out, {} evictions ({:.2} per spot replica), revenue {:.2}",
                t.policy,
                t.spot_replica_hours,
                t.spot_left_out_replica_hours,
                t.spot_evictions,
                t.spot_evictions as f64 / replicas.max(1.0),
                t.spot_revenue
            );
        }
        let _ = writeln!(
            out,
            "spot: edgeplan admits spot replicas at its prices within their bids and evicts them with notice; the rule policies place spot workloads like any other and run no market (revenue 0)"
        );
    }
    out
}
