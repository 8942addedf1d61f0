//! The fault harness: three `edgeplan serve` replicas, PostgreSQL, NATS
//! JetStream and `provisioner-sim` on loopback, with readings streaming in
//! (gRPC through the replicas and JetStream publishes) and plans approved,
//! superseded and executed all along, while faults are injected at random
//! points:
//!
//! - `pause`: SIGSTOP of the leader for longer than its lease; another takes
//!   over and re-plans; then SIGCONT (the zombie wakes up);
//! - `zombie-call`: the leader's link to the provisioner cut, a plan
//!   approved through it (its calls held in the cut), the leader paused
//!   past its lease; once another leads (and has fenced the provisioner),
//!   the link heals and the held calls land with the old token;
//! - `partition-store`, `partition-bus`, `partition-provisioner`: the
//!   leader's own link to PostgreSQL, NATS or the provisioner is cut, then
//!   healed. Each replica reaches each server through a link of its own (a
//!   TCP relay this test runs): cut, it stops carrying bytes and holds what
//!   was in flight, which arrives when it heals — a partition that TCP's
//!   retransmissions outlive, the case where a stale request lands late;
//! - `restart-store`, `restart-bus`: PostgreSQL (`pg_ctl -m fast`) and
//!   nats-server restarted mid-run, servers of this test's own;
//! - `skew`: the leader's wall clock set 1–60 min ahead or behind for a
//!   few seconds (libfaketime, preloaded in every replica, offset by a
//!   file of the replica's own; monotonic clocks untouched).
//!
//! Then a checker reads what everyone recorded — the provisioner's journal
//! and its log of every call with its fencing token, every replica's plans
//! and steps, the readings acknowledged — and fails the run, printing the
//! history, on any violation: a step executed twice, a call accepted with a
//! token below one already seen, a step executed that the store does not
//! hold as succeeded (or the reverse), an inventory that is not the start
//! plus exactly the executed steps, a plan or step state that moved back,
//! an acknowledged reading missing.
//!
//! `EDGEPLAN_FAULT_ROUNDS` (default 1: one fault of each kind) sets the
//! rounds; `EDGEPLAN_FAULT_SEED` the seed. The full run of the README:
//! `EDGEPLAN_FAULT_ROUNDS=100 cargo test --release --test it cluster_faults -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use edgeplan::api::pb;
use edgeplan::api::pb::placement_client::PlacementClient;
use edgeplan::api::pb::telemetry_client::TelemetryClient;
use edgeplan::instance::Instance;
use edgeplan::service::client::{push_instance, Connect};

use crate::live::*;

/// A TCP relay that can be cut (nothing passes, what is in flight is held)
/// and healed (held bytes are delivered, late).
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Link {
    async fn start(upstream: String) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let (c, upstream) = (c.clone(), upstream.clone());
                tokio::spawn(async move {
                    // A connection made while cut waits for the heal.
                    held(&c).await;
                    let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::spawn(pipe(dr, uw, c.clone()));
                    tokio::spawn(pipe(ur, dw, c));
                });
            }
        });
        Link { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

async fn held(cut: &AtomicBool) {
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        held(&cut).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read just before a cut: held until it heals.
        held(&cut).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// PostgreSQL and nats-server of this test's own (`scripts/services.sh`
/// with its own directory and ports), so that restarting them touches no
/// other test.
pub struct Servers {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    /// `127.0.0.1:port` of each.
    pub pg: String,
    pub nats: String,
}

impl Servers {
    pub fn start() -> Servers {
        // Not in a tempdir: PostgreSQL's own user must reach it.
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/edgeplan-servers-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let (pg_port, nats_port) = (free_port(), free_port());
        let env = vec![
            ("SERVICES_DIR".to_string(), dir.display().to_string()),
            ("PG_PORT".to_string(), pg_port.to_string()),
            ("NATS_PORT".to_string(), nats_port.to_string()),
            ("ENV_FILE".to_string(), format!("{}.env", dir.display())),
        ];
        let s = Servers {
            dir,
            env,
            pg: format!("127.0.0.1:{pg_port}"),
            nats: format!("127.0.0.1:{nats_port}"),
        };
        s.run("start");
        s
    }

    pub fn run(&self, what: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(what)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "services.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// libfaketime (Debian's libfaketime, which `scripts/services.sh start`
/// installs), for the `skew` fault.
fn faketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.expect(
        "libfaketime is missing (the skew fault needs it): `scripts/services.sh start` \
         installs it as root, or apt-get install libfaketime",
    )
}

const KINDS: [&str; 8] = [
    "pause",
    "zombie-call",
    "partition-store",
    "partition-bus",
    "partition-provisioner",
    "restart-store",
    "restart-bus",
    "skew",
];

/// The telemetry log kept after a snapshot: short, so that every run
/// prunes the log (and its dedupe keys) while readings still arrive.
const TELEMETRY_KEEP_S: f64 = 5.0;

/// The lease the harness runs with: short, so that a hundred pauses fit.
const LEASE_TTL_S: f64 = 2.0;

/// Renewed this often; a leader stops at lease − renewal (its default).
const RENEW_INTERVAL_S: f64 = 0.4;
const RENEW_DEADLINE_S: f64 = LEASE_TTL_S - RENEW_INTERVAL_S;

struct Replica {
    proc: Option<Proc>,
    /// libfaketime's offset for this replica's wall clock.
    clock: PathBuf,
    url: String,
    pg: Link,
    nats: Link,
    provisioner: Link,
}

/// What the background load recorded.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    acked: AtomicU64,
    plans_approved: AtomicU64,
    /// Per observer (replica) and plan: the states seen, in order.
    regressions: Mutex<Vec<String>>,
}

fn plan_rank(state: i32) -> u8 {
    match pb::PlanState::try_from(state).unwrap_or(pb::PlanState::Unspecified) {
        pb::PlanState::Recommended => 1,
        pb::PlanState::Approved => 2,
        pb::PlanState::Executing | pb::PlanState::Cancelling => 3,
        pb::PlanState::Unspecified => 0,
        _ => 4, // terminal
    }
}

fn step_rank(state: i32) -> u8 {
    match pb::StepState::try_from(state).unwrap_or(pb::StepState::Unspecified) {
        pb::StepState::Pending => 1,
        pb::StepState::Running => 2,
        pb::StepState::Unspecified => 0,
        _ => 3, // ended
    }
}

async fn try_client(url: &str) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()
}

async fn replica_status(url: &str) -> Option<pb::ReplicaStatus> {
    let mut p = PlacementClient::new(try_client(url).await?);
    Some(p.replica(pb::ReplicaRequest {}).await.ok()?.into_inner())
}

/// The replica that leads now (one only), waiting up to `limit`.
async fn wait_leader(urls: &[String], except: Option<usize>, limit: Duration) -> Option<usize> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        for (i, u) in urls.iter().enumerate() {
            if Some(i) != except && replica_status(u).await.is_some_and(|s| s.leader) {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// How leadership passed on after `old`'s link to the store was cut, in
/// seconds from the cut: when `old` was last seen leading, when it was
/// first seen not leading, and who led next, from when.
struct Handover {
    last_led: Option<f64>,
    stopped_at: Option<f64>,
    next: Option<usize>,
    next_at: Option<f64>,
}

async fn handover(urls: &[String], old: usize, limit: Duration) -> Handover {
    let t0 = Instant::now();
    let mut h = Handover {
        last_led: None,
        stopped_at: None,
        next: None,
        next_at: None,
    };
    while t0.elapsed() < limit {
        let leads = replica_status(&urls[old]).await.map(|s| s.leader);
        let at = t0.elapsed().as_secs_f64();
        match leads {
            Some(true) => h.last_led = Some(at),
            Some(false) if h.stopped_at.is_none() => h.stopped_at = Some(at),
            _ => {}
        }
        for (i, u) in urls.iter().enumerate() {
            if i != old && replica_status(u).await.is_some_and(|s| s.leader) {
                h.next = Some(i);
                h.next_at = Some(t0.elapsed().as_secs_f64());
                return h;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn cluster_faults_pauses_partitions_and_restarts_break_no_promise() {
    let rounds: usize = std::env::var("EDGEPLAN_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("EDGEPLAN_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(26);
    // A comma-separated subset of KINDS, to chase one fault.
    let kinds: Vec<&str> = match std::env::var("EDGEPLAN_FAULT_KINDS") {
        Ok(v) => KINDS
            .into_iter()
            .filter(|k| v.split(',').any(|w| w == *k))
            .collect(),
        Err(_) => KINDS.to_vec(),
    };
    assert!(
        !kinds.is_empty(),
        "EDGEPLAN_FAULT_KINDS names none of {KINDS:?}"
    );
    let faketime = faketime();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let calls = dir.path().join("calls.tsv");
    let sim = sim(
        &journal,
        &["--call-log", calls.to_str().unwrap(), "--speed", "1"],
    );
    let tag = format!("f{}", std::process::id());
    let (stream, prefix) = (format!("EDGEPLAN_FAULTS_{tag}"), format!("{tag}.telemetry"));
    let runtime = rt();
    let inst = busy_fleet();
    let load = Arc::new(Load::default());
    let mut replicas: Vec<Replica> = runtime.block_on(async {
        let mut out = Vec::new();
        for id in ["r1", "r2", "r3"] {
            let pg = Link::start(servers.pg.clone()).await;
            let nats = Link::start(servers.nats.clone()).await;
            let provisioner = Link::start(sim.addr.clone()).await;
            let cfg = dir.path().join(format!("{id}.yaml"));
            std::fs::write(
                &cfg,
                format!(
                    // Every plan kept: the checker reads the whole history.
                    "keep_ended_plans: 1000000\n\
                     cluster:\n  poll_interval_ms: 100\n  telemetry_snapshot_s: 1\n  \
                     telemetry_keep_s: {TELEMETRY_KEEP_S}\n  lease_ttl_s: {LEASE_TTL_S}\n  renew_interval_s: {RENEW_INTERVAL_S}\n\
                     telemetry:\n  late_window_s: 1000000\n\
                     dispatch: {{ timeout_factor: 2, timeout_slack_s: 1, max_attempts: 3, \
                     backoff_initial_ms: 100, time_scale: 0.02 }}\n\
                     nats:\n  url: nats://127.0.0.1:{}\n  stream: {stream}\n  \
                     subject_prefix: {prefix}\n  consumer: edgeplan\n  batch: 16\n  ack_wait_s: 2\n",
                    nats.port
                ),
            )
            .unwrap();
            let store = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
            let data = dir.path().join(id);
            // Its wall clock is libfaketime's, set by a file of its own
            // (re-read every second); its monotonic clock is the real one.
            let clock = dir.path().join(format!("{id}.faketime"));
            std::fs::write(&clock, "+0\n").unwrap();
            let proc = Proc::start_with(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
                "--store",
                &store,
                "--replica-id",
                id,
                "--provisioner",
                &format!("http://127.0.0.1:{}", provisioner.port),
            ], &[
                ("EDGEPLAN_LOG", "edgeplan=info"),
                ("LD_PRELOAD", faketime.to_str().unwrap()),
                ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
                ("FAKETIME_CACHE_DURATION", "1"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ]);
            out.push(Replica {
                clock,
                url: proc.url(),
                proc: Some(proc),
                pg,
                nats,
                provisioner,
            });
        }
        out
    });
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut failovers: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut throughput: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    runtime.block_on(async {
        wait_leader(&urls, None, Duration::from_secs(20))
            .await
            .expect("a first leader");
        push_instance(&Connect::plain(&urls[0]), &inst)
            .await
            .unwrap();
        for u in &urls {
            let deadline = Instant::now() + Duration::from_secs(10);
            while inventory(u).await.workloads.len() != inst.workloads.len() {
                assert!(Instant::now() < deadline, "{u} never saw the inventory");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let tasks = vec![
            tokio::spawn(ingest_load(
                urls.clone(),
                inst.clone(),
                load.clone(),
                stop.clone(),
            )),
            tokio::spawn(bus_load(
                format!("nats://{}", servers.nats),
                prefix.clone(),
                inst.clone(),
                load.clone(),
                stop.clone(),
            )),
            tokio::spawn(plan_load(
                urls.clone(),
                inst.clone(),
                load.clone(),
                stop.clone(),
                seed,
            )),
            tokio::spawn(observe(urls.clone(), load.clone(), stop.clone())),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut floors_back = 0;
        let mut stop_after_cut: Vec<f64> = Vec::new();
        for round in 0..rounds {
            for &kind in &kinds {
                // A random point in the load.
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
                let Some(leader) = wait_leader(&urls, None, Duration::from_secs(30)).await else {
                    panic!("round {round}, {kind}: no leader before the fault");
                };
                let acked_before = load.acked.load(Ordering::SeqCst);
                let t0 = Instant::now();
                let r = &replicas[leader];
                let pid = r.proc.as_ref().unwrap().pid().to_string();
                let signal = |sig: &str| {
                    std::process::Command::new("kill")
                        .args([sig, pid.as_str()])
                        .status()
                        .unwrap()
                };
                let hold = Duration::from_secs_f64(LEASE_TTL_S + rng.random_range(0.2..1.5));
                let mut failover = None;
                match kind {
                    "pause" => {
                        signal("-STOP");
                        failover = wait_leader(&urls, Some(leader), Duration::from_secs(30)).await;
                        let took = t0.elapsed();
                        // The new leader re-plans while the old one sleeps.
                        if let Some(next) = failover {
                            let _ =
                                approve_one(&urls[next], &inst, rng.random::<u32>() as usize).await;
                        }
                        tokio::time::sleep(hold.saturating_sub(took)).await;
                        signal("-CONT");
                        failovers.entry(kind).or_default().push(took.as_secs_f64());
                    }
                    "zombie-call" => {
                        // The leader's calls held on their way to the
                        // provisioner, a plan for it to dispatch into the
                        // cut, then the leader paused past its lease:
                        // another leads and fences the provisioner, and the
                        // held calls land, with the old token, while the
                        // old leader still sleeps.
                        r.provisioner.set_cut(true);
                        let _ =
                            approve_one(&urls[leader], &inst, rng.random::<u32>() as usize).await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let stopped = Instant::now();
                        signal("-STOP");
                        failover = wait_leader(&urls, Some(leader), Duration::from_secs(30)).await;
                        failovers
                            .entry(kind)
                            .or_default()
                            .push(stopped.elapsed().as_secs_f64());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        r.provisioner.set_cut(false);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        signal("-CONT");
                    }
                    "partition-store" => {
                        r.pg.set_cut(true);
                        let handover = handover(&urls, leader, Duration::from_secs(30)).await;
                        failover = handover.next;
                        failovers
                            .entry(kind)
                            .or_default()
                            .push(t0.elapsed().as_secs_f64());
                        // The cut leader stops at its renewal deadline, on
                        // its own clock, before the lease it last renewed
                        // expires in the store: never two leaders at once.
                        if let (Some(last), Some(next_at)) = (handover.last_led, handover.next_at) {
                            if next_at < last {
                                load.regressions.lock().unwrap().push(format!(
                                    "round {round}, {kind}: replica {} still led {last:.3} s \
                                     after its cut, replica {} led from {next_at:.3} s",
                                    leader + 1,
                                    handover.next.map_or(0, |i| i + 1)
                                ));
                            }
                        }
                        if let Some(s) = handover.stopped_at {
                            stop_after_cut.push(s);
                        }
                        tokio::time::sleep(hold.saturating_sub(t0.elapsed())).await;
                        r.pg.set_cut(false);
                    }
                    "partition-bus" => {
                        r.nats.set_cut(true);
                        tokio::time::sleep(hold).await;
                        r.nats.set_cut(false);
                    }
                    "partition-provisioner" => {
                        r.provisioner.set_cut(true);
                        tokio::time::sleep(hold).await;
                        r.provisioner.set_cut(false);
                    }
                    "skew" => {
                        // The leader's wall clock an hour or less off, either
                        // way, for a while: the lease is PostgreSQL's clock
                        // and a leader's trust its monotonic one; readings
                        // are dated by the log's clock.
                        let offset_s =
                            rng.random_range(60..3600) * if rng.random() { 1 } else { -1 };
                        std::fs::write(&r.clock, format!("{offset_s:+}\n")).unwrap();
                        tokio::time::sleep(hold + Duration::from_secs(2)).await;
                        std::fs::write(&r.clock, "+0\n").unwrap();
                        tokio::time::sleep(Duration::from_millis(1200)).await;
                    }
                    "restart-store" | "restart-bus" => {
                        let what = if kind == "restart-store" {
                            "restart-pg"
                        } else {
                            "restart-nats"
                        };
                        let floor_before = ack_floor(&servers.nats, &stream).await;
                        // Blocks this test's own thread only; the load runs on.
                        servers.run(what);
                        if kind == "restart-bus" {
                            // Whether the server came back with the consumer's
                            // position, or hands the stream over again.
                            let after = ack_floor(&servers.nats, &stream).await;
                            if let (Some(b), Some(a)) = (floor_before, after) {
                                if a + 100 < b {
                                    floors_back += 1;
                                    eprintln!(
                                        "faults: round {round}: the consumer's ack floor went \
                                         back from {b} to {a} over the restart"
                                    );
                                }
                            }
                        }
                    }
                    _ => unreachable!(),
                }
                if matches!(kind, "pause" | "zombie-call" | "partition-store") {
                    assert!(
                        failover.is_some(),
                        "round {round}, {kind}: no other replica took over within 30 s"
                    );
                }
                let during = load.acked.load(Ordering::SeqCst) - acked_before;
                let e = throughput.entry(kind).or_default();
                e.0 += during;
                e.1 += t0.elapsed().as_secs_f64();
            }
            eprintln!("faults: round {} of {rounds} done", round + 1);
        }
        eprintln!("faults: the consumer's ack floor went back over {floors_back} bus restart(s)");
        stop_after_cut.sort_by(f64::total_cmp);
        eprintln!(
            "faults: a leader cut from the store stopped leading p50 {:.2} s, p99 {:.2} s, \
             max {:.2} s after the cut, seen in {} of {} cuts (in the others it did not answer \
             before another led) (renewal deadline {RENEW_DEADLINE_S} s, lease {LEASE_TTL_S} s)",
            percentile(&stop_after_cut, 0.5),
            percentile(&stop_after_cut, 0.99),
            stop_after_cut.last().copied().unwrap_or(f64::NAN),
            stop_after_cut.len(),
            failovers.get("partition-store").map_or(0, Vec::len)
        );
        let healthy_t0 = Instant::now();
        let healthy_before = load.acked.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        throughput.insert(
            "none (after)",
            (
                load.acked.load(Ordering::SeqCst) - healthy_before,
                healthy_t0.elapsed().as_secs_f64(),
            ),
        );
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = t.await;
        }
    });
    // Quiesce: every plan ended on the leader.
    let (violations, summary) = runtime.block_on(async {
        let leader = wait_leader(&urls, None, Duration::from_secs(30))
            .await
            .expect("a leader after healing");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let open = plans(&urls[leader])
                .await
                .iter()
                .filter(|p| plan_rank(p.state) < 4 && plan_rank(p.state) >= 2)
                .count();
            if open == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{open} plan(s) never ended");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        check(&urls, &inst, &journal, &calls, &load).await
    });
    eprintln!("faults: {summary}");
    for (kind, mut times) in failovers {
        times.sort_by(f64::total_cmp);
        eprintln!(
            "faults: {kind}: failover p50 {:.2} s, p99 {:.2} s over {}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.len()
        );
    }
    for (kind, (readings, secs)) in &throughput {
        eprintln!(
            "faults: {kind}: {:.0} acknowledged readings/s over {secs:.1} s",
            *readings as f64 / secs.max(1e-9)
        );
    }
    if !violations.is_empty() {
        let history = std::fs::read_to_string(&calls).unwrap_or_default();
        panic!(
            "{} violation(s):\n{}\n--- the provisioner's calls (key, what, token) ---\n{history}",
            violations.len(),
            violations.join("\n")
        );
    }
    for r in &mut replicas {
        drop(r.proc.take());
    }
    drop(sim);
}

/// Approve a plan made after squeezing one site (60 % of its cores held
/// back, the others' reserves lifted), so that it moves replicas.
async fn approve_one(url: &str, inst: &Instance, pick: usize) -> Option<u64> {
    let squeezed = pick % inst.sites.len();
    let sites = inst
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut s = s.clone();
            if i == squeezed {
                s.reserve_fraction.insert("cpu_cores".into(), 0.6);
            }
            edgeplan::api::convert::site_to_pb(&s)
        })
        .collect();
    let mut inv = edgeplan::api::pb::inventory_client::InventoryClient::new(try_client(url).await?);
    inv.upsert_sites(pb::UpsertSitesRequest {
        sites,
        expected_version: None,
    })
    .await
    .ok()?;
    let mut p = PlacementClient::new(try_client(url).await?);
    let solved = p
        .solve(pb::SolveRequest::default())
        .await
        .ok()?
        .into_inner();
    if solved.plan.as_ref().is_none_or(|p| p.steps.is_empty()) {
        eprintln!("faults: plan {} has no steps", solved.plan_id);
        return None;
    }
    if let Err(e) = p
        .approve_plan(pb::PlanRef {
            plan_id: solved.plan_id,
            after_revision: None,
        })
        .await
    {
        eprintln!(
            "faults: approving plan {} through {url}: {e}",
            solved.plan_id
        );
        return None;
    }
    Some(solved.plan_id)
}

/// The durable consumer's ack floor (stream sequence), if it can be read.
async fn ack_floor(nats: &str, stream: &str) -> Option<u64> {
    let client = async_nats::connect(format!("nats://{nats}")).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .ok()?
        .get_consumer("edgeplan")
        .await
        .ok()?;
    Some(consumer.info().await.ok()?.ack_floor.stream_sequence)
}

/// Readings through the replicas' gRPC intake, round robin, every 100 ms.
async fn ingest_load(urls: Vec<String>, inst: Instance, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let url = &urls[n % urls.len()];
        let batch = ambient_batch(&inst, now_s(), None);
        let count = batch.readings.len() as u64;
        load.sent.fetch_add(count, Ordering::SeqCst);
        if let Some(ch) = try_client(url).await {
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                TelemetryClient::new(ch).ingest(tokio_stream::iter(vec![batch])),
            )
            .await;
            if let Ok(Ok(summary)) = r {
                load.acked
                    .fetch_add(summary.into_inner().accepted, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Readings published to JetStream, acknowledged by the server, every 100 ms.
async fn bus_load(
    nats: String,
    prefix: String,
    inst: Instance,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) {
    use prost::Message;
    let Ok(client) = async_nats::connect(&nats).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let site = &inst.sites[n % inst.sites.len()];
        let mut batch = ambient_batch(&inst, now_s(), None);
        batch.readings.retain(|r| r.site == site.id);
        for r in &mut batch.readings {
            r.device_id = format!("{}/outside-bus", r.site);
        }
        let count = batch.readings.len() as u64;
        load.sent.fetch_add(count, Ordering::SeqCst);
        let subject = format!("{prefix}.{}", site.id);
        let acked = async {
            js.publish(subject, batch.encode_to_vec().into())
                .await
                .ok()?
                .await
                .ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(3), acked).await {
            load.acked.fetch_add(count, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plan approved through a random replica every second or two: each
/// supersedes the one running, if any.
async fn plan_load(
    urls: Vec<String>,
    inst: Instance,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    while !stop.load(Ordering::SeqCst) {
        let url = &urls[rng.random_range(0..urls.len())];
        if approve_one(url, &inst, rng.random::<u32>() as usize)
            .await
            .is_some()
        {
            load.plans_approved.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2000))).await;
    }
}

async fn plans(url: &str) -> Vec<pb::PlanSummary> {
    let Some(ch) = try_client(url).await else {
        return Vec::new();
    };
    let mut p = PlacementClient::new(ch);
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let Ok(r) = p
            .list_plans(pb::ListPlansRequest {
                page_size: 1000,
                page_token: token.clone(),
                states: Vec::new(),
            })
            .await
        else {
            return out;
        };
        let r = r.into_inner();
        out.extend(r.plans);
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
}

/// (replica, plan, step): what an observer saw.
type Seen = (usize, u64, Option<u64>);

/// Each replica, as an observer of its own: plan and step states must only
/// move forward in what it shows.
async fn observe(urls: Vec<String>, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let mut seen: HashMap<Seen, u8> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        for (i, u) in urls.iter().enumerate() {
            let list = plans(u).await;
            let newest: Vec<u64> = list.iter().rev().take(2).map(|p| p.plan_id).collect();
            let mut ranks: Vec<(Seen, u8)> = list
                .iter()
                .map(|p| ((i, p.plan_id, None), plan_rank(p.state)))
                .collect();
            if let Some(ch) = try_client(u).await {
                let mut p = PlacementClient::new(ch);
                for id in newest {
                    if let Ok(v) = p
                        .get_plan(pb::PlanRef {
                            plan_id: id,
                            after_revision: None,
                        })
                        .await
                    {
                        for s in &v.into_inner().steps {
                            ranks.push(((i, id, Some(s.step_id)), step_rank(s.state)));
                        }
                    }
                }
            }
            for (key, rank) in ranks {
                let before = seen.insert(key, rank).unwrap_or(0);
                if rank < before {
                    load.regressions.lock().unwrap().push(format!(
                        "replica {} showed plan {} step {:?} going back from rank {before} to {rank}",
                        i + 1,
                        key.1,
                        key.2
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Read what everyone recorded; the violations found, and a summary.
async fn check(
    urls: &[String],
    start: &Instance,
    journal: &Path,
    calls: &Path,
    load: &Load,
) -> (Vec<String>, String) {
    let mut violations = load.regressions.lock().unwrap().clone();
    // The provisioner's journal: one line per execution (key … outcome token).
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut executed: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.first() == Some(&"fence") {
            continue;
        }
        if executed
            .insert(f[0].to_string(), f[5].to_string())
            .is_some()
        {
            violations.push(format!("{} executed twice", f[0]));
        }
        order.push(f[0].to_string());
    }
    // The calls, in the order the provisioner took them: an accepted token
    // never below one accepted before.
    let mut highest = 0u64;
    let (mut accepted, mut fenced) = (0, 0);
    for line in std::fs::read_to_string(calls).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let token: u64 = f.get(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        match f.get(1) {
            Some(&"call") | Some(&"fence") => {
                accepted += 1;
                if token < highest {
                    violations.push(format!(
                        "{} accepted with token {token} after token {highest}",
                        f[0]
                    ));
                }
                highest = highest.max(token);
            }
            Some(&"fenced") => fenced += 1,
            _ => {}
        }
    }
    // Every replica: the stored steps agree with the journal, and the
    // inventory is the start plus exactly the executed steps.
    let mut stored_plans = 0;
    for (i, u) in urls.iter().enumerate() {
        let list = plans(u).await;
        stored_plans = list.len();
        let mut step_of: HashMap<String, (pb::StepView, edgeplan::plan::Plan)> = HashMap::new();
        for p in &list {
            let (view, plan) = plan_view(u, p.plan_id).await;
            for s in &view.steps {
                step_of.insert(s.idempotency_key.clone(), (s.clone(), plan.clone()));
                let ok = s.state == pb::StepState::Succeeded as i32;
                match (ok, executed.get(&s.idempotency_key).map(String::as_str)) {
                    (true, Some("succeeded")) | (false, None) => {}
                    (false, Some(_)) if s.state == pb::StepState::Failed as i32 => {
                        violations.push(format!(
                            "replica {}: {} is stored failed ({}) but the provisioner ran it",
                            i + 1,
                            s.idempotency_key,
                            s.message
                        ))
                    }
                    (false, Some(_)) => violations.push(format!(
                        "replica {}: {} ran but is stored {:?} after every plan ended",
                        i + 1,
                        s.idempotency_key,
                        pb::StepState::try_from(s.state)
                    )),
                    (true, other) => violations.push(format!(
                        "replica {}: {} is stored succeeded; the provisioner: {other:?}",
                        i + 1,
                        s.idempotency_key
                    )),
                }
            }
        }
        let mut expect = start.clone();
        for key in &order {
            let Some((view, plan)) = step_of.get(key) else {
                violations.push(format!("replica {}: {key} ran but no plan holds it", i + 1));
                continue;
            };
            if executed.get(key).map(String::as_str) != Some("succeeded") {
                continue;
            }
            let step = &plan.steps[view.step_id as usize];
            if let Some(w) = expect.workloads.iter_mut().find(|w| w.id == step.workload) {
                edgeplan::execution::apply_step(w, step);
            }
        }
        let actual = inventory(u).await;
        for (a, e) in actual.workloads.iter().zip(&expect.workloads) {
            if a.current != e.current {
                violations.push(format!(
                    "replica {}: {} is at {:?}, the executed steps put it at {:?}",
                    i + 1,
                    a.id,
                    a.current,
                    e.current
                ));
            }
        }
        // Every acknowledged reading is in, none twice.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (acked, sent) = (
            load.acked.load(Ordering::SeqCst),
            load.sent.load(Ordering::SeqCst),
        );
        loop {
            let s = match try_client(u).await {
                Some(ch) => TelemetryClient::new(ch)
                    .stats(pb::TelemetryStatsRequest {})
                    .await
                    .map(|r| r.into_inner())
                    .ok(),
                None => None,
            };
            let accepted = s.as_ref().map_or(0, |s| s.accepted);
            if (acked..=sent).contains(&accepted) {
                if let Some(s) = &s {
                    eprintln!(
                        "faults: replica {}: {accepted} readings in; bus: {} messages, {} \
                         delivered again, {} batches already logged and dropped",
                        i + 1,
                        s.bus_messages,
                        s.bus_redelivered,
                        s.log_duplicates
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                violations.push(format!(
                    "replica {}: {accepted} readings in, {acked} acknowledged, {sent} sent",
                    i + 1
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let summary = format!(
        "{} plans stored ({} approved by the load), {} steps executed, {} calls accepted, \
         {} refused by fencing (highest token {highest}), {} readings acknowledged of {} sent",
        stored_plans,
        load.plans_approved.load(Ordering::SeqCst),
        order.len(),
        accepted,
        fenced,
        load.acked.load(Ordering::SeqCst),
        load.sent.load(Ordering::SeqCst),
    );
    (violations, summary)
}
