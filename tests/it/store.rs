//! The store suite, run against both backends: the embedded file and
//! PostgreSQL (a database of its own per test). Same ops in, same state out;
//! the generation guard, the lease and its fence, schema versions and
//! corrupt rows behave the same.

use edgeplan::execution::{Execution, StepState};
use edgeplan::problem::Problem;
use edgeplan::service::store::{Fence, Guard, Op, Policy, Store, StoreError};
use edgeplan::solver::{solve, Method, SolveOptions};

use crate::live::{fleet, pg_db, pg_query, PgDb};

/// Where one test's store lives; `open` opens it again (a restart).
enum Backend {
    Embedded(tempfile::TempDir),
    Postgres(PgDb),
}

impl Backend {
    fn open(&self) -> Result<Store, StoreError> {
        match self {
            Backend::Embedded(dir) => Store::open(None, dir.path()),
            Backend::Postgres(db) => Store::open(Some(&db.url), std::path::Path::new("unused")),
        }
    }
}

fn embedded() -> Backend {
    Backend::Embedded(tempfile::tempdir().unwrap())
}

fn postgres() -> Backend {
    Backend::Postgres(pg_db())
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_embedded {
            $(#[test] fn $name() { super::$name(super::embedded()) })*
        }
        mod on_postgres {
            $(#[test] fn $name() { super::$name(super::postgres()) })*
        }
    };
}

suite!(
    inventory_round_trips_and_survives_a_reopen,
    plans_steps_and_idempotency_keys_round_trip,
    server_models_request_keys_and_plan_deletion_round_trip,
    telemetry_snapshot_round_trips_without_a_new_generation,
    a_stale_write_is_refused_and_writes_nothing,
    the_lease_fences_a_deposed_leader,
    a_newer_schema_is_refused_by_name,
    a_corrupt_row_is_named,
);

fn policy_of(inst: &edgeplan::instance::Instance) -> Policy {
    Policy {
        name: inst.name.clone(),
        objective: inst.objective.clone(),
        limits: inst.limits.clone(),
    }
}

fn put_all(store: &Store, inst: &edgeplan::instance::Instance, version: u64) -> u64 {
    let policy = policy_of(inst);
    let mut ops = vec![Op::Policy(&policy), Op::Version(version)];
    ops.extend(inst.sites.iter().map(Op::PutSite));
    ops.extend(inst.network.links.iter().map(Op::PutLink));
    ops.extend(inst.regions.iter().map(Op::PutRegion));
    ops.extend(inst.workloads.iter().map(Op::PutWorkload));
    store.commit(&ops).unwrap()
}

fn inventory_round_trips_and_survives_a_reopen(b: Backend) {
    let inst = fleet(3);
    let store = b.open().unwrap();
    assert_eq!(store.load().unwrap().version, 0);
    put_all(&store, &inst, 7);
    let back = store.load().unwrap();
    assert_eq!(back.version, 7);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(back.instance.sites.iter().map(|s| s.id.clone()).collect()),
        sorted(inst.sites.iter().map(|s| s.id.clone()).collect())
    );
    for s in &inst.sites {
        assert_eq!(back.instance.sites.iter().find(|x| x.id == s.id), Some(s));
    }
    for w in &inst.workloads {
        assert_eq!(
            back.instance.workloads.iter().find(|x| x.id == w.id),
            Some(w)
        );
    }
    assert_eq!(back.instance.network.links.len(), inst.network.links.len());
    assert_eq!(back.instance.regions.len(), inst.regions.len());
    assert_eq!(back.instance.objective, inst.objective);

    // Deletes, then a reopen: what is committed stays, what is deleted is gone.
    let gone = inst.workloads[0].id.clone();
    let site = inst.sites[0].id.clone();
    store
        .commit(&[
            Op::DeleteWorkload(&gone),
            Op::DeleteSite(&site),
            Op::Version(8),
        ])
        .unwrap();
    drop(store);
    let again = b.open().unwrap().load().unwrap();
    assert_eq!(again.version, 8);
    assert!(again.instance.workloads.iter().all(|w| w.id != gone));
    assert!(again.instance.sites.iter().all(|s| s.id != site));
    assert_eq!(again.instance.workloads.len(), inst.workloads.len() - 1);
}

/// A plan with steps for the fleet: the fast path's target from the
/// generated placement.
fn a_plan(inst: &edgeplan::instance::Instance) -> edgeplan::plan::Plan {
    let problem = Problem::build(inst).unwrap();
    let solved = solve(
        &problem,
        &SolveOptions {
            method: Method::Fast,
            ..Default::default()
        },
    )
    .unwrap();
    let target = problem.placement_of(&solved.x);
    let plan = edgeplan::plan::plan(inst, &problem, &target).unwrap();
    assert!(!plan.steps.is_empty(), "the fleet's plan moves something");
    plan
}

fn plans_steps_and_idempotency_keys_round_trip(b: Backend) {
    let inst = fleet(5);
    let store = b.open().unwrap();
    put_all(&store, &inst, 1);
    let mut exec = Execution::new(1, a_plan(&inst), "test".into(), 1);
    store.commit(&[Op::NewPlan(&exec)]).unwrap();
    exec.approve().unwrap();
    exec.start(0).unwrap();
    store
        .commit(&[Op::PlanState(&exec), Op::Step(1, 0, &exec.steps[0])])
        .unwrap();
    exec.finish(0, true, "done".into()).unwrap();
    store
        .commit(&[Op::PlanState(&exec), Op::Step(1, 0, &exec.steps[0])])
        .unwrap();
    let second = Execution::new(2, a_plan(&inst), "second".into(), 1);
    store.commit(&[Op::NewPlan(&second)]).unwrap();
    drop(store);

    let back = b.open().unwrap().load().unwrap();
    assert_eq!(back.plans.len(), 2);
    // JSON keeps floats to the last digit or so; compare what identifies a plan.
    let same = |a: &Execution, b: &Execution| {
        assert_eq!(
            (a.id, a.state, &a.reason, a.inventory_version, &a.error),
            (b.id, b.state, &b.reason, b.inventory_version, &b.error)
        );
        assert_eq!(a.steps, b.steps, "step states, as committed");
        assert_eq!(a.plan.state_hash, b.plan.state_hash);
        assert_eq!(a.plan.target, b.plan.target);
        assert_eq!(a.plan.steps.len(), b.plan.steps.len());
        for (x, y) in a.plan.steps.iter().zip(&b.plan.steps) {
            assert_eq!(
                (&x.workload, &x.from, &x.to, x.wave),
                (&y.workload, &y.from, &y.to, y.wave)
            );
        }
    };
    same(&back.plans[0], &exec);
    same(&back.plans[1], &second);
    assert_eq!(back.plans[0].steps[0].state, StepState::Succeeded);
    for k in 0..exec.steps.len() {
        assert_eq!(back.plans[0].idempotency_key(k), exec.idempotency_key(k));
    }
    assert_ne!(back.plans[1].idempotency_key(0), exec.idempotency_key(0));
}

fn server_models_request_keys_and_plan_deletion_round_trip(b: Backend) {
    let mut inst = fleet(5);
    let mut model = edgeplan::server_models::builtin()[&inst.sites[0].servers.model].clone();
    model.name = "own-model".into();
    inst.server_models = vec![model];
    let store = b.open().unwrap();
    put_all(&store, &inst, 1);
    store
        .commit(&[Op::ServerModels(&inst.server_models)])
        .unwrap();
    let mut first = Execution::new(1, a_plan(&inst), "first".into(), 1);
    first.request = Some(edgeplan::execution::RequestKey {
        id: "r-1".into(),
        digest: "abc".into(),
    });
    let second = Execution::new(2, a_plan(&inst), "second".into(), 1);
    assert!(!first.steps.is_empty());
    store
        .commit(&[Op::NewPlan(&first), Op::NewPlan(&second)])
        .unwrap();
    drop(store);
    let store = b.open().unwrap();
    let back = store.load().unwrap();
    assert_eq!(back.instance.server_models, inst.server_models);
    assert_eq!(back.plans[0].request, first.request);
    // Retention deletes a plan with its steps; the other stays whole.
    store.commit(&[Op::DeletePlan(&first)]).unwrap();
    drop(store);
    let back = b.open().unwrap().load().unwrap();
    assert_eq!(back.plans.len(), 1);
    assert_eq!(back.plans[0].id, 2);
    assert_eq!(back.plans[0].steps.len(), second.steps.len());
}

fn telemetry_snapshot_round_trips_without_a_new_generation(b: Backend) {
    let store = b.open().unwrap();
    let g = store.commit(&[Op::Version(1)]).unwrap();
    let bytes = br#"{"accepted": 3}"#;
    let after = store.commit(&[Op::Telemetry(bytes, 42)]).unwrap();
    assert_eq!(after, g, "a telemetry snapshot is not an inventory change");
    drop(store);
    let back = b.open().unwrap().load().unwrap();
    assert_eq!(back.telemetry.as_deref(), Some(&bytes[..]));
    assert_eq!(back.telemetry_through, 42);
    assert_eq!(back.generation, g);
}

fn a_stale_write_is_refused_and_writes_nothing(b: Backend) {
    let store = b.open().unwrap();
    let g1 = store.commit(&[Op::Version(1)]).unwrap();
    assert_eq!(store.generation().unwrap(), g1);
    let guard = |g| Guard {
        generation: Some(g),
        fence: None,
    };
    let g2 = store.commit_guarded(&[Op::Version(2)], &guard(g1)).unwrap();
    assert_eq!(g2, g1 + 1);
    // Another writer read g1 and writes after g2: refused, nothing written.
    match store.commit_guarded(&[Op::Version(99)], &guard(g1)) {
        Err(StoreError::Stale { expected, found }) => {
            assert_eq!((expected, found), (g1, g2));
        }
        other => panic!("expected a stale refusal, got {other:?}"),
    }
    let back = store.load().unwrap();
    assert_eq!((back.version, back.generation), (2, g2));
}

fn the_lease_fences_a_deposed_leader(b: Backend) {
    let store = b.open().unwrap();
    let a = store
        .acquire_lease("a", 30.0)
        .unwrap()
        .expect("a free lease");
    assert!(
        store.acquire_lease("b", 30.0).unwrap().is_none(),
        "a holds it"
    );
    let renewed = store.acquire_lease("a", 30.0).unwrap().expect("renewal");
    assert_eq!(renewed, a, "a renewal keeps the fence token");
    let fenced = |f: &Fence| Guard {
        generation: None,
        fence: Some(f.clone()),
    };
    store
        .commit_guarded(&[Op::Version(1)], &fenced(&a))
        .unwrap();

    // a's lease runs out (a short one, then wait): b takes over with a new token.
    store.acquire_lease("a", 0.2).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let bf = store
        .acquire_lease("b", 30.0)
        .unwrap()
        .expect("an expired lease");
    assert_eq!(bf.token, a.token + 1);
    match store.commit_guarded(&[Op::Version(66)], &fenced(&a)) {
        Err(StoreError::Fenced { holder, fence }) => {
            assert_eq!((holder.as_str(), fence), ("a", a.token))
        }
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
    assert_eq!(
        store.load().unwrap().version,
        1,
        "the deposed leader wrote nothing"
    );
    store
        .commit_guarded(&[Op::Version(2)], &fenced(&bf))
        .unwrap();

    // A clean hand-over: b releases, a takes it at once.
    store.release_lease("b").unwrap();
    let a2 = store.acquire_lease("a", 30.0).unwrap().expect("released");
    assert_eq!(a2.token, bf.token + 1);
}

/// Write one raw value into the embedded file, behind the store's back.
fn redb_put(dir: &std::path::Path, table: &str, key: &str, value: &[u8]) {
    let db = redb::Database::create(dir.join("edgeplan.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(table);
        txn.open_table(def).unwrap().insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}

fn a_newer_schema_is_refused_by_name(b: Backend) {
    drop(b.open().unwrap()); // created at this build's version
    match &b {
        Backend::Embedded(dir) => {
            redb_put(dir.path(), "meta", "schema", b"99");
        }
        Backend::Postgres(db) => {
            // Opening again applies nothing twice.
            drop(b.open().unwrap());
            let rows = pg_query(&db.url, "SELECT count(*) FROM schema_migrations");
            assert_eq!(
                rows[0][0].as_deref(),
                Some("2"),
                "the two migrations, once each"
            );
            pg_query(
                &db.url,
                "INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')",
            );
        }
    }
    let err = b
        .open()
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

fn a_corrupt_row_is_named(b: Backend) {
    let inst = fleet(2);
    let store = b.open().unwrap();
    put_all(&store, &inst, 1);
    drop(store);
    let site = inst.sites[1].id.clone();
    match &b {
        Backend::Embedded(dir) => {
            redb_put(dir.path(), "sites", &site, b"{not json");
        }
        Backend::Postgres(db) => {
            pg_query(
                &db.url,
                &format!("UPDATE sites SET value = '\\x7b6e6f74' WHERE id = '{site}'"),
            );
        }
    }
    let err = b.open().unwrap().load().err().expect("corrupt").to_string();
    assert!(err.contains(&format!("sites/{site}")), "{err}");
}

/// The telemetry log (PostgreSQL only: the embedded store takes telemetry
/// directly): appends in order, dedupe keys drop a second copy, pruning
/// keeps what is recent.
#[test]
fn the_telemetry_log_keeps_order_and_drops_duplicates() {
    use edgeplan::service::store::LogEntry;
    let b = postgres();
    let store = b.open().unwrap();
    let entry = |key: Option<&str>, byte: u8| LogEntry {
        dedupe: key.map(str::to_string),
        bus: None,
        origin: Some("r1".into()),
        batch: vec![byte],
    };
    let first = store
        .append_telemetry(vec![
            entry(Some("m1"), 1),
            entry(Some("m2"), 2),
            entry(None, 3),
        ])
        .unwrap();
    assert!(first.iter().all(Option::is_some));
    let again = store
        .append_telemetry(vec![entry(Some("m2"), 9), entry(Some("m3"), 4)])
        .unwrap();
    assert_eq!(again[0], None, "m2 is logged already");
    let all = store.telemetry_since(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|l| l.batch[0]).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let after_two = store.telemetry_since(all[1].seq, 100).unwrap();
    assert_eq!(after_two.len(), 2);
    // Too recent to prune; then everything up to the second entry is old enough.
    assert_eq!(store.prune_telemetry(all[1].seq, 600.0).unwrap(), 0);
    assert_eq!(store.prune_telemetry(all[1].seq, 0.0).unwrap(), 2);
    assert_eq!(store.telemetry_since(0, 100).unwrap().len(), 2);

    // Bus messages: a key outlives its batch in the log, and goes only once
    // its message has left the stream (or the stream is another).
    use edgeplan::service::store::BusKey;
    let bus = |created: &str, seq: u64| LogEntry {
        dedupe: None,
        bus: Some(BusKey {
            stream: "S".into(),
            created: created.into(),
            seq,
        }),
        origin: None,
        batch: vec![seq as u8],
    };
    let logged = store
        .append_telemetry(vec![bus("c1", 5), bus("c1", 6), bus("c0", 5), bus("c1", 5)])
        .unwrap();
    assert_eq!(
        logged.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![true, true, true, false]
    );
    let last = store.telemetry_since(0, 100).unwrap().last().unwrap().seq;
    assert_eq!(store.prune_telemetry(last, 0.0).unwrap(), 5);
    assert_eq!(
        store
            .append_telemetry(vec![bus("c1", 5), bus("c1", 6)])
            .unwrap(),
        vec![None, None],
        "the log pruned, the keys stay"
    );
    // Too recent, then c1's 5 (below the first sequence, 6) and all of c0.
    assert_eq!(store.prune_bus_keys("S", "c1", 6, 600.0).unwrap(), 0);
    assert_eq!(store.prune_bus_keys("S", "c1", 6, 0.0).unwrap(), 2);
    assert_eq!(
        store
            .append_telemetry(vec![bus("c1", 5), bus("c1", 6), bus("c0", 5)])
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        vec![true, false, true]
    );

    // The embedded store has no log, and says so.
    let e = embedded().open().unwrap();
    let err = e.telemetry_since(0, 1).unwrap_err().to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
}

/// A store URL that is neither empty nor postgres:// is refused by name.
#[test]
fn an_unknown_store_url_is_refused() {
    let err = Store::open(Some("mysql://x"), std::path::Path::new("/nonexistent"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("mysql://x"), "{err}");
    let err = Store::open(
        Some("postgres://nobody@127.0.0.1:1/none"),
        std::path::Path::new("/x"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
