//! The load generator (`edgeplan load`): registers a synthetic fleet with a
//! running service, then for a fixed time drives concurrent Ingest streams
//! of realistic readings (ambient, humidity, supply, per-rack inlet and
//! power, site power), Solve calls and WatchSites streams, and reports
//! sustained samples per second, p50/p99 latency of ingest acks and solves,
//! errors, and the server's memory over time (from /proc, given its pid).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::{AuthChannel, Connect};
use edgeplan_analysis::gen::{generate, GenOptions};
use edgeplan_api::pb;
use edgeplan_api::pb::placement_client::PlacementClient;
use edgeplan_api::pb::telemetry_client::TelemetryClient;
use edgeplan_model::instance::Instance;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub server: Connect,
    pub sites: usize,
    pub racks_per_site: usize,
    /// Workloads in the synthetic fleet (what the solves place).
    pub workloads: usize,
    /// Readings per batch.
    pub batch: usize,
    pub seconds: f64,
    /// Concurrent Ingest streams (sites are split between them).
    pub streams: usize,
    /// Batches per Ingest call before it closes for its ack (0: one call
    /// per stream for the whole run — the most throughput, one ack).
    pub batches_per_call: usize,
    /// Concurrent loops of Solve calls (dry runs).
    pub solvers: usize,
    pub solve_time_limit_s: f64,
    /// Concurrent WatchSites streams.
    pub watchers: usize,
    /// The server's pid, to sample its resident memory.
    pub server_pid: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            server: Connect::plain("http://127.0.0.1:50051"),
            sites: 250,
            racks_per_site: 18,
            workloads: 0,
            batch: 10_000,
            seconds: 20.0,
            streams: 2,
            batches_per_call: 0,
            solvers: 0,
            solve_time_limit_s: 1.0,
            watchers: 0,
            server_pid: None,
        }
    }
}

/// Latencies of one kind of call, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency {
            count: ms.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub sensors: usize,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// From sending an Ingest call's first batch to its summary (the
    /// durable ack).
    pub ingest_ack: Latency,
    pub solve: Latency,
    /// Messages received on WatchSites streams.
    pub watch_messages: u64,
    /// Failed calls (must be zero), and the first few reasons.
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// (seconds since start, server RSS MiB).
    pub server_rss_mib: Vec<(f64, f64)>,
}

/// What one task of the run did.
#[derive(Default)]
struct Outcome {
    sent: u64,
    accepted: u64,
    rejected: u64,
    ingest_ms: Vec<f64>,
    solve_ms: Vec<f64>,
    watch_messages: u64,
    errors: Vec<String>,
}

/// Synthetic sites `load-0000`…, all shaped like a generated one; with
/// workloads, a generated fleet of that size instead (real cities).
pub fn load_fleet(sites: usize, workloads: usize) -> anyhow::Result<Instance> {
    if workloads > 0 {
        return generate(&GenOptions {
            sites,
            workloads,
            replicas: None,
            seed: 1,
            load: 0.6,
        })
        .map_err(|e| anyhow::anyhow!(e));
    }
    let mut inst = generate(&GenOptions {
        sites: 1,
        workloads: 0,
        replicas: None,
        seed: 1,
        load: 0.5,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let template = inst.sites[0].clone();
    inst.sites = (0..sites)
        .map(|i| {
            let mut s = template.clone();
            s.id = format!("load-{i:04}");
            s.node = Some(template.node_id().to_string());
            s
        })
        .collect();
    inst.workloads.clear();
    Ok(inst)
}

/// The sensors of one site: ambient, humidity, supply, site power, and an
/// inlet and a power sensor per rack.
pub(crate) fn site_sensors(site: &str, racks: usize) -> Vec<pb::Reading> {
    let r = |id: String,
             rack: String,
             device: pb::DeviceType,
             place: pb::DevicePlacement,
             unit: &str,
             value: f64| pb::Reading {
        device_id: id,
        site: site.to_string(),
        rack,
        device_type: device as i32,
        placement: place as i32,
        unit: unit.to_string(),
        value,
        timestamp_s: 0.0,
    };
    use pb::DevicePlacement as P;
    use pb::DeviceType as D;
    let mut v = vec![
        r(
            format!("{site}/ambient"),
            String::new(),
            D::Temperature,
            P::Outside,
            "C",
            21.0,
        ),
        r(
            format!("{site}/humidity"),
            String::new(),
            D::Humidity,
            P::Outside,
            "%",
            45.0,
        ),
        r(
            format!("{site}/supply"),
            String::new(),
            D::Temperature,
            P::Supply,
            "C",
            18.0,
        ),
        r(
            format!("{site}/ups"),
            String::new(),
            D::Ups,
            P::Site,
            "kW",
            40.0,
        ),
    ];
    for k in 0..racks {
        let rack = format!("r{k:02}");
        v.push(r(
            format!("{site}/{rack}/inlet"),
            rack.clone(),
            D::Temperature,
            P::Rack,
            "C",
            24.0,
        ));
        v.push(r(
            format!("{site}/{rack}/pdu"),
            rack,
            D::Power,
            P::Rack,
            "kW",
            4.0,
        ));
    }
    v
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Simulated seconds between sweeps of the same sensors.
const SWEEP_S: f64 = 0.01;

/// Successive batches of a group of sites' sensors: one sweep per
/// [`SWEEP_S`] of simulated time, several sweeps per batch to fill it.
pub(crate) struct Sweeps {
    pub sites: Vec<(String, Vec<pb::Reading>)>,
    pub batch: usize,
    pub t0: f64,
    pub next: usize,
    pub sweep: u64,
}

impl Sweeps {
    pub(crate) fn next_batch(&mut self) -> pb::ReadingBatch {
        let (site, sensors) = &self.sites[self.next];
        let sweeps = (self.batch / sensors.len().max(1)).max(1) as u64;
        let mut readings = Vec::with_capacity(sweeps as usize * sensors.len());
        for k in 0..sweeps {
            for r in sensors {
                let mut r = r.clone();
                // Simulated time must not run ahead of the server's clock
                // (`telemetry.max_future_skew_s`): sweeps 10 ms apart.
                r.timestamp_s = self.t0 + (self.sweep + k) as f64 * SWEEP_S;
                readings.push(r);
            }
        }
        self.next += 1;
        if self.next == self.sites.len() {
            self.next = 0;
            self.sweep += sweeps;
        }
        pb::ReadingBatch {
            readings,
            site: site.clone(),
            timestamp_s: 0.0,
        }
    }
}

/// One Ingest stream for the whole run.
async fn ingest_long(channel: AuthChannel, mut sweeps: Sweeps, deadline: Instant) -> Outcome {
    let mut client = TelemetryClient::new(channel).max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<pb::ReadingBatch>(4);
    let producer = tokio::spawn(async move {
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let b = sweeps.next_batch();
            sent += b.readings.len() as u64;
            if tx.send(b).await.is_err() {
                break;
            }
        }
        sent
    });
    let mut out = Outcome::default();
    let opened = Instant::now();
    match client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            out.accepted = r.accepted;
            out.rejected = r.rejected;
            out.ingest_ms.push(opened.elapsed().as_secs_f64() * 1e3);
        }
        Err(e) => out.errors.push(format!("ingest: {e}")),
    }
    out.sent = producer.await.unwrap_or_default();
    out
}

/// Ingest calls of `per_call` batches each, back to back, each timed to its ack.
async fn ingest_calls(
    channel: AuthChannel,
    mut sweeps: Sweeps,
    per_call: usize,
    deadline: Instant,
) -> Outcome {
    let mut client = TelemetryClient::new(channel).max_encoding_message_size(64 << 20);
    let mut out = Outcome::default();
    while Instant::now() < deadline {
        let batches: Vec<pb::ReadingBatch> = (0..per_call).map(|_| sweeps.next_batch()).collect();
        let n: u64 = batches.iter().map(|b| b.readings.len() as u64).sum();
        let started = Instant::now();
        match client.ingest(tokio_stream::iter(batches)).await {
            Ok(r) => {
                out.ingest_ms.push(started.elapsed().as_secs_f64() * 1e3);
                let r = r.into_inner();
                out.accepted += r.accepted;
                out.rejected += r.rejected;
            }
            Err(e) => out.errors.push(format!("ingest: {e}")),
        }
        out.sent += n;
    }
    out
}

async fn solves(channel: AuthChannel, time_limit_s: f64, deadline: Instant) -> Outcome {
    let mut client = PlacementClient::new(channel);
    let mut out = Outcome::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        match client
            .solve(pb::SolveRequest {
                time_limit_s: Some(time_limit_s),
                dry_run: true,
                ..Default::default()
            })
            .await
        {
            Ok(_) => out.solve_ms.push(started.elapsed().as_secs_f64() * 1e3),
            Err(e) => out.errors.push(format!("solve: {e}")),
        }
    }
    out
}

async fn watch(channel: AuthChannel, deadline: Instant) -> Outcome {
    let mut client = TelemetryClient::new(channel);
    let mut out = Outcome::default();
    let mut stream = match client
        .watch_sites(pb::WatchSitesRequest {
            interval_ms: 1000,
            ..Default::default()
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => {
            out.errors.push(format!("watch: {e}"));
            return out;
        }
    };
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.message()).await {
            Err(_) => return out, // the run is over
            Ok(Ok(Some(_))) => out.watch_messages += 1,
            Ok(Ok(None)) => {
                out.errors.push("watch: the server ended the stream".into());
                return out;
            }
            Ok(Err(e)) => {
                out.errors.push(format!("watch: {e}"));
                return out;
            }
        }
    }
}

pub async fn run(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    let fleet = load_fleet(opts.sites, opts.workloads)?;
    crate::client::push_instance(&opts.server, &fleet).await?;
    let channel = opts.server.channel().await?;
    let streams = opts.streams.max(1);
    // Each stream carries some sites; a batch is one site's gateway sending
    // several sweeps over its sensors.
    let mut groups: Vec<Vec<(String, Vec<pb::Reading>)>> = vec![Vec::new(); streams];
    for (i, s) in fleet.sites.iter().enumerate() {
        groups[i % streams].push((s.id.clone(), site_sensors(&s.id, opts.racks_per_site)));
    }
    let sensors = groups
        .iter()
        .flat_map(|g| g.iter().map(|(_, v)| v.len()))
        .sum();
    let start = Instant::now();
    let deadline = start + edgeplan_model::duration_s(opts.seconds);
    let t0 = crate::now_s();
    let mut tasks = tokio::task::JoinSet::new();
    for sites in groups.into_iter().filter(|g| !g.is_empty()) {
        let sweeps = Sweeps {
            sites,
            batch: opts.batch.max(1),
            t0,
            next: 0,
            sweep: 0,
        };
        let ch = channel.clone();
        match opts.batches_per_call {
            0 => tasks.spawn(ingest_long(ch, sweeps, deadline)),
            n => tasks.spawn(ingest_calls(ch, sweeps, n, deadline)),
        };
    }
    for _ in 0..opts.solvers {
        tasks.spawn(solves(channel.clone(), opts.solve_time_limit_s, deadline));
    }
    for _ in 0..opts.watchers {
        tasks.spawn(watch(channel.clone(), deadline));
    }
    let mut rss = Vec::new();
    if let Some(pid) = opts.server_pid {
        while Instant::now() < deadline {
            if let Some(m) = rss_mib(pid) {
                rss.push((start.elapsed().as_secs_f64(), m));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut all = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        let o = done?;
        all.sent += o.sent;
        all.accepted += o.accepted;
        all.rejected += o.rejected;
        all.ingest_ms.extend(o.ingest_ms);
        all.solve_ms.extend(o.solve_ms);
        all.watch_messages += o.watch_messages;
        all.errors.extend(o.errors);
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(pid) = opts.server_pid {
        if let Some(m) = rss_mib(pid) {
            rss.push((seconds, m));
        }
    }
    Ok(LoadReport {
        sensors,
        sent: all.sent,
        accepted: all.accepted,
        rejected: all.rejected,
        seconds,
        samples_per_s: all.accepted as f64 / seconds,
        ingest_ack: Latency::of(all.ingest_ms),
        solve: Latency::of(all.solve_ms),
        watch_messages: all.watch_messages,
        errors: all.errors.len() as u64,
        error_examples: all.errors.into_iter().take(5).collect(),
        server_rss_mib: rss,
    })
}
