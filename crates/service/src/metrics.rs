//! What the service exposes to Prometheus (`GET /metrics` on the HTTP port
//! that `http.rs` serves), in the text exposition format 0.0.4. Counters of what
//! happened since start live here ([`Metrics`]); everything else is read
//! from the state at scrape time — telemetry totals, plans and steps, the
//! leader lease, and per-site headroom from the same effective view the
//! solver plans with ([`super::view::View`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use edgeplan_plan::execution::PlanState;
use edgeplan_problem::evaluate::SiteKpi;
use edgeplan_solve::solver::Solved;

use super::view::View;
use super::Shared;

/// Upper bounds of the solve-time histogram's buckets, seconds.
const SOLVE_BUCKETS_S: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters since the process started.
#[derive(Default)]
pub struct Metrics {
    solves: Mutex<SolveTimes>,
    /// Provisioner calls repeated after a failed attempt.
    dispatch_retries: AtomicU64,
    /// Steps given up on after every attempt failed.
    dispatch_failures: AtomicU64,
    dispatch_fenced: AtomicU64,
    dispatch_unknown: AtomicU64,
    site_not_allowed: AtomicU64,
}

#[derive(Default)]
struct SolveTimes {
    /// Per bucket of [`SOLVE_BUCKETS_S`], solves at most that long.
    buckets: [u64; SOLVE_BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
    last_s: f64,
    /// The last solve's gap on the placed cost.
    last_gap: f64,
}

impl Metrics {
    /// A solve of `view` (or an incremental re-plan) took `seconds`.
    pub fn solved(&self, view: &View, solved: &Solved, seconds: f64) {
        let o = view.problem.evaluate(&solved.x).objective;
        let gap = edgeplan_problem::gap::placed_gap(o.total, solved.bound.min(o.total), o.unplaced);
        self.observe_solve(seconds, gap);
    }

    /// A solve ran for `seconds` and ended `placed_gap` from its bound.
    fn observe_solve(&self, seconds: f64, placed_gap: f64) {
        let mut t = self.solves.lock().unwrap_or_else(|p| p.into_inner());
        for (b, &le) in t.buckets.iter_mut().zip(&SOLVE_BUCKETS_S) {
            if seconds <= le {
                *b += 1;
            }
        }
        t.count += 1;
        t.sum_s += seconds;
        t.last_s = seconds;
        t.last_gap = placed_gap;
    }

    pub fn dispatch_retry(&self) {
        self.dispatch_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn readings_site_not_allowed(&self, n: u64) {
        self.site_not_allowed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dispatch_unknown(&self) {
        self.dispatch_unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dispatch_fenced(&self) {
        self.dispatch_fenced.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dispatch_failure(&self) {
        self.dispatch_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.sample_named("", labels, value);
    }

    fn sample_named(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            let text: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", text.join(","));
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// Label values escape backslash, quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn state_name<T: std::fmt::Debug>(s: T) -> String {
    format!("{s:?}").to_lowercase()
}

/// The exposition at this moment.
pub fn render(shared: &Shared) -> String {
    let mut out = String::new();
    // Telemetry: totals the telemetry state keeps (they survive a restart).
    let (accepted, rejected, sensors) = {
        let hub = shared.telemetry();
        let rejected: BTreeMap<String, u64> = hub
            .state
            .rejected
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        (hub.state.accepted, rejected, hub.state.sensors.len())
    };
    family(
        &mut out,
        "edgeplan_readings_accepted_total",
        "counter",
        "Telemetry readings accepted (Ingest, IngestAcked, NATS).",
    )
    .sample(&[], accepted as f64);
    let mut f = family(
        &mut out,
        "edgeplan_readings_rejected_total",
        "counter",
        "Telemetry readings rejected, by reason.",
    );
    for (reason, n) in &rejected {
        f.sample(&[("reason", reason)], *n as f64);
    }
    // Refused before the state (a site-scoped token), so counted here.
    f.sample(
        &[("reason", super::telemetry::SITE_NOT_ALLOWED)],
        shared.metrics.site_not_allowed.load(Ordering::Relaxed) as f64,
    );
    family(
        &mut out,
        "edgeplan_sensors",
        "gauge",
        "Sensors that have reported.",
    )
    .sample(&[], sensors as f64);

    // Solves.
    {
        let t = shared
            .metrics
            .solves
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut f = family(
            &mut out,
            "edgeplan_solve_seconds",
            "histogram",
            "Wall time of placement solves (Solve, continuous re-plans).",
        );
        for (&le, &n) in SOLVE_BUCKETS_S.iter().zip(&t.buckets) {
            f.sample_named("_bucket", &[("le", &number(le))], n as f64);
        }
        f.sample_named("_bucket", &[("le", "+Inf")], t.count as f64);
        f.sample_named("_sum", &[], t.sum_s);
        f.sample_named("_count", &[], t.count as f64);
        family(
            &mut out,
            "edgeplan_last_solve_seconds",
            "gauge",
            "Wall time of the last solve.",
        )
        .sample(&[], t.last_s);
        family(
            &mut out,
            "edgeplan_last_solve_gap_ratio",
            "gauge",
            "The last solve's gap on the cost of what is placed: (objective - bound) / placed cost.",
        )
        .sample(&[], t.last_gap);
    }

    // Plans and the steps of plans still running.
    let (version, plans, steps) = {
        let s = shared.state();
        let mut plans: BTreeMap<String, u64> = BTreeMap::new();
        let mut steps: BTreeMap<String, u64> = BTreeMap::new();
        for e in s.plans.values() {
            *plans.entry(state_name(e.state)).or_default() += 1;
            if matches!(
                e.state,
                PlanState::Approved | PlanState::Executing | PlanState::Cancelling
            ) {
                for st in &e.steps {
                    *steps.entry(state_name(st.state)).or_default() += 1;
                }
            }
        }
        (s.version, plans, steps)
    };
    family(
        &mut out,
        "edgeplan_inventory_version",
        "gauge",
        "The inventory's version (one more per change).",
    )
    .sample(&[], version as f64);
    let mut f = family(&mut out, "edgeplan_plans", "gauge", "Plans kept, by state.");
    for (state, n) in &plans {
        f.sample(&[("state", state)], *n as f64);
    }
    let mut f = family(
        &mut out,
        "edgeplan_active_plan_steps",
        "gauge",
        "Steps of approved, executing or cancelling plans, by state.",
    );
    for (state, n) in &steps {
        f.sample(&[("state", state)], *n as f64);
    }
    family(
        &mut out,
        "edgeplan_dispatch_retries_total",
        "counter",
        "Provisioner calls repeated after a failed attempt.",
    )
    .sample(
        &[],
        shared.metrics.dispatch_retries.load(Ordering::Relaxed) as f64,
    );
    family(
        &mut out,
        "edgeplan_dispatch_failures_total",
        "counter",
        "Steps failed after their last attempt.",
    )
    .sample(
        &[],
        shared.metrics.dispatch_failures.load(Ordering::Relaxed) as f64,
    );
    family(
        &mut out,
        "edgeplan_dispatch_fenced_total",
        "counter",
        "Provisioner calls refused for a newer leader's fencing token.",
    )
    .sample(
        &[],
        shared.metrics.dispatch_fenced.load(Ordering::Relaxed) as f64,
    );
    family(
        &mut out,
        "edgeplan_dispatch_unknown_total",
        "counter",
        "Steps whose attempts all ended without an answer: asked again, not failed.",
    )
    .sample(
        &[],
        shared.metrics.dispatch_unknown.load(Ordering::Relaxed) as f64,
    );

    // Cluster mode: this replica's role (a standalone service always leads).
    family(
        &mut out,
        "edgeplan_leader",
        "gauge",
        "1 while this replica holds the leader lease (always 1 standalone).",
    )
    .sample(
        &[("replica", &shared.cluster.replica_id)],
        if shared.cluster.is_leader() { 1.0 } else { 0.0 },
    );
    family(
        &mut out,
        "edgeplan_fencing_token",
        "gauge",
        "The last leader lease's fencing token this replica held (0 standalone).",
    )
    .sample(&[], shared.cluster.last_fence() as f64);

    // Per site, from the effective view (what the solver plans with).
    match View::now(shared) {
        Ok(view) => site_families(&mut out, &view),
        Err(_) => {
            // Nothing plannable yet (an empty inventory): no site series.
        }
    }
    out
}

fn site_families(out: &mut String, view: &View) {
    let sites = &view.eval.sites;
    type Figure = fn(&SiteKpi) -> f64;
    let families: [(&'static str, &str, Figure); 7] = [
        (
            "edgeplan_site_power_headroom_kw",
            "IT power the site can still take under its binding limit (power cap, cooling or inlet), kW.",
            |k| k.it_limit_kw - k.it_kw,
        ),
        (
            "edgeplan_site_it_kw",
            "Modelled IT power of the current placement, kW.",
            |k| k.it_kw,
        ),
        (
            "edgeplan_site_facility_power_headroom_kw",
            "Power cap minus facility power (IT × PUE), kW.",
            |k| k.power_cap_kw - k.facility_kw,
        ),
        (
            "edgeplan_site_cooling_headroom_kw",
            "Cooling capacity at today's ambient minus the heat to remove, kW.",
            |k| k.cooling_headroom_kw,
        ),
        (
            "edgeplan_site_inlet_headroom_c",
            "Inlet limit minus predicted inlet temperature, °C.",
            |k| k.inlet_limit_c - k.inlet_c,
        ),
        (
            "edgeplan_site_ambient_c",
            "Outside air at the site as telemetry says (else the inventory), °C.",
            |k| k.ambient_c,
        ),
        ("edgeplan_site_pue", "Power usage effectiveness now.", |k| {
            k.pue
        }),
    ];
    for (name, help, value) in families {
        let mut f = family(out, name, "gauge", help);
        for k in sites {
            f.sample(&[("site", &k.site)], value(k));
        }
    }
    let mut f = family(
        out,
        "edgeplan_site_binding",
        "gauge",
        "1 for the limit that binds the site's IT power now.",
    );
    for k in sites {
        f.sample(&[("site", &k.site), ("limit", k.binding.describe())], 1.0);
    }
    family(
        out,
        "edgeplan_unplaced_replicas",
        "gauge",
        "Replicas the current placement leaves unplaced.",
    )
    .sample(&[], view.kpis.unplaced_replicas as f64);
    family(
        out,
        "edgeplan_energy_cost_per_hour",
        "gauge",
        "Facility energy bill of the current placement, currency per hour.",
    )
    .sample(&[], view.kpis.energy_cost_per_h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_spelled_as_prometheus_reads_them() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "help")
            .sample(&[("reason", "a \"b\"\\\nc")], f64::INFINITY);
        assert!(
            out.ends_with("x_total{reason=\"a \\\"b\\\"\\\\\\nc\"} +Inf\n"),
            "{out}"
        );
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn solve_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_solve(0.07, 0.01);
        m.observe_solve(3.0, 0.0);
        let t = m.solves.lock().unwrap();
        assert_eq!(t.count, 2);
        assert_eq!(t.buckets[0], 0); // ≤ 0.01 s
        assert_eq!(t.buckets[2], 1); // ≤ 0.1 s
        assert_eq!(t.buckets[7], 2); // ≤ 5 s
        assert_eq!(t.last_gap, 0.0);
    }
}
