//! Crash safety: `edgeplan serve` killed with SIGKILL at random points while
//! telemetry streams in and a plan is being dispatched, then restarted on
//! the same data, again and again. After every restart: every acknowledged
//! reading is there, the inventory holds exactly the steps the plan says
//! succeeded; at the end the plan completes and no step ran twice at the
//! provisioner.
//!
//! `EDGEPLAN_CRASH_ITERATIONS` sets the number of kills (default 8; the full
//! run in the README uses 60). `EDGEPLAN_CRASH_SEED` picks the kill times.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeplan::api::pb;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::api::pb::telemetry_client::TelemetryClient;
use edgeplan::instance::Instance;
use edgeplan::plan::Plan;
use edgeplan::service::client::{push_instance, Connect};
use rand::{Rng, SeedableRng};

use crate::live::*;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sensors the service knows at each site.
async fn sensors_per_site(url: &str) -> BTreeMap<String, u32> {
    let mut t = connect(url, TelemetryClient::new).await;
    let mut stream = t
        .watch_sites(pb::WatchSitesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let states = stream.message().await.unwrap().unwrap();
    states
        .sites
        .into_iter()
        .map(|s| (s.site, s.fresh_sensors + s.stale_sensors))
        .collect()
}

/// The plan's view and which steps it says succeeded.
async fn plan_steps(url: &str, plan_id: u64) -> (Plan, Vec<bool>) {
    let (view, plan) = plan_view(url, plan_id).await;
    let succeeded = view
        .steps
        .iter()
        .map(|s| s.state == pb::StepState::Succeeded as i32)
        .collect();
    (plan, succeeded)
}

/// The inventory must hold exactly the succeeded steps. The dispatcher runs
/// on meanwhile, so the inventory is read between two reads of the plan
/// that agree.
async fn check_inventory(url: &str, start: &Instance, plan_id: u64) -> usize {
    let (plan, mut succeeded) = plan_steps(url, plan_id).await;
    for _ in 0..200 {
        let actual = inventory(url).await;
        let (_, again) = plan_steps(url, plan_id).await;
        if again != succeeded {
            succeeded = again;
            continue;
        }
        assert_holds_succeeded_steps(&actual, start, &plan, &succeeded);
        return succeeded.iter().filter(|&&ok| ok).count();
    }
    panic!("the plan never held still for a consistent read");
}

#[test]
fn sigkill_during_ingest_and_dispatch_loses_no_acknowledged_write() {
    let iterations = env_or("EDGEPLAN_CRASH_ITERATIONS", 8);
    let seed = env_or("EDGEPLAN_CRASH_SEED", 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let data = dir.path().join("data");
    let sim = sim(&journal, &[]);
    let inst = busy_fleet();
    let runtime = rt();
    let first = server(&data, &sim.url(), &[]);
    let (plan_id, steps, makespan_s) = runtime.block_on(async {
        push_instance(&Connect::plain(&first.url()), &inst)
            .await
            .unwrap();
        let solved = connect(&first.url(), PlacementClient::new)
            .await
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        let plan = solved.plan.unwrap();
        assert!(plan.steps.len() >= 3, "need a plan with a few steps");
        (
            solved.plan_id,
            plan.steps.len(),
            plan.summary.unwrap().makespan_s,
        )
    });
    drop(first);
    // Slow enough that the plan spans most of the server's lives.
    let scale = format!("{}", iterations as f64 * 0.4 / makespan_s.max(1.0));
    let args = ["--time-scale", scale.as_str()];
    let mut srv = server(&data, &sim.url(), &args);
    runtime.block_on(async {
        connect(&srv.url(), PlacementClient::new)
            .await
            .approve_plan(pb::PlanRef {
                plan_id,
                after_revision: None,
            })
            .await
            .unwrap();
    });
    let sites: Vec<String> = inst.sites.iter().map(|s| s.id.clone()).collect();
    let base = runtime.block_on(sensors_per_site(&srv.url()));
    let acked: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let mut sent = 0u64;
    let mut kills_mid_plan = 0;
    for life in 0..iterations {
        let kill_after = Duration::from_millis(rng.random_range(30..500));
        let url = srv.url();
        let acked_now = acked.clone();
        let first = sent;
        let sites_now = sites.clone();
        // Ingest calls, one new sensor each, until the server dies.
        let writer = runtime.spawn(async move {
            let Ok(channel) = Connect::plain(&url).channel().await else {
                return 0u64;
            };
            let mut t = TelemetryClient::new(channel);
            let mut k = 0u64;
            loop {
                let site = &sites_now[(k as usize) % sites_now.len()];
                let batch = pb::ReadingBatch {
                    site: site.clone(),
                    timestamp_s: now_s(),
                    readings: vec![pb::Reading {
                        device_id: format!("{site}/crash-{life}-{k}"),
                        device_type: pb::DeviceType::Temperature as i32,
                        placement: pb::DevicePlacement::Outside as i32,
                        value: 20.0,
                        ..Default::default()
                    }],
                };
                k += 1;
                match t.ingest(tokio_stream::iter(vec![batch])).await {
                    Ok(r) => {
                        assert_eq!(r.into_inner().accepted, 1);
                        *acked_now.lock().unwrap().entry(site.clone()).or_default() += 1;
                    }
                    Err(_) => return k, // the server died mid-call
                }
            }
        });
        runtime.block_on(async { tokio::time::sleep(kill_after).await });
        let running = runtime.block_on(async {
            connect(&srv.url(), PlacementClient::new)
                .await
                .get_plan(pb::PlanRef {
                    plan_id,
                    after_revision: None,
                })
                .await
                .map(|v| v.into_inner().summary.unwrap().state)
                .unwrap_or_default()
        });
        kills_mid_plan += usize::from(running == pb::PlanState::Executing as i32);
        srv.kill9();
        sent = first + runtime.block_on(writer).unwrap();
        srv = server(&data, &sim.url(), &args);
        runtime.block_on(async {
            let now = sensors_per_site(&srv.url()).await;
            for (site, n) in acked.lock().unwrap().iter() {
                let stored = now[site] - base.get(site).copied().unwrap_or(0);
                assert!(
                    stored >= *n,
                    "life {life}: {site} has {stored} of its {n} acknowledged sensors"
                );
            }
            check_inventory(&srv.url(), &inst, plan_id).await;
        });
    }
    runtime.block_on(async {
        let (end, _) = watch_to_end(&srv.url(), plan_id, Duration::from_secs(300)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        assert_eq!(check_inventory(&srv.url(), &inst, plan_id).await, steps);
    });
    let counts = journal_counts(&journal);
    assert_eq!(counts.len(), steps, "every step executed");
    assert!(
        counts.values().all(|&n| n == 1),
        "a step ran twice: {counts:?}"
    );
    let acked_total: u32 = acked.lock().unwrap().values().sum();
    eprintln!(
        "{iterations} kills ({kills_mid_plan} mid-plan), {acked_total} acknowledged ingest calls of {sent} sent, {steps} steps each run once"
    );
    assert!(kills_mid_plan >= 1, "no kill landed during dispatch");
}
