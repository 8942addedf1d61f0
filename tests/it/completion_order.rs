//! A plan is safe under every completion order the executor allows: the
//! executor (`Execution::ready`, its wave barrier, skips) is driven through
//! random completion orders, and every state it reaches — succeeded steps
//! moved, running steps holding both ends — is checked by the independent
//! verifier's capacity, power-cap, cooling, inlet and spread checks.
//! `EDGEPLAN_SCHEDULES` sets how many schedules the property runs (CI: 400;
//! the full run in the README: 10,000).

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use edgeplan::execution::{Execution, PlanState, StepState};
use edgeplan::gen::{generate, GenOptions};
use edgeplan::instance::{Instance, Price};
use edgeplan::placement::Placement;
use edgeplan::plan::{plan, Plan};
use edgeplan::problem::Problem;
use edgeplan::solver::solve;
use edgeplan::verify::{verify_in_flight, verify_plan};

use crate::common::*;

fn succeeded(e: &Execution) -> Vec<usize> {
    (0..e.steps.len())
        .filter(|&k| e.steps[k].state == StepState::Succeeded)
        .collect()
}

/// The verifier's word on the state the executor is in now.
fn check_state(inst: &Instance, e: &Execution, context: &str) {
    let bad = verify_in_flight(inst, &e.plan, &succeeded(e), &e.running());
    assert!(
        bad.is_empty(),
        "{context}: the executor reached an unsafe state (running {:?}): {bad:?}",
        e.running()
    );
}

/// Twelve one-core replicas leave a 12-core site `a` for `b`, then twelve
/// arrive at `a` from `c`. Each arrival names only the latest 8 departures
/// as dependencies, so a start rule by dependencies alone would let the
/// arrivals run while the 4 earliest, slow departures still hold `a`: 16
/// replicas on 12 cores.
fn twelve_out_twelve_in() -> (Instance, Placement) {
    let mut workloads = Vec::new();
    let mut t = Placement::default();
    for k in 0..12 {
        let mut u = workload(&format!("u{k:02}"), 1, 1.0);
        u.current.insert("a".into(), 1);
        t.assignments
            .entry(u.id.clone())
            .or_default()
            .insert("b".into(), 1);
        workloads.push(u);
        let mut v = workload(&format!("v{k:02}"), 1, 1.0);
        v.current.insert("c".into(), 1);
        t.assignments
            .entry(v.id.clone())
            .or_default()
            .insert("a".into(), 1);
        workloads.push(v);
    }
    let sites = vec![
        site("a", 12.0, 0.1),
        site("b", 12.0, 0.1),
        site("c", 12.0, 0.1),
    ];
    let mut inst = instance(sites, workloads, &[("a", "b", 5.0), ("a", "c", 5.0)]);
    inst.limits.max_in_flight = 24;
    inst.limits.max_in_per_site = 12;
    inst.limits.max_out_per_site = 12;
    inst.limits.migration_bandwidth_share = 1.0 / 16.0;
    (inst, t)
}

#[test]
fn completion_order_slow_early_departures_never_overfill_the_site() {
    let (inst, target) = twelve_out_twelve_in();
    let problem = Problem::build(&inst).unwrap();
    let p = plan(&inst, &problem, &target).unwrap();
    let report = verify_plan(&inst, &p);
    assert!(report.valid, "{:?}", report.violations);
    assert!(p.reaches_target());
    // The crafted condition: an arrival at `a` that does not depend on every departure from it.
    let departures: Vec<usize> = p
        .steps
        .iter()
        .filter(|s| s.from.as_deref() == Some("a"))
        .map(|s| s.id)
        .collect();
    let arrival = p
        .steps
        .iter()
        .find(|s| s.to.as_deref() == Some("a"))
        .expect("an arrival at a");
    assert_eq!(departures.len(), 12);
    let unnamed: Vec<usize> = departures
        .iter()
        .copied()
        .filter(|d| !arrival.depends_on.contains(d))
        .collect();
    assert!(
        !unnamed.is_empty(),
        "every departure is a dependency; the case no longer tests the start rule"
    );

    let mut e = Execution::new(1, p.clone(), "test".into(), 1);
    e.approve().unwrap();
    let first = e.ready(&inst.limits);
    assert_eq!(first.len(), 12, "the twelve departures start together");
    for &k in &first {
        e.start(k).unwrap();
    }
    check_state(&inst, &e, "all departures running");
    // Everything but the departures no arrival names finishes; those stay slow.
    for &k in &first {
        if !unnamed.contains(&k) {
            e.finish(k, true, "ok".into()).unwrap();
        }
    }
    check_state(&inst, &e, "slow departures still running");
    // Start whatever the executor allows now; the verifier judges the state.
    let next = e.ready(&inst.limits);
    for &k in &next {
        e.start(k).unwrap();
    }
    check_state(&inst, &e, "after the second ready");
    assert!(
        next.is_empty(),
        "arrivals at a may not start while departures {unnamed:?} still hold it: {next:?}"
    );
    for &k in &unnamed {
        e.finish(k, true, "ok".into()).unwrap();
    }
    let arrivals = e.ready(&inst.limits);
    assert_eq!(arrivals.len(), 12, "with a free, the arrivals start");
    for k in arrivals {
        e.start(k).unwrap();
        check_state(&inst, &e, "arrivals starting");
    }
    for k in e.running() {
        e.finish(k, true, "ok".into()).unwrap();
    }
    assert_eq!(e.state, PlanState::Succeeded);
}

#[test]
fn completion_order_a_skipped_departure_skips_the_arrivals_that_counted_on_it() {
    let (inst, target) = twelve_out_twelve_in();
    let problem = Problem::build(&inst).unwrap();
    let p = plan(&inst, &problem, &target).unwrap();
    let mut e = Execution::new(1, p, "test".into(), 1);
    e.approve().unwrap();
    let first = e.ready(&inst.limits);
    // Skip the first departure: `a` keeps its replica, so no arrival at `a`
    // may rely on its room, whether or not it names it.
    let skipped = e.skip(first[0]).unwrap();
    let arrivals_at_a: Vec<usize> = (0..e.plan.steps.len())
        .filter(|&k| e.plan.steps[k].to.as_deref() == Some("a"))
        .collect();
    for k in &arrivals_at_a {
        assert!(skipped.contains(k), "arrival {k} at a was not skipped");
    }
    loop {
        let ready = e.ready(&inst.limits);
        for &k in &ready {
            e.start(k).unwrap();
        }
        check_state(&inst, &e, "after a skip");
        let running = e.running();
        if running.is_empty() {
            break;
        }
        for k in running {
            e.finish(k, true, "ok".into()).unwrap();
        }
    }
    assert_eq!(e.state, PlanState::Succeeded);
}

/// A random tight `gen` fleet, a target re-solved under shuffled prices,
/// and its plan (checked by `verify_plan`).
fn tight_case(rng: &mut ChaCha8Rng) -> Option<(Instance, Plan)> {
    let seed = rng.random_range(0..100_000u64);
    let sites = rng.random_range(3..8usize);
    let workloads = rng.random_range(8..30usize);
    let load = rng.random_range(0.8..0.97);
    let mut inst = generate(&GenOptions {
        sites,
        workloads,
        replicas: None,
        seed,
        load,
    })
    .ok()?;
    // Spread rules gen does not make: failure-domain caps and anti-affinity.
    for w in &mut inst.workloads {
        if rng.random_bool(0.25) {
            w.max_per_failure_domain = Some((w.replicas / 2).max(1));
        }
        if rng.random_bool(0.2) {
            w.anti_affinity_group = Some(format!("g{}", rng.random_range(0..3)));
        }
    }
    inst.limits.max_in_flight = rng.random_range(2..16);
    inst.limits.max_in_per_site = rng.random_range(1..6);
    inst.limits.max_out_per_site = rng.random_range(1..6);
    let mut shuffled = inst.clone();
    for s in &mut shuffled.sites {
        let f = rng.random_range(0.2..5.0);
        s.energy.price_per_kwh =
            Price::Flat(edgeplan::physics::mean_price(&s.energy.price_per_kwh, 24) * f);
    }
    let problem = Problem::build(&shuffled).ok()?;
    let mut opts = exact();
    opts.relative_gap = Some(0.02);
    opts.deadline = Deadline::after_s(5.0);
    let target = problem.placement_of(&solve(&problem, &opts).ok()?.x);
    let problem = Problem::build(&inst).ok()?;
    let p = plan(&inst, &problem, &target).ok()?;
    let report = verify_plan(&inst, &p);
    assert!(
        report.valid,
        "planner made a plan verify_plan refuses (seed {seed}): {:?}",
        report.violations
    );
    Some((inst, p))
}

/// One schedule: random starts among what is ready, random completion
/// order (the longest-running step is not the first to end), a few skips;
/// every state checked.
fn run_schedule(inst: &Instance, p: &Plan, rng: &mut ChaCha8Rng) -> usize {
    let mut e = Execution::new(1, p.clone(), "schedule".into(), 1);
    e.approve().unwrap();
    let mut states = 0;
    for _ in 0..(4 * p.steps.len() + 8) {
        let ready = e.ready(&inst.limits);
        if !ready.is_empty() {
            // Start some of what is ready (the provisioner's queue is not ours).
            let n = rng.random_range(1..=ready.len());
            for &k in ready.choose_multiple(rng, n) {
                if rng.random_bool(0.03) {
                    let _ = e.skip(k);
                } else {
                    e.start(k).unwrap();
                }
                check_state(inst, &e, "after a start");
                states += 1;
            }
        }
        let running = e.running();
        if running.is_empty() {
            if e.ready(&inst.limits).is_empty() {
                break;
            }
            continue;
        }
        // Finish one or a few running steps, in random order.
        let n = rng.random_range(1..=running.len().min(3));
        for &k in running.choose_multiple(rng, n) {
            e.finish(k, true, "ok".into()).unwrap();
            check_state(inst, &e, "after a finish");
            states += 1;
        }
    }
    assert!(
        matches!(e.state, PlanState::Succeeded),
        "schedule did not end: {:?} with {} pending",
        e.state,
        e.count(StepState::Pending)
    );
    states
}

#[test]
fn completion_order_random_schedules_on_tight_fleets_stay_safe() {
    let schedules: usize = std::env::var("EDGEPLAN_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let (mut done, mut fleets, mut states, mut steps) = (0, 0, 0, 0);
    while done < schedules {
        let Some((inst, p)) = tight_case(&mut rng) else {
            continue;
        };
        if p.steps.is_empty() {
            continue;
        }
        fleets += 1;
        steps += p.steps.len();
        for _ in 0..20.min(schedules - done) {
            states += run_schedule(&inst, &p, &mut rng);
            done += 1;
        }
    }
    eprintln!(
        "completion orders: {done} schedules on {fleets} fleets ({steps} plan steps), {states} states checked"
    );
    assert!(states > done, "the schedules reached no state to check");
}
