//! The gRPC service over real loopback: the `edgeplan serve` and
//! `edgeplan provisioner-sim` binaries started as a user would, driven
//! through tonic clients (and a Python client).

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeplan::api::pb;
use edgeplan::api::pb::inventory_client::InventoryClient;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::api::pb::telemetry_client::TelemetryClient;
use edgeplan::service::client::{push_instance, Connect};
use tonic::Code;

use crate::live::*;

#[test]
fn register_solve_approve_dispatch_to_success() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let sim = sim(&journal, &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", "0.002"],
    );
    let url = srv.url();
    let inst = fleet(3);
    rt().block_on(async {
        // Health and reflection, as grpcurl would use them.
        let mut health = connect(&url, tonic_health::pb::health_client::HealthClient::new).await;
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "edgeplan.v1.Placement".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let services = reflection_list(&url).await;
        for s in [
            "edgeplan.v1.Inventory",
            "edgeplan.v1.Telemetry",
            "edgeplan.v1.Placement",
            "grpc.health.v1.Health",
        ] {
            assert!(services.contains(&s.to_string()), "{s} not in {services:?}");
        }
        // Only what this port serves: the proto's Provisioner is the
        // provisioner's to implement.
        assert!(
            !services.iter().any(|s| s.contains("Provisioner")),
            "{services:?}"
        );
        // v1alpha (Python's grpcio-reflection, older grpcurl) lists the same.
        let mut alpha = reflection_list_v1alpha(&url).await;
        let mut v1 = services.clone();
        alpha.sort();
        v1.sort();
        assert_eq!(alpha, v1);

        let version = push_instance(&Connect::plain(&url), &inst).await.unwrap();
        // Sites, links, regions, workloads: one version each; the policy
        // push changes nothing here (the fleet's is the one in force).
        assert!(version >= 4, "one version per change, got {version}");
        // A SetPolicy that changes nothing — no field, or the value in
        // force — is no change: the version stays.
        let mut inventory = connect(&url, InventoryClient::new).await;
        let empty = inventory
            .set_policy(pb::Policy::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!((empty.version, empty.changed), (version, 0));
        let same = inventory
            .set_policy(pb::Policy {
                horizon_hours: Some(inst.limits.horizon_hours),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((same.version, same.changed), (version, 0));
        let changed = inventory
            .set_policy(pb::Policy {
                horizon_hours: Some(inst.limits.horizon_hours + 1),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((changed.version, changed.changed), (version + 1, 1));
        // The fleet's name travels as a file's `name` does.
        let renamed = inventory
            .set_policy(pb::Policy {
                name: Some("edge-west".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(renamed.changed, 1);
        let snapshot = inventory
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let as_file: serde_json::Value = serde_json::from_str(&snapshot.instance_json).unwrap();
        assert_eq!(as_file["name"], "edge-west");
        assert_eq!(snapshot.policy.unwrap().name.as_deref(), Some("edge-west"));
        inventory
            .set_policy(pb::Policy {
                horizon_hours: Some(inst.limits.horizon_hours),
                ..Default::default()
            })
            .await
            .unwrap();
        let summary = ingest_ambient(&url, &inst, now_s()).await;
        assert_eq!(summary.accepted, inst.sites.len() as u64);
        assert_eq!(summary.rejected, 0);

        let mut placement = connect(&url, PlacementClient::new).await;
        let solved = placement
            .solve(pb::SolveRequest {
                time_limit_s: Some(10.0),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let plan = solved.plan.clone().unwrap();
        let steps = plan.steps.len();
        assert!(steps > 0, "the generated placement should be improvable");
        assert_eq!(
            plan.summary.as_ref().unwrap().state,
            pb::PlanState::Recommended as i32
        );
        // Nothing runs before approval.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(journal_counts(&journal).is_empty());

        placement
            .approve_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap();
        let (end, step_events) = watch_to_end(&url, solved.plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        assert_eq!(end.succeeded as usize, steps);
        assert!(step_events >= 1);

        // Each step ran exactly once at the provisioner.
        let counts = journal_counts(&journal);
        assert_eq!(counts.len(), steps);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");

        // The inventory now holds the placement the plan reached.
        let snapshot = connect(&url, InventoryClient::new)
            .await
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        if plan.blocked.is_empty() {
            let mut target: BTreeMap<(String, String), u32> = BTreeMap::new();
            for a in &solved.placement {
                target.insert((a.workload.clone(), a.site.clone()), a.replicas);
            }
            let mut now: BTreeMap<(String, String), u32> = BTreeMap::new();
            for w in &snapshot.workloads {
                for (site, n) in &w.current {
                    if *n > 0 {
                        now.insert((w.id.clone(), site.clone()), *n);
                    }
                }
            }
            assert_eq!(now, target);
        }
        // A second solve from the reached state finds nothing left to move.
        let again = dry_run(&url).await;
        assert_eq!(again.plan_id, 0, "a dry run stores nothing");
        assert!(again.kpis_after.unwrap().moves <= again.kpis_before.unwrap().moves + steps as u64);
    });
}

async fn reflection_list_v1alpha(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let mut client = connect(url, ServerReflectionClient::new).await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn reflection_list(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = connect(url, ServerReflectionClient::new).await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[test]
fn kill_9_mid_plan_resumes_without_running_a_step_twice() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let data = dir.path().join("data");
    let sim = sim(&journal, &[]);
    let srv = server(&data, &sim.url(), &["--time-scale", "0.01"]);
    let inst = fleet(5);
    let runtime = rt();
    let (plan_id, steps) = runtime.block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let solved = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        let steps = solved.plan.unwrap().steps.len();
        assert!(steps >= 3, "need a plan with a few steps, got {steps}");
        placement
            .approve_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap();
        // Wait until some, not all, steps have succeeded.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = placement
                .get_plan(pb::PlanRef {
                    plan_id: solved.plan_id,
                    after_revision: None,
                })
                .await
                .unwrap()
                .into_inner();
            let s = p.summary.unwrap();
            if s.succeeded >= 1 {
                assert!(
                    (s.succeeded as usize) < steps,
                    "plan finished before the kill; slow the steps down"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no step finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (solved.plan_id, steps)
    });
    srv.kill9();
    let before_restart = journal_counts(&journal);
    let srv = server(&data, &sim.url(), &["--time-scale", "0.01"]);
    runtime.block_on(async {
        let (end, _) = watch_to_end(&srv.url(), plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        assert_eq!(end.succeeded as usize, steps);
    });
    let counts = journal_counts(&journal);
    assert_eq!(counts.len(), steps, "every step executed");
    assert!(
        counts.values().all(|&n| n == 1),
        "a step ran twice: {counts:?}"
    );
    assert!(before_restart.len() < steps);
}

#[test]
fn a_failed_step_holds_the_rest_and_fails_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let inst = fleet(3);
    // Fail every step of every workload: the first wave fails, nothing after it starts.
    let ids: Vec<String> = inst.workloads.iter().map(|w| w.id.clone()).collect();
    let mut args = Vec::new();
    for id in &ids {
        args.push("--fail-workload");
        args.push(id.as_str());
    }
    let sim = sim(&journal, &args);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", "0.001"],
    );
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let solved = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        placement
            .approve_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap();
        let (end, _) = watch_to_end(&srv.url(), solved.plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Failed as i32);
        assert_eq!(end.succeeded, 0);
        let view = placement
            .get_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(view.error.contains("failed"), "{}", view.error);
        let ran = journal_counts(&std::path::PathBuf::from(&journal)).len();
        let pending = view
            .steps
            .iter()
            .filter(|s| s.state == pb::StepState::Pending as i32)
            .count();
        assert!(ran >= 1);
        assert_eq!(
            view.steps.len(),
            ran + pending,
            "every step either ran (and failed) or was held"
        );
        // The inventory's placement did not change: nothing succeeded.
        let snap = connect(&srv.url(), InventoryClient::new)
            .await
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        for (w, orig) in snap.workloads.iter().zip(&inst.workloads) {
            let now: BTreeMap<String, u32> = w.current.clone().into_iter().collect();
            assert_eq!(now, orig.current, "{}", w.id);
        }
    });
}

#[test]
fn bad_input_is_rejected_with_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = fleet(3);
    rt().block_on(async {
        let version = push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut inv = connect(&srv.url(), InventoryClient::new).await;

        // A bad value: the field path names the site by id.
        let mut bad = edgeplan::api::convert::site_to_pb(&inst.sites[1]);
        bad.power.as_mut().unwrap().cap_kw = -5.0;
        let err = inv
            .upsert_sites(pb::UpsertSitesRequest {
                sites: vec![bad],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains(&format!("sites[id={}].power.cap_kw", inst.sites[1].id)),
            "{}",
            err.message()
        );
        // A missing part.
        let mut partial = edgeplan::api::convert::site_to_pb(&inst.sites[0]);
        partial.cooling = None;
        let err = inv
            .upsert_sites(pb::UpsertSitesRequest {
                sites: vec![partial],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("sites[0].cooling: required"),
            "{}",
            err.message()
        );
        // A workload naming an unknown region.
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.traffic[0].region = "atlantis".into();
        let err = inv
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("atlantis"), "{}", err.message());
        // A workload no site could ever host: refused as `edgeplan
        // validate` refuses it in a file, with the same words.
        let mut huge = inst.workloads[0].clone();
        huge.id = "too-big".into();
        huge.resources.insert("cpu_cores".into(), 1.0e6);
        let mut as_file = inst.clone();
        as_file.workloads.push(huge.clone());
        let file_issues = edgeplan::validate::validate(&as_file);
        assert_eq!(file_issues.len(), 1, "{file_issues:?}");
        let err = inv
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![edgeplan::api::convert::workload_to_pb(&huge)],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains(&file_issues[0].message),
            "API: {}\nfile: {}",
            err.message(),
            file_issues[0].message
        );
        // Unknown ids.
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::Site as i32,
                ids: vec!["nowhere".into()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("nowhere"));
        // Still referenced.
        let busy = inst
            .workloads
            .iter()
            .find_map(|w| w.current.keys().next().cloned())
            .unwrap();
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::Site as i32,
                ids: vec![busy.clone()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains(&busy));
        // Nothing of that reached the store: same version, same sites.
        let snap = inv
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(snap.version, version);
        assert_eq!(snap.sites.len(), inst.sites.len());
        assert_eq!(
            snap.sites[1].power.as_ref().unwrap().cap_kw,
            inst.sites
                .iter()
                .find(|s| s.id == snap.sites[1].id)
                .unwrap()
                .power
                .cap_kw
        );

        // Telemetry: every bad reading counted with its reason and named.
        let mut tel = connect(&srv.url(), TelemetryClient::new).await;
        let mut batch = ambient_batch(&inst, now_s(), None);
        batch.readings[0].value = f64::NAN;
        batch.readings[1].site = "nowhere".into();
        batch.readings[2].unit = "parsecs".into();
        batch.readings[3].device_type = pb::DeviceType::Unspecified as i32;
        let s = tel
            .ingest(tokio_stream::iter(vec![batch]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.rejected, 4);
        assert_eq!(s.accepted, inst.sites.len() as u64 - 4);
        let named: HashSet<u32> = s.examples.iter().map(|e| e.index).collect();
        assert_eq!(named, HashSet::from([0, 1, 2, 3]));
        assert!(s.rejected_by_reason.contains_key("unknown site"));
        // A gateway's batch: site, time and units by default.
        let site = inst.sites[0].id.clone();
        let gateway = pb::ReadingBatch {
            readings: vec![
                pb::Reading {
                    device_id: format!("{site}/gw-ambient"),
                    device_type: pb::DeviceType::Temperature as i32,
                    placement: pb::DevicePlacement::Outside as i32,
                    value: 21.5,
                    ..Default::default()
                },
                pb::Reading {
                    device_id: format!("{site}/gw-ups"),
                    device_type: pb::DeviceType::Ups as i32,
                    placement: pb::DevicePlacement::Site as i32,
                    value: 3.2,
                    ..Default::default()
                },
            ],
            site: site.clone(),
            timestamp_s: now_s(),
        };
        let s = tel
            .ingest(tokio_stream::iter(vec![gateway]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((s.accepted, s.rejected), (2, 0), "{s:?}");
        // An oversized batch is refused whole.
        let huge = pb::ReadingBatch {
            readings: vec![ambient_batch(&inst, now_s(), None).readings[0].clone(); 100_001],
            ..Default::default()
        };
        let err = tel
            .ingest(tokio_stream::iter(vec![huge]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("at most 100000"),
            "{}",
            err.message()
        );

        // Plans: unknown id, superseded plan.
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let err = placement
            .get_plan(pb::PlanRef {
                plan_id: 999,
                after_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let first = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        let second = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(second.plan_id > first.plan_id);
        let err = placement
            .approve_plan(pb::PlanRef {
                plan_id: first.plan_id,
                after_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("superseded"), "{}", err.message());
        let err = placement
            .solve(pb::SolveRequest {
                time_limit_s: Some(-1.0),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("time_limit_s"));
        let err = placement
            .skip_step(pb::StepRef {
                plan_id: second.plan_id,
                step_id: Some(1_000_000),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // An unset step id is not step 0.
        let err = placement
            .skip_step(pb::StepRef {
                plan_id: second.plan_id,
                step_id: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("step_id"), "{}", err.message());
    });
}

#[test]
fn a_heat_wave_in_telemetry_triggers_a_replan_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "continuous:\n  enabled: true\n  interval_s: 0.2\n  min_interval_s: 0\n  auto_approve: true\n  slo: false\ndispatch:\n  time_scale: 0.001\n",
    )
    .unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--config", config.to_str().unwrap()],
    );
    // Cooling that loses most of its capacity in the heat: at 49 °C (past
    // max_ambient_c) a site keeps 20 % of its nominal cooling.
    let mut inst = fleet(7);
    for s in &mut inst.sites {
        s.cooling.derate_min = 0.2;
    }
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let settled = |plans: &[pb::PlanSummary]| {
            plans.iter().all(|p| {
                p.state != pb::PlanState::Approved as i32
                    && p.state != pb::PlanState::Executing as i32
            })
        };
        // Whatever the fleet asks for at first, let it run out.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let plans = placement
                .list_plans(pb::ListPlansRequest::default())
                .await
                .unwrap()
                .into_inner()
                .plans;
            if settled(&plans) {
                break;
            }
            assert!(Instant::now() < deadline, "initial plans never settled");
        }
        let before = placement
            .list_plans(pb::ListPlansRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plans
            .len();
        // The site using most of its power limit (as WatchSites tells) gets a heat wave.
        let mut watch = connect(&srv.url(), TelemetryClient::new)
            .await
            .watch_sites(pb::WatchSitesRequest {
                sites: vec![],
                interval_ms: 100,
            })
            .await
            .unwrap()
            .into_inner();
        let states = watch.message().await.unwrap().unwrap().sites;
        assert_eq!(states.len(), inst.sites.len());
        let hot = states
            .iter()
            .max_by(|a, b| (a.it_kw / a.it_limit_kw).total_cmp(&(b.it_kw / b.it_limit_kw)))
            .unwrap()
            .site
            .clone();
        let snap = connect(&srv.url(), InventoryClient::new)
            .await
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut load: BTreeMap<String, u32> = BTreeMap::new();
        for w in &snap.workloads {
            for (s, n) in &w.current {
                *load.entry(s.clone()).or_default() += n;
            }
        }
        let mut tel = connect(&srv.url(), TelemetryClient::new).await;
        tel.ingest(tokio_stream::iter(vec![ambient_batch(
            &inst,
            now_s(),
            Some((&hot, 49.0)),
        )]))
        .await
        .unwrap();
        // A new plan, made on its own, naming the hot site, approved and run.
        let deadline = Instant::now() + Duration::from_secs(60);
        let plan = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let plans = placement
                .list_plans(pb::ListPlansRequest::default())
                .await
                .unwrap()
                .into_inner()
                .plans;
            if let Some(p) = plans.iter().skip(before).find(|p| p.reason.contains(&hot)) {
                break p.clone();
            }
            assert!(Instant::now() < deadline, "no re-plan after the heat wave");
        };
        assert!(plan.reason.starts_with("continuous:"), "{}", plan.reason);
        // The first plan's answer was kept: this one moved only what the
        // heat made move.
        assert!(
            plan.reason.contains("re-planned incrementally"),
            "{}",
            plan.reason
        );
        let (end, _) = watch_to_end(&srv.url(), plan.plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        // Load left the hot site.
        let snap = connect(&srv.url(), InventoryClient::new)
            .await
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let after: u32 = snap
            .workloads
            .iter()
            .filter_map(|w| w.current.get(&hot))
            .sum();
        assert!(after < load[&hot], "{hot}: {} → {after}", load[&hot]);
        // Hysteresis: the alarm stays up, so no further plan follows by itself.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let plans = placement
            .list_plans(pb::ListPlansRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plans;
        let hot_plans = plans
            .iter()
            .skip(before)
            .filter(|p| p.reason.contains(&hot))
            .count();
        assert_eq!(hot_plans, 1, "{plans:?}");
    });
}

/// Continuous mode when the inventory changes faster than a solve (the
/// demo publishes prices every 0.8 s; a busy CPU solves slower than that):
/// a cheaper placement found on an older version still becomes a plan, its
/// answer carried onto the newer inventory, instead of solving again and
/// losing the race again for ever.
#[test]
fn continuous_mode_plans_while_the_inventory_changes_faster_than_a_solve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "continuous:\n  enabled: true\n  interval_s: 0.2\n  min_interval_s: 0\n  min_gain: 0.001\n  auto_approve: true\n  slo: false\ndispatch:\n  time_scale: 0.001\n",
    )
    .unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--config", config.to_str().unwrap()],
    );
    // Big enough that a debug build's solve takes about a second.
    let inst = edgeplan::gen::generate(&edgeplan::gen::GenOptions {
        sites: 12,
        workloads: 300,
        replicas: None,
        seed: 3,
        load: 0.6,
    })
    .unwrap();
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let mut inventory = connect(&srv.url(), InventoryClient::new).await;
        let plans = |p: &mut PlacementClient<tonic::transport::Channel>| {
            let mut p = p.clone();
            async move {
                p.list_plans(pb::ListPlansRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .plans
            }
        };
        // What the fleet asks for at first runs out, and nothing follows.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut quiet_since = (Instant::now(), 0);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = plans(&mut placement).await;
            let settled = now.iter().all(|p| {
                p.state != pb::PlanState::Approved as i32
                    && p.state != pb::PlanState::Executing as i32
            });
            if !settled || now.len() != quiet_since.1 {
                quiet_since = (Instant::now(), now.len());
            } else if quiet_since.0.elapsed() > Duration::from_secs(4) {
                break;
            }
            assert!(Instant::now() < deadline, "initial plans never settled");
        }
        let before = quiet_since.1;
        // The busiest site's energy becomes dear (a cheaper placement now
        // exists), then its price moves a little every 250 ms: each move is
        // a new inventory version.
        let snap = inventory
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut load: BTreeMap<String, u32> = BTreeMap::new();
        for w in &snap.workloads {
            for (s, n) in &w.current {
                *load.entry(s.clone()).or_default() += n;
            }
        }
        let busiest = load.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
        let mut site = snap.sites.into_iter().find(|s| s.id == busiest).unwrap();
        let base = site.energy.as_ref().unwrap().price_per_kwh * 20.0 + 5.0;
        let started = Instant::now();
        let mut moves = 0u32;
        let plan = loop {
            let e = site.energy.as_mut().unwrap();
            e.price_per_kwh = base + f64::from(moves) * 1e-4;
            e.price_series.clear();
            inventory
                .upsert_sites(pb::UpsertSitesRequest {
                    sites: vec![site.clone()],
                    expected_version: None,
                })
                .await
                .unwrap();
            moves += 1;
            let now = plans(&mut placement).await;
            if let Some(p) = now.iter().skip(before).find(|p| p.reason.starts_with("continuous:")) {
                break p.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no continuous plan in 60 s while the inventory moved every 250 ms ({moves} versions)"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        eprintln!(
            "plan {} after {:.1} s and {moves} versions: {}",
            plan.plan_id,
            started.elapsed().as_secs_f64(),
            plan.reason
        );
        assert!(plan.reason.contains("costs"), "{}", plan.reason);
        let (end, _) = watch_to_end(&srv.url(), plan.plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
    });
}

#[test]
fn python_client_runs_the_happy_path() {
    python_with_grpc();
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("fleet.json");
    std::fs::write(&instance, serde_json::to_string(&fleet(3)).unwrap()).unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", "0.002"],
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/clients/python/happy_path.py"))
        .args([
            "--server",
            &srv.addr,
            "--proto-dir",
            &format!("{root}/proto"),
        ])
        .arg("--instance")
        .arg(&instance)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PLAN_STATE_SUCCEEDED"), "{stdout}");
}

#[test]
fn the_example_service_config_parses_and_unknown_keys_are_refused() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/serve.yaml"))
        .unwrap();
    let value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let cfg: edgeplan::service::Config = serde_json::from_value(value).unwrap();
    assert!(cfg.continuous.enabled);
    assert_eq!(cfg.provisioners, vec!["http://127.0.0.1:50052".to_string()]);
    let bad: serde_json::Value = serde_yaml::from_str("continuous:\n  enabeld: true\n").unwrap();
    let err = serde_json::from_value::<edgeplan::service::Config>(bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enabeld"), "{err}");
}

#[test]
fn what_if_runs_on_the_live_state_and_streams_each_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = fleet(3);
    let (a, b) = (inst.sites[0].id.clone(), inst.sites[1].id.clone());
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst).await.unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let doc = format!(
            "base: live\ntime_limit_s: 5\nscenarios:\n  - name: {a}-outage\n    perturbations:\n      - site_outage: {{ site: {a} }}\n  - name: {b}-heat\n    perturbations:\n      - heat_wave: {{ sites: [{b}], delta_c: 10 }}\n"
        );
        let mut stream = placement
            .what_if(pb::WhatIfRequest { scenarios: doc })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(r) = stream.message().await.unwrap() {
            got.push(r);
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].index, 0, "the base comes first");
        assert_eq!(got[0].scenario, "base");
        assert!(got.iter().all(|r| r.total == 3));
        let outage = got.iter().find(|r| r.scenario == format!("{a}-outage")).unwrap();
        let row: serde_json::Value = serde_json::from_str(&outage.result_json).unwrap();
        let site = row["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == a.as_str());
        // An outage leaves nothing on the site: it is gone, or uses no resource.
        assert!(
            site.is_none_or(|s| s["utilization"]
                .as_object()
                .unwrap()
                .values()
                .all(|u| u.as_f64().unwrap() == 0.0)),
            "{site:?}"
        );

        // A file base, and an unknown site, are refused before anything runs.
        let err = placement
            .what_if(pb::WhatIfRequest {
                scenarios: "base: fleet.yaml\nscenarios: []\n".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("base: live"), "{}", err.message());
        let err = placement
            .what_if(pb::WhatIfRequest {
                scenarios: "base: live\nscenarios:\n  - name: x\n    perturbations:\n      - site_outage: { site: atlantis }\n".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("atlantis"), "{}", err.message());
    });
}

/// The demo end to end, as a newcomer runs it, with a browser on its live
/// view: the real heat and the real price spike each bring a re-plan of the
/// service's own, plans succeed at the provisioner, the live page (served
/// by the service, nothing fetched from elsewhere, no console error)
/// changes after a re-plan, and the report is written.
#[test]
fn the_demo_replans_after_the_heat_and_the_price_spike_while_a_browser_watches() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("demo.html");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args([
            "demo",
            "--duration",
            "45",
            "--seed",
            "7",
            "--http",
            "127.0.0.1:0",
            "--report",
        ])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, out) = (lines.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                println!("  | {l}");
                lines.lock().unwrap().push(l);
            }
        })
    };
    let wait_for = |what: &dyn Fn(&str) -> bool, limit: Duration| -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| what(l)) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    };
    let live = wait_for(&|l| l.contains("live view: "), Duration::from_secs(60))
        .expect("no live view line");
    let live = live
        .split("live view: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let browser = crate::report::chromium();
    if browser.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium");
    }
    let banner = |dom: &str| -> String {
        dom.split("<p class=\"live\">")
            .nth(1)
            .and_then(|r| r.split("</p>").next())
            .unwrap_or_default()
            .to_string()
    };
    let mut before = String::new();
    if let Some(b) = &browser {
        wait_for(
            &|l| l.contains("plan 1: succeeded"),
            Duration::from_secs(60),
        )
        .expect("the operator's plan never succeeded");
        let (dom, log) = crate::report::headless(b, &live, "--dump-dom", (1280, 900));
        assert!(crate::report::page_errors(&log).is_empty(), "{log}");
        before = banner(&dom);
        assert!(before.contains("plan 1 succeeded"), "{before}");
    }
    // A re-plan of the service's own, executed: the page shows it.
    wait_for(
        &|l| l.contains(": succeeded,") && !l.starts_with("plan 1") && !l.contains("] plan 1:"),
        Duration::from_secs(90),
    )
    .expect("no re-plan succeeded");
    if let Some(b) = &browser {
        let (dom, log) = crate::report::headless(b, &live, "--dump-dom", (1280, 900));
        assert!(crate::report::page_errors(&log).is_empty(), "{log}");
        let after = banner(&dom);
        assert_ne!(
            after, before,
            "the live page did not change after the re-plan"
        );
        for bad in ["src=\"http", "href=\"http", "url(http"] {
            assert!(
                !dom.contains(bad),
                "the live page fetches from elsewhere: {bad}"
            );
        }
        // Readable at a desktop's and a phone's width (screenshots kept
        // where EDGEPLAN_SCREENSHOTS says, for docs/).
        for (name, size) in [
            ("live-1280.png", (1280, 2000)),
            ("live-390.png", (390, 2400)),
        ] {
            let png = dir.path().join(name);
            let (_, log) =
                crate::report::headless(b, &live, &format!("--screenshot={}", png.display()), size);
            assert!(crate::report::page_errors(&log).is_empty(), "{log}");
            assert!(
                std::fs::metadata(&png).unwrap().len() > 10_000,
                "{name} blank?"
            );
            if let Some(keep) = std::env::var_os("EDGEPLAN_SCREENSHOTS") {
                std::fs::copy(&png, std::path::Path::new(&keep).join(name)).unwrap();
            }
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let story = lines.lock().unwrap().join("\n");
    assert!(status.success(), "{story}");
    let at = |needle: &str| {
        story
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{story}"))
    };
    let replans: Vec<usize> = story
        .match_indices("re-planned on its own because")
        .map(|(i, _)| i)
        .collect();
    let (heat, spike) = (at("HEAT WAVE"), at("PRICE SPIKE"));
    assert!(
        replans.iter().any(|&r| r > heat),
        "no re-plan after the heat:\n{story}"
    );
    assert!(
        replans.iter().any(|&r| r > spike),
        "no re-plan after the price spike:\n{story}"
    );
    assert!(story.contains("ERCO"), "{story}");
    // The Texas render farm (spot) is evicted with its notice once the heat
    // and its prices pass its bid, and each eviction is recorded no sooner
    // than its notice after it was sent.
    let eviction = at("SPOT EVICTION: 24 replica(s) of render-farm");
    assert!(eviction > heat, "evicted before the heat:\n{story}");
    assert!(
        story[eviction..].lines().next().is_some_and(|l| l
            .contains("get 120 s notice (2.4 s here)")
            && l.contains("passed its bid")),
        "{story}"
    );
    let kept = at("eviction(s) recorded after their notice — the shortest ");
    let numbers: Vec<f64> = story[kept..]
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // [shortest_s, notice_s]
    assert!(
        numbers.len() == 2 && numbers[0] >= numbers[1] && numbers[1] > 0.0,
        "{numbers:?}:\n{story}"
    );
    assert!(
        story
            .lines()
            .any(|l| l.contains(": succeeded,") && !l.contains("0/0 steps")),
        "no plan executed to success:\n{story}"
    );
    let page = std::fs::read_to_string(&report).expect("report written");
    assert!(page.contains("<svg") && page.contains("edgeplan demo"));
    assert!(story.contains(&format!("operator report: {}", report.display())));
}

#[test]
fn the_load_generator_drives_ingest_solves_and_watches_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    let pid = srv.pid().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args([
            "load",
            "--server",
            &srv.url(),
            "--seconds",
            "3",
            "--sites",
            "12",
            "--racks-per-site",
            "4",
            "--workloads",
            "30",
            "--batch",
            "300",
            "--batches-per-call",
            "2",
            "--solvers",
            "1",
            "--solve-time-limit",
            "0.3",
            "--watchers",
            "2",
            "--server-pid",
            &pid,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["rejected"], 0, "{report}");
    assert!(report["accepted"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["accepted"], report["sent"], "{report}");
    let acks = &report["ingest_ack"];
    assert!(acks["count"].as_u64().unwrap() >= 2, "{report}");
    assert!(acks["p50_ms"].as_f64().unwrap() <= acks["p99_ms"].as_f64().unwrap());
    assert!(report["solve"]["count"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["watch_messages"].as_u64().unwrap() >= 2, "{report}");
    assert!(!report["server_rss_mib"].as_array().unwrap().is_empty());
    assert!(text.contains("samples/s") && text.contains("p99"), "{text}");
}
