//! The per-site uplink (backhaul) limit, end to end: a hand-solved case,
//! the words that explain it, the verifier's own check, a plan that must
//! wait for room on the uplink, the instance file and the gRPC API. The
//! brute-force property case is in `brute_force.rs`.

use edgeplan::instance::*;
use edgeplan::plan::plan;
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions};
use edgeplan::verify::{verify, verify_plan};

use crate::common::*;

/// Site `a` is cheap behind a 10 Gbps uplink, `b` dearer with no uplink
/// limit; a video workload of 4 replicas × 3 Gbps egress (1 core each,
/// far from any core or power limit).
///
/// By hand: at `a` a replica costs 0.1 × 0.1 kW = 0.01/h, at `b` 0.03/h.
/// Without the uplink all four go to `a` (0.04/h). With it, `a` takes
/// ⌊10 / 3⌋ = 3 (9 Gbps) and `b` one: 3 × 0.01 + 0.03 = 0.06/h.
fn video(uplink_a: Option<f64>) -> Instance {
    let mut a = site("a", 100.0, 0.1);
    a.uplink_gbps = uplink_a;
    let b = site("b", 100.0, 0.3);
    let mut w = workload("video", 4, 1.0);
    w.egress_gbps = 3.0;
    let mut inst = instance(vec![a, b], vec![w], &[("a", "b", 5.0)]);
    inst.objective = energy_only();
    inst
}

fn placed(inst: &Instance, method: Method) -> (u32, u32, f64) {
    let problem = Problem::build(inst).unwrap();
    let solved = solve(
        &problem,
        &SolveOptions {
            method,
            relative_gap: Some(0.0),
            ..SolveOptions::default()
        },
    )
    .unwrap();
    let placement = problem.placement_of(&solved.x);
    let report = verify(inst, &placement);
    assert!(report.feasible, "{:?}", report.violations);
    let at = |s: &str| placement.count("video", s);
    (at("a"), at("b"), report.objective.total)
}

#[test]
fn uplink_hand_solved_three_replicas_fit_behind_ten_gbps() {
    for method in [Method::Exact, Method::Fast] {
        let (a, b, total) = placed(&video(None), method);
        assert_eq!(
            (a, b),
            (4, 0),
            "{method:?}: no uplink, all at the cheap site"
        );
        assert!((total - 0.04).abs() < 1e-9, "{method:?}: {total}");
        let (a, b, total) = placed(&video(Some(10.0)), method);
        assert_eq!(
            (a, b),
            (3, 1),
            "{method:?}: 3 × 3 Gbps fit in 10, the 4th goes to b"
        );
        assert!((total - 0.06).abs() < 1e-9, "{method:?}: {total}");
    }
}

#[test]
fn uplink_verifier_counts_egress_on_its_own() {
    let inst = video(Some(10.0));
    let mut all_at_a = edgeplan::placement::Placement::default();
    all_at_a
        .assignments
        .insert("video".into(), [("a".to_string(), 4)].into());
    let report = verify(&inst, &all_at_a);
    assert!(!report.feasible);
    let v = report
        .violations
        .iter()
        .find(|v| v.rule == "uplink")
        .expect("an uplink violation");
    assert_eq!(v.item, "a");
    assert!(
        v.message.contains("12.000 Gbps") && v.message.contains("10 Gbps"),
        "{}",
        v.message
    );
    // Exactly full is within the limit.
    let mut three = all_at_a.clone();
    three.assignments.insert(
        "video".into(),
        [("a".to_string(), 3), ("b".to_string(), 1)].into(),
    );
    assert!(verify(&inst, &three).feasible);
}

#[test]
fn uplink_full_is_the_explanation_of_what_stays_unplaced() {
    let mut inst = video(Some(10.0));
    inst.sites[0].name = Some("Lyon".into());
    inst.workloads[0].pinned_sites = vec!["a".into()];
    inst.workloads[0].egress_gbps = 0.8;
    inst.workloads[0].replicas = 13; // 12 × 0.8 = 9.6 Gbps fit, 0.4 left
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(&problem, &SolveOptions::default()).unwrap();
    let placement = problem.placement_of(&solved.x);
    assert_eq!(placement.count("video", "a"), 12);
    let why = edgeplan::explain::unplaced(&problem, &solved.x);
    assert_eq!(why.len(), 1);
    assert!(
        why[0]
            .text
            .contains("Lyon's 10 Gbps uplink is full: one replica needs 0.8 Gbps, 0.4 left"),
        "{}",
        why[0].text
    );
    // A replica bigger than the whole uplink is ineligible, in words.
    inst.workloads[0].egress_gbps = 12.0;
    inst.workloads[0].replicas = 1;
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(&problem, &SolveOptions::default()).unwrap();
    let why = edgeplan::explain::unplaced(&problem, &solved.x);
    assert!(
        why[0]
            .text
            .contains("Lyon's 10 Gbps uplink is too small: one replica's egress is 12 Gbps"),
        "{}",
        why[0].text
    );
}

/// `a`'s uplink is full with `old` (3 × 3 Gbps); the target moves `old`
/// to `b` and brings `new` (3 × 3 Gbps) to `a`. Make-before-break holds
/// both ends while a wave runs, so `new` may arrive only after `old` has
/// left: the plan needs two waves, and every wave's worst case keeps
/// the uplink.
#[test]
fn uplink_plan_waits_for_room_on_the_uplink() {
    let mut a = site("a", 100.0, 0.1);
    a.uplink_gbps = Some(10.0);
    let b = site("b", 100.0, 0.1);
    let mut old = workload("old", 3, 1.0);
    old.egress_gbps = 3.0;
    old.current.insert("a".into(), 3);
    let mut new = workload("new", 3, 1.0);
    new.egress_gbps = 3.0;
    new.current.insert("b".into(), 3);
    let mut inst = instance(vec![a, b], vec![old, new], &[("a", "b", 5.0)]);
    inst.objective = energy_only();
    let problem = Problem::build(&inst).unwrap();
    let mut target = edgeplan::placement::Placement::default();
    target
        .assignments
        .insert("old".into(), [("b".to_string(), 3)].into());
    target
        .assignments
        .insert("new".into(), [("a".to_string(), 3)].into());
    let p = plan(&inst, &problem, &target).unwrap();
    assert!(p.reaches_target(), "{:?}", p.blocked);
    let report = verify_plan(&inst, &p);
    assert!(report.valid, "{:?}", report.violations);
    let wave_of = |w: &str| {
        p.steps
            .iter()
            .filter(|s| s.workload == w)
            .map(|s| s.wave)
            .collect::<Vec<_>>()
    };
    let first_arrival = wave_of("new").into_iter().min().unwrap();
    let last_departure = wave_of("old").into_iter().max().unwrap();
    assert!(
        first_arrival > last_departure,
        "new arrives in wave {first_arrival}, old leaves by wave {last_departure}"
    );
}

#[test]
fn uplink_bad_input_names_the_item() {
    let mut inst = video(Some(-1.0));
    inst.workloads[0].egress_gbps = f64::NAN;
    inst.sites[1].capacity.insert("uplink_gbps".into(), 5.0);
    let issues = edgeplan::validate::validate(&inst);
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    let has = |p: &str| text.iter().any(|t| t.starts_with(p));
    assert!(has("sites[0].uplink_gbps: must be > 0"), "{text:?}");
    assert!(
        has("workloads[0].egress_gbps: must be a finite number"),
        "{text:?}"
    );
    assert!(
        has("sites[1].capacity.uplink_gbps: \"uplink_gbps\" is reserved"),
        "{text:?}"
    );
}

#[test]
fn uplink_in_the_instance_file_and_the_cli() {
    let inst = video(Some(10.0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("video.yaml");
    let text = serde_yaml::to_string(&inst).unwrap();
    assert!(
        text.contains("uplink_gbps: 10") && text.contains("egress_gbps: 3"),
        "{text}"
    );
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("placement.json");
    let run = crate::common::edgeplan(&[
        "solve",
        "--instance",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let placement: edgeplan::placement::Placement =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(placement.count("video", "a"), 3);
    assert_eq!(placement.count("video", "b"), 1);
}

/// Over gRPC: a fleet whose sites declare uplinks and whose workloads
/// declare egress is registered through the Inventory API, read back
/// unchanged, and solved; the placement the service returns keeps every
/// uplink by the verifier's count, and at least one uplink binds.
#[test]
fn uplink_through_the_grpc_api() {
    use crate::live::*;
    use edgeplan::service::client::{push_instance, Connect};
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let url = srv.url();
    let mut inst = fleet(3);
    for (i, s) in inst.sites.iter_mut().enumerate() {
        s.uplink_gbps = Some(1.0 + (i % 3) as f64);
    }
    for w in &mut inst.workloads {
        w.egress_gbps = 0.25;
    }
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let stored = inventory(&url).await;
        for (a, b) in stored.sites.iter().zip(&inst.sites) {
            assert_eq!(a.uplink_gbps, b.uplink_gbps, "site {}", a.id);
        }
        assert!(stored.workloads.iter().all(|w| w.egress_gbps == 0.25));
        let solved = dry_run(&url).await;
        let mut placement = edgeplan::placement::Placement::default();
        for a in &solved.placement {
            placement
                .assignments
                .entry(a.workload.clone())
                .or_default()
                .insert(a.site.clone(), a.replicas);
        }
        let report = verify(&stored, &placement);
        assert!(report.feasible, "{:?}", report.violations);
        let egress_at = |site: &str| -> f64 {
            solved
                .placement
                .iter()
                .filter(|a| a.site == site)
                .map(|a| a.replicas as f64 * 0.25)
                .sum()
        };
        let full = stored
            .sites
            .iter()
            .filter(|s| egress_at(&s.id) > s.uplink_gbps.unwrap() - 0.25)
            .count();
        assert!(full > 0, "no uplink binds: the test would not test it");
    });
}

/// The operator report has a column for the uplink: its use where a site
/// declares one (3 × 3 of 10 Gbps at `a`), a dash where it does not; and
/// the binding limit at a full uplink is named.
#[test]
fn uplink_in_the_operator_report() {
    use edgeplan::operator_report::{html, ReportInput};
    let mut inst = video(Some(9.0));
    inst.workloads[0].replicas = 3;
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(&problem, &SolveOptions::default()).unwrap();
    let page = html(&ReportInput {
        title: "uplink",
        instance: &inst,
        problem: &problem,
        x: &solved.x,
        plan: None,
        whatif: None,
    });
    assert!(
        page.contains("<th>uplink_gbps use</th>"),
        "no uplink column"
    );
    let row = |site: &str| {
        let start = page
            .find(&format!("<tr><td class=\"l\">{site}</td>"))
            .unwrap();
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    assert!(row("a").contains("<td>100 %</td>"), "{}", row("a"));
    assert!(row("b").contains("<td>—</td>"), "{}", row("b"));
    let binding = edgeplan::explain::binding(&problem, &solved.x);
    assert!(
        binding[0].binding.iter().any(|b| b == "uplink_gbps"),
        "{:?}",
        binding[0]
    );
}

/// A partial update, re-planned in place: the fast path's answer is kept
/// in a `Replanner`; then `a`'s uplink shrinks (a site update) and later
/// every replica's egress grows (a workload update). Each re-plan must
/// keep the new uplink by the verifier's own count, and match what the
/// rows now allow: 10 Gbps / 2 = all 4 at `a`; 5 / 2 → 2; 5 / 3 → 1.
#[test]
fn uplink_partial_updates_replanned_in_place_keep_the_new_limit() {
    use edgeplan::fast::{diff, Replanner};
    let mut inst = video(Some(10.0));
    inst.workloads[0].egress_gbps = 2.0;
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(
        &problem,
        &SolveOptions {
            method: Method::Fast,
            relative_gap: Some(0.0),
            ..SolveOptions::default()
        },
    )
    .unwrap();
    assert_eq!(problem.placement_of(&solved.x).count("video", "a"), 4);
    let mut replanner = Replanner::new(problem.clone(), &solved.x, solved.price.clone());
    let mut before = inst.clone();
    for (step, (uplink, egress, at_a)) in [(5.0, 2.0, 2), (5.0, 3.0, 1)].into_iter().enumerate() {
        let mut changed = before.clone();
        changed.sites[0].uplink_gbps = Some(uplink);
        changed.workloads[0].egress_gbps = egress;
        let rebuilt = Problem::build(&changed).unwrap();
        let changes = diff(replanner.problem(), &before, &changed).expect("an in-place change");
        replanner
            .apply(
                &changed,
                &changes,
                Deadline::after(DEFAULT_REPLAN_TIME_LIMIT),
            )
            .unwrap();
        let placement = rebuilt.placement_of(&replanner.placement());
        let report = verify(&changed, &placement);
        assert!(report.feasible, "step {step}: {:?}", report.violations);
        assert_eq!(placement.count("video", "a"), at_a, "step {step}");
        assert_eq!(placement.count("video", "b"), 4 - at_a, "step {step}");
        before = changed;
    }
}
