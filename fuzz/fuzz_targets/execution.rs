//! The plan executor's state machine (`edgeplan::execution`): a small plan
//! (up to 8 steps over 4 sites, with waves, dependencies and concurrency
//! limits, all from the input) driven by an event sequence decoded from the
//! rest of the input, the way the service's dispatcher and the operator's
//! verbs drive it. After every event the invariants are checked:
//!
//! - a refused transition leaves the execution unchanged;
//! - a step's state only moves forward (pending → running → succeeded |
//!   failed, pending → skipped) and its attempts never go down;
//! - a step the dispatcher started from `ready()` ran only once all its
//!   dependencies had succeeded and every step of earlier waves had
//!   succeeded or been skipped (the wave barrier), and `ready()` keeps
//!   within the limits;
//! - a cancelling plan has a step running; a cancelled one has none;
//! - a plan is never succeeded while a step failed or one is still pending
//!   or running; a failed plan has a failed step and says why;
//! - an approved or executing plan with nothing running is not done (it
//!   settles as soon as it is), and nothing is ready after a failure;
//! - terminal plans stay terminal;
//! - a well-formed plan (dependencies on earlier steps) that nothing failed
//!   or cancelled always runs to success when its ready steps succeed;
//! - the execution survives the store's JSON round trip unchanged.
#![no_main]

extern crate edgeplan_fuzz;

use edgeplan::execution::{apply_step, describe, Execution, PlanState, StepState};
use edgeplan::instance::{Limits, Workload};
use edgeplan::placement::Placement;
use edgeplan::plan::{Plan, Step, StepKind};
use edgeplan::problem::Kpis;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const SITES: [&str; 4] = ["a", "b", "c", "d"];
const WORKLOADS: usize = 3;
const MAX_STEPS: usize = 8;
const MAX_EVENTS: usize = 256;

#[derive(Debug, Clone, Copy)]
enum Event {
    Approve,
    Supersede,
    Cancel,
    Skip(usize),
    /// The dispatcher starts every ready step.
    StartReady,
    /// The dispatcher starts one of the ready steps.
    StartOneReady(usize),
    /// A start outside `ready()` (a resend after a restart, a buggy caller):
    /// the state machine must stay consistent, though this step may break
    /// the dependency and limit rules.
    StartDirect(usize),
    Retry(usize),
    Finish(usize, bool),
    /// The dispatcher found a step's precondition false.
    FailPrecondition(usize),
}

fn site(u: &mut Unstructured) -> Result<String> {
    Ok(SITES[u.choose_index(SITES.len())?].to_string())
}

fn build(u: &mut Unstructured) -> Result<(Plan, Limits)> {
    let n = u.int_in_range(0..=MAX_STEPS)?;
    let mut steps = Vec::with_capacity(n);
    for id in 0..n {
        let kind = match u.int_in_range(0..=4u8)? {
            0 => StepKind::Migrate,
            1 => StepKind::Stage,
            2 => StepKind::Start,
            3 => StepKind::Stop,
            _ => StepKind::Evict,
        };
        let (from, to) = match kind {
            StepKind::Migrate | StepKind::Stage => (Some(site(u)?), Some(site(u)?)),
            StepKind::Start => (None, Some(site(u)?)),
            StepKind::Stop | StepKind::Evict => (Some(site(u)?), None),
        };
        let notice_s = match kind {
            StepKind::Evict => f64::from(u.int_in_range(0..=300u16)?),
            _ => 0.0,
        };
        // Mostly earlier steps, as the planner makes them; sometimes any
        // index, an unknown one included, or itself.
        let mut depends_on = Vec::new();
        for _ in 0..u.int_in_range(0..=2u8)? {
            let d = if u.ratio(7u8, 8u8)? {
                if id == 0 {
                    continue;
                }
                u.int_in_range(0..=id - 1)?
            } else {
                u.int_in_range(0..=n)?
            };
            depends_on.push(d);
        }
        steps.push(Step {
            id,
            workload: format!("w{}", u.int_in_range(0..=WORKLOADS - 1)?),
            kind,
            from,
            to,
            wave: u.int_in_range(0..=3)?,
            depends_on,
            state_gib: 1.0,
            links: Vec::new(),
            duration_s: 10.0,
            start_s: 0.0,
            notice_s,
        });
    }
    let limits = Limits {
        max_in_flight: u.int_in_range(0..=4)?,
        max_in_per_site: u.int_in_range(0..=3)?,
        max_out_per_site: u.int_in_range(0..=3)?,
        ..Limits::default()
    };
    let plan = Plan {
        state_hash: "fuzz".into(),
        target: Placement::default(),
        steps,
        waves: Vec::new(),
        makespan_s: 0.0,
        blocked: Vec::new(),
        reached: Placement::default(),
        kpis_before: Kpis::default(),
        kpis_after: Kpis::default(),
    };
    Ok((plan, limits))
}

fn event(u: &mut Unstructured, n: usize) -> Result<Event> {
    // Step indices reach one past the end: unknown steps are refused.
    let k = |u: &mut Unstructured| u.int_in_range(0..=n);
    Ok(match u.int_in_range(0..=15u8)? {
        0 => Event::Approve,
        1 => Event::Supersede,
        2 => Event::Cancel,
        3 => Event::Skip(k(u)?),
        4..=6 => Event::StartReady,
        7..=8 => Event::StartOneReady(u.int_in_range(0..=7)?),
        9 => Event::StartDirect(k(u)?),
        10 => Event::Retry(k(u)?),
        11 => Event::FailPrecondition(k(u)?),
        _ => Event::Finish(k(u)?, !u.ratio(1u8, 5u8)?),
    })
}

/// Dependencies on earlier steps of earlier waves, as the planner makes them.
fn well_formed(plan: &Plan) -> bool {
    plan.steps.iter().enumerate().all(|(k, s)| {
        s.depends_on
            .iter()
            .all(|&d| d < k && plan.steps[d].wave < s.wave)
    })
}

fn workload(id: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "id": id, "replicas": 1, "resources": {},
        "current": {"a": 2, "b": 2, "c": 2, "d": 2},
    }))
    .expect("a minimal workload parses")
}

struct Harness {
    e: Execution,
    limits: Limits,
    /// Steps started outside `ready()`: exempt from the dependency and
    /// limit rules.
    direct: Vec<bool>,
    workloads: Vec<Workload>,
}

impl Harness {
    fn in_limit(v: u32, limit: u32) -> bool {
        v <= limit.max(1)
    }

    /// `ready()` against its contract.
    fn check_ready(&self) -> Vec<usize> {
        let e = &self.e;
        let ready = e.ready(&self.limits);
        let failed = e.count(StepState::Failed) > 0;
        if !matches!(e.state, PlanState::Approved | PlanState::Executing) || failed {
            assert!(
                ready.is_empty(),
                "{:?} plan (failed step: {failed}) offers {ready:?}",
                e.state
            );
            return ready;
        }
        let mut seen = vec![false; e.steps.len()];
        for &k in &ready {
            assert!(k < e.steps.len(), "ready offers unknown step {k}");
            assert!(!seen[k], "ready offers step {k} twice: {ready:?}");
            seen[k] = true;
            assert_eq!(
                e.steps[k].state,
                StepState::Pending,
                "ready offers non-pending step {k}"
            );
            for &d in &e.plan.steps[k].depends_on {
                assert!(
                    e.steps
                        .get(d)
                        .is_some_and(|s| s.state == StepState::Succeeded),
                    "ready offers step {k} before its dependency {d} succeeded"
                );
            }
            let wave = e.plan.steps[k].wave;
            for (j, (step, st)) in e.plan.steps.iter().zip(&e.steps).enumerate() {
                assert!(
                    step.wave >= wave
                        || matches!(st.state, StepState::Succeeded | StepState::Skipped),
                    "ready offers step {k} of wave {wave} while step {j} of wave {} is {:?}",
                    step.wave,
                    st.state
                );
            }
        }
        // Limits, counting what runs and what is offered.
        let running = e.running();
        if !ready.is_empty() {
            let total = (running.len() + ready.len()) as u32;
            assert!(
                Self::in_limit(total, self.limits.max_in_flight),
                "{} running + {ready:?} offered > max_in_flight {}",
                running.len(),
                self.limits.max_in_flight
            );
        }
        for s in SITES {
            let count = |ks: &[usize], f: fn(&Step) -> Option<&str>| {
                ks.iter()
                    .filter(|&&k| f(&e.plan.steps[k]) == Some(s))
                    .count() as u32
            };
            let (into_r, into_o) = (
                count(&running, |st| st.to.as_deref()),
                count(&ready, |st| st.to.as_deref()),
            );
            let (out_r, out_o) = (
                count(&running, |st| st.from.as_deref()),
                count(&ready, |st| st.from.as_deref()),
            );
            if into_o > 0 {
                assert!(
                    Self::in_limit(into_r + into_o, self.limits.max_in_per_site),
                    "site {s}: {into_r} arriving + {into_o} offered > max_in_per_site {}",
                    self.limits.max_in_per_site
                );
            }
            if out_o > 0 {
                assert!(
                    Self::in_limit(out_r + out_o, self.limits.max_out_per_site),
                    "site {s}: {out_r} leaving + {out_o} offered > max_out_per_site {}",
                    self.limits.max_out_per_site
                );
            }
        }
        ready
    }

    fn start_from_ready(&mut self, k: usize) {
        let deps_ok = self.e.plan.steps[k].depends_on.iter().all(|&d| {
            self.e
                .steps
                .get(d)
                .is_some_and(|s| s.state == StepState::Succeeded)
        });
        assert!(deps_ok, "step {k} offered before its dependencies");
        self.e
            .start(k)
            .unwrap_or_else(|err| panic!("a ready step does not start: {err}"));
    }

    fn finished(&mut self, k: usize, ok: bool) {
        let r = self
            .e
            .finish(k, ok, if ok { String::new() } else { "fuzz".into() });
        if r.is_ok() && ok {
            let step = self.e.plan.steps[k].clone();
            let w = step.workload[1..].parse::<usize>().expect("w<N>");
            let before: u32 = self.workloads[w].current.values().sum();
            let note = apply_step(&mut self.workloads[w], &step);
            let after: u32 = self.workloads[w].current.values().sum();
            if note.is_none() {
                let expected =
                    before + u32::from(step.to.is_some()) - u32::from(step.from.is_some());
                assert_eq!(
                    after, expected,
                    "apply_step lost or made a replica: {step:?}"
                );
            }
        }
        if let Some(step) = self.e.plan.steps.get(k) {
            let _ = describe(step);
        }
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Approve => {
                let was = self.e.state;
                assert_eq!(self.e.approve().is_ok(), was == PlanState::Recommended);
            }
            Event::Supersede => {
                let was = self.e.state;
                let ok = self.e.supersede().is_ok();
                assert_eq!(
                    ok,
                    matches!(was, PlanState::Recommended | PlanState::Approved)
                );
            }
            Event::Cancel => {
                let was = self.e.state;
                assert_eq!(
                    self.e.cancel().is_ok(),
                    !was.is_terminal() && was != PlanState::Cancelling
                );
            }
            Event::FailPrecondition(k) => {
                let pending = self.e.steps.get(k).map(|s| s.state) == Some(StepState::Pending);
                let active = matches!(self.e.state, PlanState::Approved | PlanState::Executing);
                let ok = self.e.fail_precondition(k, "fuzz".into()).is_ok();
                assert_eq!(ok, pending && active);
                if ok {
                    assert_eq!(self.e.steps[k].state, StepState::Failed);
                    assert_eq!(self.e.steps[k].attempts, 0, "no call was made");
                }
            }
            Event::Skip(k) => {
                if let Ok(skipped) = self.e.skip(k) {
                    assert!(
                        skipped.contains(&k),
                        "skip({k}) did not skip {k}: {skipped:?}"
                    );
                    for &s in &skipped {
                        assert_eq!(self.e.steps[s].state, StepState::Skipped);
                    }
                }
            }
            Event::StartReady => {
                for k in self.check_ready() {
                    self.start_from_ready(k);
                }
            }
            Event::StartOneReady(i) => {
                let ready = self.check_ready();
                if !ready.is_empty() {
                    self.start_from_ready(ready[i % ready.len()]);
                }
            }
            Event::StartDirect(k) => {
                if self.e.start(k).is_ok() {
                    self.direct[k] = true;
                }
            }
            Event::Retry(k) => {
                let before = self.e.steps.get(k).map(|s| s.attempts);
                if self.e.retry(k).is_ok() {
                    assert_eq!(self.e.steps[k].attempts, before.unwrap() + 1);
                }
            }
            Event::Finish(k, ok) => self.finished(k, ok),
        }
    }

    fn check(&self, before: &Execution) {
        let e = &self.e;
        if before.state.is_terminal() {
            assert_eq!(
                e.state, before.state,
                "terminal plan {} became {}",
                before.state, e.state
            );
        }
        for (k, (old, new)) in before.steps.iter().zip(&e.steps).enumerate() {
            use StepState::*;
            let legal = old.state == new.state
                || matches!(
                    (old.state, new.state),
                    (Pending, Running)
                        | (Pending, Skipped)
                        | (Running, Succeeded)
                        | (Running, Failed)
                )
                || (old.state, new.state) == (Pending, Failed)
                    && new.message.starts_with("precondition failed");
            assert!(legal, "step {k} went {:?} → {:?}", old.state, new.state);
            assert!(
                new.attempts >= old.attempts,
                "step {k}'s attempts went down"
            );
            if new.state == Pending {
                assert_eq!(new.attempts, 0, "pending step {k} has attempts");
            }
            let refused = new.state == Failed && new.message.starts_with("precondition failed");
            if matches!(new.state, Running | Succeeded | Failed) && !refused {
                assert!(new.attempts >= 1, "step {k} ran without an attempt");
            }
        }
        // A step the dispatcher started had its dependencies succeeded
        // (and a succeeded step stays succeeded).
        for (k, st) in e.steps.iter().enumerate() {
            if self.direct[k]
                || st.message.starts_with("precondition failed")
                || !matches!(
                    st.state,
                    StepState::Running | StepState::Succeeded | StepState::Failed
                )
            {
                continue;
            }
            for &d in &e.plan.steps[k].depends_on {
                assert!(
                    e.steps
                        .get(d)
                        .is_some_and(|s| s.state == StepState::Succeeded),
                    "step {k} is {:?} but its dependency {d} did not succeed",
                    st.state
                );
            }
        }
        // Steps started by the dispatcher alone keep within the limits.
        if !self.direct.iter().any(|&d| d) {
            let running = e.running();
            assert!(
                Self::in_limit(running.len() as u32, self.limits.max_in_flight),
                "in flight {running:?}"
            );
            for s in SITES {
                let into = running
                    .iter()
                    .filter(|&&k| e.plan.steps[k].to.as_deref() == Some(s))
                    .count() as u32;
                let out = running
                    .iter()
                    .filter(|&&k| e.plan.steps[k].from.as_deref() == Some(s))
                    .count() as u32;
                assert!(
                    Self::in_limit(into, self.limits.max_in_per_site),
                    "site {s}: {into} arriving"
                );
                assert!(
                    Self::in_limit(out, self.limits.max_out_per_site),
                    "site {s}: {out} leaving"
                );
            }
        }
        let failed = e.count(StepState::Failed);
        let pending = e.count(StepState::Pending);
        let running = e.count(StepState::Running);
        match e.state {
            PlanState::Succeeded => {
                assert_eq!(failed, 0, "succeeded plan with a failed step");
                assert_eq!(pending + running, 0, "succeeded plan with steps left");
            }
            PlanState::Failed => {
                assert!(failed > 0, "failed plan without a failed step");
                assert!(!e.error.is_empty(), "failed plan without an error");
            }
            PlanState::Cancelling => {
                assert!(running > 0, "cancelling with nothing running");
            }
            PlanState::Cancelled => {
                assert_eq!(running, 0, "cancelled with a step running");
            }
            PlanState::Approved | PlanState::Executing if running == 0 => {
                assert_eq!(
                    failed, 0,
                    "{} plan with a failed step and nothing running",
                    e.state
                );
                assert!(pending > 0, "{} plan with nothing left to do", e.state);
            }
            _ => {}
        }
        if failed > 0 {
            assert!(e.ready(&self.limits).is_empty(), "ready after a failure");
        }
        let _ = e.state.to_string();
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let (plan, limits) = build(u)?;
    let n = plan.steps.len();
    let mut h = Harness {
        e: Execution::new(7, plan, "fuzz".into(), 1),
        limits,
        direct: vec![false; n],
        workloads: (0..WORKLOADS).map(|w| workload(&format!("w{w}"))).collect(),
    };
    for _ in 0..MAX_EVENTS {
        if u.is_empty() {
            break;
        }
        let ev = event(u, n)?;
        let before = h.e.clone();
        h.apply(ev);
        h.check(&before);
    }
    // Refusals leave the execution unchanged.
    for k in 0..=n {
        let before = h.e.clone();
        if h.e.retry(k).is_err() {
            assert_eq!(h.e, before, "a refused retry changed the execution");
        } else {
            h.e = before.clone();
        }
        if h.e.finish(k, true, String::new()).is_err() {
            assert_eq!(h.e, before, "a refused finish changed the execution");
        }
        h.e = before.clone();
        if h.e.skip(k).is_err() {
            assert_eq!(h.e, before, "a refused skip changed the execution");
        }
        h.e = before.clone();
        if h.e.start(k).is_err() {
            assert_eq!(h.e, before, "a refused start changed the execution");
        }
        h.e = before;
        let _ = h.e.idempotency_key(k);
    }
    // The store keeps executions as JSON.
    let json = serde_json::to_string(&h.e).expect("an execution serializes");
    let back: Execution = serde_json::from_str(&json).expect("an execution deserializes");
    assert_eq!(back, h.e, "the JSON round trip changed the execution");

    // Liveness: a well-formed plan that nothing failed, cancelled or
    // superseded finishes once its ready steps run and succeed.
    if well_formed(&h.e.plan) && matches!(h.e.state, PlanState::Approved | PlanState::Executing) {
        let had_failure = h.e.count(StepState::Failed) > 0;
        for _ in 0..=2 * n + 1 {
            let before = h.e.clone();
            let running = h.e.running();
            if running.is_empty() {
                for k in h.check_ready() {
                    h.start_from_ready(k);
                }
            } else {
                for k in running {
                    h.finished(k, true);
                }
            }
            h.check(&before);
            if h.e.state.is_terminal() {
                break;
            }
        }
        let expected = if had_failure {
            PlanState::Failed
        } else {
            PlanState::Succeeded
        };
        assert!(
            h.e.state == expected,
            "a well-formed plan got stuck: {:?} with steps {:?}",
            h.e.state,
            h.e.steps.iter().map(|s| s.state).collect::<Vec<_>>()
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
