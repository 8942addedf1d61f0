//! Inputs that are real (negative spot prices, services scaled to zero) are
//! accepted and solved sensibly; inputs that are hostile (price hours out
//! of order) are refused with their path.

use edgeplan::instance::{Instance, Price, PricePoint};
use edgeplan::ix::WorkloadIx;
use edgeplan::plan::plan;
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions, Solved};
use edgeplan::validate::validate;
use edgeplan::verify::{verify, verify_plan};

use crate::common::*;

fn solve_with(problem: &Problem, method: Method) -> Solved {
    solve(problem, &SolveOptions { method, ..exact() }).expect("solves")
}

/// Site `a` is paid to consume (−0.5 per kWh, as DE-LU in 2023), `b` is
/// not; both could hold everything. `idle_kw` on `a` makes the fixed cost
/// (idle power, priced) negative too.
fn negative_at_a(price_a: Price, idle_a_kw: f64) -> Instance {
    let mut a = site("a", 32.0, 0.0);
    a.energy.price_per_kwh = price_a;
    a.power.idle_kw = Some(idle_a_kw);
    instance(
        vec![a, site("b", 32.0, 0.1)],
        vec![workload("web", 2, 4.0), workload("db", 1, 8.0)],
        &[("a", "b", 8.0)],
    )
}

/// Exact and fast agree, the verifier accepts both and prices them alike,
/// no replica beyond the workloads' counts is placed, and the energy term
/// is the negative price times the load.
fn check_negative_price_instance(inst: &Instance, price_a: f64, idle_a_kw: f64) {
    let issues = validate(inst);
    assert!(issues.is_empty(), "{issues:?}");
    let problem = Problem::build(inst).expect("builds");
    let mut objectives = Vec::new();
    for method in [Method::Exact, Method::Fast, Method::Auto] {
        let solved = solve_with(&problem, method);
        let placement = problem.placement_of(&solved.x);
        let report = verify(inst, &placement);
        assert!(report.feasible, "{method:?}: {:?}", report.violations);
        assert_close(
            report.objective.total,
            solved.objective,
            &format!("{method:?}: verifier vs solver"),
        );
        // Replica counts are fixed: being paid to run load places no extra.
        for (w, wl) in inst.workloads.iter().enumerate() {
            let placed = solved.x.placed(WorkloadIx::new(w));
            assert_eq!(placed, wl.replicas, "{method:?}: {}", wl.id);
        }
        assert!(
            solved.bound <= solved.objective + 1e-9,
            "{method:?}: bound {} above objective {}",
            solved.bound,
            solved.objective
        );
        assert!(solved.gap.is_finite() && solved.gap >= 0.0, "{method:?}");
        // Everything at `a`: 2 × 0.4 kW + 0.8 kW of load, plus its idle power.
        let expected = (1.6 + idle_a_kw) * price_a;
        assert_close(report.objective.energy, expected, "energy term");
        assert!(report.objective.energy < 0.0);
        assert_close(solved.objective, expected, &format!("{method:?} objective"));
        objectives.push(solved.objective);
    }
    assert_close(objectives[0], objectives[1], "exact vs fast");
    // The plan there from today's (empty) placement is valid and reaches it.
    let target = problem.placement_of(&solve_with(&problem, Method::Exact).x);
    let p = plan(inst, &problem, &target).expect("plans");
    let r = verify_plan(inst, &p);
    assert!(r.valid && r.reaches_target, "{:?}", r.violations);
}

#[test]
fn negative_price_flat_is_accepted_solved_and_verified() {
    let inst = negative_at_a(Price::Flat(-0.5), 0.0);
    check_negative_price_instance(&inst, -0.5, 0.0);
}

#[test]
fn negative_price_with_idle_power_keeps_the_bound_below_the_optimum() {
    // A negative fixed cost (idle power paid for) is no lower bound on
    // placements that are paid for too.
    let inst = negative_at_a(Price::Flat(-0.539), 0.5);
    check_negative_price_instance(&inst, -0.539, 0.5);
}

#[test]
fn negative_price_series_is_accepted() {
    let series = Price::Series(vec![
        PricePoint {
            hour: 0.0,
            price_per_kwh: -0.5,
        },
        PricePoint {
            hour: 1.0,
            price_per_kwh: -0.5,
        },
    ]);
    let inst = negative_at_a(series, 0.0);
    check_negative_price_instance(&inst, -0.5, 0.0);
}

#[test]
fn negative_price_next_to_a_zero_price() {
    // A price of exactly zero next to a negative one: nothing divides by it.
    let mut inst = negative_at_a(Price::Flat(-0.2), 0.0);
    inst.sites[1].energy.price_per_kwh = Price::Flat(0.0);
    check_negative_price_instance(&inst, -0.2, 0.0);
}

#[test]
fn price_series_with_hours_not_increasing_is_refused_with_its_path() {
    let series = Price::Series(vec![
        PricePoint {
            hour: 0.0,
            price_per_kwh: 0.1,
        },
        PricePoint {
            hour: 5.0,
            price_per_kwh: 0.2,
        },
        PricePoint {
            hour: 5.0,
            price_per_kwh: 0.3,
        },
    ]);
    let inst = negative_at_a(series, 0.0);
    let m: Vec<String> = validate(&inst).iter().map(|i| i.to_string()).collect();
    assert!(
        m.iter()
            .any(|m| m.starts_with("sites[0].energy.price_per_kwh[2].hour: must be above")),
        "{m:?}"
    );
}

#[test]
fn replicas_zero_is_accepted_and_flows_through_solve_plan_and_verify() {
    let mut inst = negative_at_a(Price::Flat(0.2), 0.0);
    inst.workloads.push(workload("scaled-to-zero", 0, 4.0));
    // Even one no site could host: there is nothing to host.
    inst.workloads.push(workload("huge-at-zero", 0, 1000.0));
    let issues = validate(&inst);
    assert!(issues.is_empty(), "{issues:?}");
    let (problem, solved, placement, report) = solve_and_verify(&inst);
    assert_eq!(report.unplaced_replicas, 0);
    assert!(solved.x[WorkloadIx::new(2)].is_empty() && solved.x[WorkloadIx::new(3)].is_empty());
    assert!(placement
        .assignments
        .get("scaled-to-zero")
        .is_none_or(|a| a.values().sum::<u32>() == 0));
    let fast = solve_with(&problem, Method::Fast);
    assert!(fast.objective.is_finite());
    assert_close(fast.objective, solved.objective, "fast vs exact");
    let p = plan(&inst, &problem, &placement).expect("plans");
    let r = verify_plan(&inst, &p);
    assert!(r.valid && r.reaches_target, "{:?}", r.violations);
}

/// A gateway that sends milliseconds as seconds, end to end: its readings
/// are refused with their reason (counted in the stats too), and the
/// sensors' real readings right after are taken.
#[test]
fn future_reading_in_milliseconds_is_refused_over_grpc_and_silences_nothing() {
    use crate::live::*;
    use edgeplan::api::pb;
    use edgeplan::service::client::{push_instance, Connect};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let inst = fleet(3);
    let sites = inst.sites.len() as u64;
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let now = now_s();
        let ms = ingest_ambient(&srv.url(), &inst, now * 1000.0).await;
        assert_eq!(ms.accepted, 0, "{ms:?}");
        assert_eq!(ms.rejected, sites, "{ms:?}");
        let (reason, n) = ms.rejected_by_reason.iter().next().expect("a reason");
        assert!(reason.contains("future"), "{reason}");
        assert_eq!(*n, sites);
        let real = ingest_ambient(&srv.url(), &inst, now).await;
        assert_eq!(real.accepted, sites, "{real:?}");
        assert_eq!(real.rejected, 0, "{real:?}");
        let stats = connect(&srv.url(), pb::telemetry_client::TelemetryClient::new)
            .await
            .stats(pb::TelemetryStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            stats.rejected_by_reason.get(reason),
            Some(&sites),
            "{stats:?}"
        );
    });
}

/// Bad dispatch, telemetry and what-if settings stop the start with the
/// setting named; before, a NaN `time_scale` panicked the dispatcher on
/// its first step.
#[test]
fn bad_dispatch_and_limit_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, named) in [
        ("dispatch:\n  time_scale: .nan\n", "dispatch.time_scale"),
        (
            "dispatch:\n  timeout_factor: .inf\n",
            "dispatch.timeout_factor",
        ),
        (
            "dispatch:\n  timeout_slack_s: -1\n",
            "dispatch.timeout_slack_s",
        ),
        ("dispatch:\n  max_attempts: 0\n", "dispatch.max_attempts"),
        (
            "telemetry:\n  max_future_skew_s: -5\n",
            "telemetry.max_future_skew_s",
        ),
        ("max_whatif_time_limit_s: .nan\n", "max_whatif_time_limit_s"),
    ] {
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgeplan"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that starts never exits on its own: give it 20 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{yaml}: started");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml}: exited 0");
        assert!(stderr.contains(named), "{yaml}: {stderr}");
        assert!(!stderr.contains("panicked"), "{yaml}: {stderr}");
    }
    // The example configuration passes its own checks.
    let example: edgeplan::service::Config =
        serde_yaml::from_str(include_str!("../../examples/serve.yaml")).unwrap();
    example.dispatch.check().unwrap();
    example.telemetry.check().unwrap();
}

/// `WhatIf` refuses a time limit that is not a positive number within the
/// configured maximum, and documents with too many scenarios or sweep
/// values, before solving anything; and stops its work when the client
/// goes away.
#[test]
fn whatif_limits_are_checked_and_a_departed_client_stops_the_run() {
    use crate::live::*;
    use edgeplan::api::pb;
    use edgeplan::api::pb::placement_client::PlacementClient;
    use edgeplan::service::client::{push_instance, Connect};
    use tonic::Code;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "max_whatif_scenarios: 40\nmax_whatif_sweep_values: 30\nmax_whatif_time_limit_s: 20\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let inst = busy_fleet();
    let site = inst.sites[0].id.clone();
    let sweep = |n: usize, t: &str| {
        let values: Vec<String> = (0..n)
            .map(|k| format!("{}", 1.0 + 0.01 * k as f64))
            .collect();
        format!(
            "base: live\ntime_limit_s: {t}\nmethod: exact\nsweeps:\n  - name: growth\n    field: factor\n    values: [{}]\n    perturbation:\n      demand_growth: {{ factor: 1.0 }}\n",
            values.join(", ")
        )
    };
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        for (doc, needle) in [
            (sweep(2, ".nan"), "time_limit_s"),
            (sweep(2, "-1"), "time_limit_s"),
            (sweep(2, "1e300"), "time_limit_s"),
            (sweep(31, "1"), "sweeps[0].values"),
            (
                sweep(2, "1").replace("method: exact\n", "method: exact\nwork: 300000000\n"),
                "max_whatif_work",
            ),
            (
                format!(
                    "{}  - name: again\n    field: factor\n    values: [{}]\n    perturbation:\n      power_cap: {{ site: {site}, factor: 1.0 }}\n",
                    sweep(30, "1"),
                    ["0.9"; 20].join(", ")
                ),
                "50 scenarios",
            ),
        ] {
            let err = placement
                .what_if(pb::WhatIfRequest {
                    scenarios: doc.clone(),
                })
                .await
                .map(|_| ())
                .expect_err(&doc);
            assert_eq!(err.code(), Code::InvalidArgument, "{doc}");
            assert!(err.message().contains(needle), "{doc}: {}", err.message());
        }
        // Within the limits: a run that takes a while. Take one result and
        // go away.
        let mut stream = placement
            .what_if(pb::WhatIfRequest {
                scenarios: sweep(30, "2"),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().expect("a first result");
        assert_eq!(first.total, 31);
        drop(stream);
        drop(placement);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let stopped = srv
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("what-if stopped"));
            if stopped {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the what-if ran on after its client went away"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
}
