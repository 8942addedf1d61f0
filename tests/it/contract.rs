//! The gRPC API as a contract (over real loopback): errors with stable
//! reasons and every violation's path, expected versions on mutations,
//! retry-safe solves and plan verbs, health that follows the store.

use std::time::{Duration, Instant};

use edgeplan::api::pb;
use edgeplan::api::pb::inventory_client::InventoryClient;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::service::client::{push_instance, Connect};
use tonic::Code;
use tonic_types::StatusExt;

use crate::live::*;

/// The reason and domain an error carries.
fn reason(err: &tonic::Status) -> String {
    let info = err
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {err:?}"));
    assert_eq!(info.domain, "edgeplan.dev");
    info.reason
}

/// The field paths of an error's BadRequest violations.
fn violation_fields(err: &tonic::Status) -> Vec<String> {
    err.get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest on {err:?}"))
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn metadata(err: &tonic::Status, key: &str) -> String {
    err.get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_else(|| panic!("no ErrorInfo.metadata[{key}] on {err:?}"))
}

#[test]
fn errors_carry_a_stable_reason_and_every_violation_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut inv = connect(&srv.url(), InventoryClient::new).await;

        // Two bad sites in one request: both violations, each with its path.
        let bad: Vec<pb::Site> = inst.sites[..2]
            .iter()
            .map(|s| {
                let mut p = edgeplan::api::convert::site_to_pb(s);
                p.power.as_mut().unwrap().cap_kw = -5.0;
                p
            })
            .collect();
        let err = inv
            .upsert_sites(pb::UpsertSitesRequest {
                sites: bad,
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "INVALID_INVENTORY");
        let fields = violation_fields(&err);
        for s in &inst.sites[..2] {
            let path = format!("sites[id={}].power.cap_kw", s.id);
            assert!(fields.contains(&path), "{path} not in {fields:?}");
        }

        // A malformed request field: INVALID_FIELD, the field named.
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::Unspecified as i32,
                ids: vec!["x".into()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::InvalidArgument, "INVALID_FIELD".into())
        );
        let v = err.get_details_bad_request().expect("BadRequest");
        assert_eq!(v.field_violations[0].field, "kind");

        // Unknown ids: NOT_FOUND with the kind and id as metadata.
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::Workload as i32,
                ids: vec!["no-such-workload".into()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::NotFound, "NOT_FOUND".into())
        );
        assert_eq!(metadata(&err, "kind"), "workload");
        assert_eq!(metadata(&err, "id"), "no-such-workload");
        let err = connect(&srv.url(), PlacementClient::new)
            .await
            .approve_plan(pb::PlanRef {
                plan_id: 999,
                after_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::NotFound, "NOT_FOUND".into())
        );
        assert_eq!(metadata(&err, "kind"), "plan");

        // A site still in use: IN_USE.
        let busy = inst
            .workloads
            .iter()
            .find_map(|w| w.current.keys().next().cloned())
            .unwrap();
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::Site as i32,
                ids: vec![busy],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::FailedPrecondition, "IN_USE".into())
        );
    });
}

#[test]
fn a_mutation_at_a_stale_expected_version_is_aborted_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = fleet(3);
    rt().block_on(async {
        let version = push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut inv = connect(&srv.url(), InventoryClient::new).await;
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.state_gib += 1.0;
        let stale = Some(version - 1);
        let checks: Vec<tonic::Status> = vec![
            inv.upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w.clone()],
                expected_version: stale,
            })
            .await
            .unwrap_err(),
            inv.set_policy(pb::Policy {
                max_moves: Some(3),
                expected_version: stale,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            inv.delete(pb::DeleteRequest {
                kind: pb::EntityKind::Workload as i32,
                ids: vec![inst.workloads[1].id.clone()],
                expected_version: stale,
            })
            .await
            .unwrap_err(),
        ];
        for err in checks {
            assert_eq!(
                (err.code(), reason(&err)),
                (Code::Aborted, "VERSION_MISMATCH".into())
            );
            assert_eq!(metadata(&err, "version"), version.to_string());
        }
        let snap = inv
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(snap.version, version, "nothing was stored");
        assert_eq!(snap.workloads.len(), inst.workloads.len());
        // At the version it read, the same change is accepted.
        let change = inv
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: Some(version),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(change.version, version + 1);
    });
}

fn solve_request(request_id: &str, seed: u32) -> pb::SolveRequest {
    pb::SolveRequest {
        request_id: Some(request_id.into()),
        seed,
        deterministic: true,
        ..Default::default()
    }
}

#[test]
fn retried_solves_and_plan_verbs_make_no_second_plan_and_change_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&data, &sim.url(), &["--time-scale", "0.002"]);
    let inst = fleet(3);
    let plan_id = rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let first = placement
            .solve(solve_request("r1", 1))
            .await
            .unwrap()
            .into_inner();
        assert!(first.plan_id > 0);
        let plan = first.plan.as_ref().unwrap();
        assert!(!plan.steps.is_empty(), "the fleet needs moves");
        // The retry: the same answer, no second plan (which would have
        // superseded the first).
        let again = placement
            .solve(solve_request("r1", 1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, first);
        let plans = placement
            .list_plans(pb::ListPlansRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plans;
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert_eq!(plans[0].state, pb::PlanState::Recommended as i32);
        // The same id with another request is refused, naming the plan.
        let err = placement.solve(solve_request("r1", 2)).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::AlreadyExists, "REQUEST_ID_REUSED".into())
        );
        assert_eq!(metadata(&err, "plan_id"), first.plan_id.to_string());

        // Skip, approve: each twice; the repeat changes nothing.
        let last = plan.steps.last().unwrap().step_id;
        let skip = || pb::StepRef {
            plan_id: first.plan_id,
            step_id: Some(last),
        };
        let skipped = placement.skip_step(skip()).await.unwrap().into_inner();
        let skipped_again = placement.skip_step(skip()).await.unwrap().into_inner();
        assert_eq!(skipped_again.steps, skipped.steps);
        let approved = placement
            .approve_plan(pb::PlanRef {
                plan_id: first.plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            approved.summary.unwrap().state,
            pb::PlanState::Approved as i32
        );
        let again = placement
            .approve_plan(pb::PlanRef {
                plan_id: first.plan_id,
                after_revision: None,
            })
            .await
            .expect("approving an approved plan is a retry, not an error")
            .into_inner();
        assert_ne!(
            again.summary.unwrap().state,
            pb::PlanState::Recommended as i32
        );
        let (end, _) = watch_to_end(&srv.url(), first.plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32);

        // Cancel twice: the second returns the cancelled plan.
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.replicas += 1;
        connect(&srv.url(), InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: None,
            })
            .await
            .unwrap();
        let second = placement
            .solve(solve_request("r2", 1))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            let view = placement
                .cancel_plan(pb::PlanRef {
                    plan_id: second.plan_id,
                    after_revision: None,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(view.summary.unwrap().state, pb::PlanState::Cancelled as i32);
        }
        first.plan_id
    });
    // After a restart the retry still finds its plan (from the store).
    drop(srv);
    let srv = server(&data, &sim.url(), &[]);
    rt().block_on(async {
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let replay = placement
            .solve(solve_request("r1", 1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replay.plan_id, plan_id);
        assert_eq!(replay.status, "replayed");
        assert_eq!(
            replay.plan.unwrap().summary.unwrap().state,
            pb::PlanState::Succeeded as i32
        );
        let n = placement
            .list_plans(pb::ListPlansRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plans
            .len();
        assert_eq!(n, 2, "r1 and r2, nothing new");
    });
}

async fn health(url: &str) -> i32 {
    let mut client = connect(url, tonic_health::pb::health_client::HealthClient::new).await;
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "edgeplan.v1.Inventory".into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_for_health(url: &str, want: i32, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if health(url).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "health did not become {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn health_is_not_serving_while_the_store_is_lost_and_serving_when_it_is_back() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().unwrap();
    let db = pg_db();
    let data = dir.path().join("r1");
    let srv = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--store",
        &db.url,
        "--replica-id",
        "r1",
    ]);
    let name = db.name.clone();
    rt().block_on(async {
        wait_for_health(
            &srv.url(),
            ServingStatus::Serving as i32,
            Duration::from_secs(10),
        )
        .await;
        // The database refuses this replica's connections from now on.
        pg_admin(format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
        let lost = wait_for_health(
            &srv.url(),
            ServingStatus::NotServing as i32,
            Duration::from_secs(15),
        )
        .await;
        eprintln!("NOT_SERVING {lost:?} after the store was cut");
        pg_admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
        let back = wait_for_health(
            &srv.url(),
            ServingStatus::Serving as i32,
            Duration::from_secs(30),
        )
        .await;
        eprintln!("SERVING {back:?} after it was back");
    });
}

#[test]
fn the_python_client_holds_the_contract_over_tls_with_tokens() {
    use edgeplan::service::auth::{new_token, token_sha256};
    python_with_grpc();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::security::pki(dir.path());
    let (admin, reader) = (new_token(), new_token());
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert: {}\n  key: {}\nauth:\n  tokens:\n    \
             - {{ name: root, role: admin, sha256: {} }}\n    \
             - {{ name: ops, role: read-only, sha256: {} }}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            token_sha256(&admin),
            token_sha256(&reader),
        ),
    )
    .unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let data = dir.path().join("data");
    let srv = server(
        &data,
        &sim.url(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--time-scale",
            "0.002",
        ],
    );
    let instance = dir.path().join("fleet.json");
    std::fs::write(&instance, serde_json::to_string(&fleet(3)).unwrap()).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/clients/python/contract.py"))
        .args(["--server", &format!("localhost:{}", srv.port())])
        .arg("--instance")
        .arg(&instance)
        .arg("--ca")
        .arg(&pki.ca)
        .args(["--admin-token", &admin, "--reader-token", &reader])
        .args(["--proto-dir", &format!("{root}/proto")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python contract client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("contract holds"), "{stdout}");
}

#[test]
fn a_fleet_with_its_own_server_models_registers_and_round_trips_to_a_valid_file() {
    use edgeplan::server_models::builtin;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let plain_srv = server(&dir.path().join("plain"), &sim.url(), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    // Every site on the first site's built-in model; then the same fleet
    // on servers of its own: that model drawing 30 % more at every load.
    let mut plain = fleet(3);
    let model = plain.sites[0].servers.model.clone();
    for s in &mut plain.sites {
        s.servers.model = model.clone();
    }
    let mut inst = plain.clone();
    let mut custom = builtin()[&model].clone();
    custom.name = "edge-box-2026".into();
    custom.spec_result_id = None;
    custom.source = "vendor sheet (test)".into();
    custom.watts.iter_mut().for_each(|w| *w *= 1.3);
    inst.server_models = vec![custom.clone()];
    for s in &mut inst.sites {
        s.servers.model = custom.name.clone();
    }
    rt().block_on(async {
        push_instance(&Connect::plain(&plain_srv.url()), &plain)
            .await
            .unwrap();
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut inv = connect(&srv.url(), InventoryClient::new).await;
        let snap = inv
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(snap.server_models.len(), 1);
        assert_eq!(
            edgeplan::api::convert::server_model_from_pb(snap.server_models[0].clone()),
            custom
        );
        // The file the API returns is one `edgeplan validate` accepts, with the model in it.
        let file = dir.path().join("from-api.json");
        std::fs::write(&file, &snap.instance_json).unwrap();
        let out = crate::common::edgeplan(&["validate", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back: edgeplan::instance::Instance = serde_json::from_str(&snap.instance_json).unwrap();
        assert_eq!(back.server_models, vec![custom.clone()]);
        // The physics uses it: the same placement costs more energy.
        let energy = |r: pb::SolveResponse| r.kpis_before.unwrap().energy_cost_per_h;
        let (with_custom, with_builtin) = (
            energy(dry_run(&srv.url()).await),
            energy(dry_run(&plain_srv.url()).await),
        );
        assert!(
            with_custom > with_builtin * 1.1,
            "{with_custom} vs {with_builtin}"
        );
        // A site naming a model nobody declared: refused, the path named.
        let mut stray = edgeplan::api::convert::site_to_pb(&inst.sites[0]);
        stray.servers.as_mut().unwrap().model = "no-such-model".into();
        let err = inv
            .upsert_sites(pb::UpsertSitesRequest {
                sites: vec![stray],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_INVENTORY");
        let fields = violation_fields(&err);
        assert!(
            fields.contains(&format!("sites[id={}].servers.model", inst.sites[0].id)),
            "{fields:?}"
        );
        // A model in use cannot go; a bad curve is refused with its path.
        let err = inv
            .delete(pb::DeleteRequest {
                kind: pb::EntityKind::ServerModel as i32,
                ids: vec![custom.name.clone()],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "IN_USE");
        let mut bad = edgeplan::api::convert::server_model_to_pb(&custom);
        bad.watts.truncate(5);
        let err = inv
            .upsert_server_models(pb::UpsertServerModelsRequest {
                server_models: vec![bad],
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_INVENTORY");
        let fields = violation_fields(&err);
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with("server_models[0].watts")),
            "{fields:?}"
        );
    });
}

async fn list_plans(
    url: &str,
    req: pb::ListPlansRequest,
) -> Result<pb::ListPlansResponse, tonic::Status> {
    connect(url, PlacementClient::new)
        .await
        .list_plans(req)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn list_calls_page_and_filter_and_only_the_newest_ended_plans_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, "keep_ended_plans: 3\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&data, &sim.url(), &args);
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let mut ids = Vec::new();
        for seed in 1..=6 {
            let r = placement
                .solve(pb::SolveRequest {
                    seed,
                    deterministic: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            ids.push(r.plan_id);
        }
        // Each solve superseded the one before: five ended, three kept.
        let all = list_plans(&srv.url(), pb::ListPlansRequest::default())
            .await
            .unwrap();
        let listed: Vec<u64> = all.plans.iter().map(|p| p.plan_id).collect();
        assert_eq!(listed, ids[2..].to_vec());
        assert!(all.next_page_token.is_empty());
        let err = placement
            .get_plan(pb::PlanRef {
                plan_id: ids[0],
                after_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        // Pages of two, in id order, the token carrying on exactly.
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = list_plans(
                &srv.url(),
                pb::ListPlansRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(page.plans.len() <= 2);
            pages.push(page.plans.iter().map(|p| p.plan_id).collect::<Vec<_>>());
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(pages, vec![ids[2..4].to_vec(), ids[4..6].to_vec()]);
        // By state.
        let superseded = list_plans(
            &srv.url(),
            pb::ListPlansRequest {
                states: vec![pb::PlanState::Superseded as i32],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let listed: Vec<u64> = superseded.plans.iter().map(|p| p.plan_id).collect();
        assert_eq!(listed, ids[2..5].to_vec());
        let err = list_plans(
            &srv.url(),
            pb::ListPlansRequest {
                page_token: "give me everything".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(reason(&err), "INVALID_FIELD");
        assert_eq!(
            err.get_details_bad_request().unwrap().field_violations[0].field,
            "page_token"
        );

        // The inventory in pages of 4: the same entities as unpaged, the
        // policy once, no file.
        let mut inv = connect(&srv.url(), InventoryClient::new).await;
        let whole = inv
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut paged = pb::InventorySnapshot::default();
        let mut token = String::new();
        let mut n_pages = 0;
        loop {
            let page = inv
                .get_inventory(pb::GetInventoryRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    kinds: vec![],
                    effective: false,
                })
                .await
                .unwrap()
                .into_inner();
            n_pages += 1;
            let n = page.sites.len() + page.links.len() + page.regions.len() + page.workloads.len();
            assert!(n <= 4, "page {n_pages} holds {n}");
            assert!(page.instance_json.is_empty());
            assert_eq!(page.policy.is_some(), n_pages == 1);
            paged.sites.extend(page.sites);
            paged.links.extend(page.links);
            paged.regions.extend(page.regions);
            paged.workloads.extend(page.workloads);
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(
            (paged.sites, paged.links, paged.regions, paged.workloads),
            (
                whole.sites,
                whole.links,
                whole.regions,
                whole.workloads.clone()
            )
        );
        // One kind only.
        let only = inv
            .get_inventory(pb::GetInventoryRequest {
                page_size: 10_000,
                page_token: String::new(),
                kinds: vec![pb::EntityKind::Workload as i32],
                effective: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(only.sites.is_empty() && only.regions.is_empty());
        assert_eq!(only.workloads, whole.workloads);
        // A change between pages: the next page is refused.
        let first = inv
            .get_inventory(pb::GetInventoryRequest {
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        inv.set_policy(pb::Policy {
            max_moves: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
        let err = inv
            .get_inventory(pb::GetInventoryRequest {
                page_size: 2,
                page_token: first.next_page_token,
                kinds: vec![],
                effective: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::Aborted, "VERSION_MISMATCH".into())
        );
    });
    // The expired plans are gone from the store too.
    drop(srv);
    let srv = server(&data, &sim.url(), &args);
    rt().block_on(async {
        let n = list_plans(&srv.url(), pb::ListPlansRequest::default())
            .await
            .unwrap()
            .plans
            .len();
        assert_eq!(n, 4, "three ended and the recommended one");
    });
}

/// Every event of a WatchPlan stream until it ends (or `stop` events).
async fn watch(url: &str, plan_id: u64, after: Option<u64>, stop: usize) -> Vec<pb::PlanEvent> {
    use tokio_stream::StreamExt;
    let mut stream = connect(url, PlacementClient::new)
        .await
        .watch_plan(pb::PlanRef {
            plan_id,
            after_revision: after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within 60 s")
    {
        events.push(e.unwrap());
        if events.len() == stop {
            break;
        }
    }
    events
}

#[test]
fn a_watch_starts_with_the_whole_plan_and_resumes_from_the_last_revision_seen() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", "0.01"],
    );
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let url = srv.url();
        let mut placement = connect(&url, PlacementClient::new).await;
        let solved = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner();
        let id = solved.plan_id;
        let n_steps = solved.plan.as_ref().unwrap().steps.len();
        assert!(n_steps >= 2);
        let created = solved
            .plan
            .unwrap()
            .summary
            .unwrap()
            .created_at
            .expect("created_at");
        placement
            .approve_plan(pb::PlanRef {
                plan_id: id,
                after_revision: None,
            })
            .await
            .unwrap();
        // Watch two events, then the network drops.
        let seen = watch(&url, id, None, 2).await;
        let view = seen[0]
            .view
            .as_ref()
            .expect("the first event is the whole plan");
        assert_eq!(view.steps.len(), n_steps);
        assert!(seen[1].view.is_none());
        let revisions = |events: &[pb::PlanEvent]| -> Vec<u64> {
            events
                .iter()
                .map(|e| e.summary.as_ref().unwrap().revision)
                .collect()
        };
        let before = revisions(&seen);
        assert!(before.windows(2).all(|w| w[0] <= w[1]), "{before:?}");
        let last = *before.last().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // changes happen meanwhile
                                                              // Resume: the rest, starting from a revision after the last seen.
        let rest = watch(&url, id, Some(last), usize::MAX).await;
        let after = revisions(&rest);
        assert!(after[0] > last, "{last} then {after:?}");
        assert!(after.windows(2).all(|w| w[0] <= w[1]), "{after:?}");
        let end = rest.last().unwrap().summary.clone().unwrap();
        assert_eq!(end.state, pb::PlanState::Succeeded as i32);
        // Timestamps: created ≤ updated; each step started before it ended.
        let updated = end.updated_at.expect("updated_at");
        assert!((created.seconds, created.nanos) <= (updated.seconds, updated.nanos));
        let (final_view, _) = plan_view(&url, id).await;
        for s in &final_view.steps {
            let (a, b) = (
                s.started_at.expect("started_at"),
                s.ended_at.expect("ended_at"),
            );
            assert!((a.seconds, a.nanos) <= (b.seconds, b.nanos), "{s:?}");
        }
        // Resumed at the end: nothing more; from an older revision: the
        // whole (ended) plan, once.
        assert!(watch(&url, id, Some(end.revision), usize::MAX)
            .await
            .is_empty());
        let again = watch(&url, id, Some(last), usize::MAX).await;
        assert_eq!(again.len(), 1);
        assert!(again[0].view.is_some());
        // A client ahead of this replica (it saw later revisions on
        // another): nothing older than what it saw is sent; an ended plan
        // ends the stream.
        assert!(watch(&url, id, Some(end.revision + 3), usize::MAX)
            .await
            .is_empty());
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.replicas += 1;
        connect(&url, InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: None,
            })
            .await
            .unwrap();
        let next = placement
            .solve(pb::SolveRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plan_id;
        let ahead = {
            let url = url.clone();
            tokio::spawn(async move { watch(&url, next, Some(1_000), usize::MAX).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        placement
            .approve_plan(pb::PlanRef {
                plan_id: next,
                after_revision: None,
            })
            .await
            .unwrap();
        let seen = ahead.await.unwrap();
        assert!(
            seen.is_empty(),
            "events at or below revision 1000: {seen:?}"
        );
    });
}

/// `clients/python/provisioner.py`, started on a free loopback port.
struct PyProvisioner {
    child: std::process::Child,
    url: String,
}

impl PyProvisioner {
    fn start(journal: &std::path::Path, extra: &[&str]) -> PyProvisioner {
        use std::io::BufRead;
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = std::process::Command::new("python3")
            .arg(format!("{root}/clients/python/provisioner.py"))
            .args(["--listen", "127.0.0.1:0", "--journal"])
            .arg(journal)
            .args(["--proto-dir", &format!("{root}/proto")])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the Python provisioner");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the Python provisioner said {line:?}"))
            .to_string();
        PyProvisioner {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for PyProvisioner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The journal's lines: (idempotency key, outcome number).
fn py_journal(path: &std::path::Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["outcome"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_python_provisioner_runs_a_whole_plan_once_per_step_through_errors_and_failures() {
    python_with_grpc();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("steps.jsonl");
    // Every third call answers UNAVAILABLE before executing: edgeplan retries.
    let py = PyProvisioner::start(&journal, &["--unavailable-every", "3"]);
    let srv = server(
        &dir.path().join("data"),
        &py.url,
        &["--time-scale", "0.002"],
    );
    let inst = fleet(3);
    let url = srv.url();
    rt().block_on(async {
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let (plan_id, steps) = solve_and_approve(&url).await;
        assert!(steps >= 2);
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let (view, _) = plan_view(&url, plan_id).await;
        let done = py_journal(&journal);
        // Each step ran exactly once, under its own key, and succeeded.
        assert_eq!(done.len(), steps, "{done:?}");
        for s in &view.steps {
            let runs: Vec<_> = done
                .iter()
                .filter(|(k, _)| *k == s.idempotency_key)
                .collect();
            assert_eq!(runs.len(), 1, "step {} ran {} times", s.step_id, runs.len());
            assert!(
                s.message.starts_with("python provisioner:"),
                "{}",
                s.message
            );
        }
        // Some calls were answered UNAVAILABLE and retried (edgeplan's log).
        let retried = srv
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("step call failed") && l.contains("python provisioner: busy"))
            .count();
        assert!(retried > 0, "no call was refused and retried");
    });
    // The provisioner restarts refusing every step: the next plan fails
    // with its word, and the journal (read back) still has the first plan.
    drop(py);
    let py = PyProvisioner::start(&journal, &["--fail-all"]);
    drop(srv);
    let srv = server(
        &dir.path().join("data"),
        &py.url,
        &["--time-scale", "0.002"],
    );
    let url = srv.url();
    rt().block_on(async {
        let mut w = edgeplan::api::convert::workload_to_pb(&inst.workloads[0]);
        w.replicas += 1;
        connect(&url, InventoryClient::new)
            .await
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: vec![w],
                expected_version: None,
            })
            .await
            .unwrap();
        let (plan_id, _) = solve_and_approve(&url).await;
        let (end, _) = watch_to_end(&url, plan_id, Duration::from_secs(120)).await;
        assert_eq!(end.state, pb::PlanState::Failed as i32, "{end:?}");
        let (view, _) = plan_view(&url, plan_id).await;
        assert!(
            view.error.contains("refused by configuration"),
            "{}",
            view.error
        );
    });
}

/// Send `batches` on one `IngestAcked` stream; the acks, in order.
async fn ingest_acked(url: &str, batches: Vec<(&str, pb::ReadingBatch)>) -> Vec<pb::IngestAck> {
    use edgeplan::api::pb::telemetry_client::TelemetryClient;
    use tokio_stream::StreamExt;
    let items: Vec<pb::IngestBatch> = batches
        .into_iter()
        .map(|(id, b)| pb::IngestBatch {
            batch_id: id.into(),
            batch: Some(b),
        })
        .collect();
    let n = items.len();
    let mut acks = connect(url, TelemetryClient::new)
        .await
        .ingest_acked(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = acks.next().await {
        out.push(a.unwrap());
    }
    assert_eq!(out.len(), n, "one ack per batch: {out:?}");
    out
}

async fn accepted(url: &str) -> u64 {
    use edgeplan::api::pb::telemetry_client::TelemetryClient;
    connect(url, TelemetryClient::new)
        .await
        .stats(pb::TelemetryStatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accepted
}

/// The acks of the scenario both stores go through: a batch, a bad id, an
/// oversize batch, one with a stray reading, and the first one resent.
async fn ack_scenario(url: &str, inst: &edgeplan::instance::Instance) {
    let n_sites = inst.sites.len() as u64;
    let good = ambient_batch(inst, now_s(), None);
    let mut big = good.clone();
    while big.readings.len() <= 8 {
        big.readings.extend(good.readings.clone());
    }
    let mut stray = ambient_batch(inst, now_s(), None);
    stray.readings[0].site = "nowhere".into();
    let acks = ingest_acked(
        url,
        vec![
            ("gw-1/1", good.clone()),
            ("", good.clone()),
            ("gw-1/2", big),
            ("gw-1/3", stray),
            ("gw-1/1", good.clone()),
        ],
    )
    .await;
    let ids: Vec<&str> = acks.iter().map(|a| a.batch_id.as_str()).collect();
    assert_eq!(ids, ["gw-1/1", "", "gw-1/2", "gw-1/3", "gw-1/1"]);
    assert_eq!((acks[0].accepted, acks[0].duplicate), (n_sites, false));
    assert_eq!(acks[1].error_reason, "INVALID_FIELD");
    assert!(acks[1].error.contains("batch_id"), "{}", acks[1].error);
    assert_eq!(acks[2].error_reason, "INVALID_FIELD");
    assert!(acks[2].error.contains("at most 8"), "{}", acks[2].error);
    assert_eq!(acks[2].accepted, 0);
    assert_eq!((acks[3].accepted, acks[3].rejected), (n_sites - 1, 1));
    assert_eq!(acks[3].examples[0].device_id, stray_device(inst));
    assert!(acks[4].duplicate && acks[4].accepted == 0, "{:?}", acks[4]);
    // Acked means applied: the stats count each batch once.
    assert_eq!(accepted(url).await, 2 * n_sites - 1);
}

fn stray_device(inst: &edgeplan::instance::Instance) -> String {
    format!("{}/outside", inst.sites[0].id)
}

#[test]
fn ingest_acked_acks_each_batch_once_durable_and_never_applies_a_resent_one_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, "max_batch_readings: 8\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let inst = fleet(3);
    let srv = server(&data, &sim.url(), &args);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        ack_scenario(&srv.url(), &inst).await;
    });
    // After a restart the ids are still known: a resend changes nothing.
    drop(srv);
    let srv = server(&data, &sim.url(), &args);
    rt().block_on(async {
        let before = accepted(&srv.url()).await;
        let acks = ingest_acked(
            &srv.url(),
            vec![("gw-1/3", ambient_batch(&inst, now_s(), None))],
        )
        .await;
        assert!(acks[0].duplicate, "{acks:?}");
        assert_eq!(accepted(&srv.url()).await, before);
    });
}

#[test]
fn ingest_acked_in_cluster_mode_dedupes_through_the_shared_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg_db();
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, "max_batch_readings: 8\n").unwrap();
    let start = |id: &str| {
        let data = dir.path().join(id);
        Proc::start(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--store",
            &db.url,
            "--replica-id",
            id,
        ])
    };
    let (a, b) = (start("r1"), start("r2"));
    let inst = fleet(3);
    rt().block_on(async {
        push_instance(&Connect::plain(&a.url()), &inst)
            .await
            .unwrap();
        // Wait until the other replica follows the inventory.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let snap = connect(&b.url(), InventoryClient::new)
                .await
                .get_inventory(pb::GetInventoryRequest::default())
                .await
                .unwrap()
                .into_inner();
            if snap.workloads.len() == inst.workloads.len() {
                break;
            }
            assert!(Instant::now() < deadline, "r2 never saw the inventory");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ack_scenario(&a.url(), &inst).await;
        // The same batch resent to the other replica (the client failed over).
        let acks = ingest_acked(
            &b.url(),
            vec![("gw-1/1", ambient_batch(&inst, now_s(), None))],
        )
        .await;
        assert!(acks[0].duplicate, "{acks:?}");
    });
}

#[test]
fn an_anchored_price_series_is_read_at_each_solve_not_at_upload() {
    use edgeplan::instance::{Price, PricePoint};
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let anchored_srv = server(&dir.path().join("anchored"), &sim.url(), &[]);
    let plain_srv = server(&dir.path().join("plain"), &sim.url(), &[]);
    // Cheap for two hours, then dear. Anchored 2.5 h ago, the cheap hours
    // are past; unanchored, they are read as the next two hours.
    let start = now_s() - 2.5 * 3600.0;
    let with = |anchor: Option<f64>| {
        let mut inst = fleet(3);
        for s in &mut inst.sites {
            s.energy.price_per_kwh = Price::Series(vec![
                PricePoint {
                    hour: 0.0,
                    price_per_kwh: 0.01,
                },
                PricePoint {
                    hour: 2.0,
                    price_per_kwh: 1.0,
                },
            ]);
            s.energy.series_start_unix_s = anchor;
        }
        inst
    };
    rt().block_on(async {
        push_instance(&Connect::plain(&anchored_srv.url()), &with(Some(start)))
            .await
            .unwrap();
        push_instance(&Connect::plain(&plain_srv.url()), &with(None))
            .await
            .unwrap();
        let snap = connect(&anchored_srv.url(), InventoryClient::new)
            .await
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let stored = snap.sites[0]
            .energy
            .as_ref()
            .unwrap()
            .price_series_start
            .unwrap();
        assert!((edgeplan::api::convert::unix_s(stored) - start).abs() < 1e-3);
        let file: edgeplan::instance::Instance = serde_json::from_str(&snap.instance_json).unwrap();
        assert!(
            file.sites[0].energy.series_start_unix_s.is_some(),
            "the file keeps the anchor"
        );
        let energy = |r: pb::SolveResponse| r.kpis_before.unwrap().energy_cost_per_h;
        let (anchored, plain) = (
            energy(dry_run(&anchored_srv.url()).await),
            energy(dry_run(&plain_srv.url()).await),
        );
        eprintln!("energy cost per hour: anchored {anchored:.4}, unanchored {plain:.4}");
        // Energy cost goes with the mean price over the horizon: 1.0 every
        // hour anchored, against two hours at 0.01 unanchored.
        let h = f64::from(fleet(3).limits.horizon_hours.max(1));
        let expected = 1.0 / ((2.0 * 0.01 + (h - 2.0)) / h);
        assert!(
            (anchored / plain - expected).abs() < 0.01,
            "{anchored} / {plain} against {expected} over {h} h"
        );
    });
}

#[test]
fn enums_say_what_the_strings_say() {
    use edgeplan::api::pb::telemetry_client::TelemetryClient;
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = fleet(3);
    rt().block_on(async {
        let url = srv.url();
        push_instance(&Connect::plain(&url), &inst).await.unwrap();
        let mut placement = connect(&url, PlacementClient::new).await;
        let r = placement
            .solve(pb::SolveRequest {
                dry_run: true,
                deterministic: true,
                solve_method: pb::SolveMethod::Fast as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.method, "fast");
        assert_eq!(r.solve_method, pb::SolveMethod::Fast as i32);
        let status = pb::SolveStatus::try_from(r.solve_status).unwrap();
        assert_ne!(status, pb::SolveStatus::Unspecified);
        assert_eq!(
            status
                .as_str_name()
                .trim_start_matches("SOLVE_STATUS_")
                .to_lowercase(),
            r.status
        );
        let err = placement
            .solve(pb::SolveRequest {
                dry_run: true,
                method: Some("exact".into()),
                solve_method: pb::SolveMethod::Fast as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_FIELD");
        assert_eq!(
            err.get_details_bad_request().unwrap().field_violations[0].field,
            "solve_method"
        );
        // What-if rows and site states carry the enum beside the words.
        let doc = format!(
            "base: live\ntime_limit_s: 5\nscenarios:\n  - name: heat\n    perturbations:\n      \
             - heat_wave: {{ sites: [{}], delta_c: 10 }}\n",
            inst.sites[0].id
        );
        let mut rows = placement
            .what_if(pb::WhatIfRequest { scenarios: doc })
            .await
            .unwrap()
            .into_inner();
        while let Some(row) = rows.next().await {
            let row = row.unwrap();
            assert_eq!(
                super::contract::status_name(row.solve_status),
                row.status.replace('_', ""),
                "{row:?}"
            );
        }
        let mut sites = connect(&url, TelemetryClient::new)
            .await
            .watch_sites(pb::WatchSitesRequest {
                sites: vec![],
                interval_ms: 100,
            })
            .await
            .unwrap()
            .into_inner();
        let states = sites.next().await.unwrap().unwrap();
        for s in states.sites {
            let limit = pb::PowerLimit::try_from(s.binding_limit).unwrap();
            let name = limit
                .as_str_name()
                .trim_start_matches("POWER_LIMIT_")
                .replace('_', "");
            assert_eq!(name.to_lowercase(), s.binding, "{s:?}");
        }
    });
}

/// A SolveStatus as its wire name without underscores (`gaplimit`).
fn status_name(code: i32) -> String {
    pb::SolveStatus::try_from(code)
        .unwrap()
        .as_str_name()
        .trim_start_matches("SOLVE_STATUS_")
        .replace('_', "")
        .to_lowercase()
}

/// The provisioner contract's fencing: a call with a token below the
/// highest seen is refused (FAILED_PRECONDITION) and never runs, whether
/// the higher token came by Fence or by a call; the highest survives the
/// provisioner's restart. Held by both reference provisioners: `provisioner-sim`
/// and the Python one written from the proto.
#[test]
fn a_provisioner_refuses_a_deposed_leaders_token_and_remembers_the_highest_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    fencing_contract(&|| {
        let p = sim(&journal, &[]);
        (p.url(), Box::new(p))
    });
    let executed = journal_counts(&journal);
    assert_eq!(
        executed.keys().cloned().collect::<Vec<_>>(),
        ["1/0/x", "1/2/x", "1/3/x"],
        "a refused call ran"
    );
    python_with_grpc();
    let py = dir.path().join("py.jsonl");
    fencing_contract(&|| {
        let p = PyProvisioner::start(&py, &[]);
        (p.url.clone(), Box::new(p))
    });
    let keys: Vec<String> = py_journal(&py).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["1/0/x", "1/2/x", "1/3/x"], "a refused call ran");
}

/// Start a provisioner (on the same journal each time), then the fencing
/// rules, across one restart.
fn fencing_contract(start: &dyn Fn() -> (String, Box<dyn std::any::Any>)) {
    use edgeplan::api::pb::provisioner_client::ProvisionerClient;
    let step = |key: &str, token: u64| pb::StepRequest {
        idempotency_key: key.into(),
        plan_id: 1,
        workload: "w".into(),
        kind: pb::StepKind::Start as i32,
        to_site: "a".into(),
        expected_duration_s: 0.01,
        fencing_token: token,
        ..Default::default()
    };
    let (url, first) = start();
    rt().block_on(async {
        let mut p = connect(&url, ProvisionerClient::new).await;
        p.execute(step("1/0/x", 3))
            .await
            .expect("token 3 is the first");
        let fenced = p
            .fence(pb::FenceRequest {
                fencing_token: 5,
                holder: "r2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fenced.highest, 5);
        // The zombie (token 3) wakes up: refused, for a new key and for
        // the one it ran itself.
        for key in ["1/1/x", "1/0/x"] {
            let e = p.execute(step(key, 3)).await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(e.message().contains("fencing token 3"), "{}", e.message());
        }
        let e = p
            .fence(pb::FenceRequest {
                fencing_token: 4,
                holder: "r1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        p.execute(step("1/2/x", 6)).await.expect("a higher token");
    });
    drop(first);
    let (url, second) = start();
    rt().block_on(async {
        let mut p = connect(&url, ProvisionerClient::new).await;
        let e = p.execute(step("1/3/x", 5)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "after a restart: {e:?}");
        p.execute(step("1/3/x", 6))
            .await
            .expect("the highest itself");
    });
    drop(second);
}
