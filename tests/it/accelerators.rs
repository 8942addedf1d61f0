//! Accelerators in the power and heat model: a hand-solved case where a GPU
//! workload's watts, not its GPU count, make the power cap bind; the
//! verifier recomputing GPU power on its own; validation naming the
//! offending item; the telemetry calibration of a site's accelerator curve;
//! and the shipped catalogue reproduced from its data.

use std::collections::BTreeMap;

use edgeplan::accelerator_models::{AcceleratorModel, CurveBasis};
use edgeplan::effective::{effective_instance, fit_scale, EffectiveOptions, Source};
use edgeplan::instance::*;
use edgeplan::physics::PowerLimit;
use edgeplan::placement::Placement;
use edgeplan::problem::Problem;
use edgeplan::telemetry::{Reading, SensorKind, TelemetryState};
use edgeplan::verify::verify;

use crate::common::*;

/// A GPU of 50 W idle and 350 W at full utilisation, linear between.
pub fn toy_gpu() -> AcceleratorModel {
    AcceleratorModel {
        name: "toy-gpu".into(),
        vendor: String::new(),
        device: String::new(),
        memory_gib: 0.0,
        tdp_watts: 350.0,
        watts: (0..=10).map(|k| 50.0 + 30.0 * k as f64).collect(),
        basis: CurveBasis::Declared,
        fit: None,
        source: "test".into(),
    }
}

/// One site, 8 toy GPUs (0.4 kW idle), a 1.5 kW power cap at PUE 1, and an
/// inference workload of 8 replicas × (1 core at 50 %, 1 GPU at 100 %).
fn gpu_site_and_inference() -> Instance {
    let mut a = site("a", 100.0, 0.2);
    a.capacity.insert("gpus".into(), 8.0);
    a.accelerators = Some(AcceleratorFleet {
        model: "toy-gpu".into(),
        count: 8,
        calibration: 1.0,
    });
    a.power.cap_kw = 1.5;
    let mut w = workload("infer", 8, 1.0);
    w.utilization = 0.5;
    w.gpu_utilization = Some(1.0);
    w.resources.insert("gpus".into(), 1.0);
    let mut inst = instance(vec![a], vec![w], &[]);
    inst.accelerator_models = vec![toy_gpu()];
    inst
}

#[test]
fn gpu_watts_not_gpu_count_make_the_power_cap_bind() {
    // By hand: idle = 8 GPUs × 50 W = 0.4 kW (the toy server idles at 0
    // here). A replica draws 1 core × 0.5 / 10 = 0.05 kW of CPU and
    // 1 GPU × (350 − 50) W = 0.3 kW above idle: 0.35 kW. The cap leaves
    // 1.5 − 0.4 = 1.1 kW: ⌊1.1 / 0.35⌋ = 3 replicas, though 8 GPUs are free.
    let inst = gpu_site_and_inference();
    let (problem, solved, placement, report) = solve_and_verify(&inst);
    let physics = &problem.sites[problem.site_index("a").unwrap()].physics;
    assert!((physics.idle_kw - 0.4).abs() < 1e-9, "{}", physics.idle_kw);
    assert!((physics.accelerator_idle_kw - 0.4).abs() < 1e-9);
    assert_eq!(physics.binding, PowerLimit::PowerCap);
    assert_eq!(placement.assignments["infer"]["a"], 3);
    // Energy: (0.4 + 3 × 0.35) kW × 0.2 per kWh; 5 replicas out at 1000.
    let want = (0.4 + 3.0 * 0.35) * 0.2 + 5.0 * 1000.0;
    assert!(
        (solved.objective - want).abs() < 1e-6,
        "objective {} vs hand-worked {want}",
        solved.objective
    );
    assert!((report.objective.total - want).abs() < 1e-6);
    // The explanation names the power cap and the GPUs' share of the need.
    let why = edgeplan::explain::unplaced(&problem, &solved.x);
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].unplaced, 5);
    assert_eq!(why[0].kinds(), vec![edgeplan::explain::CauseKind::PowerCap]);
    assert!(
        why[0]
            .text
            .contains("one replica needs 0.350 kW (0.300 kW of it its GPUs)"),
        "{}",
        why[0].text
    );

    // The same replicas with idle GPUs draw only their cores: all 8 fit,
    // so it is the GPUs' watts that bind, not their count.
    let mut idle_gpus = inst.clone();
    idle_gpus.workloads[0].gpu_utilization = Some(0.0);
    let (_, _, placement, _) = solve_and_verify(&idle_gpus);
    assert_eq!(placement.assignments["infer"]["a"], 8);

    // Without an accelerator model the GPUs were free to power (the old
    // model): all 8 placed, and the site 1.45 kW short of the truth.
    let mut unmodelled = inst.clone();
    unmodelled.sites[0].accelerators = None;
    let (_, _, placement, _) = solve_and_verify(&unmodelled);
    assert_eq!(placement.assignments["infer"]["a"], 8);
}

#[test]
fn the_verifier_counts_gpu_power_on_its_own() {
    let inst = gpu_site_and_inference();
    let mut four = Placement::default();
    four.assignments
        .insert("infer".into(), BTreeMap::from([("a".to_string(), 4)]));
    // 0.4 + 4 × 0.35 = 1.8 kW over the 1.5 kW cap.
    let report = verify(&inst, &four);
    assert!(!report.feasible);
    assert!(
        report.violations.iter().any(|v| v.rule == "power_cap"),
        "{:?}",
        report.violations
    );
    let mut three = four.clone();
    three
        .assignments
        .insert("infer".into(), BTreeMap::from([("a".to_string(), 3)]));
    assert!(verify(&inst, &three).feasible);
    // The calibration scales the verifier's figure as the problem's: at
    // 1.2 the idle GPUs draw 0.48 kW and a replica 0.41 kW, so 3 no longer fit.
    let mut hot = inst.clone();
    hot.sites[0].accelerators.as_mut().unwrap().calibration = 1.2;
    assert!(!verify(&hot, &three).feasible);
    let problem = Problem::build(&hot).unwrap();
    let a = problem.site_index("a").unwrap();
    let infer = problem.workloads.indices().next().unwrap();
    assert!((problem.replica_kw(infer, a) - (0.05 + 0.36)).abs() < 1e-9);
    assert!((problem.replica_gpu_kw(infer, a) - 0.36).abs() < 1e-9);
}

#[test]
fn bad_accelerator_input_names_the_item() {
    let issues = |inst: &Instance| {
        edgeplan::validate::validate(inst)
            .into_iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut more_gpus = gpu_site_and_inference();
    more_gpus.sites[0].capacity.insert("gpus".into(), 9.0);
    assert!(
        issues(&more_gpus).contains("sites[0].capacity.gpus"),
        "{}",
        issues(&more_gpus)
    );
    let mut no_capacity = gpu_site_and_inference();
    no_capacity.sites[0].capacity.remove("gpus");
    assert!(issues(&no_capacity).contains("sites[0].capacity.gpus"));
    let mut unknown = gpu_site_and_inference();
    unknown.sites[0].accelerators.as_mut().unwrap().model = "nvidia-b9000".into();
    let text = issues(&unknown);
    assert!(text.contains("sites[0].accelerators.model"), "{text}");
    assert!(text.contains("nvidia-h100-pcie"), "lists the known: {text}");
    let mut util = gpu_site_and_inference();
    util.workloads[0].gpu_utilization = Some(1.5);
    assert!(issues(&util).contains("workloads[0].gpu_utilization"));
    let mut curve = gpu_site_and_inference();
    curve.accelerator_models[0].watts[5] = 10.0;
    assert!(issues(&curve).contains("accelerator_models[0].watts"));
    curve.accelerator_models[0].watts.pop();
    assert!(issues(&curve).contains("needs 11 values"));
    // And the problem builder refuses an unknown model by name too.
    let err = Problem::build(&unknown).unwrap_err().to_string();
    assert!(err.contains("nvidia-b9000"), "{err}");
}

fn reading(sensor: &str, kind: SensorKind, unit: &str, value: f64, t: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        site: "a".into(),
        rack: None,
        kind,
        unit: unit.into(),
        value,
        timestamp_s: t,
    }
}

/// 8 toy GPUs drawing `scale` × their curve (± noise), and the servers
/// drawing exactly theirs; the site meter reads both.
fn gpu_telemetry(scale: f64, samples: usize) -> TelemetryState {
    let mut t = TelemetryState::default();
    let known = |s: &str| s == "a";
    for k in 0..samples {
        let ts = 1000.0 + 60.0 * k as f64;
        let u = (k as f64 * 0.618_034).fract();
        // A deterministic wobble of ±3 %.
        let noise = 1.0 + 0.03 * ((k * 7919 % 13) as f64 / 6.0 - 1.0);
        let gpu_kw = scale * 8.0 * (50.0 + 300.0 * u) / 1000.0 * noise;
        let cpu_u = 0.3 + 0.4 * u;
        let server_kw = 1.0 + cpu_u; // the toy server, uncalibrated
        for r in [
            reading("gpu-util", SensorKind::GpuUtilization, "%", u * 100.0, ts),
            reading("gpu-power", SensorKind::GpuPower, "W", gpu_kw * 1000.0, ts),
            reading("util", SensorKind::Utilization, "ratio", cpu_u, ts),
            reading("pdu", SensorKind::SitePower, "kW", server_kw + gpu_kw, ts),
        ] {
            t.ingest(&r, known).unwrap();
        }
    }
    t
}

#[test]
fn gpu_power_readings_calibrate_the_accelerator_curve() {
    let mut inst = gpu_site_and_inference();
    inst.sites[0].power.idle_kw = None;
    let t = gpu_telemetry(1.3, 120);
    let now = 1000.0 + 60.0 * 120.0;
    let (eff, rep) = effective_instance(&inst, &t, now, &EffectiveOptions::default());
    let site = &rep.sites[0];
    assert_eq!(
        site.gpu_calibration_source,
        Source::Telemetry,
        "{:?}",
        site.notes
    );
    assert!(
        (site.gpu_calibration - 1.3).abs() < 0.02,
        "recovered {} of 1.3",
        site.gpu_calibration
    );
    let fit = site.gpu_fit.expect("a fit");
    assert!(fit.r2 > 0.95, "{fit:?}");
    let fleet = eff.sites[0].accelerators.as_ref().unwrap();
    assert_eq!(fleet.calibration, site.gpu_calibration);
    // The site meter's GPU share is taken out before the servers are
    // calibrated: they draw exactly their curve.
    assert_eq!(site.calibration_source, Source::Telemetry);
    assert!(
        (site.calibration - 1.0).abs() < 0.05,
        "server calibration {} (GPU power counted as servers'?)",
        site.calibration
    );
    // The calibrated instance gives less room: a replica draws 1.3 × 0.3 kW of GPU.
    let problem = Problem::build(&eff).unwrap();
    let a = problem.site_index("a").unwrap();
    let infer = problem.workloads.indices().next().unwrap();
    assert!((problem.replica_gpu_kw(infer, a) - 1.3 * 0.3).abs() < 0.01);
}

#[test]
fn a_silent_gpu_meter_keeps_the_larger_calibration() {
    let mut inst = gpu_site_and_inference();
    inst.sites[0].accelerators.as_mut().unwrap().calibration = 1.1;
    // Measured 0.8 × the curve, then the meter goes silent for an hour.
    let t = gpu_telemetry(0.8, 60);
    let late = 1000.0 + 60.0 * 60.0 + 3600.0;
    let (eff, rep) = effective_instance(&inst, &t, late, &EffectiveOptions::default());
    let site = &rep.sites[0];
    assert_eq!(
        site.gpu_calibration_source,
        Source::Conservative,
        "{:?}",
        site.notes
    );
    // Never below the declared 1.1 on a fit of 0.8 from a silent meter.
    assert_eq!(eff.sites[0].accelerators.as_ref().unwrap().calibration, 1.1);
    assert!(site
        .notes
        .iter()
        .any(|n| n.contains("accelerator meter silent")));
    // And while fresh, the fit of 0.8 is taken.
    let fresh = 1000.0 + 60.0 * 60.0;
    let (eff, _) = effective_instance(&inst, &t, fresh, &EffectiveOptions::default());
    let c = eff.sites[0].accelerators.as_ref().unwrap().calibration;
    assert!((c - 0.8).abs() < 0.02, "{c}");
    // Too few pairs: the declared curve, said so.
    let (_, rep) = effective_instance(
        &inst,
        &gpu_telemetry(0.8, 10),
        1000.0 + 600.0,
        &EffectiveOptions::default(),
    );
    assert_eq!(rep.sites[0].gpu_calibration_source, Source::Declared);
}

#[test]
fn fit_scale_is_least_squares_through_the_origin() {
    let f = fit_scale([(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]).unwrap();
    assert!((f.factor - 2.0).abs() < 1e-12 && f.r2 > 0.999_999);
    // By hand: Σpm / Σp² = (1·1 + 2·3 + 3·2) / 14 = 13 / 14.
    let f = fit_scale([(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]).unwrap();
    assert!((f.factor - 13.0 / 14.0).abs() < 1e-12);
    assert!(fit_scale([(1.0, 1.0), (2.0, 2.0)]).is_none());
    assert!(fit_scale([(0.0, 1.0); 5]).is_none());
}

#[test]
fn the_shipped_catalogue_is_what_its_data_fits() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
    let input: edgeplan::accelerator_catalogue::CatalogueInput =
        serde_json::from_str(&read("models/accelerators.in.json")).unwrap();
    let built = edgeplan::accelerator_catalogue::build(&input, &read("data/gpu_power_hourly.csv"))
        .expect("builds");
    let shipped: edgeplan::accelerator_catalogue::Catalogue =
        serde_json::from_str(&read("models/accelerators.json")).unwrap();
    assert_eq!(built.accelerators, shipped.accelerators);
    // The four measured devices, each fitted well enough to use: R² and the
    // error in watts as the README states them.
    for name in [
        "nvidia-a40",
        "nvidia-a100-80gb",
        "nvidia-h100-pcie",
        "nvidia-rtx-6000-ada",
    ] {
        let m = shipped
            .accelerators
            .iter()
            .find(|m| m.name == name)
            .unwrap();
        let fit = m.fit.as_ref().expect("measured");
        assert!(fit.r2 > 0.9 && fit.rmse_watts < 25.0, "{name}: {fit:?}");
        assert!(fit.samples > 8_000, "{name}: {}", fit.samples);
        // Under the board power at full load (the hourly means never reach it).
        assert!(m.watts[10] <= m.tdp_watts, "{name}");
    }
    assert!(shipped
        .accelerators
        .iter()
        .filter(|m| m.basis == CurveBasis::VendorTdp)
        .all(|m| m.source.starts_with("not measured") && m.watts[10] == m.tdp_watts));
}

/// Through the gRPC API: the fleet's own accelerator model and a site's
/// accelerators register and come back unchanged; GPU readings sent as
/// `DEVICE_PLACEMENT_ACCELERATORS` calibrate the curve, and the next solve
/// places fewer replicas because each draws more; a model in use cannot be
/// deleted; a bad curve is refused with its path.
#[test]
fn accelerators_through_the_api_end_to_end() {
    use crate::live::*;
    use edgeplan::api::convert;
    use edgeplan::api::pb;
    use edgeplan::api::pb::inventory_client::InventoryClient;
    use edgeplan::api::pb::telemetry_client::TelemetryClient;
    use edgeplan::service::client::{push_instance, Connect};
    use tonic_types::StatusExt;

    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = gpu_site_and_inference();
    let reason = |e: &tonic::Status| e.get_details_error_info().map(|i| i.reason);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut inv = connect(&srv.url(), InventoryClient::new).await;
        let snap = inv
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(snap.accelerator_models.len(), 1);
        assert_eq!(
            convert::accelerator_model_from_pb(snap.accelerator_models[0].clone()),
            toy_gpu()
        );
        let fleet = snap.sites[0].accelerators.clone().expect("accelerators");
        assert_eq!((fleet.model.as_str(), fleet.count), ("toy-gpu", 8));
        let back: Instance = serde_json::from_str(&snap.instance_json).unwrap();
        assert!(edgeplan::validate::validate(&back).is_empty());
        assert_eq!(back.workloads[0].gpu_utilization, Some(1.0));

        // Declared curve: 3 of 8 fit (the hand-worked case above).
        assert_eq!(dry_run(&srv.url()).await.unplaced_replicas, 5);

        // The GPUs draw 1.3 × their curve: at 1.3 the idle GPUs take
        // 0.52 kW and a replica 0.05 + 0.39 kW, so 2 fit in 1.5 kW.
        let now = now_s();
        let mut readings = Vec::new();
        for k in (0..60).rev() {
            let ts = now - 30.0 * k as f64;
            let u = (k as f64 * 0.618_034).fract();
            for (id, device, unit, value) in [
                ("a/gpu-util", pb::DeviceType::Utilization, "%", u * 100.0),
                (
                    "a/gpu-power",
                    pb::DeviceType::Power,
                    "W",
                    1.3 * 8.0 * (50.0 + 300.0 * u),
                ),
            ] {
                readings.push(pb::Reading {
                    device_id: id.into(),
                    site: "a".into(),
                    rack: String::new(),
                    device_type: device as i32,
                    placement: pb::DevicePlacement::Accelerators as i32,
                    unit: unit.into(),
                    value,
                    timestamp_s: ts,
                });
            }
        }
        let summary = connect(&srv.url(), TelemetryClient::new)
            .await
            .ingest(tokio_stream::iter(vec![pb::ReadingBatch {
                readings,
                ..Default::default()
            }]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (summary.accepted, summary.rejected),
            (120, 0),
            "{summary:?}"
        );
        assert_eq!(dry_run(&srv.url()).await.unplaced_replicas, 6);

        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::AcceleratorModel as i32,
                ids: vec!["toy-gpu".into()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("IN_USE"), "{err:?}");
        let mut bad = convert::accelerator_model_to_pb(&toy_gpu());
        bad.watts.reverse();
        let err = inv
            .upsert_accelerator_models(pb::UpsertAcceleratorModelsRequest {
                accelerator_models: vec![bad],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("INVALID_INVENTORY"));
        let fields: Vec<String> = err
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with("accelerator_models[0].watts")),
            "{fields:?}"
        );
    });
}

/// What-if uses the same GPU watts: a power cap cut to 80 % leaves room
/// for 2 replicas, not 3; the scenario's plan stops one, and the site's
/// GPU power is reported.
#[test]
fn whatif_and_plans_count_gpu_watts() {
    use edgeplan::whatif::{run, Perturbation, Scenario};
    let mut inst = gpu_site_and_inference();
    inst.workloads[0].current = BTreeMap::from([("a".to_string(), 3)]);
    let cut = Scenario {
        name: "cap at 80 %".into(),
        perturbations: vec![Perturbation::PowerCap {
            site: "a".into(),
            factor: 0.8,
        }],
    };
    let results = run(&inst, &[cut], &exact(), false, &|_, _| ()).unwrap();
    // By hand: 1.2 kW less 0.4 kW idle = 0.8 kW: ⌊0.8 / 0.35⌋ = 2.
    assert_eq!(results[0].placed_replicas, 3);
    assert_eq!(results[1].placed_replicas, 2);
    assert_eq!(results[1].plan_steps, 1, "one replica stops");
    let site = &results[1].sites[0];
    assert!(
        (site.accelerator_kw - (0.4 + 2.0 * 0.3)).abs() < 1e-9,
        "{site:?}"
    );
    assert!((site.it_kw - (0.4 + 2.0 * 0.35)).abs() < 1e-9);
}

/// The migration plan and the operator report count the same GPU watts:
/// from 3 replicas on `a` to the cheaper `b`, the plan never puts more on
/// `b` than its power cap holds (the independent plan verifier, which
/// recomputes GPU power, passes every wave); a target of 4 on `b` (1.8 kW
/// under a 1.5 kW cap) is blocked, not planned; the report shows each
/// site's GPU power.
#[test]
fn plans_and_the_report_count_gpu_watts() {
    use edgeplan::plan::plan;
    use edgeplan::verify::verify_plan;
    let mut inst = gpu_site_and_inference();
    let mut b = inst.sites[0].clone();
    b.id = "b".into();
    b.energy.price_per_kwh = Price::Flat(0.1);
    inst.sites.push(b);
    inst.network
        .nodes
        .push(edgeplan::instance::Node { id: "b".into() });
    inst.network.links.push(edgeplan::instance::Link {
        a: "a".into(),
        b: "b".into(),
        rtt_ms: 5.0,
        bandwidth_gbps: 10.0,
    });
    inst.workloads[0].replicas = 4;
    inst.workloads[0].current = BTreeMap::from([("a".to_string(), 3)]);
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    // By hand: 3 fit on each site; the cheaper b takes 3, a keeps 1.
    assert_eq!(placement.assignments["infer"]["b"], 3);
    assert_eq!(placement.assignments["infer"]["a"], 1);
    let p = plan(&inst, &problem, &placement).unwrap();
    let r = verify_plan(&inst, &p);
    assert!(r.valid, "{:?}", r.violations);
    assert!(p.reaches_target());
    let mut too_many = Placement::default();
    too_many
        .assignments
        .insert("infer".into(), BTreeMap::from([("b".to_string(), 4)]));
    let blocked = plan(&inst, &problem, &too_many).unwrap();
    assert!(!blocked.reaches_target(), "{blocked:?}");
    let r = verify_plan(&inst, &blocked);
    assert!(r.valid, "{:?}", r.violations);

    let md = edgeplan::operator_report::markdown(&edgeplan::operator_report::ReportInput {
        title: "gpus",
        instance: &inst,
        problem: &problem,
        x: &solved.x,
        plan: Some(&p),
        whatif: None,
    });
    // b: IT 0.4 + 3 × 0.35 = 1.45 kW of which GPUs 0.4 + 3 × 0.3 = 1.30;
    // a: 0.75 of which 0.70.
    // (after the outside air column)
    let row = |site: &str, figures: &str| {
        md.lines()
            .any(|l| l.starts_with(&format!("| {site} | ")) && l.contains(figures))
    };
    assert!(row("b", " | 1.45 / 1.50 | 1.30 |"), "{md}");
    assert!(row("a", " | 0.75 / 1.50 | 0.70 |"), "{md}");
}
