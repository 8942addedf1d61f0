//! Live processes for the service tests: `edgeplan serve` and
//! `edgeplan provisioner-sim` started as a user would, and the clients and
//! checks the tests share.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplan::api::pb;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::gen::{generate, GenOptions};
use edgeplan::instance::Instance;

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: String,
    /// Everything it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Start `edgeplan <args>` and wait for its "listening on ADDR" line.
    pub fn start(args: &[&str]) -> Proc {
        // EDGEPLAN_TEST_LOG (an EDGEPLAN_LOG filter) shows more when chasing a failure.
        let level = std::env::var("EDGEPLAN_TEST_LOG").unwrap_or("edgeplan=info".into());
        Proc::start_with(args, &[("EDGEPLAN_LOG", level.as_str())])
    }

    /// As [`Proc::start`], with these environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeplan"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgeplan");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("edgeplan {args:?} exited before listening"))
                .expect("read stderr");
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        // Keep draining so the child never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("  | {line}");
                kept.lock().unwrap().push(line);
            }
        });
        Proc { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGKILL: no shutdown hook runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Has it exited (and how)?
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

pub fn sim(journal: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "provisioner-sim",
        "--listen",
        "127.0.0.1:0",
        "--journal",
        journal.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

pub fn server(data: &Path, provisioner: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--provisioner",
        provisioner,
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// A loopback port free a moment ago (for servers that need one before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn fleet(seed: u64) -> Instance {
    generate(&GenOptions {
        sites: 5,
        workloads: 14,
        replicas: None,
        seed,
        load: 0.6,
    })
    .expect("gen")
}

/// A fleet whose optimum moves several workloads: a plan of a few steps.
pub fn busy_fleet() -> Instance {
    generate(&GenOptions {
        sites: 8,
        workloads: 40,
        replicas: None,
        seed: 5,
        load: 0.6,
    })
    .expect("gen")
}

/// One Ingest call with every site's ambient reading at `now`: its summary.
pub async fn ingest_ambient(url: &str, inst: &Instance, now: f64) -> pb::IngestSummary {
    connect(
        url,
        edgeplan::api::pb::telemetry_client::TelemetryClient::new,
    )
    .await
    .ingest(tokio_stream::iter(vec![ambient_batch(inst, now, None)]))
    .await
    .unwrap()
    .into_inner()
}

pub fn ambient_batch(inst: &Instance, now: f64, hot: Option<(&str, f64)>) -> pb::ReadingBatch {
    pb::ReadingBatch {
        readings: inst
            .sites
            .iter()
            .map(|s| pb::Reading {
                device_id: format!("{}/outside", s.id),
                site: s.id.clone(),
                rack: String::new(),
                device_type: pb::DeviceType::Temperature as i32,
                placement: pb::DevicePlacement::Outside as i32,
                unit: "C".into(),
                value: match hot {
                    Some((id, t)) if id == s.id => t,
                    _ => s.ambient.current_c,
                },
                timestamp_s: now,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub async fn connect<T>(url: &str, make: impl Fn(tonic::transport::Channel) -> T) -> T {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    make(ch)
}

/// Watch a plan until it ends; returns its final summary and the step events seen.
pub async fn watch_to_end(url: &str, plan_id: u64, limit: Duration) -> (pb::PlanSummary, usize) {
    let mut placement = connect(url, PlacementClient::new).await;
    let mut stream = placement
        .watch_plan(pb::PlanRef {
            plan_id,
            after_revision: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    let mut step_events = 0;
    let deadline = Instant::now() + limit;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), stream.message())
        .await
        .expect("plan did not end in time")
    {
        step_events += usize::from(ev.step.is_some());
        last = ev.summary;
    }
    (last.expect("at least one event"), step_events)
}

/// Executions at the provisioner, by idempotency key.
pub fn journal_counts(path: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let key = line.split('\t').next().unwrap().to_string();
        // `fence\t<token>`: the highest fencing token seen, not a step.
        if key != "fence" {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// Solve on the live state and approve the plan: its id and number of steps.
pub async fn solve_and_approve(url: &str) -> (u64, usize) {
    let mut placement = connect(url, PlacementClient::new).await;
    let solved = placement
        .solve(pb::SolveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let steps = solved.plan.as_ref().map_or(0, |p| p.steps.len());
    placement
        .approve_plan(pb::PlanRef {
            plan_id: solved.plan_id,
            after_revision: None,
        })
        .await
        .unwrap();
    (solved.plan_id, steps)
}

/// A dry-run solve on the live state (10 s at most): nothing is stored.
pub async fn dry_run(url: &str) -> pb::SolveResponse {
    connect(url, PlacementClient::new)
        .await
        .solve(pb::SolveRequest {
            time_limit_s: Some(10.0),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A plan as the API shows it, and as `edgeplan plan` writes it.
pub async fn plan_view(url: &str, plan_id: u64) -> (pb::PlanView, edgeplan::plan::Plan) {
    let view = connect(url, PlacementClient::new)
        .await
        .get_plan(pb::PlanRef {
            plan_id,
            after_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    let plan = serde_json::from_str(&view.plan_json).unwrap();
    (view, plan)
}

/// The service's inventory, as an instance.
pub async fn inventory(url: &str) -> Instance {
    let snap = connect(
        url,
        edgeplan::api::pb::inventory_client::InventoryClient::new,
    )
    .await
    .get_inventory(pb::GetInventoryRequest::default())
    .await
    .unwrap()
    .into_inner();
    serde_json::from_str(&snap.instance_json).unwrap()
}

/// The inventory must be where `start` was plus exactly the plan's steps
/// that succeeded (each moves one replica; a step's outcome and its move
/// are one commit).
pub fn assert_holds_succeeded_steps(
    actual: &Instance,
    start: &Instance,
    plan: &edgeplan::plan::Plan,
    succeeded: &[bool],
) {
    let mut expect = start.clone();
    for (step, _) in plan.steps.iter().zip(succeeded).filter(|(_, &ok)| ok) {
        let w = expect
            .workloads
            .iter_mut()
            .find(|w| w.id == step.workload)
            .unwrap();
        edgeplan::execution::apply_step(w, step);
    }
    for (a, e) in actual.workloads.iter().zip(&expect.workloads) {
        assert_eq!(
            a.current, e.current,
            "{}: the inventory and the plan's step states disagree",
            a.id
        );
    }
}

/// The PostgreSQL server the cluster tests use (`scripts/services.sh` starts
/// one and `make test` passes its URL).
pub fn pg_url() -> String {
    std::env::var("EDGEPLAN_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "EDGEPLAN_TEST_PG is not set: run the tests with `make test`, or start \
             the servers with scripts/services.sh and export target/services.env"
        )
    })
}

/// The NATS server (JetStream on) the bus tests use.
pub fn nats_url() -> String {
    std::env::var("EDGEPLAN_TEST_NATS").unwrap_or_else(|_| {
        panic!(
            "EDGEPLAN_TEST_NATS is not set: run the tests with `make test`, or start \
             the servers with scripts/services.sh and export target/services.env"
        )
    })
}

/// A database of its own for one test, dropped at the end.
pub struct PgDb {
    pub url: String,
    pub name: String,
}

/// Run `sql` on the server's `postgres` database (on a thread of its own:
/// the sync client cannot run inside a test's runtime).
pub fn pg_admin(sql: String) {
    let admin = pg_url();
    std::thread::spawn(move || {
        let mut c =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect to PostgreSQL");
        // One statement at a time: DROP/CREATE DATABASE refuse a transaction block.
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            c.batch_execute(stmt).expect("admin SQL");
        }
    })
    .join()
    .unwrap();
}

/// Rows of `sql` on the test's database, each row's columns as text.
pub fn pg_query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.simple_query(&sql)
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    })
    .join()
    .unwrap()
}

pub fn pg_db() -> PgDb {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "edgeplan_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    pg_admin(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}"
    ));
    let base = pg_url();
    let url = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    };
    PgDb { url, name }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::panic::catch_unwind(|| {
            pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        });
    }
}

/// The Python clients' tests need grpcio, grpcio-tools and
/// googleapis-common-protos: `make test` installs them (scripts/deps.sh);
/// a bare `cargo test` on a machine without them fails here, saying so.
pub fn python_with_grpc() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools, google.rpc.error_details_pb2",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python client tests need grpcio, grpcio-tools and googleapis-common-protos: \
         run scripts/deps.sh (or `make test`)"
    );
}
