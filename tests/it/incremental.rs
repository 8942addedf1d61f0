//! Incremental re-planning (`fast::Replanner`): after a site's or a
//! workload's change the re-planned placement passes the independent
//! verifier on the changed instance, is priced as the verifier prices it,
//! carries a bound no higher than a fresh solve's answer, moves only the
//! workloads it reports, and refuses bad input without changing anything.
//! The tiny-instance property against enumeration is in `brute_force`.

use std::process::Command;

use edgeplan::clock::Deadline;
use edgeplan::fast::{diff, Change, Replanner, DEFAULT_REPLAN_TIME_LIMIT};
use edgeplan::instance::Instance;
use edgeplan::ix::{SiteIx, WorkloadIx};
use edgeplan::problem::Problem;
use edgeplan::replicas::Replicas;
use edgeplan::solver::{solve, Method, SolveOptions, Solved};
use edgeplan::verify::verify;
use edgeplan::whatif::{apply, Perturbation, Scenario, Selection};

fn gen(replicas: usize, sites: usize, seed: u64) -> Instance {
    crate::common::gen_instance(replicas, sites, seed, 0.75)
}

fn fast(problem: &Problem) -> Solved {
    solve(
        problem,
        &SolveOptions {
            deadline: Deadline::after_s(30.0),
            relative_gap: Some(0.005),
            threads: Some(1),
            seed: 0,
            method: Method::Fast,
            work: None,
            deterministic: false,
        },
    )
    .expect("solves")
}

fn perturbed(inst: &Instance, p: Perturbation) -> Instance {
    apply(
        inst,
        &Scenario {
            name: "change".into(),
            perturbations: vec![p],
        },
        "test",
    )
    .expect("applies")
}

/// The sites carrying the most IT power in `x`, busiest first.
fn busiest_sites(problem: &Problem, x: &Replicas) -> Vec<String> {
    let mut sites = problem.evaluate(x).sites;
    sites.sort_by(|a, b| b.it_kw.total_cmp(&a.it_kw));
    sites.into_iter().map(|k| k.site).collect()
}

#[test]
fn replans_stay_feasible_and_move_only_what_they_report() {
    let mut inst = gen(3_000, 80, 11);
    let problem = Problem::build(&inst).expect("builds");
    let solved = fast(&problem);
    let busy = busiest_sites(&problem, &solved.x);
    let mut replanner = Replanner::new(problem, &solved.x, solved.price.clone());
    let first_objective = replanner.objective();
    assert!((first_objective - solved.objective).abs() <= 1e-6 * solved.objective);
    let grown = inst.workloads[7].id.clone();
    let shrunk = inst.workloads[3].id.clone();
    let changes = [
        Perturbation::HeatWave {
            sites: vec![busy[0].clone()],
            delta_c: 12.0,
            from_hour: 0,
            hours: None,
        },
        Perturbation::CoolingLoss {
            site: busy[1].clone(),
            fraction: 0.6,
        },
        Perturbation::PowerCap {
            site: busy[2].clone(),
            factor: 0.3,
        },
        Perturbation::Price {
            sites: vec![busy[40].clone()],
            multiplier: 0.2,
            series: None,
        },
        Perturbation::DemandGrowth {
            factor: 3.0,
            selection: Selection {
                regions: Vec::new(),
                workloads: vec![grown],
            },
        },
        Perturbation::DemandGrowth {
            factor: 0.3,
            selection: Selection {
                regions: Vec::new(),
                workloads: vec![shrunk],
            },
        },
    ];
    let mut some_moved = 0;
    for (i, p) in changes.into_iter().enumerate() {
        let next = perturbed(&inst, p);
        let before = replanner.placement();
        let found = diff(replanner.problem(), &inst, &next).expect("not structural");
        assert_eq!(
            found.len(),
            1,
            "change {i}: one site or workload, got {found:?}"
        );
        let r = replanner
            .apply(&next, &found, Deadline::after(DEFAULT_REPLAN_TIME_LIMIT))
            .expect("re-plans");
        let after = replanner.placement();

        // Feasible and priced as the verifier prices it, on the changed instance.
        let rebuilt = Problem::build(&next).expect("builds");
        let report = verify(&next, &rebuilt.placement_of(&after));
        assert!(report.feasible, "change {i}: {:?}", &report.violations[..1]);
        let priced = report.objective.total;
        assert!(
            (priced - r.objective).abs() <= 1e-6 * priced,
            "change {i}: verifier prices {priced}, the re-plan says {}",
            r.objective
        );
        // The bound is a bound: no higher than a fresh solve's placement.
        let fresh = fast(&rebuilt);
        assert!(
            r.bound <= fresh.objective + 1e-9 * fresh.objective,
            "change {i}: bound {} above a feasible {}",
            r.bound,
            fresh.objective
        );
        // And the re-plan is not far off a fresh solve (it moves far less).
        assert!(
            r.objective <= fresh.objective * 1.02,
            "change {i}: re-plan {} vs fresh {}",
            r.objective,
            fresh.objective
        );
        // Exactly the reported workloads changed; they are a few.
        for ((w, b), a) in before.iter_enumerated().zip(after.iter()) {
            let reported = r.moved.iter().find(|m| m.workload == w);
            match reported {
                Some(m) => {
                    assert_eq!(&m.before, b, "change {i}: workload {w}'s before");
                    assert_eq!(&m.after, a, "change {i}: workload {w}'s after");
                }
                None => assert_eq!(b, a, "change {i}: workload {w} moved unreported"),
            }
        }
        assert!(
            r.moved.len() <= inst.workloads.len() / 10,
            "change {i}: {} of {} workloads moved",
            r.moved.len(),
            inst.workloads.len()
        );
        some_moved += r.moved.len();
        inst = next;
    }
    assert!(
        some_moved > 0,
        "the changes at the busiest sites moved nothing"
    );
}

#[test]
fn a_site_that_becomes_a_candidate_rebuilds_the_layout() {
    // A power cap below the idle draw leaves site 0 no room for anyone;
    // restoring it makes it a candidate again for every workload in reach.
    let inst = gen(600, 20, 12);
    let mut capped = inst.clone();
    capped.sites[0].power.cap_kw = 0.01;
    let problem = Problem::build(&capped).expect("builds");
    assert!(problem
        .workloads
        .iter()
        .all(|w| w.candidates.iter().all(|c| c.site != SiteIx::new(0))));
    let solved = fast(&problem);
    let mut replanner = Replanner::new(problem, &solved.x, solved.price.clone());
    let changes = diff(replanner.problem(), &capped, &inst).expect("not structural");
    assert_eq!(changes, vec![Change::Site(SiteIx::new(0))]);
    let r = replanner
        .apply(&inst, &changes, Deadline::after(DEFAULT_REPLAN_TIME_LIMIT))
        .expect("re-plans");
    assert!(r.rebuilt, "site 0 is a candidate again");
    let rebuilt = Problem::build(&inst).expect("builds");
    let report = verify(&inst, &rebuilt.placement_of(&replanner.placement()));
    assert!(report.feasible, "{:?}", &report.violations[..1]);
    assert!((report.objective.total - r.objective).abs() <= 1e-6 * r.objective);
    // More room never costs more: the placement before is still feasible.
    assert!(r.objective <= solved.objective + 1e-9 * solved.objective);
}

#[test]
fn structural_changes_are_not_incremental() {
    let inst = gen(300, 12, 13);
    let problem = Problem::build(&inst).expect("builds");
    assert_eq!(diff(&problem, &inst, &inst), Some(Vec::new()));
    let mut more = inst.clone();
    let mut extra = inst.sites[0].clone();
    extra.id = "extra".into();
    extra.node = Some(inst.sites[0].node_id().to_string());
    more.sites.push(extra);
    assert_eq!(diff(&problem, &inst, &more), None);
    let mut moved = inst.clone();
    moved.sites[2].lat += 1.0;
    assert_eq!(diff(&problem, &inst, &moved), None, "position sets RTTs");
    let mut weights = inst.clone();
    weights.objective.energy *= 2.0;
    assert_eq!(diff(&problem, &inst, &weights), None);
}

#[test]
fn a_bad_change_is_refused_and_changes_nothing() {
    let inst = gen(300, 12, 14);
    let problem = Problem::build(&inst).expect("builds");
    let solved = fast(&problem);
    let mut replanner = Replanner::new(problem, &solved.x, solved.price.clone());
    let before = (
        replanner.placement(),
        replanner.objective(),
        replanner.bound(),
    );
    let mut bad = inst.clone();
    bad.sites[4].servers.model = "no-such-server".into();
    let err = replanner
        .apply(
            &bad,
            &[Change::Site(SiteIx::new(4))],
            Deadline::after(DEFAULT_REPLAN_TIME_LIMIT),
        )
        .expect_err("unknown model");
    assert!(err.to_string().contains("no-such-server"), "{err}");
    let mut fewer = inst.clone();
    fewer.workloads.pop();
    let err = replanner
        .apply(
            &fewer,
            &[Change::Workload(WorkloadIx::new(0))],
            Deadline::after(DEFAULT_REPLAN_TIME_LIMIT),
        )
        .expect_err("different size");
    assert!(err.to_string().contains("build it afresh"), "{err}");
    let err = replanner
        .apply(
            &inst,
            &[Change::Workload(WorkloadIx::new(inst.workloads.len()))],
            Deadline::after(DEFAULT_REPLAN_TIME_LIMIT),
        )
        .expect_err("out of range");
    assert!(err.to_string().contains("no such item"), "{err}");
    assert_eq!(
        before,
        (
            replanner.placement(),
            replanner.objective(),
            replanner.bound()
        )
    );
}

#[test]
fn cli_replan_writes_a_verified_placement_and_a_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = gen(400, 15, 15);
    let problem = Problem::build(&inst).expect("builds");
    let busy = busiest_sites(&problem, &fast(&problem).x);
    let changed = perturbed(
        &inst,
        Perturbation::CoolingLoss {
            site: busy[0].clone(),
            fraction: 0.7,
        },
    );
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a, serde_json::to_string(&inst).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_string(&changed).unwrap()).unwrap();
    let (out, plan) = (dir.path().join("out.json"), dir.path().join("plan.json"));
    let run = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["replan", "--time-limit", "5", "--instance"])
        .arg(&a)
        .arg("--changed")
        .arg(&b)
        .arg("--out")
        .arg(&out)
        .arg("--plan-out")
        .arg(&plan)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("changed: site {}", busy[0])),
        "{stderr}"
    );
    assert!(stderr.contains("re-plan: "), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let placement: edgeplan::placement::Placement =
        serde_json::from_value(report).expect("a placement");
    assert!(verify(&changed, &placement).feasible);
    assert!(plan.exists());

    // A structural change is solved afresh, and says so.
    let mut grown = inst.clone();
    let mut extra = inst.sites[0].clone();
    extra.id = "extra".into();
    extra.node = Some(inst.sites[0].node_id().to_string());
    grown.sites.push(extra);
    std::fs::write(&b, serde_json::to_string(&grown).unwrap()).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["replan", "--time-limit", "5", "--instance"])
        .arg(&a)
        .arg("--changed")
        .arg(&b)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("structural"), "{stderr}");

    // A changed file that is not an instance is named in the error.
    std::fs::write(&b, "{\"sites\": 3}").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["replan", "--instance"])
        .arg(&a)
        .arg("--changed")
        .arg(&b)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("b.json"));
}

#[test]
fn a_replan_on_a_tight_fleet_stops_on_its_own_budget_and_repeats_itself() {
    // GPU-tight at 95 % of the GPUs and a busy site's cooling halved: the
    // search for room could run to the 2 s guard. With no deadline at
    // all, the default work budget alone ends it — the same placement
    // both times, verified on the changed instance.
    use edgeplan::gen::{generate_family, Family, GenOptions};
    let inst = generate_family(
        &GenOptions {
            sites: 30,
            workloads: 0,
            replicas: Some(1_500),
            seed: 4,
            load: 0.85,
        },
        Family::GpuTight,
    )
    .expect("generates");
    let problem = Problem::build(&inst).expect("builds");
    let solved = fast(&problem);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut replanner = Replanner::new(problem.clone(), &solved.x, solved.price.clone());
        let mut current = inst.clone();
        for site in busiest_sites(&problem, &solved.x).into_iter().take(3) {
            let next = perturbed(
                &current,
                Perturbation::CoolingLoss {
                    site,
                    fraction: 0.5,
                },
            );
            let changes = diff(replanner.problem(), &current, &next).expect("not structural");
            replanner
                .apply(&next, &changes, Deadline::NONE)
                .expect("re-plans");
            current = next;
        }
        let x = replanner.placement();
        let rebuilt = Problem::build(&current).expect("builds");
        let report = verify(&current, &rebuilt.placement_of(&x));
        assert!(report.feasible, "{:?}", &report.violations[..1]);
        answers.push(x);
    }
    assert_eq!(answers[0], answers[1]);
}

/// A running replica moves to a site that became cheaper, and back when
/// the prices turn: the re-plan is not only a repair of what no longer
/// fits. (Found by `replay`: every running replica stayed put through a
/// day-ahead price swap, because the move loop asked whether one replica
/// *more* fitted a workload already fully placed.)
#[test]
fn a_replica_moves_to_a_site_that_became_cheaper() {
    use crate::common::{instance, site, workload};
    use edgeplan::instance::Price;
    let mut w = workload("w", 2, 4.0);
    w.current = std::collections::BTreeMap::from([("A".to_string(), 2)]);
    let mut inst = instance(
        vec![site("A", 10.0, 0.10), site("B", 10.0, 0.30)],
        vec![w],
        &[("A", "B", 5.0)],
    );
    let problem = Problem::build(&inst).expect("builds");
    let x = problem.current_placement();
    let mut replanner = Replanner::new(problem, &x, Vec::new());
    let on = |r: &Replanner, s: &str| {
        let p = r.problem();
        let si = p.site_index(s).expect("site");
        r.placement().count(WorkloadIx::new(0), si)
    };
    assert_eq!(on(&replanner, "A"), 2);
    for (a, b, to) in [(0.30, 0.10, "B"), (0.10, 0.30, "A")] {
        inst.sites[0].energy.price_per_kwh = Price::Flat(a);
        inst.sites[1].energy.price_per_kwh = Price::Flat(b);
        let changes = [Change::Site(SiteIx::new(0)), Change::Site(SiteIx::new(1))];
        replanner
            .apply(&inst, &changes, Deadline::after(DEFAULT_REPLAN_TIME_LIMIT))
            .expect("re-plans");
        assert_eq!(on(&replanner, to), 2, "both replicas on {to}");
        let p = replanner.problem();
        let placement = p.placement_of(&replanner.placement());
        assert!(verify(&inst, &placement).violations.is_empty());
    }
}

/// `rebase`: a plan reached only part of the re-planner's target, so it is
/// told where the fleet is. Its placement and objective are then that
/// placement's, as `Problem::evaluate` prices it — not the target's.
#[test]
fn a_rebased_replanner_holds_the_placement_it_was_given() {
    let inst = gen(400, 10, 5);
    let problem = Problem::build(&inst).expect("builds");
    let solved = fast(&problem);
    // Where the fleet is: one workload's replicas never left (not started).
    let mut reached = solved.x.clone();
    let wi = reached
        .iter_enumerated()
        .find(|(_, sites)| !sites.is_empty())
        .map(|(wi, _)| wi)
        .expect("something placed");
    reached[wi].clear();
    let mut replanner = Replanner::new(problem.clone(), &solved.x, solved.price.clone());
    replanner.rebase(&reached);
    let mut held = replanner.placement();
    for sites in held.iter_mut() {
        sites.sort_unstable();
    }
    for sites in reached.iter_mut() {
        sites.sort_unstable();
    }
    assert_eq!(held, reached);
    let priced = problem.evaluate(&reached).objective.total;
    assert!(
        (replanner.objective() - priced).abs() <= 1e-6 * priced,
        "{} != {priced}",
        replanner.objective()
    );
    assert!(replanner.objective() > solved.objective, "a replica is out");
}
