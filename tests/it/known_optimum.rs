//! Instances solved by hand; the arithmetic is in the comments.

use edgeplan::ix::{SiteIx, WorkloadIx};
use edgeplan::physics::PowerLimit;
use edgeplan::report::SolveReport;

use crate::common::*;

#[test]
fn power_cap_splits_replicas_between_cheap_and_dear_site() {
    // Three replicas of 10 cores at u = 1: 1 kW each. A: $0.10/kWh, B: $0.20/kWh,
    // PUE 1. A's cap is 1 kW, so A takes exactly one replica, and the cap binds.
    // Optimum: 1 × 1 kW × 0.10 + 2 × 1 kW × 0.20 = 0.50 $/h.
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = 1.0;
    let b = site("b", 100.0, 0.20);
    let inst = instance(vec![a, b], vec![workload("w", 3, 10.0)], &[("a", "b", 5.0)]);
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_close(solved.objective, 0.50, "objective");
    assert_eq!(placement.assignments["w"]["a"], 1);
    assert_eq!(placement.assignments["w"]["b"], 2);
    let report = SolveReport::new(&problem, &solved);
    assert_eq!(report.sites[0].binding, PowerLimit::PowerCap);
    assert!(
        report.binding[0].binding.contains(&"power cap".to_string()),
        "{:?}",
        report.binding
    );
}

#[test]
fn cooling_derated_by_heat_limits_the_cheap_site() {
    // A at 30 °C ambient, free cooling to 20 °C, max 40 °C: halfway (s = 0.5).
    // PUE = 1.0 + 0.5 × (1.4 − 1.0) = 1.2, so a 1 kW replica costs 1.2 × 0.10 = 0.12 $/h.
    // Cooling = 4 kW × (1 − 0.5 × (1 − 0.5)) = 3 kW → at most 3 replicas.
    // Inlet: supply = max(18, min(30, 20) + 3) = 23 °C; limit 35 − 2 = 33 °C;
    // rise 4 °C/kW / 2 racks = 2 °C/kW → 5 kW allowed: not binding.
    // B costs 0.20 $/h per replica. Five replicas: 3 × 0.12 + 2 × 0.20 = 0.76 $/h.
    let mut a = site("a", 100.0, 0.10);
    a.power.pue_max = 1.4;
    a.ambient.current_c = 30.0;
    a.cooling.nominal_kw = 4.0;
    a.cooling.derate_min = 0.5;
    a.thermal.recirc_c_per_kw = 4.0;
    a.thermal.racks = 2;
    let b = site("b", 100.0, 0.20);
    let inst = instance(vec![a, b], vec![workload("w", 5, 10.0)], &[("a", "b", 5.0)]);
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_close(solved.objective, 0.76, "objective");
    assert_eq!(placement.assignments["w"]["a"], 3);
    let report = SolveReport::new(&problem, &solved);
    assert_eq!(report.sites[0].binding, PowerLimit::Cooling);
    assert_close(report.sites[0].pue, 1.2, "pue");
    assert_close(report.sites[0].cooling_kw, 3.0, "cooling");
}

#[test]
fn inlet_limit_binds_with_strong_recirculation() {
    // As above but recirculation 10 °C/kW over 2 racks = 5 °C per kW, 10 °C of
    // room (33 − 23) → 2 kW: two replicas on A. 2 × 0.12 + 3 × 0.20 = 0.84 $/h.
    // The forecast (not the 15 °C reading) sets the ambient: max(15, 30) = 30 °C.
    let mut a = site("a", 100.0, 0.10);
    a.power.pue_max = 1.4;
    a.ambient.current_c = 15.0;
    a.ambient.forecast_c = vec![20.0, 30.0, 25.0];
    a.cooling.nominal_kw = 4.0;
    a.cooling.derate_min = 0.5;
    a.thermal.recirc_c_per_kw = 10.0;
    a.thermal.racks = 2;
    let b = site("b", 100.0, 0.20);
    let inst = instance(vec![a, b], vec![workload("w", 5, 10.0)], &[("a", "b", 5.0)]);
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_close(solved.objective, 0.84, "objective");
    assert_eq!(placement.assignments["w"]["a"], 2);
    let report = SolveReport::new(&problem, &solved);
    assert_eq!(report.sites[0].binding, PowerLimit::Inlet);
    assert_close(
        report.sites[0].inlet_c,
        33.0,
        "predicted inlet at the limit",
    );
}

#[test]
fn priorities_decide_what_is_shed() {
    // One site with 20 cores; "gold" (priority 10) and "bronze" (priority 1) each
    // want 2 replicas of 10 cores. Only two fit: gold's. Objective: 2 × 1 kW ×
    // 0.1 + 2 unplaced × 1000 × 1 = 2000.2 $/h.
    let a = site("a", 20.0, 0.10);
    let mut gold = workload("gold", 2, 10.0);
    gold.priority = 10;
    let bronze = workload("bronze", 2, 10.0);
    let inst = instance(vec![a], vec![gold, bronze], &[]);
    let (_, solved, placement, report) = solve_and_verify(&inst);
    assert_close(solved.objective, 2000.2, "objective");
    assert_eq!(placement.replicas_of("gold"), 2);
    assert_eq!(placement.replicas_of("bronze"), 0);
    assert_eq!(report.unplaced_replicas, 2);
}

#[test]
fn move_limit_keeps_replicas_where_they_run() {
    // Two replicas run on dear B (0.2); A is cheaper (0.1). With one move
    // allowed, one goes to A: 0.1 + 0.2 = 0.3 $/h (two moves would give 0.2).
    let a = site("a", 100.0, 0.10);
    let b = site("b", 100.0, 0.20);
    let mut w = workload("w", 2, 10.0);
    w.current.insert("b".into(), 2);
    let mut inst = instance(vec![a, b], vec![w], &[("a", "b", 5.0)]);
    inst.limits.max_moves = Some(1);
    let (_, solved, placement, report) = solve_and_verify(&inst);
    assert_close(solved.objective, 0.3, "objective");
    assert_eq!(report.moves, 1);
    assert_eq!(placement.assignments["w"]["a"], 1);
}

#[test]
fn spread_and_anti_affinity_hold() {
    // Three sites, the cheapest (A) could host everything, but max_per_site = 1
    // spreads w's 3 replicas over A, B, C: 0.1 + 0.2 + 0.3 = 0.6; v shares an
    // anti-affinity group with w (which has the higher priority), so it cannot
    // go anywhere: 1000 unplaced.
    let sites = vec![
        site("a", 100.0, 0.1),
        site("b", 100.0, 0.2),
        site("c", 100.0, 0.3),
    ];
    let mut w = workload("w", 3, 10.0);
    w.max_per_site = Some(1);
    w.anti_affinity_group = Some("g".into());
    w.priority = 2;
    let mut v = workload("v", 1, 10.0);
    v.anti_affinity_group = Some("g".into());
    let inst = instance(sites, vec![w, v], &[("a", "b", 5.0), ("b", "c", 5.0)]);
    let (_, solved, placement, _) = solve_and_verify(&inst);
    assert_close(solved.objective, 1000.6, "objective");
    assert_eq!(placement.replicas_of("w"), 3);
}

#[test]
fn spot_price_series_and_humid_air_shape_the_answer() {
    // A's spot price is 0.05 for hours 0–11 and 0.25 for 12–23: mean 0.15 over
    // the 24 h horizon. B costs a flat 0.20. Two replicas of 5 cores at u = 1:
    // 0.5 kW each. A's 1 kW cap would take both (0.15 $/h), but its air is at
    // 95 % RH, outside the A2 envelope (≤ 80 %), so every limit is × 0.8:
    // 0.8 kW, one replica. Optimum: 0.5 × 0.15 + 0.5 × 0.20 = 0.175 $/h.
    let mut a = site("a", 100.0, 0.0);
    a.energy.price_per_kwh = edgeplan::instance::Price::Series(vec![
        edgeplan::instance::PricePoint {
            hour: 0.0,
            price_per_kwh: 0.05,
        },
        edgeplan::instance::PricePoint {
            hour: 12.0,
            price_per_kwh: 0.25,
        },
    ]);
    a.power.cap_kw = 1.0;
    a.ambient.humidity_pct = Some(95.0);
    let b = site("b", 100.0, 0.20);
    let inst = instance(vec![a, b], vec![workload("w", 2, 5.0)], &[("a", "b", 5.0)]);
    let (_, solved, placement, _) = solve_and_verify(&inst);
    assert_close(solved.objective, 0.175, "objective");
    assert_eq!(placement.assignments["w"]["a"], 1);
}

/// The one capacity test at its edge: three replicas of 0.1 core sum to
/// 0.30000000000000004 in floating point, a hair over a 0.3-core site; and
/// a replica asking 1e-12 of a resource a site has none of. `within`'s
/// tolerance (1e-9, relative above 1) takes both, so the candidate caps,
/// the exact solver, the fast path, the planner's room test and the
/// verifier (whose own tolerance is looser) all agree: every replica is
/// placed, and the result is feasible.
#[test]
fn capacity_edges_agree_across_caps_solvers_room_test_and_verifier() {
    use edgeplan::solver::{solve, Method, SolveOptions};
    let mut tiny = site("tiny", 0.3, 0.1);
    tiny.capacity.insert("licences".into(), 0.0);
    let mut w = workload("w", 3, 0.1);
    w.resources.insert("licences".into(), 1e-12);
    let mut inst = instance(vec![tiny], vec![w], &[]);
    inst.objective = energy_only();
    let problem = edgeplan::problem::Problem::build(&inst).unwrap();
    assert_eq!(
        problem.workloads[WorkloadIx::new(0)].candidates.len(),
        1,
        "the site is a candidate"
    );
    assert_eq!(
        problem.workloads[WorkloadIx::new(0)].candidates[0].max_count,
        3
    );
    // Two placed: the third fits by the room test.
    let r = problem
        .resources
        .iter()
        .position(|r| r == "cpu_cores")
        .unwrap();
    let mut used = vec![0.0; problem.row_count()];
    used[r] = 0.1 + 0.1;
    assert!(problem
        .room_for(WorkloadIx::new(0), SiteIx::new(0), &used)
        .is_ok());
    used[r] += 0.1;
    assert!(used[r] > 0.3, "the float sum is over the limit by a hair");
    assert!(!problem.over_limit(SiteIx::new(0), &used));
    for method in [Method::Exact, Method::Fast] {
        let solved = solve(
            &problem,
            &SolveOptions {
                method,
                ..SolveOptions::default()
            },
        )
        .unwrap();
        let placement = problem.placement_of(&solved.x);
        assert_eq!(placement.count("w", "tiny"), 3, "{method:?}");
        let report = edgeplan::verify::verify(&inst, &placement);
        assert!(report.feasible, "{method:?}: {:?}", report.violations);
    }
}
