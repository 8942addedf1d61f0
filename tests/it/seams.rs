//! Nothing is executed from a stale view, and where replicas run is observed
//! state: over real loopback gRPC against `edgeplan serve` and
//! `edgeplan provisioner-sim`, plus the executor's approval rule in the core.

use std::collections::BTreeMap;
use std::time::Duration;

use edgeplan::api::pb;
use edgeplan::api::pb::inventory_client::InventoryClient;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::execution::{Execution, PlanState, TransitionError};
use edgeplan::instance::Instance;
use edgeplan::service::client::{push_instance, Connect};
use tonic::Code;

use crate::live::*;

fn empty_plan() -> edgeplan::plan::Plan {
    edgeplan::plan::Plan {
        state_hash: "h".into(),
        target: Default::default(),
        steps: Vec::new(),
        waves: Vec::new(),
        makespan_s: 0.0,
        blocked: Vec::new(),
        reached: Default::default(),
        kpis_before: Default::default(),
        kpis_after: Default::default(),
    }
}

#[test]
fn stale_plan_approval_from_an_older_inventory_needs_the_plan_to_reverify() {
    let mut e = Execution::new(7, empty_plan(), "test".into(), 3);
    let err = e
        .approve_at(5, |_| Err("w0 has no replica at a".into()))
        .unwrap_err();
    assert!(matches!(err, TransitionError::Stale { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("version 3")
            && text.contains("version 5")
            && text.contains("w0 has no replica"),
        "{text}"
    );
    assert_eq!(e.state, PlanState::Recommended, "a refusal changes nothing");
    // Same version: no re-verification is asked for.
    let mut same = Execution::new(8, empty_plan(), "test".into(), 5);
    same.approve_at(5, |_| panic!("re-verified a current plan"))
        .unwrap();
    // An older plan that still holds is approved.
    e.approve_at(5, |_| Ok(())).unwrap();
    assert_ne!(e.state, PlanState::Recommended);
}

/// A server and a provisioner-sim at this time scale: the temporary
/// directory, the provisioner's journal, both processes and the server's URL.
fn started(time_scale: &str) -> (tempfile::TempDir, std::path::PathBuf, Proc, Proc, String) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let sim = sim(&journal, &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", time_scale],
    );
    let url = srv.url();
    (dir, journal, sim, srv, url)
}

/// A fleet whose plan runs one step per wave, steps slow enough to act between.
fn one_at_a_time() -> Instance {
    let mut inst = busy_fleet();
    inst.limits.max_in_flight = 1;
    inst
}

async fn solve(url: &str) -> pb::SolveResponse {
    connect(url, PlacementClient::new)
        .await
        .solve(pb::SolveRequest {
            time_limit_s: Some(10.0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn plan_state(url: &str, plan_id: u64) -> i32 {
    plan_view(url, plan_id).await.0.summary.unwrap().state
}

#[test]
fn stale_plan_an_inventory_change_supersedes_the_recommended_plan() {
    let (_dir, journal, _sim, _srv, url) = started("0.002");
    let inst = busy_fleet();
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        ingest_ambient(&url, &inst, now_s()).await;
        let solved = solve(&url).await;
        assert!(solved.plan.as_ref().is_some_and(|p| !p.steps.is_empty()));
        assert_eq!(
            plan_state(&url, solved.plan_id).await,
            pb::PlanState::Recommended as i32
        );
        // Any inventory change: here a workload's spec.
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.state_gib += 1.0;
        let change = connect(&url, InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(change.version > solved.inventory_version);
        let (view, _) = plan_view(&url, solved.plan_id).await;
        assert_eq!(
            view.summary.unwrap().state,
            pb::PlanState::Superseded as i32,
            "a plan made before the change must not stay recommended"
        );
        assert!(view.error.contains("inventory changed"), "{}", view.error);
        let err = connect(&url, PlacementClient::new)
            .await
            .approve_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("superseded"), "{}", err.message());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(journal_counts(&journal).is_empty(), "nothing ran");
    });
}

#[test]
fn stale_plan_a_step_whose_replica_is_gone_fails_the_plan_before_its_call() {
    // Steps of ~30 s planned: 0.03 → about a second each.
    let (_dir, journal, _sim, _srv, url) = started("0.03");
    let inst = one_at_a_time();
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        ingest_ambient(&url, &inst, now_s()).await;
        let solved = solve(&url).await;
        let plan = solved.plan.clone().unwrap();
        assert!(plan.steps.len() >= 3, "{} steps", plan.steps.len());
        // The last step that moves a replica away from a site.
        let victim = plan
            .steps
            .iter()
            .rev()
            .find(|s| !s.from_site.is_empty())
            .expect("a step with a source")
            .clone();
        assert!(
            victim.wave >= 1,
            "the victim must come after the first wave"
        );
        connect(&url, PlacementClient::new)
            .await
            .approve_plan(pb::PlanRef {
                plan_id: solved.plan_id,
                after_revision: None,
            })
            .await
            .unwrap();
        // Meanwhile the orchestrator sees that replica gone (an outage took it).
        let now = inventory(&url).await;
        let w = now
            .workloads
            .iter()
            .find(|w| w.id == victim.workload)
            .unwrap();
        let mut current: BTreeMap<String, u32> = w.current.clone();
        current.remove(&victim.from_site);
        connect(&url, InventoryClient::new)
            .await
            .report_observed(pb::ReportObservedRequest {
                read_at_version: None,
                workloads: vec![pb::ObservedWorkload {
                    workload: victim.workload.clone(),
                    current: current.into_iter().collect(),
                }],
            })
            .await
            .unwrap();
        let (end, _) = watch_to_end(&url, solved.plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Failed as i32, "{end:?}");
        let (view, _) = plan_view(&url, solved.plan_id).await;
        assert!(view.error.contains("was not started"), "{}", view.error);
        let failed: Vec<&pb::StepView> = view
            .steps
            .iter()
            .filter(|s| s.state == pb::StepState::Failed as i32)
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].message.contains("precondition failed"),
            "{}",
            failed[0].message
        );
        assert_eq!(failed[0].attempts, 0, "no call for a failed precondition");
        let journal = journal_counts(&journal);
        assert!(
            !journal.contains_key(&failed[0].idempotency_key),
            "the provisioner ran a step whose precondition failed"
        );
        // Nothing after the failure started.
        assert!(view
            .steps
            .iter()
            .filter(|s| s.wave > failed[0].wave)
            .all(|s| s.state == pb::StepState::Pending as i32));
    });
}

#[test]
fn stale_plan_cancel_while_steps_run_is_cancelling_until_they_report() {
    let (_dir, journal, _sim, _srv, url) = started("0.05");
    let inst = one_at_a_time();
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        ingest_ambient(&url, &inst, now_s()).await;
        let (plan_id, steps) = solve_and_approve(&url).await;
        assert!(steps >= 2);
        // Wait for a step to run.
        let mut running = false;
        for _ in 0..200 {
            let (view, _) = plan_view(&url, plan_id).await;
            if view
                .steps
                .iter()
                .any(|s| s.state == pb::StepState::Running as i32)
            {
                running = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(running, "no step started");
        let view = connect(&url, PlacementClient::new)
            .await
            .cancel_plan(pb::PlanRef {
                plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            view.summary.unwrap().state,
            pb::PlanState::Cancelling as i32,
            "a step still runs: the plan is cancelling, not cancelled"
        );
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Cancelled as i32, "{end:?}");
        let (view, _) = plan_view(&url, plan_id).await;
        assert!(
            view.steps
                .iter()
                .all(|s| s.state != pb::StepState::Running as i32),
            "every running step reported"
        );
        assert_eq!(
            view.steps
                .iter()
                .filter(|s| s.state == pb::StepState::Succeeded as i32)
                .count(),
            journal_counts(&journal).len(),
            "every call's outcome is in the plan"
        );
    });
}

#[test]
fn observed_state_an_upsert_without_current_starts_only_the_new_replicas() {
    let (_dir, _journal, _sim, _srv, url) = started("0.002");
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        ingest_ambient(&url, &inst, now_s()).await;
        let (plan_id, _) = solve_and_approve(&url).await;
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let before = inventory(&url).await;
        // A workload that runs all its replicas; the orchestrator scales it up
        // with a spec that says nothing of where replicas run.
        let w = before
            .workloads
            .iter()
            .find(|w| w.current.values().sum::<u32>() == w.replicas && w.replicas > 0)
            .expect("a fully placed workload")
            .clone();
        let mut spec = edgeplan::api::convert::workload_to_pb(&w);
        spec.replicas += 1;
        spec.current.clear();
        connect(&url, InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![spec],
                expected_version: None,
            })
            .await
            .unwrap();
        let after = inventory(&url).await;
        let now = after.workloads.iter().find(|x| x.id == w.id).unwrap();
        assert_eq!(
            now.current, w.current,
            "a spec upsert changed observed state"
        );
        assert_eq!(now.replicas, w.replicas + 1);
        let solved = dry_run(&url).await;
        let starts = solved
            .plan
            .unwrap()
            .steps
            .iter()
            .filter(|s| s.workload == w.id && s.kind == pb::StepKind::Start as i32)
            .count();
        assert_eq!(starts, 1, "only the new replica starts");
    });
}

#[test]
fn observed_state_a_spec_scale_down_is_accepted_and_stops_the_surplus() {
    let (_dir, _journal, _sim, _srv, url) = started("0.002");
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        ingest_ambient(&url, &inst, now_s()).await;
        let w = inst
            .workloads
            .iter()
            .find(|w| w.current.values().sum::<u32>() == w.replicas && w.replicas >= 2)
            .expect("a fully placed workload of two or more replicas")
            .clone();
        let mut spec = edgeplan::api::convert::workload_to_pb(&w);
        spec.replicas -= 1;
        connect(&url, InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![spec],
                expected_version: None,
            })
            .await
            .expect("a scale-down below what runs is a valid spec");
        let solved = dry_run(&url).await;
        let placed: u32 = solved
            .placement
            .iter()
            .filter(|a| a.workload == w.id)
            .map(|a| a.replicas)
            .sum();
        assert!(
            placed < w.replicas,
            "the target keeps {placed} of {}",
            w.replicas
        );
        let plan = solved.plan.unwrap();
        let stops = plan
            .steps
            .iter()
            .filter(|s| s.workload == w.id && s.kind == pb::StepKind::Stop as i32)
            .count();
        assert_eq!(stops as u32, w.replicas - placed, "the surplus stops");
    });
}

#[test]
fn observed_state_reports_replace_current_and_refuse_a_stale_read() {
    let (dir, _journal, _sim, _srv, url) = started("0.002");
    let inst = fleet(3);
    rt().block_on(async {
        let version = push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let mut inv = connect(&url, InventoryClient::new).await;
        let w = &inst.workloads[0];
        let site = inst.sites[0].id.clone();
        let report = |read_at: Option<u64>, workload: &str| pb::ReportObservedRequest {
            read_at_version: read_at,
            workloads: vec![pb::ObservedWorkload {
                workload: workload.into(),
                current: [(site.clone(), 1)].into_iter().collect(),
            }],
        };
        // Read at an older version: refused, both versions named, nothing stored.
        let err = inv
            .report_observed(report(Some(version - 1), &w.id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
        assert!(
            err.message().contains(&format!("{}", version - 1))
                && err.message().contains(&format!("{version}")),
            "{}",
            err.message()
        );
        assert_eq!(inventory(&url).await.workloads[0].current, w.current);
        // An unknown workload is named.
        let err = inv
            .report_observed(report(None, "ghost"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ghost"), "{}", err.message());
        // At the current version: applied.
        let change = inv
            .report_observed(report(Some(version), &w.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(change.version, version + 1);
        let now = inventory(&url).await;
        assert_eq!(
            now.workloads[0].current,
            BTreeMap::from([(site.clone(), 1)])
        );
    });
    // The CLI: `push --observed` reports the file's `current` too.
    let mut moved = inst_with_current(&inst);
    moved.workloads.truncate(1);
    let file = dir.path().join("observed.json");
    std::fs::write(&file, serde_json::to_string(&moved).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(["push", "--server", &url, "--observed", "--instance"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt().block_on(async {
        let now = inventory(&url).await;
        assert_eq!(now.workloads[0].current, moved.workloads[0].current);
    });
}

/// The instance with its first workload's replicas all on the first site.
fn inst_with_current(inst: &Instance) -> Instance {
    let mut moved = inst.clone();
    let w = &mut moved.workloads[0];
    w.current = BTreeMap::from([(inst.sites[0].id.clone(), 1)]);
    moved
}

fn step(id: usize, workload: &str, from: Option<&str>, to: Option<&str>) -> edgeplan::plan::Step {
    edgeplan::plan::Step {
        id,
        workload: workload.into(),
        kind: match (from, to) {
            (Some(_), Some(_)) => edgeplan::plan::StepKind::Migrate,
            (None, _) => edgeplan::plan::StepKind::Start,
            (_, None) => edgeplan::plan::StepKind::Stop,
        },
        from: from.map(Into::into),
        to: to.map(Into::into),
        wave: 0,
        depends_on: Vec::new(),
        state_gib: 0.0,
        links: Vec::new(),
        duration_s: 30.0,
        start_s: 0.0,
        notice_s: 0.0,
    }
}

#[test]
fn stale_plan_a_step_starts_only_with_room_at_its_target_counting_running_arrivals() {
    use crate::common::{instance, site, workload};
    use edgeplan::verify::Preconditions;
    // `b` has 3 cores: one replica runs there; `a` runs the rest.
    let mut w = workload("w", 4, 1.0);
    w.current.insert("a".into(), 3);
    w.current.insert("b".into(), 1);
    let mut g = workload("g", 2, 1.0);
    g.resources.insert("gpus".into(), 1.0);
    g.current.insert("b".into(), 2);
    let mut a = site("a", 10.0, 0.1);
    a.capacity.insert("gpus".into(), 4.0);
    let mut b = site("b", 4.0, 0.1);
    // One GPU for two GPU replicas: over before any step (a derating).
    b.capacity.insert("gpus".into(), 1.0);
    let inst = instance(vec![a, b], vec![w, g], &[("a", "b", 5.0)]);
    let pre = Preconditions::new(&inst);
    let first = step(0, "w", Some("a"), Some("b"));
    // b: 3 cores used of 4, nothing arriving: room for one.
    assert_eq!(pre.check(&[], &first), Ok(()));
    // With that arrival running, the next one would make 5 of 4.
    let second = step(1, "w", Some("a"), Some("b"));
    let err = pre.check(&[&first], &second).unwrap_err();
    assert!(
        err.contains("no room at b") && err.contains("cpu_cores"),
        "{err}"
    );
    // b is over on GPUs already; a CPU-only arrival does not grow that.
    let cpu_only = step(2, "w", Some("a"), Some("b"));
    assert_eq!(pre.check(&[], &cpu_only), Ok(()));
    // A GPU arrival would: refused, naming GPUs.
    let gpu_in = step(3, "g", None, Some("b"));
    let err = pre.check(&[], &gpu_in).unwrap_err();
    assert!(err.contains("gpus"), "{err}");
    // The source: `a` runs three, three already leaving: none for a fourth.
    let leaving: Vec<_> = (10..13).map(|k| step(k, "w", Some("a"), None)).collect();
    let running: Vec<&_> = leaving.iter().collect();
    let err = pre
        .check(&running, &step(13, "w", Some("a"), None))
        .unwrap_err();
    assert!(err.contains("3 already leaving"), "{err}");
    assert!(pre
        .check(&[], &step(14, "ghost", None, Some("a")))
        .unwrap_err()
        .contains("ghost"));
}
