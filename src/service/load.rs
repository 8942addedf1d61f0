//! A telemetry load generator (`edgeplan load-telemetry`): registers
//! synthetic sites with a running service, then streams batches of
//! realistic readings (ambient, humidity, supply, per-rack inlet and power,
//! site power) over several concurrent Ingest streams for a fixed time, and
//! reports sustained samples per second, ack latency and the server's
//! memory over time (from /proc, when given its pid).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::api::pb;
use crate::api::pb::telemetry_client::TelemetryClient;
use crate::gen::{generate, GenOptions};
use crate::instance::Instance;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub server: crate::service::client::Connect,
    pub sites: usize,
    pub racks_per_site: usize,
    /// Readings per batch.
    pub batch: usize,
    pub seconds: f64,
    /// Concurrent Ingest streams (sites are split between them).
    pub streams: usize,
    /// The server's pid, to sample its resident memory.
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub sensors: usize,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// Time from closing a stream to its summary (the durable ack), ms.
    pub ack_ms_max: f64,
    /// (seconds since start, server RSS MiB).
    pub server_rss_mib: Vec<(f64, f64)>,
}

/// Synthetic sites `load-0000`…, all shaped like a generated one.
pub fn load_fleet(sites: usize) -> anyhow::Result<Instance> {
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
fn site_sensors(site: &str, racks: usize) -> Vec<pb::Reading> {
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

pub async fn run(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    let fleet = load_fleet(opts.sites)?;
    crate::service::client::push_instance(&opts.server, &fleet).await?;
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
    let deadline = start + Duration::from_secs_f64(opts.seconds);
    let t0 = crate::service::now_s();
    let mut handles = Vec::new();
    for sensors in groups.into_iter().filter(|g| !g.is_empty()) {
        let server = opts.server.clone();
        let batch = opts.batch.max(1);
        handles.push(tokio::spawn(async move {
            let mut client =
                TelemetryClient::new(server.channel().await?).max_encoding_message_size(64 << 20);
            let (tx, rx) = mpsc::channel::<pb::ReadingBatch>(4);
            let sensors_len = sensors.len();
            let producer = tokio::spawn(async move {
                let mut sent = 0u64;
                let mut next = 0usize;
                let mut sweep = 0u64;
                while Instant::now() < deadline {
                    let (site, sensors) = &sensors[next];
                    let sweeps = (batch / sensors.len().max(1)).max(1) as u64;
                    let mut readings = Vec::with_capacity(sweeps as usize * sensors.len());
                    for k in 0..sweeps {
                        for r in sensors {
                            let mut r = r.clone();
                            // One sweep per simulated second.
                            r.timestamp_s = t0 + (sweep + k) as f64;
                            readings.push(r);
                        }
                    }
                    next += 1;
                    if next == sensors_len {
                        next = 0;
                        sweep += sweeps;
                    }
                    sent += readings.len() as u64;
                    let b = pb::ReadingBatch {
                        readings,
                        site: site.clone(),
                        timestamp_s: 0.0,
                    };
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
                sent
            });
            let summary = client
                .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let closed = Instant::now();
            let sent = producer.await?;
            anyhow::Ok((sent, summary, closed))
        }));
    }
    let mut rss = Vec::new();
    let mut report = LoadReport {
        sensors,
        sent: 0,
        accepted: 0,
        rejected: 0,
        seconds: 0.0,
        samples_per_s: 0.0,
        ack_ms_max: 0.0,
        server_rss_mib: Vec::new(),
    };
    if let Some(pid) = opts.server_pid {
        while Instant::now() < deadline {
            if let Some(m) = rss_mib(pid) {
                rss.push((start.elapsed().as_secs_f64(), m));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for h in handles {
        let (sent, summary, closed) = h.await??;
        report.sent += sent;
        report.accepted += summary.accepted;
        report.rejected += summary.rejected;
        let ack_ms = closed.saturating_duration_since(deadline).as_secs_f64() * 1e3;
        report.ack_ms_max = report.ack_ms_max.max(ack_ms);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.samples_per_s = report.accepted as f64 / report.seconds;
    if let Some(pid) = opts.server_pid {
        if let Some(m) = rss_mib(pid) {
            rss.push((report.seconds, m));
        }
    }
    report.server_rss_mib = rss;
    Ok(report)
}
