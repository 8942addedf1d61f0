//! The plan executor's state machine and the alarms' hysteresis (pure core):
//! random event sequences against the invariants, and hand-made cases.

use std::collections::BTreeMap;

use edgeplan::alarm::{AlarmKind, Alarms, Thresholds};
use edgeplan::evaluate::SiteKpi;
use edgeplan::execution::{apply_step, Execution, PlanState, StepState};
use edgeplan::instance::Limits;
use edgeplan::physics::PowerLimit;
use edgeplan::placement::Placement;
use edgeplan::plan::{Plan, Step, StepKind};
use edgeplan::problem::Kpis;
use proptest::prelude::*;

fn step(id: usize, from: &str, to: &str, wave: usize, deps: Vec<usize>) -> Step {
    Step {
        id,
        workload: format!("w{}", id % 3),
        kind: StepKind::Migrate,
        from: Some(from.into()),
        to: Some(to.into()),
        wave,
        depends_on: deps,
        state_gib: 1.0,
        links: Vec::new(),
        duration_s: 10.0,
        start_s: 0.0,
        notice_s: 0.0,
    }
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan {
        state_hash: "h".into(),
        target: Placement::default(),
        steps,
        waves: Vec::new(),
        makespan_s: 0.0,
        blocked: Vec::new(),
        reached: Placement::default(),
        kpis_before: Kpis::default(),
        kpis_after: Kpis::default(),
    }
}

/// Six steps: 0,1,2 in wave 0 (two leave `a`), 3 needs 0, 4 needs 3, 5 needs 1.
fn six() -> Plan {
    plan(vec![
        step(0, "a", "b", 0, vec![]),
        step(1, "a", "c", 0, vec![]),
        step(2, "d", "b", 0, vec![]),
        step(3, "b", "c", 1, vec![0]),
        step(4, "c", "d", 2, vec![3]),
        step(5, "c", "a", 1, vec![1]),
    ])
}

fn limits(in_flight: u32, per_site: u32) -> Limits {
    Limits {
        max_in_flight: in_flight,
        max_in_per_site: per_site,
        max_out_per_site: per_site,
        ..Limits::default()
    }
}

#[test]
fn ready_respects_dependencies_and_limits() {
    let mut e = Execution::new(1, six(), "test".into(), 1);
    assert!(
        e.ready(&limits(10, 10)).is_empty(),
        "nothing before approval"
    );
    e.approve().unwrap();
    assert_eq!(e.ready(&limits(10, 10)), vec![0, 1, 2]);
    // One out of `a` at a time; one into `b` at a time.
    assert_eq!(e.ready(&limits(10, 1)), vec![0]);
    assert_eq!(e.ready(&limits(2, 10)), vec![0, 1]);
    e.start(0).unwrap();
    assert_eq!(e.state, PlanState::Executing);
    // 0 runs a → b: 1 would be a second out of `a`, 2 a second into `b`.
    assert!(e.ready(&limits(10, 1)).is_empty());
    assert_eq!(e.ready(&limits(10, 2)), vec![1, 2]);
    e.finish(0, true, "ok".into()).unwrap();
    // The wave barrier: 3 depends only on 0, but wave 1 waits for all of wave 0.
    assert!(
        !e.ready(&limits(10, 10)).contains(&3),
        "3 may not start while wave 0 runs"
    );
    for k in [1, 2] {
        e.start(k).unwrap();
        e.finish(k, true, "ok".into()).unwrap();
    }
    assert_eq!(
        e.ready(&limits(10, 10)),
        vec![3, 5],
        "wave 1, once wave 0 is done"
    );
    assert!(!e.ready(&limits(10, 10)).contains(&4), "4 waits for 3");
}

#[test]
fn a_failure_holds_everything_and_the_plan_fails_once_nothing_runs() {
    let mut e = Execution::new(1, six(), "test".into(), 1);
    e.approve().unwrap();
    e.start(0).unwrap();
    e.start(1).unwrap();
    e.finish(0, false, "disk full".into()).unwrap();
    assert_eq!(e.state, PlanState::Executing, "step 1 still runs");
    assert!(
        e.ready(&limits(10, 10)).is_empty(),
        "nothing new after a failure"
    );
    e.finish(1, true, "ok".into()).unwrap();
    assert_eq!(e.state, PlanState::Failed);
    assert!(e.error.contains("disk full"));
    assert_eq!(e.count(StepState::Pending), 4);
}

#[test]
fn skipping_a_step_skips_what_depends_on_it() {
    let mut e = Execution::new(1, six(), "test".into(), 1);
    e.approve().unwrap();
    // 3 and 4 depend on 0; 5 arrives at `a`, the site 0 would have left.
    assert_eq!(e.skip(0).unwrap(), vec![0, 3, 4, 5]);
    for k in [1, 2, 5] {
        if e.ready(&limits(10, 10)).contains(&k) {
            e.start(k).unwrap();
            e.finish(k, true, String::new()).unwrap();
        }
    }
    e.start(5).ok();
    if e.steps[5].state == StepState::Running {
        e.finish(5, true, String::new()).unwrap();
    }
    assert_eq!(e.state, PlanState::Succeeded);
    assert!(e.skip(1).is_err(), "a finished plan takes no more verbs");
}

#[test]
fn verbs_outside_their_states_are_refused() {
    let mut e = Execution::new(1, six(), "test".into(), 1);
    assert!(e.start(0).is_err(), "not approved");
    e.supersede().unwrap();
    assert!(e.approve().is_err());
    let err = e.approve().unwrap_err().to_string();
    assert!(err.contains("superseded"), "{err}");
    let mut e = Execution::new(2, six(), "test".into(), 1);
    e.approve().unwrap();
    e.cancel().unwrap();
    assert!(e.ready(&limits(10, 10)).is_empty());
    assert!(e.cancel().is_err());
    let mut e = Execution::new(3, plan(vec![]), "test".into(), 1);
    e.approve().unwrap();
    assert_eq!(
        e.state,
        PlanState::Succeeded,
        "an empty plan is done at once"
    );
}

#[test]
fn applying_steps_moves_one_replica_each() {
    let mut w = crate::common::workload("w0", 2, 1.0);
    w.current = BTreeMap::from([("a".to_string(), 2)]);
    assert_eq!(apply_step(&mut w, &step(0, "a", "b", 0, vec![])), None);
    assert_eq!(
        w.current,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );
    assert_eq!(apply_step(&mut w, &step(0, "a", "b", 0, vec![])), None);
    assert_eq!(w.current, BTreeMap::from([("b".into(), 2)]));
    let note = apply_step(&mut w, &step(0, "a", "c", 0, vec![])).unwrap();
    assert!(note.contains("drifted"), "{note}");
}

#[derive(Debug, Clone)]
enum Event {
    Approve,
    Cancel,
    Skip(usize),
    StartReady,
    Finish(usize, bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::Approve),
        1 => Just(Event::Cancel),
        1 => (0usize..6).prop_map(Event::Skip),
        4 => Just(Event::StartReady),
        4 => (0usize..6, prop::bool::weighted(0.8)).prop_map(|(k, ok)| Event::Finish(k, ok)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    /// Whatever happens: a step runs only with its dependencies succeeded,
    /// limits hold, and the plan is never succeeded with a failed step.
    #[test]
    fn random_event_sequences_keep_the_invariants(events in prop::collection::vec(event(), 1..60)) {
        let lim = limits(2, 1);
        let mut e = Execution::new(1, six(), "prop".into(), 1);
        for ev in events {
            let _ = match ev {
                Event::Approve => e.approve().map(|_| ()),
                Event::Cancel => e.cancel().map(|_| ()),
                Event::Skip(k) => e.skip(k).map(|_| ()),
                Event::StartReady => {
                    for k in e.ready(&lim) {
                        let deps_ok = e.plan.steps[k].depends_on.iter().all(|&d| e.steps[d].state == StepState::Succeeded);
                        prop_assert!(deps_ok, "step {} started before its dependencies", k);
                        let wave = e.plan.steps[k].wave;
                        let earlier_done = e.plan.steps.iter().zip(&e.steps).all(|(s, st)| {
                            s.wave >= wave || matches!(st.state, StepState::Succeeded | StepState::Skipped)
                        });
                        prop_assert!(earlier_done, "step {} started before its wave's predecessors finished", k);
                        e.start(k).unwrap();
                    }
                    Ok(())
                }
                Event::Finish(k, ok) => e.finish(k, ok, String::new()),
            };
            let running = e.running();
            prop_assert!(running.len() <= 2, "in flight {:?}", running);
            for site in ["a", "b", "c", "d"] {
                let out = running.iter().filter(|&&k| e.plan.steps[k].from.as_deref() == Some(site)).count();
                let into = running.iter().filter(|&&k| e.plan.steps[k].to.as_deref() == Some(site)).count();
                // Orphaned runs may exceed limits only if started earlier; ours never do.
                prop_assert!(out <= 1 && into <= 1, "site {} over its limit", site);
            }
            if e.state == PlanState::Cancelling {
                prop_assert!(!e.running().is_empty(), "cancelling with nothing running");
            }
            if e.state == PlanState::Cancelled {
                prop_assert!(e.running().is_empty(), "cancelled while {:?} run", e.running());
            }
            let failed = e.count(StepState::Failed);
            if e.state == PlanState::Succeeded {
                prop_assert_eq!(failed, 0);
                prop_assert_eq!(e.count(StepState::Pending) + e.count(StepState::Running), 0);
            }
            if failed > 0 {
                prop_assert!(e.state != PlanState::Succeeded);
                prop_assert!(e.ready(&lim).is_empty());
            }
        }
    }
}

fn kpi(site: &str, inlet_c: f64, it_kw: f64) -> SiteKpi {
    SiteKpi {
        site: site.into(),
        utilization: BTreeMap::new(),
        it_kw,
        accelerator_kw: 0.0,
        it_limit_kw: 10.0,
        facility_kw: it_kw,
        power_cap_kw: 10.0,
        inlet_c,
        inlet_limit_c: 30.0,
        cooling_kw: 0.0,
        cooling_headroom_kw: 0.0,
        binding: PowerLimit::PowerCap,
        ambient_c: 20.0,
        pue: 1.2,
    }
}

#[test]
fn alarms_rise_once_and_clear_only_past_the_hysteresis_band() {
    let t = Thresholds {
        min_inlet_headroom_c: 2.0,
        inlet_hysteresis_c: 1.0,
        max_power_use: 0.9,
        power_hysteresis: 0.1,
        slo: true,
    };
    let mut a = Alarms::default();
    assert!(a.update(&[kpi("x", 25.0, 5.0)], 0, &t).is_empty());
    // Headroom 1.5 °C < 2: rises.
    let risen = a.update(&[kpi("x", 28.5, 5.0)], 0, &t);
    assert_eq!(risen.len(), 1);
    assert_eq!(risen[0].kind, AlarmKind::Thermal);
    assert!(risen[0].text.contains("x"));
    // Hovering around the threshold: no new alarm, no clearing.
    for inlet in [27.9, 28.3, 27.5, 28.9, 27.1] {
        assert!(a.update(&[kpi("x", inlet, 5.0)], 0, &t).is_empty());
        assert!(a.is_up("x", AlarmKind::Thermal), "cleared at {inlet}");
    }
    // Headroom 3.5 > 2 + 1: clears; dropping again rises again.
    assert!(a.update(&[kpi("x", 26.5, 5.0)], 0, &t).is_empty());
    assert!(!a.is_up("x", AlarmKind::Thermal));
    assert_eq!(a.update(&[kpi("x", 28.5, 5.0)], 0, &t).len(), 1);
    // Power and SLO.
    let risen = a.update(&[kpi("x", 28.5, 9.5)], 3, &t);
    let kinds: Vec<AlarmKind> = risen.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![AlarmKind::Power, AlarmKind::Slo]);
    assert!(a.update(&[kpi("x", 28.5, 8.5)], 3, &t).is_empty());
    assert!(a.is_up("x", AlarmKind::Power), "0.85 is inside the band");
    a.update(&[kpi("x", 28.5, 7.9)], 0, &t);
    assert!(!a.is_up("x", AlarmKind::Power));
    assert!(!a.is_up("fleet", AlarmKind::Slo));
}
