//! The binary end to end: gen → validate → solve → verify → export, and bad
//! input on the command line.

use crate::common::edgeplan;

#[test]
fn gen_solve_verify_export_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("fleet.yaml");
    let out = dir.path().join("placement.json");
    let i = inst.to_str().unwrap();
    let o = out.to_str().unwrap();
    let g = edgeplan(&[
        "gen",
        "--sites",
        "10",
        "--workloads",
        "40",
        "--seed",
        "5",
        "--out",
        i,
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    assert!(edgeplan(&["validate", i]).status.success());
    let plan_path = dir.path().join("plan.json");
    let pp = plan_path.to_str().unwrap();
    let s = edgeplan(&[
        "solve",
        "--instance",
        i,
        "--out",
        o,
        "--time-limit",
        "20",
        "--plan-out",
        pp,
    ]);
    let stderr = String::from_utf8_lossy(&s.stderr);
    assert!(s.status.success(), "{stderr}");
    assert!(
        stderr.contains("objective") && stderr.contains("replicas placed"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for key in [
        "assignments",
        "objective",
        "bound",
        "gap",
        "sites",
        "binding",
        "unplaced",
    ] {
        assert!(report.get(key).is_some(), "solve output lacks {key}");
    }
    let site = &report["sites"][0];
    for key in [
        "utilization",
        "it_kw",
        "facility_kw",
        "power_cap_kw",
        "inlet_c",
        "inlet_limit_c",
        "cooling_headroom_kw",
    ] {
        assert!(site.get(key).is_some(), "site KPIs lack {key}");
    }
    let v = edgeplan(&["verify", "--instance", i, "--placement", o]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(
        stderr.contains("plan:") && stderr.contains("waves"),
        "{stderr}"
    );
    let vp = edgeplan(&["verify-plan", "--instance", i, "--plan", pp]);
    assert!(
        vp.status.success(),
        "{}",
        String::from_utf8_lossy(&vp.stderr)
    );
    let p2 = edgeplan(&["plan", "--instance", i, "--target", o]);
    assert!(p2.status.success());
    let replanned: serde_json::Value = serde_json::from_slice(&p2.stdout).unwrap();
    let planned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    assert_eq!(
        replanned, planned,
        "plan from the solve output equals solve --plan-out"
    );
    let mps = edgeplan(&["export", "--instance", i, "--format", "mps"]);
    assert!(mps.status.success());
    assert!(String::from_utf8_lossy(&mps.stdout).contains("ENDATA"));
}

#[test]
fn verify_rejects_an_overfull_placement() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("fleet.json");
    let i = inst.to_str().unwrap();
    assert!(
        edgeplan(&["gen", "--sites", "4", "--workloads", "10", "--out", i])
            .status
            .success()
    );
    let fleet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&inst).unwrap()).unwrap();
    let wl = fleet["workloads"][0]["id"].as_str().unwrap();
    let site = fleet["sites"][0]["id"].as_str().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(r#"{{"assignments": {{"{wl}": {{"{site}": 1000}}}}}}"#),
    )
    .unwrap();
    let v = edgeplan(&[
        "verify",
        "--instance",
        i,
        "--placement",
        bad.to_str().unwrap(),
    ]);
    assert!(!v.status.success());
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert!(
        stderr.contains("violation [replicas]") && stderr.contains("violation [capacity]"),
        "{stderr}"
    );
}

#[test]
fn validate_lists_problems_with_paths_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("fleet.json");
    let i = inst.to_str().unwrap();
    assert!(
        edgeplan(&["gen", "--sites", "3", "--workloads", "5", "--out", i])
            .status
            .success()
    );
    let text = std::fs::read_to_string(&inst).unwrap();
    let mut fleet: serde_json::Value = serde_json::from_str(&text).unwrap();
    fleet["workloads"][2]["slo"]["rtt_ms"] = serde_json::json!(-3.0);
    fleet["sites"][1]["id"] = fleet["sites"][0]["id"].clone();
    std::fs::write(&inst, serde_json::to_string(&fleet).unwrap()).unwrap();
    let v = edgeplan(&["validate", i]);
    assert!(!v.status.success());
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert!(
        stderr.contains("workloads[2].slo.rtt_ms: must be > 0, got -3"),
        "{stderr}"
    );
    assert!(stderr.contains("sites[1].id: duplicate id"), "{stderr}");
    let s = edgeplan(&["solve", "--instance", i]);
    assert!(!s.status.success(), "solve refuses an invalid instance");
}

#[test]
fn schema_describes_the_instance() {
    let s = edgeplan(&["schema"]);
    assert!(s.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(schema["title"], "Instance");
    assert!(schema["properties"]["workloads"].is_object());
}

#[test]
fn shipped_example_is_valid_and_solves_feasibly() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/three-cities.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.json");
    let o = out.to_str().unwrap();
    assert!(edgeplan(&["validate", example]).status.success());
    let s = edgeplan(&["solve", "--instance", example, "--out", o]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let v = edgeplan(&["verify", "--instance", example, "--placement", o]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Analytics may not run in Frankfurt (forbidden) nor more than 4 per failure domain.
    assert!(report["assignments"]["analytics"].get("fra").is_none());
    assert!(report["moves"].as_u64().unwrap() <= 10);
}

#[test]
fn telemetry_command_writes_the_effective_instance() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/three-cities.yaml");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("readings.csv");
    let mut text = String::from("timestamp_s,sensor,site,rack,kind,unit,value\n");
    for h in 0..72 {
        let temp = 30.0 + 6.0 * (std::f64::consts::TAU * (h as f64 - 9.0) / 24.0).sin();
        text.push_str(&format!(
            "{},fra-amb,fra,,ambient,C,{temp:.2}\n",
            1_700_000_000 + 3600 * h
        ));
    }
    text.push_str("1700300000,ghost,atlantis,,ambient,C,20\n");
    text.push_str("not-a-number,x,fra,,ambient,C,20\n");
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("effective.json");
    let report = dir.path().join("report.json");
    let archive = dir.path().join("raw.parquet");
    let t = edgeplan(&[
        "telemetry",
        "--instance",
        example,
        "--readings",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&t.stderr);
    assert!(t.status.success(), "{stderr}");
    assert!(
        stderr.contains("72 readings accepted, 1 rejected, 1 malformed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rejected 1: unknown site") && stderr.contains("line 75"),
        "{stderr}"
    );
    let eff: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let forecast = eff["sites"][0]["ambient"]["forecast_c"].as_array().unwrap();
    assert_eq!(forecast.len(), 8, "one value per hour of the 8 h horizon");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rep["sites"][0]["ambient_source"], "telemetry");
    assert!(
        rep["sites"][0]["it_limit_kw"].as_f64().unwrap()
            < rep["sites"][0]["it_limit_kw_declared"].as_f64().unwrap()
    );
    assert!(edgeplan(&[
        "solve",
        "--instance",
        out.to_str().unwrap(),
        "--time-limit",
        "10"
    ])
    .status
    .success());
}

#[test]
fn whatif_writes_kpi_tables() {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/what-if.yaml");
    let dir = tempfile::tempdir().unwrap();
    for ext in ["csv", "parquet", "json"] {
        let out = dir.path().join(format!("results.{ext}"));
        let w = edgeplan(&[
            "whatif",
            "--scenarios",
            scenarios,
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&w.stderr);
        assert!(w.status.success(), "{stderr}");
        assert!(
            stderr.contains("paris-outage") && stderr.contains("energy/h"),
            "{stderr}"
        );
        assert!(out.exists() && dir.path().join(format!("results-sites.{ext}")).exists());
    }
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 11,
        "header, base and ten scenarios"
    );
    assert!(csv.starts_with("scenario,status,objective,gap,energy_cost_per_h"));
    let parquet = std::fs::File::open(dir.path().join("results.parquet")).unwrap();
    use polars::prelude::{ParquetReader, SerReader};
    let df = ParquetReader::new(parquet).finish().unwrap();
    assert_eq!(df.height(), 11);
    let columns: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    for documented in [
        "scenario",
        "status",
        "objective",
        "gap",
        "energy_cost_per_h",
        "carbon_kg_per_h",
        "mean_latency_ms",
        "p95_latency_ms",
        "slo_violations",
        "placed_replicas",
        "unplaced_replicas",
        "unplaced_by_priority",
        "moves",
        "plan_steps",
        "blocked_moves",
        "makespan_s",
        "min_inlet_headroom_c",
        "min_cooling_headroom_kw",
        "max_power_use",
        "binding_sites",
        "spot_replicas",
        "spot_revenue_per_h",
        "spot_evictions",
    ] {
        assert!(
            columns.contains(&documented.to_string()),
            "{documented} missing from {columns:?}"
        );
    }
    let sites = std::fs::read_to_string(dir.path().join("results-sites.csv")).unwrap();
    assert_eq!(
        sites.lines().count(),
        1 + 11 * 3 + 1,
        "three sites per scenario, four in the new-site one"
    );
}
