//! The migration planner: safe at every wave (checked by the independent
//! `verify_plan`), deadlocks broken through staging or break-before-make,
//! blocked moves explained, durations from bandwidth, stale plans noticed.

use proptest::prelude::*;

use edgeplan::gen::{generate, GenOptions};
use edgeplan::instance::{Instance, Price};
use edgeplan::ix::WorkloadIx;
use edgeplan::placement::Placement;
use edgeplan::plan::{plan, Plan, StepKind};
use edgeplan::problem::Problem;
use edgeplan::solver::solve;
use edgeplan::verify::verify_plan;

use crate::common::*;

fn make_plan(inst: &Instance, target: &Placement) -> Plan {
    assert!(
        edgeplan::validate::validate(inst).is_empty(),
        "{:?}",
        edgeplan::validate::validate(inst)
    );
    let problem = Problem::build(inst).unwrap();
    let p = plan(inst, &problem, target).unwrap();
    let report = verify_plan(inst, &p);
    assert!(report.valid, "unsafe plan: {:?}\n{p:#?}", report.violations);
    assert!(!report.stale);
    assert_eq!(report.reaches_target, p.reaches_target());
    p
}

fn target(pairs: &[(&str, &str, u32)]) -> Placement {
    let mut t = Placement::default();
    for (w, s, n) in pairs {
        t.assignments
            .entry((*w).into())
            .or_default()
            .insert((*s).into(), *n);
    }
    t
}

/// Full sites of 10 cores, one 10-core replica each, in a ring; the rest free.
fn cycle(full: &[&str], free: &[&str]) -> Instance {
    let mut sites = Vec::new();
    let mut workloads = Vec::new();
    for (k, id) in full.iter().enumerate() {
        sites.push(site(id, 10.0, 0.1));
        let mut w = workload(&format!("w{k}"), 1, 10.0);
        w.current.insert((*id).into(), 1);
        w.state_gib = 1.0;
        workloads.push(w);
    }
    for id in free {
        sites.push(site(id, 10.0, 0.1));
    }
    let ids: Vec<&str> = full.iter().chain(free).copied().collect();
    let links: Vec<(&str, &str, f64)> = ids.windows(2).map(|p| (p[0], p[1], 5.0)).collect();
    instance(sites, workloads, &links)
}

#[test]
fn swap_of_two_resolves_through_staging() {
    let inst = cycle(&["a", "b"], &["c"]);
    let p = make_plan(&inst, &target(&[("w0", "b", 1), ("w1", "a", 1)]));
    assert!(p.reaches_target(), "{:?}", p.blocked);
    let staged: Vec<_> = p
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Stage)
        .collect();
    assert_eq!(staged.len(), 1, "{:#?}", p.steps);
    assert_eq!(staged[0].to.as_deref(), Some("c"));
    assert_eq!(
        p.waves.len(),
        3,
        "stage, then the freed swap, then the last hop"
    );
}

#[test]
fn cycle_of_three_resolves_through_staging() {
    let inst = cycle(&["a", "b", "c"], &["d"]);
    let p = make_plan(
        &inst,
        &target(&[("w0", "b", 1), ("w1", "c", 1), ("w2", "a", 1)]),
    );
    assert!(p.reaches_target(), "{:?}", p.blocked);
    assert!(p.steps.iter().any(|s| s.kind == StepKind::Stage));
}

#[test]
fn swap_without_room_is_explained_not_forced() {
    let inst = cycle(&["a", "b"], &[]);
    let p = make_plan(&inst, &target(&[("w0", "b", 1), ("w1", "a", 1)]));
    assert!(!p.reaches_target());
    assert!(p.steps.is_empty());
    assert_eq!(p.blocked.len(), 2);
    assert!(
        p.blocked[0].reason.contains("is out of cpu_cores")
            && p.blocked[0].reason.contains("no staging site has room"),
        "{}",
        p.blocked[0].reason
    );
    assert_eq!(p.reached, Placement::current(&inst), "nothing moved");
}

#[test]
fn break_before_make_where_disruption_is_allowed() {
    let mut inst = cycle(&["a", "b"], &[]);
    inst.workloads[0].disruption_allowed = true;
    let p = make_plan(&inst, &target(&[("w0", "b", 1), ("w1", "a", 1)]));
    assert!(p.reaches_target(), "{:?}", p.blocked);
    let kinds: Vec<StepKind> = p.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![StepKind::Stop, StepKind::Migrate, StepKind::Start]
    );
    // The start waits for its own stop and for the move that frees its space.
    assert_eq!(p.steps[2].depends_on, vec![0, 1]);
}

#[test]
fn durations_follow_bandwidth() {
    // a —10 Gbps— b —40 Gbps— c. w0 moves 10 GiB a → c: bottleneck 10 Gbps at
    // a share of 0.25 → 2.5 Gbps: 80 Gb / 2.5 = 32 s, + 30 s overhead = 62 s.
    // w1 moves 20 GiB b → c over 40 Gbps: 160 / 10 = 16 s + 30 = 46 s, same wave.
    let sites = vec![
        site("a", 100.0, 0.1),
        site("b", 100.0, 0.1),
        site("c", 100.0, 0.1),
    ];
    let mut w0 = workload("w0", 1, 10.0);
    w0.current.insert("a".into(), 1);
    w0.state_gib = 10.0;
    let mut w1 = workload("w1", 1, 10.0);
    w1.current.insert("b".into(), 1);
    w1.state_gib = 20.0;
    let mut inst = instance(sites, vec![w0, w1], &[("a", "b", 5.0), ("b", "c", 5.0)]);
    inst.network.links[1].bandwidth_gbps = 40.0;
    let p = make_plan(&inst, &target(&[("w0", "c", 1), ("w1", "c", 1)]));
    assert_eq!(p.waves.len(), 1);
    let d: Vec<f64> = p.steps.iter().map(|s| s.duration_s).collect();
    assert_close(d.iter().copied().fold(0.0, f64::max), 62.0, "slowest step");
    assert!(d.iter().any(|x| (x - 46.0).abs() < 1e-9), "{d:?}");
    assert_close(p.makespan_s, 62.0, "makespan");
    assert_eq!(
        p.steps.iter().find(|s| s.workload == "w0").unwrap().links,
        vec![0, 1]
    );
}

#[test]
fn concurrency_limits_split_waves() {
    // Six moves out of one site, at most two leaving at once: three waves.
    let mut w = workload("w", 6, 1.0);
    w.current.insert("a".into(), 6);
    let mut inst = instance(
        vec![site("a", 100.0, 0.1), site("b", 100.0, 0.1)],
        vec![w],
        &[("a", "b", 5.0)],
    );
    inst.limits.max_out_per_site = 2;
    let p = make_plan(&inst, &target(&[("w", "b", 6)]));
    assert_eq!(p.waves.len(), 3);
    assert!(p.waves.iter().all(|w| w.steps.len() == 2));
}

#[test]
fn a_changed_state_marks_the_plan_stale_and_rechecks_it() {
    let inst = cycle(&["a", "b"], &["c"]);
    let p = make_plan(&inst, &target(&[("w0", "b", 1), ("w1", "a", 1)]));
    // A price change: stale, but still safe.
    let mut cheaper = inst.clone();
    cheaper.sites[0].energy.price_per_kwh = Price::Flat(0.05);
    let r = verify_plan(&cheaper, &p);
    assert!(r.stale && r.valid, "{r:?}");
    // The staging site loses its cooling: stale and superseded.
    let mut hot = inst.clone();
    hot.sites[2].cooling.nominal_kw = 0.5;
    let r = verify_plan(&hot, &p);
    assert!(r.stale && !r.valid, "{r:?}");
    assert!(
        r.violations.iter().any(|v| v.rule == "cooling"),
        "{:?}",
        r.violations
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random fleets, random feasible targets (re-solved under shuffled prices),
    /// random limits: the plan is safe at every wave, and reaches the target or
    /// says what is blocked and why.
    #[test]
    fn plans_to_random_targets_are_safe(
        seed in 0u64..10_000,
        sites in 4usize..9,
        workloads in 8usize..30,
        price_factors in prop::collection::vec(0.2..5.0f64, 9),
        in_flight in 1u32..10,
        per_site in 1u32..4,
        load in 0.6..0.95f64,
    ) {
        let mut inst = generate(&GenOptions { sites, workloads, replicas: None, seed, load }).unwrap();
        inst.limits.max_in_flight = in_flight;
        inst.limits.max_in_per_site = per_site;
        inst.limits.max_out_per_site = per_site;
        let mut shuffled = inst.clone();
        for (s, f) in shuffled.sites.iter_mut().zip(&price_factors) {
            s.energy.price_per_kwh = Price::Flat(edgeplan::physics::mean_price(&s.energy.price_per_kwh, 24) * f);
        }
        let problem = Problem::build(&shuffled).unwrap();
        let mut opts = exact();
        opts.relative_gap = Some(0.01);
        let target = problem.placement_of(&solve(&problem, &opts).unwrap().x);
        let p = make_plan(&inst, &target);
        if p.reaches_target() {
            prop_assert_eq!(&p.reached, &target);
        } else {
            prop_assert!(p.blocked.iter().all(|b| !b.reason.is_empty()));
        }
        for w in &p.waves {
            prop_assert!(w.steps.len() <= in_flight as usize);
        }
    }
}

/// Site `a` starts one GPU over (3 GPU replicas on 2 GPUs, as after a
/// declared placement or a derating). The target moves two GPU replicas
/// away and one other GPU workload in, and a CPU-only workload in.
fn gpu_overloaded_start() -> (Instance, Placement) {
    let mut a = site("a", 20.0, 0.1);
    a.capacity.insert("gpus".into(), 2.0);
    let mut b = site("b", 20.0, 0.1);
    b.capacity.insert("gpus".into(), 4.0);
    let mut g = workload("g", 3, 1.0);
    g.resources.insert("gpus".into(), 1.0);
    g.current.insert("a".into(), 3);
    let mut h = workload("h", 1, 1.0);
    h.resources.insert("gpus".into(), 1.0);
    h.current.insert("b".into(), 1);
    let mut n = workload("n", 1, 1.0);
    n.current.insert("b".into(), 1);
    let mut inst = instance(vec![a, b], vec![g, h, n], &[("a", "b", 5.0)]);
    inst.limits.max_in_per_site = 8;
    inst.limits.max_out_per_site = 8;
    (
        inst,
        target(&[("g", "a", 1), ("g", "b", 2), ("h", "a", 1), ("n", "a", 1)]),
    )
}

#[test]
fn an_overloaded_start_sheds_first_and_is_told_apart_from_a_violation() {
    let (inst, t) = gpu_overloaded_start();
    let p = make_plan(&inst, &t);
    assert!(p.reaches_target(), "{:?}", p.blocked);
    let wave = |w: &str, to: &str| {
        p.steps
            .iter()
            .filter(|s| s.workload == w && s.to.as_deref() == Some(to))
            .map(|s| s.wave)
            .collect::<Vec<_>>()
    };
    let away = wave("g", "b");
    assert_eq!(
        away,
        vec![0, 0],
        "moves away from the overloaded site go first"
    );
    assert!(
        wave("h", "a").iter().all(|&w| w > 0),
        "a GPU arrives at a only once it is back under its GPU limit"
    );
    let r = verify_plan(&inst, &p);
    assert!(r.valid, "{:?}", r.violations);
    assert_eq!(r.overloads.len(), 1, "{:?}", r.overloads);
    let o = &r.overloads[0];
    assert_eq!(o.item, "a");
    assert!(
        o.message.contains("gpus used 3.000 over 2.000")
            && o.message.contains("1.000 after wave 0, within its limit"),
        "{}",
        o.message
    );
    // A plan that adds a GPU to `a` while it is still over is the plan's doing.
    let mut bad = p.clone();
    let h_step = bad
        .steps
        .iter()
        .position(|s| s.workload == "h")
        .expect("h moves");
    let from_wave = bad.steps[h_step].wave;
    bad.steps[h_step].wave = 0;
    bad.steps[h_step].depends_on.clear();
    bad.waves[from_wave].steps.retain(|&s| s != h_step);
    bad.waves[0].steps.push(h_step);
    let r = verify_plan(&inst, &bad);
    assert!(
        r.violations
            .iter()
            .any(|v| v.rule == "capacity" && v.message.contains("gpus")),
        "{:?}",
        r.violations
    );
}

#[test]
fn a_scale_down_in_progress_is_valid_and_the_plan_stops_the_surplus() {
    // Three replicas run, the spec now asks for two (observed > desired).
    let mut w = workload("w", 2, 1.0);
    w.current.insert("a".into(), 3);
    let inst = instance(
        vec![site("a", 10.0, 0.1), site("b", 10.0, 0.1)],
        vec![w],
        &[("a", "b", 5.0)],
    );
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_eq!(solved.x.placed(WorkloadIx::new(0)), 2);
    let p = make_plan(&inst, &placement);
    let stops = p.steps.iter().filter(|s| s.kind == StepKind::Stop).count();
    assert_eq!(stops, 1, "{:#?}", p.steps);
    assert_eq!(p.reached, placement);
    assert_eq!(
        problem.kpis(&problem.current_placement()).placed_replicas,
        3
    );
}

#[test]
fn verify_and_verify_plan_list_violations_in_a_deterministic_order() {
    // Five anti-affinity pairs crowded on five sites, each pair on one
    // site: five violations whose order once came from a hash map.
    let sites: Vec<_> = (0..5).map(|k| site(&format!("s{k}"), 100.0, 0.1)).collect();
    let mut workloads = Vec::new();
    let mut crowded = Placement::default();
    for k in 0..10 {
        let mut w = workload(&format!("w{k}"), 1, 1.0);
        w.anti_affinity_group = Some(format!("g{}", k / 2));
        crowded
            .assignments
            .entry(w.id.clone())
            .or_default()
            .insert(format!("s{}", k / 2), 1);
        workloads.push(w);
    }
    let inst = instance(sites, workloads, &[]);
    let first = edgeplan::verify::verify(&inst, &crowded).violations;
    assert_eq!(
        first.iter().filter(|v| v.rule == "anti_affinity").count(),
        5,
        "{first:?}"
    );
    let mut sorted = first.clone();
    sorted.sort_by(|a, b| (&a.rule, &a.item, &a.message).cmp(&(&b.rule, &b.item, &b.message)));
    assert_eq!(first, sorted, "violations come sorted");
    for _ in 0..20 {
        assert_eq!(edgeplan::verify::verify(&inst, &crowded).violations, first);
    }
    // A plan checked against tighter limits than it was made for.
    let mut fleet = generate(&GenOptions {
        sites: 6,
        workloads: 30,
        replicas: None,
        seed: 3,
        load: 0.7,
    })
    .unwrap();
    fleet.limits.max_in_per_site = 8;
    fleet.limits.max_out_per_site = 8;
    let problem = Problem::build(&fleet).unwrap();
    let mut shuffled = fleet.clone();
    for (k, s) in shuffled.sites.iter_mut().enumerate() {
        s.energy.price_per_kwh = Price::Flat(0.05 + 0.1 * ((k * 7) % 5) as f64);
    }
    let target = Problem::build(&shuffled).unwrap().placement_of(
        &solve(&Problem::build(&shuffled).unwrap(), &exact())
            .unwrap()
            .x,
    );
    let p = plan(&fleet, &problem, &target).unwrap();
    let mut tight = fleet.clone();
    tight.limits.max_in_per_site = 1;
    tight.limits.max_out_per_site = 1;
    let first = verify_plan(&tight, &p).violations;
    assert!(first.len() >= 2, "{first:?}");
    for _ in 0..20 {
        assert_eq!(verify_plan(&tight, &p).violations, first);
    }
}
