//! Provisioner faults: `provisioner-sim` injects transient errors, lost
//! acks, slow and duplicate answers, failures and its own death mid-step.
//! Whatever it does, a plan never ends succeeded with a failed step,
//! retries stay within `max_attempts`, no step runs twice, the inventory
//! holds exactly the steps that succeeded, and a failure leads to a new
//! plan from that actual state.
//!
//! `EDGEPLAN_FAULT_RUNS` sets how many seeded runs (default 4; the full run
//! in the README uses 50).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edgeplan::api::pb;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::instance::Instance;
use edgeplan::service::client::{push_instance, Connect};

use crate::live::*;

const MAX_ATTEMPTS: usize = 4;

fn runs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Calls per idempotency key in the simulator's call log.
fn calls_per_key(path: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let key = line.split('\t').next().unwrap().to_string();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Solve, approve and watch one plan to its end; check what every fault
/// run must keep. Returns the plan's final state.
async fn run_plan_and_check(url: &str, inst: &Instance, journal: &Path, calls: &Path) -> i32 {
    let (plan_id, _) = solve_and_approve(url).await;
    let (end, _) = watch_to_end(url, plan_id, Duration::from_secs(300)).await;
    let (view, plan) = plan_view(url, plan_id).await;
    let state = |s: &pb::StepView| pb::StepState::try_from(s.state).unwrap();
    let failed = view
        .steps
        .iter()
        .filter(|s| state(s) == pb::StepState::Failed)
        .count();
    // Never succeeded with a failed step; a failed step fails the plan.
    if end.state == pb::PlanState::Succeeded as i32 {
        assert!(
            view.steps
                .iter()
                .all(|s| state(s) == pb::StepState::Succeeded),
            "{view:?}"
        );
    }
    if failed > 0 {
        assert_eq!(end.state, pb::PlanState::Failed as i32, "{end:?}");
        eprintln!("plan {plan_id} failed: {}", view.error);
    }
    // Bounded retries in each round of a step's dispatch (a step whose
    // every attempt went unanswered is asked again in a new round, never
    // failed blind), and no step executed twice.
    let rounds: BTreeMap<&str, usize> = view
        .steps
        .iter()
        .map(|s| (s.idempotency_key.as_str(), (s.attempts as usize).max(1)))
        .collect();
    for (key, n) in calls_per_key(calls) {
        let r = rounds.get(key.as_str()).copied().unwrap_or(1);
        assert!(n <= MAX_ATTEMPTS * r, "{key}: {n} calls in {r} round(s)");
    }
    for (key, n) in journal_counts(journal) {
        assert_eq!(n, 1, "{key} executed {n} times");
    }
    // The inventory holds exactly the steps that succeeded.
    let succeeded: Vec<bool> = view
        .steps
        .iter()
        .map(|s| state(s) == pb::StepState::Succeeded)
        .collect();
    assert_holds_succeeded_steps(&inventory(url).await, inst, &plan, &succeeded);
    end.state
}

#[test]
fn injected_provisioner_faults_never_end_a_plan_succeeded_with_a_failed_step() {
    let mut outcomes = BTreeMap::new();
    for seed in 1..=runs("EDGEPLAN_FAULT_RUNS", 4) {
        let dir = tempfile::tempdir().unwrap();
        let (journal, calls) = (dir.path().join("journal.tsv"), dir.path().join("calls.tsv"));
        let seed_s = seed.to_string();
        let sim = sim(
            &journal,
            &[
                "--seed",
                &seed_s,
                "--error-rate",
                "0.2",
                "--timeout-rate",
                "0.1",
                "--slow-rate",
                "0.3",
                "--duplicate-rate",
                "0.3",
                "--fail-rate",
                "0.02",
                "--call-log",
                calls.to_str().unwrap(),
            ],
        );
        let config = dir.path().join("serve.yaml");
        std::fs::write(
            &config,
            format!(
                "dispatch: {{ timeout_factor: 2, timeout_slack_s: 0.5, max_attempts: {MAX_ATTEMPTS}, \
                 backoff_initial_ms: 20, time_scale: 0.002 }}\n\
                 continuous: {{ enabled: true, interval_s: 0.2, min_interval_s: 0, min_gain: 0, \
                 slo: false, max_power_use: 100, min_inlet_headroom_c: -100, \
                 replan_on_failure: true, auto_approve: false }}\n"
            ),
        )
        .unwrap();
        let srv = server(
            &dir.path().join("data"),
            &sim.url(),
            &["--config", config.to_str().unwrap()],
        );
        let url = srv.url();
        let inst = fleet(seed);
        let state = rt().block_on(async {
            push_instance(&Connect::plain(&url), &inst).await.unwrap();
            let state = run_plan_and_check(&url, &inst, &journal, &calls).await;
            if state == pb::PlanState::Failed as i32 {
                // A new plan, from the state the failure left.
                let deadline = Instant::now() + Duration::from_secs(30);
                let next = loop {
                    let plans = connect(&url, PlacementClient::new)
                        .await
                        .list_plans(pb::ListPlansRequest::default())
                        .await
                        .unwrap()
                        .into_inner()
                        .plans;
                    if let Some(p) = plans.iter().find(|p| p.plan_id > 1) {
                        break p.clone();
                    }
                    assert!(Instant::now() < deadline, "no re-plan after the failure");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                assert!(next.reason.contains("plan 1 failed"), "{next:?}");
                let (_, plan) = plan_view(&url, next.plan_id).await;
                let actual = inventory(&url).await;
                let report = edgeplan::verify::verify_plan(&actual, &plan);
                assert!(
                    report.violations.is_empty(),
                    "the re-plan does not start from the actual state: {:?}",
                    report.violations
                );
            }
            state
        });
        *outcomes.entry(state).or_insert(0) += 1;
        let calls = calls_per_key(&calls);
        eprintln!(
            "seed {seed}: plan state {state}, {} steps called, {} calls",
            calls.len(),
            calls.values().sum::<usize>()
        );
    }
    eprintln!("outcomes by plan state: {outcomes:?}");
}

#[test]
fn a_provisioner_that_dies_mid_step_is_not_asked_to_run_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let calls = dir.path().join("calls.tsv");
    let calls_s = calls.to_str().unwrap().to_string();
    // It journals its third execution, then exits before answering.
    let mut first = sim(&journal, &["--exit-after", "3", "--call-log", &calls_s]);
    let port = first.port().to_string();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "dispatch: { max_attempts: 4, backoff_initial_ms: 500, timeout_slack_s: 5, time_scale: 0.002 }\n",
    )
    .unwrap();
    let srv = server(
        &dir.path().join("data"),
        &first.url(),
        &["--config", config.to_str().unwrap()],
    );
    let url = srv.url();
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let (plan_id, steps) = solve_and_approve(&url).await;
        assert!(steps > 3, "needs more than three steps");
        let deadline = Instant::now() + Duration::from_secs(60);
        while first.exited().is_none() {
            assert!(Instant::now() < deadline, "the simulator did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Back on the same port with the same journal, as a restarted
        // provisioner would be; the dispatcher's retry finds it.
        let listen = format!("127.0.0.1:{port}");
        let _second = Proc::start(&[
            "provisioner-sim",
            "--listen",
            &listen,
            "--journal",
            journal.to_str().unwrap(),
            "--call-log",
            &calls_s,
        ]);
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
    });
    let executed = journal_counts(&journal);
    assert!(executed.values().all(|&n| n == 1), "{executed:?}");
    // The step whose answer was lost was called again and answered from the journal.
    assert!(calls_per_key(&calls).values().any(|&n| n >= 2));
}

#[test]
fn a_step_sticks_to_its_provisioner_through_timeouts_and_a_dead_endpoint_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (ja, jb) = (dir.path().join("a.tsv"), dir.path().join("b.tsv"));
    // Two provisioners with journals of their own that often run a step and
    // never answer: a retry sent elsewhere would run it a second time.
    let a = sim(&ja, &["--seed", "1", "--timeout-rate", "0.3"]);
    let b = sim(&jb, &["--seed", "2", "--timeout-rate", "0.3"]);
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "dispatch: { timeout_factor: 2, timeout_slack_s: 0.5, max_attempts: 8, \
         backoff_initial_ms: 20, time_scale: 0.002 }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    // The first endpoint has nothing listening.
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--provisioner",
        "http://127.0.0.1:1",
        "--provisioner",
        &a.url(),
        "--provisioner",
        &b.url(),
    ]);
    let url = srv.url();
    let inst = fleet(5);
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let (plan_id, steps) = solve_and_approve(&url).await;
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let (ran_a, ran_b) = (journal_counts(&ja), journal_counts(&jb));
        for (key, n) in ran_a.iter().chain(&ran_b) {
            assert_eq!(*n, 1, "{key} ran {n} times on one provisioner");
        }
        let both: Vec<&String> = ran_a.keys().filter(|k| ran_b.contains_key(*k)).collect();
        assert!(both.is_empty(), "steps run on both provisioners: {both:?}");
        assert_eq!(ran_a.len() + ran_b.len(), steps);
        eprintln!(
            "{steps} steps: {} on a, {} on b, none twice",
            ran_a.len(),
            ran_b.len()
        );
    });
}
