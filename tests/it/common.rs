//! Small hand-made instances. The toy server draws 1000 W idle and 2000 W at
//! full load over 10 cores, so a replica of `c` cores at utilisation `u`
//! draws `c/10 · 1000·u` W = `c·u/10` kW above idle.

use std::collections::BTreeMap;

pub use edgeplan::clock::Deadline;
pub use edgeplan::fast::DEFAULT_REPLAN_TIME_LIMIT;
use edgeplan::instance::*;
use edgeplan::placement::Placement;
use edgeplan::problem::Problem;
use edgeplan::server_models::ServerModel;
use edgeplan::solver::{solve, SolveOptions, Solved};
use edgeplan::verify::{verify, VerifyReport};

pub fn toy_server() -> ServerModel {
    ServerModel {
        name: "toy".into(),
        spec_result_id: None,
        vendor: String::new(),
        system: String::new(),
        processor: String::new(),
        cores: 10,
        memory_gib: 64.0,
        watts: (0..=10).map(|k| 1000.0 + 100.0 * k as f64).collect(),
        source: String::new(),
    }
}

/// A site with flat price, PUE 1, no idle power, ample cooling and inlet room.
pub fn site(id: &str, cpu: f64, price: f64) -> Site {
    Site {
        id: id.into(),
        node: None,
        name: None,
        lat: 48.0,
        lon: 2.0,
        failure_domain: None,
        capacity: BTreeMap::from([("cpu_cores".into(), cpu)]),
        reserve_fraction: BTreeMap::new(),
        hardware: Vec::new(),
        uplink_gbps: None,
        servers: ServerFleet {
            model: "toy".into(),
            count: 1,
        },
        accelerators: None,
        power: PowerSpec {
            cap_kw: 1000.0,
            pue_min: 1.0,
            pue_max: 1.0,
            idle_kw: Some(0.0),
            calibration: 1.0,
        },
        cooling: CoolingSpec {
            nominal_kw: 1000.0,
            derate_min: 1.0,
            free_cooling_limit_c: 20.0,
            max_ambient_c: 40.0,
            humidity_derate: 0.8,
        },
        thermal: ThermalSpec {
            ashrae_class: Some(AshraeClass::A2),
            inlet_limit_c: None,
            margin_c: 2.0,
            supply_setpoint_c: 18.0,
            approach_c: 3.0,
            recirc_c_per_kw: 0.0,
            racks: 1,
        },
        energy: EnergySpec {
            price_per_kwh: Price::Flat(price),
            carbon_g_per_kwh: 0.0,
            series_start_unix_s: None,
        },
        ambient: AmbientSpec {
            current_c: 15.0,
            forecast_c: Vec::new(),
            dew_point_c: None,
            humidity_pct: None,
            forecast_start_unix_s: None,
        },
    }
}

/// A workload of `replicas` × `cores` cores at full utilisation (cores/10 kW each).
pub fn workload(id: &str, replicas: u32, cores: f64) -> Workload {
    Workload {
        id: id.into(),
        replicas,
        resources: BTreeMap::from([("cpu_cores".into(), cores)]),
        utilization: 1.0,
        gpu_utilization: None,
        traffic: Vec::new(),
        slo: None,
        max_per_site: None,
        max_per_failure_domain: None,
        anti_affinity_group: None,
        affinity_group: None,
        pinned_sites: Vec::new(),
        forbidden_sites: Vec::new(),
        hardware: Vec::new(),
        priority: 1,
        state_gib: 0.0,
        egress_gbps: 0.0,
        current: BTreeMap::new(),
        disruption_allowed: false,
        spot: None,
    }
}

/// Weights that count energy only (and unplaced replicas).
pub fn energy_only() -> ObjectiveWeights {
    ObjectiveWeights {
        energy: 1.0,
        carbon_per_tonne: 0.0,
        latency_per_ms: 0.0,
        migration_per_move: 0.0,
        migration_per_gib: 0.0,
        thermal_risk: 0.0,
        unplaced_per_priority: 1000.0,
    }
}

/// Sites each on their own node, one user region per site node, links as given.
pub fn instance(
    sites: Vec<Site>,
    workloads: Vec<Workload>,
    links: &[(&str, &str, f64)],
) -> Instance {
    let nodes = sites.iter().map(|s| Node { id: s.id.clone() }).collect();
    let regions = sites
        .iter()
        .map(|s| Region {
            id: format!("users-{}", s.id),
            node: s.id.clone(),
        })
        .collect();
    Instance {
        name: "test".into(),
        server_models: vec![toy_server()],
        accelerator_models: Vec::new(),
        sites,
        network: Network {
            nodes,
            links: links
                .iter()
                .map(|(a, b, rtt)| Link {
                    a: (*a).into(),
                    b: (*b).into(),
                    rtt_ms: *rtt,
                    bandwidth_gbps: 10.0,
                })
                .collect(),
        },
        regions,
        workloads,
        objective: energy_only(),
        limits: Limits::default(),
    }
}

pub fn exact() -> SolveOptions {
    SolveOptions {
        deadline: Deadline::after_s(30.0),
        relative_gap: Some(0.0),
        threads: Some(1),
        seed: 0,
        method: edgeplan::solver::Method::Auto,
        work: None,
        deterministic: false,
    }
}

/// Solve, check the verifier accepts the placement and agrees on the objective.
pub fn solve_and_verify(inst: &Instance) -> (Problem, Solved, Placement, VerifyReport) {
    let issues = edgeplan::validate::validate(inst);
    assert!(issues.is_empty(), "{issues:?}");
    let problem = Problem::build(inst).expect("builds");
    let solved = solve(&problem, &exact()).expect("solves");
    let placement = problem.placement_of(&solved.x);
    let report = verify(inst, &placement);
    assert!(
        report.feasible,
        "verifier rejects the solver's placement: {:?}",
        report.violations
    );
    let eval = problem.evaluate(&solved.x);
    assert_close(
        report.objective.total,
        eval.objective.total,
        "verifier vs problem objective",
    );
    assert_close(
        solved.objective,
        eval.objective.total,
        "solver vs problem objective",
    );
    (problem, solved, placement, report)
}

pub fn assert_close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
        "{what}: {a} != {b}"
    );
}

/// A `gen` instance of `replicas` replicas over `sites` sites at `load`.
pub fn gen_instance(replicas: usize, sites: usize, seed: u64, load: f64) -> Instance {
    edgeplan::gen::generate(&edgeplan::gen::GenOptions {
        sites,
        workloads: 0,
        replicas: Some(replicas),
        seed,
        load,
    })
    .expect("gen")
}

/// `edgeplan ARGS…`, run as a user would; its output (status, stdout, stderr).
pub fn edgeplan(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(args)
        .output()
        .expect("runs")
}
