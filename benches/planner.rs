//! The migration planner on 10,000 moves across 500 sites: every site sends
//! 20 replicas away and receives 20, over a ring-with-chords network. Prints
//! the plan's size (stderr) and lets criterion time the planning.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use edgeplan::instance::*;
use edgeplan::placement::Placement;
use edgeplan::plan::plan;
use edgeplan::problem::Problem;

const SITES: usize = 500;
const MOVES: usize = 10_000;

fn fleet() -> (Instance, Placement) {
    let ids: Vec<String> = (0..SITES).map(|i| format!("s{i:03}")).collect();
    let sites = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Site {
            id: id.clone(),
            node: None,
            name: None,
            lat: 40.0 + (i % 20) as f64,
            lon: (i / 20) as f64,
            failure_domain: None,
            capacity: BTreeMap::from([
                ("cpu_cores".to_string(), 176.0),
                ("memory_gib".to_string(), 704.0),
            ]),
            reserve_fraction: BTreeMap::new(),
            hardware: Vec::new(),
            uplink_gbps: None,
            servers: ServerFleet {
                model: "dell-r630-e5-2699v4".into(),
                count: 4,
            },
            accelerators: None,
            power: PowerSpec {
                cap_kw: 20.0,
                pue_min: 1.2,
                pue_max: 1.6,
                idle_kw: None,
                calibration: 1.0,
            },
            cooling: CoolingSpec {
                nominal_kw: 15.0,
                derate_min: 0.6,
                free_cooling_limit_c: 20.0,
                max_ambient_c: 42.0,
                humidity_derate: 0.8,
            },
            thermal: ThermalSpec {
                ashrae_class: Some(AshraeClass::A2),
                inlet_limit_c: None,
                margin_c: 2.0,
                supply_setpoint_c: 18.0,
                approach_c: 3.0,
                recirc_c_per_kw: 0.5,
                racks: 2,
            },
            energy: EnergySpec {
                price_per_kwh: Price::Flat(0.1 + (i % 7) as f64 * 0.02),
                carbon_g_per_kwh: 300.0,
                series_start_unix_s: None,
            },
            ambient: AmbientSpec {
                current_c: 15.0 + (i % 10) as f64,
                forecast_c: Vec::new(),
                dew_point_c: None,
                humidity_pct: None,
                forecast_start_unix_s: None,
            },
        })
        .collect();
    let mut links = Vec::new();
    for i in 0..SITES {
        for step in [1, 17, 101] {
            links.push(Link {
                a: ids[i].clone(),
                b: ids[(i + step) % SITES].clone(),
                rtt_ms: 2.0 + (step % 13) as f64,
                bandwidth_gbps: [10.0, 40.0, 100.0][i % 3],
            });
        }
    }
    let mut workloads = Vec::with_capacity(MOVES);
    let mut target = Placement::default();
    for k in 0..MOVES {
        let from = k % SITES;
        let to = (from + 1 + (k / SITES) * 37) % SITES;
        workloads.push(Workload {
            id: format!("w{k:05}"),
            replicas: 1,
            resources: BTreeMap::from([
                ("cpu_cores".to_string(), 4.0),
                ("memory_gib".to_string(), 16.0),
            ]),
            utilization: 0.4,
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
            priority: 1 + (k % 3) as u32,
            state_gib: 8.0,
            egress_gbps: 0.0,
            current: BTreeMap::from([(ids[from].clone(), 1)]),
            disruption_allowed: false,
            spot: None,
        });
        target
            .assignments
            .insert(format!("w{k:05}"), BTreeMap::from([(ids[to].clone(), 1)]));
    }
    let inst = Instance {
        name: "planner-bench".into(),
        server_models: Vec::new(),
        accelerator_models: Vec::new(),
        sites,
        network: Network {
            nodes: ids.iter().map(|id| Node { id: id.clone() }).collect(),
            links,
        },
        regions: Vec::new(),
        workloads,
        objective: ObjectiveWeights::default(),
        limits: Limits {
            max_in_flight: 2000,
            ..Limits::default()
        },
    };
    (inst, target)
}

fn bench(c: &mut Criterion) {
    let (inst, target) = fleet();
    let problem = Problem::build(&inst).expect("problem");
    let p = plan(&inst, &problem, &target).expect("plan");
    let check = edgeplan::verify::verify_plan(&inst, &p);
    eprintln!(
        "planner/{MOVES}x{SITES}: {} steps in {} waves, makespan {:.0} s, {} blocked, verify_plan valid: {}",
        p.steps.len(),
        p.waves.len(),
        p.makespan_s,
        p.blocked.len(),
        check.valid
    );
    assert!(check.valid, "{:?}", check.violations);
    let mut group = c.benchmark_group("planner");
    group.sample_size(10);
    group.bench_function(format!("{MOVES}_moves_{SITES}_sites"), |b| {
        b.iter(|| plan(&inst, &problem, &target).expect("plan"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
