//! Repair (small exact models around the replicas a placement leaves
//! out): a hand-worked packing it must find, every rule kept and the
//! objective never worse on generated tight fleets (judged by the
//! independent verifier), and the same answer for the same work budget.
//! The tiny-instance property against enumeration is in `brute_force`.

use edgeplan::fast::Limit;
use edgeplan::gen::{generate_family, Family, GenOptions};
use edgeplan::instance::Instance;
use edgeplan::ix::WorkloadIx;
use edgeplan::problem::Problem;
use edgeplan::repair::{holds, repair};
use edgeplan::replicas::Replicas;
use edgeplan::solver::{greedy, solve, Method, SolveOptions};
use edgeplan::verify::verify;

use crate::common::*;

/// Two sites of 4 cores; `small` (2 × 2 cores) runs one replica on each,
/// so `big` (1 × 4 cores) fits nowhere. The only way to place all three
/// replicas: both small ones on one site, the big one on the other.
fn split_small_pair() -> (Instance, Problem, Replicas) {
    let sites = vec![site("a", 4.0, 0.1), site("b", 4.0, 0.1)];
    let mut small = workload("small", 2, 2.0);
    small.current.insert("a".into(), 1);
    small.current.insert("b".into(), 1);
    let big = workload("big", 1, 4.0);
    let mut inst = instance(sites, vec![small, big], &[("a", "b", 5.0)]);
    inst.objective = energy_only();
    let problem = Problem::build(&inst).expect("builds");
    let start = problem.current_placement();
    (inst, problem, start)
}

#[test]
fn a_repair_moves_a_small_replica_to_make_room_for_a_big_one() {
    let (inst, problem, start) = split_small_pair();
    let before = verify(&inst, &problem.placement_of(&start));
    assert!(before.feasible);
    assert_eq!(
        before.objective.unplaced, 1000.0,
        "big is left out at first"
    );
    let r = repair(&problem, start, before.objective.total, &Limit::none(), 0).expect("repairs");
    let after = verify(&inst, &problem.placement_of(&r.x));
    assert!(after.feasible, "{:?}", after.violations);
    assert_eq!(after.objective.unplaced, 0.0, "{:?}", r.x);
    assert!((after.objective.total - r.objective).abs() <= 1e-9);
    assert!(r.kept >= 1 && r.tries >= r.kept);
    // Both small replicas share a site; big has the other to itself.
    let small = problem
        .site_index("a")
        .map(|a| r.x.count(WorkloadIx::new(0), a));
    assert!(matches!(small, Some(0 | 2)), "{:?}", r.x);
}

#[test]
fn holds_refuses_a_placement_over_a_limit_and_accepts_the_repaired_one() {
    let (_, problem, start) = split_small_pair();
    assert!(holds(&problem, &start));
    let mut over = start.clone();
    // big on a beside small's replica: 6 cores on 4.
    over[WorkloadIx::new(1)].push((problem.site_index("a").unwrap(), 1));
    assert!(!holds(&problem, &over));
}

fn tight(family: Family, seed: u64, load: f64) -> (Instance, Problem) {
    let opts = GenOptions {
        sites: 30,
        workloads: 0,
        replicas: Some(1_500),
        seed,
        load,
    };
    let inst = generate_family(&opts, family).expect("generates");
    let problem = Problem::build(&inst).expect("builds");
    (inst, problem)
}

#[test]
fn repair_keeps_every_rule_and_never_worsens_on_tight_fleets() {
    // GPU-tight, CPU at 95 %, and the rules family (anti-affinity,
    // affinity, spread) from the greedy start, which leaves replicas out.
    let mut placed_more = 0;
    for (family, seed, load) in [
        (Family::GpuTight, 1, 0.8),
        (Family::Standard, 2, 0.95),
        (Family::Rules, 3, 0.9),
    ] {
        let (inst, problem) = tight(family, seed, load);
        let start = greedy(&problem);
        let before = verify(&inst, &problem.placement_of(&start));
        assert!(before.feasible);
        let limit = Limit::new(Deadline::NONE, Some(300_000_000));
        let r = repair(&problem, start, before.objective.total, &limit, 7).expect("repairs");
        let after = verify(&inst, &problem.placement_of(&r.x));
        assert!(
            after.feasible,
            "{family:?}: {:?}",
            &after.violations[..after.violations.len().min(3)]
        );
        let priced = after.objective.total;
        assert!(
            (priced - r.objective).abs() <= 1e-6 * priced.abs().max(1.0),
            "{family:?}: verifier prices {priced}, the repair says {}",
            r.objective
        );
        assert!(
            priced <= before.objective.total + 1e-9,
            "{family:?}: {priced} worse than its start {}",
            before.objective.total
        );
        if after.unplaced_replicas < before.unplaced_replicas {
            placed_more += 1;
        }
    }
    assert!(
        placed_more >= 2,
        "the repair placed more on {placed_more} of 3 fleets"
    );
}

#[test]
fn the_fast_path_with_its_repair_is_the_same_for_the_same_work() {
    let (inst, problem) = tight(Family::GpuTight, 2, 0.8);
    let options = SolveOptions {
        method: Method::Fast,
        deterministic: true,
        work: Some(60_000_000),
        ..SolveOptions::default()
    };
    let one = solve(&problem, &options).expect("solves");
    let two = solve(&problem, &options).expect("solves");
    assert_eq!(one.x, two.x);
    assert_eq!(one.objective.to_bits(), two.objective.to_bits());
    let report = verify(&inst, &problem.placement_of(&one.x));
    assert!(report.feasible, "{:?}", &report.violations[..1]);
}

#[test]
fn the_lp_proves_what_counting_cannot() {
    // Two 4-core workloads both pinned to site a (4 cores), site b empty:
    // the fleet has the cores and each fits on its own, so counting
    // proves nothing; the LP relaxation sees they share one site.
    let sites = vec![site("a", 4.0, 0.1), site("b", 4.0, 0.1)];
    let mut one = workload("one", 1, 4.0);
    one.pinned_sites = vec!["a".into()];
    let mut two = workload("two", 1, 4.0);
    two.pinned_sites = vec!["a".into()];
    let mut inst = instance(sites, vec![one, two], &[("a", "b", 5.0)]);
    inst.objective = energy_only();
    let problem = Problem::build(&inst).expect("builds");
    assert_eq!(edgeplan::solver::counted_unplaced(&problem), 0);
    assert_eq!(edgeplan::solver::proven_unplaced(&problem), 1);
    let (_, solved, _, report) = solve_and_verify(&inst);
    assert!(report.feasible);
    assert_eq!(report.unplaced_replicas, 1, "{:?}", solved.x);
}
