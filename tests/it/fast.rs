//! The fast path (Lagrangian bound + price-guided greedy + local search):
//! every placement it returns passes the independent verifier, its objective
//! is what the verifier prices, its bound never exceeds the exact optimum,
//! and on small instances it is within its stated gap of that optimum. The
//! tiny-instance property against enumeration is in `brute_force`.

use crate::common::{edgeplan, Deadline};

use edgeplan::instance::Instance;
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions, Solved};
use edgeplan::verify::verify;

fn gen(replicas: usize, sites: usize, seed: u64) -> Instance {
    crate::common::gen_instance(replicas, sites, seed, 0.7)
}

fn solve_with(problem: &Problem, method: Method, gap: f64) -> Solved {
    solve(
        problem,
        &SolveOptions {
            deadline: Deadline::after_s(60.0),
            relative_gap: Some(gap),
            threads: Some(1),
            seed: 0,
            method,
            work: None,
            deterministic: false,
        },
    )
    .expect("solves")
}

#[test]
fn fast_placements_pass_the_verifier_at_several_sizes() {
    // 300 sites is more than the cities with measured RTTs: sites share
    // metros (network nodes), the path `Problem::build` groups by node.
    for (replicas, sites, seed) in [(300, 20, 1), (2_000, 100, 2), (3_000, 300, 3)] {
        let inst = gen(replicas, sites, seed);
        let problem = Problem::build(&inst).expect("builds");
        let solved = solve_with(&problem, Method::Fast, 0.01);
        assert_eq!(solved.method, Method::Fast);
        let report = verify(&inst, &problem.placement_of(&solved.x));
        assert!(
            report.feasible,
            "{replicas}x{sites}: {:?}",
            &report.violations[..report.violations.len().min(3)]
        );
        let priced = report.objective.total;
        assert!(
            (priced - solved.objective).abs() <= 1e-6 * priced.abs().max(1.0),
            "{replicas}x{sites}: verifier prices {priced}, the fast path says {}",
            solved.objective
        );
        assert!(solved.bound <= solved.objective + 1e-9);
        assert!(
            solved.gap <= 0.01,
            "{replicas}x{sites}: gap {:.3} % (bound {}, objective {})",
            solved.gap * 100.0,
            solved.bound,
            solved.objective
        );
    }
}

#[test]
fn fast_path_is_within_its_gap_of_the_exact_optimum() {
    for (replicas, sites, seed) in [(200, 12, 4), (600, 30, 5), (1_000, 50, 6)] {
        let inst = gen(replicas, sites, seed);
        let problem = Problem::build(&inst).expect("builds");
        let exact = solve_with(&problem, Method::Exact, 0.0);
        assert_eq!(exact.status, edgeplan::solver::SolveStatus::Optimal);
        let optimum = exact.objective;
        let fast = solve_with(&problem, Method::Fast, 0.0);
        let tol = 1e-7 * optimum.abs().max(1.0);
        assert!(
            fast.bound <= optimum + tol,
            "{replicas}x{sites}: the Lagrangian bound {} is above the optimum {optimum}",
            fast.bound
        );
        assert!(fast.objective >= optimum - tol);
        assert!(
            (fast.objective - optimum) / fast.objective <= fast.gap + 1e-9,
            "{replicas}x{sites}: {} is {:.3} % above the optimum {optimum}, stated gap {:.3} %",
            fast.objective,
            (fast.objective - optimum) / optimum * 100.0,
            fast.gap * 100.0
        );
        assert!(fast.gap < 0.02, "{replicas}x{sites}: gap {}", fast.gap);
    }
}

#[test]
fn auto_uses_the_exact_solver_on_small_models_and_keeps_the_better_answer() {
    let inst = gen(300, 20, 7);
    let problem = Problem::build(&inst).expect("builds");
    let exact = solve_with(&problem, Method::Exact, 0.0);
    let auto = solve_with(&problem, Method::Auto, 0.0);
    assert!((auto.objective - exact.objective).abs() <= 1e-6 * exact.objective.abs());
    assert!(auto.gap <= 1e-4, "{}", auto.gap);
}

#[test]
fn cli_solves_on_the_fast_path_and_benchmarks() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("fleet.json");
    let i = inst.to_str().unwrap();
    let g = edgeplan(&["gen", "--sites", "20", "--replicas", "300", "--out", i]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let s = edgeplan(&["solve", "--instance", i, "--method", "fast"]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let report: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(report["method"], "fast");
    assert!(String::from_utf8_lossy(&s.stderr).contains("(Fast)"));

    let bad = edgeplan(&["solve", "--instance", i, "--method", "quick"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown method \"quick\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let keep = dir.path().join("bench");
    let b = edgeplan(&[
        "bench",
        "--sizes",
        "300x20:5:0.01",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let table = String::from_utf8_lossy(&b.stdout);
    let row = table.lines().nth(1).expect("one row per size");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..7],
        &["standard", "300", "20", "0.7", "1", "5", "fast"],
        "{table}"
    );
    let gap_pct: f64 = cols[13].parse().unwrap();
    assert!(gap_pct <= 1.0, "{table}");
    assert!(keep
        .join("bench-standard-300x20-load0.7-seed1.json")
        .exists());

    let bad = edgeplan(&["bench", "--sizes", "300by20"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"300by20\" is not REPLICASxSITES"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn neighbourhood_search_never_worsens_and_ends_at_the_optimum_on_small_fleets() {
    for (replicas, sites, seed) in [(200, 12, 4), (600, 30, 5)] {
        let inst = gen(replicas, sites, seed);
        let problem = Problem::build(&inst).expect("builds");
        let optimum = solve_with(&problem, Method::Exact, 0.0).objective;
        let start = edgeplan::solver::greedy(&problem);
        let start_objective = verify(&inst, &problem.placement_of(&start)).objective.total;
        let started = std::time::Instant::now();
        let (x, objective) =
            edgeplan::solver::neighbourhood_search(&problem, start, Deadline::after_s(120.0), 1)
                .expect("searches");
        let report = verify(&inst, &problem.placement_of(&x));
        assert!(report.feasible, "{:?}", &report.violations[..1]);
        let priced = report.objective.total;
        assert!((priced - objective).abs() <= 1e-6 * priced.abs().max(1.0));
        assert!(objective <= start_objective + 1e-9, "worse than its start");
        // It stops once it has solved every site at once, i.e. the whole model.
        assert!(
            (objective - optimum).abs() <= 1e-6 * optimum.abs().max(1.0),
            "{replicas}x{sites}: {objective} against the optimum {optimum}"
        );
        assert!(started.elapsed().as_secs_f64() < 120.0, "ran to its limit");
    }
}

#[test]
fn a_deadline_shares_caps_and_floors_the_time_left() {
    // The stages of a solve split one deadline: a share of what is left,
    // a cap, a floor; NONE stays NONE through each (no deadline is never
    // turned into one), and remaining time only shrinks.
    let ten = Deadline::after_s(10.0);
    let half = ten.share(0.5).remaining_s().expect("set");
    assert!((4.0..=5.0).contains(&half), "half of 10 s left: {half}");
    let capped = ten.cap_s(1.0).remaining_s().expect("set");
    assert!(capped <= 1.0 && capped > 0.5, "capped at 1 s: {capped}");
    let uncapped = ten.cap_s(60.0).remaining_s().expect("set");
    assert!(
        (9.0..=10.0).contains(&uncapped),
        "a cap above it changes nothing: {uncapped}"
    );
    let floored = Deadline::passed()
        .at_least_s(3.0)
        .remaining_s()
        .expect("set");
    assert!((2.0..=3.0).contains(&floored), "a floor of 3 s: {floored}");
    assert!(!ten
        .share(0.0)
        .has_room_for(std::time::Duration::from_millis(50)));
    assert!(Deadline::passed().share(0.5).remaining_s() == Some(0.0));
    for none in [
        Deadline::NONE.share(0.5),
        Deadline::NONE.cap_s(1.0),
        Deadline::NONE.at_least_s(1.0),
    ] {
        assert!(!none.is_set() && !none.reached() && none.remaining_s().is_none());
    }
    // Shares out of range are clamped, not extended.
    let over = ten.share(3.0).remaining_s().expect("set");
    assert!(over <= 10.0, "a share above one is the whole: {over}");
}

#[test]
fn a_deadline_already_passed_still_gets_a_verified_placement_and_a_bound() {
    // The deadline is a value the caller hands in; one that has passed
    // before the solve starts (a slow parse, a clock that jumped) must
    // still give every method's first answer, feasible and bounded.
    let inst = gen(600, 20, 9);
    let problem = Problem::build(&inst).expect("builds");
    for method in [Method::Auto, Method::Exact, Method::Fast] {
        let solved = solve(
            &problem,
            &SolveOptions {
                deadline: Deadline::passed(),
                method,
                ..SolveOptions::default()
            },
        )
        .expect("solves");
        let report = verify(&inst, &problem.placement_of(&solved.x));
        assert!(report.feasible, "{method:?}: {:?}", &report.violations[..1]);
        let priced = report.objective.total;
        assert!(
            (priced - solved.objective).abs() <= 1e-6 * priced.abs().max(1.0),
            "{method:?}: verifier {priced} vs solver {}",
            solved.objective
        );
        assert!(solved.bound <= solved.objective + 1e-9 * solved.objective.abs().max(1.0));
    }
}

#[test]
fn each_generated_family_is_what_it_says_and_solves_verified() {
    use edgeplan::gen::{generate, generate_family, Family, GenOptions};
    use edgeplan::validate::validate_and_build;
    let opts = GenOptions {
        sites: 40,
        workloads: 0,
        replicas: Some(1_000),
        seed: 3,
        load: 0.8,
    };
    // The default family is exactly `gen` as it was.
    assert_eq!(
        serde_json::to_string(&generate_family(&opts, Family::Standard).unwrap()).unwrap(),
        serde_json::to_string(&generate(&opts).unwrap()).unwrap()
    );
    for family in Family::ALL {
        let inst = generate_family(&opts, family).unwrap();
        let problem = validate_and_build(&inst).unwrap_or_else(|e| panic!("{family:?}: {e:?}"));
        match family {
            Family::GpuTight => {
                let demand: f64 = inst
                    .workloads
                    .iter()
                    .map(|w| w.resources.get("gpus").unwrap_or(&0.0) * w.replicas as f64)
                    .sum();
                let supply: f64 = inst
                    .sites
                    .iter()
                    .filter_map(|s| s.capacity.get("gpus"))
                    .sum();
                let share = demand / supply;
                assert!((0.85..=1.0).contains(&share), "GPUs {demand} of {supply}");
                let big = inst
                    .workloads
                    .iter()
                    .filter(|w| w.resources.get("gpus").is_some_and(|g| *g >= 4.0))
                    .count();
                assert!(big > 0, "no 4- or 8-GPU replicas");
            }
            Family::Metro => {
                let nodes: std::collections::BTreeSet<&str> = inst
                    .sites
                    .iter()
                    .map(|s| s.node.as_deref().unwrap_or(&s.id))
                    .collect();
                assert_eq!(nodes.len(), 4, "ten sites to a metro");
            }
            Family::Rules => {
                let count = |f: &dyn Fn(&edgeplan::instance::Workload) -> bool| {
                    inst.workloads.iter().filter(|w| f(w)).count()
                };
                assert!(count(&|w| w.anti_affinity_group.is_some()) > 25);
                assert!(count(&|w| w.affinity_group.is_some()) > 5);
                assert!(count(&|w| w.max_per_failure_domain.is_some()) > 10);
            }
            Family::Standard => {}
        }
        // On a work budget: the rules family's gap stays open (its
        // unplaced replicas), and the clock would run to the limit.
        let solved = solve(
            &problem,
            &SolveOptions {
                method: Method::Fast,
                work: Some(2_000_000),
                deterministic: true,
                ..SolveOptions::default()
            },
        )
        .expect("solves");
        let report = verify(&inst, &problem.placement_of(&solved.x));
        assert!(report.feasible, "{family:?}: {:?}", &report.violations[..1]);
    }
}

#[test]
fn the_benchmark_suite_runs_each_family_from_the_cli() {
    let list = edgeplan(&["bench", "--suite", "smoke", "--list"]);
    assert!(list.status.success());
    let lines = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(lines.lines().count(), 4, "{lines}");
    let run = edgeplan(&["bench", "--suite", "smoke", "--replans", "2"]);
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for family in ["standard", "gpu-tight", "metro", "rules"] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(family))
            .unwrap_or_else(|| panic!("no {family} row in\n{out}"));
        // family replicas sites load seed limit method build solve objective unplaced proven …
        let cells: Vec<&str> = row.split_whitespace().collect();
        let unplaced: u64 = cells[10].parse().unwrap();
        let proven: u64 = cells[11].parse().unwrap();
        assert!(
            proven <= unplaced,
            "{family}: proven {proven} > unplaced {unplaced}"
        );
    }
    let bad = edgeplan(&["bench", "--suite", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown suite \"nope\""));
}

#[test]
fn the_fast_path_spreads_an_affinity_group_over_as_many_common_sites_as_it_needs() {
    // Two workloads that must share their set of sites, three replicas
    // each, at most one a site: the group needs three sites. One site
    // alone (what the fast path did before) leaves four replicas out.
    use crate::common::{instance, site, workload};
    let mut members: Vec<_> = ["front", "back"]
        .iter()
        .map(|id| {
            let mut w = workload(id, 3, 2.0);
            w.max_per_site = Some(1);
            w.affinity_group = Some("pair".into());
            w
        })
        .collect();
    members[1].forbidden_sites = vec!["d".into()];
    let inst = instance(
        vec![
            site("a", 16.0, 0.1),
            site("b", 16.0, 0.2),
            site("c", 16.0, 0.3),
            site("d", 16.0, 0.05),
        ],
        members,
        &[("a", "b", 5.0), ("b", "c", 5.0), ("c", "d", 5.0)],
    );
    let problem = Problem::build(&inst).expect("builds");
    let solved = solve_with(&problem, Method::Fast, 0.0);
    let report = verify(&inst, &problem.placement_of(&solved.x));
    assert!(report.feasible, "{:?}", report.violations);
    assert_eq!(problem.evaluate(&solved.x).unplaced_replicas, 0);
    // The same set of sites for both, and not d (back may not use it).
    let placement = problem.placement_of(&solved.x);
    let sites = |w: &str| -> Vec<String> { placement.assignments[w].keys().cloned().collect() };
    assert_eq!(sites("front"), sites("back"));
    assert_eq!(sites("front"), vec!["a", "b", "c"]);
}
