//! `edgeplan collect-bench`: `collect` measured against simulated BMCs on
//! loopback ([`super::bmc_sim`]): readings per second over whole rounds
//! (poll every BMC, read, send), and — with a service — the delay from a
//! BMC's power changing to `WatchSites` showing the site's new power.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_stream::StreamExt;

use super::bmc_sim;
use super::client::{push_instance, Connect};
use super::collect::{send, CollectConfig, Collector, Endpoint, Sink};
use super::load::load_fleet;
use edgeplan_api::pb;
use edgeplan_api::pb::telemetry_client::TelemetryClient;

#[derive(Debug, Clone)]
pub struct CollectBenchOptions {
    pub bmcs: usize,
    pub sites: usize,
    pub bmcs_per_rack: usize,
    pub concurrency: usize,
    pub rounds: usize,
    /// Send to this service (its fleet registered first), and time a change.
    pub server: Option<Connect>,
}

#[derive(Debug, Serialize)]
pub struct CollectBenchReport {
    pub bmcs: usize,
    pub sites: usize,
    pub concurrency: usize,
    /// Per round: seconds from the first poll to the readings sent.
    pub round_s: Vec<f64>,
    pub readings_per_round: usize,
    pub http_requests_per_round: u64,
    /// With a service: readings it accepted and rejected over the rounds.
    pub accepted: u64,
    pub rejected: u64,
    /// Readings over the median round.
    pub readings_per_s: f64,
    pub bmc_polls_per_s: f64,
    /// From a BMC's power stepping to `WatchSites` showing its site's new
    /// power, with collection every second (so up to 1 s of it is waiting
    /// for the next round).
    pub change_to_watch_s: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run(o: &CollectBenchOptions) -> anyhow::Result<CollectBenchReport> {
    let sites = o.sites.max(1);
    let sim = bmc_sim::start(o.bmcs, 300.0).await?;
    let fleet = load_fleet(sites, 0)?;
    let site_of = |i: usize| fleet.sites[i % sites].id.clone();
    let endpoints: Vec<Endpoint> = (0..o.bmcs)
        .map(|i| Endpoint {
            name: format!("bmc-{i:05}"),
            url: format!("http://127.0.0.1:{}/bmc/{i}", sim.port),
            site: site_of(i),
            rack: format!("r{:03}", i / sites / o.bmcs_per_rack.max(1)),
            username: None,
            password: None,
            password_env: None,
            session: false,
            ca_cert: None,
            pinned_sha256: None,
        })
        .collect();
    let cfg = CollectConfig {
        interval_s: 1.0,
        concurrency: o.concurrency,
        timeout_s: 5.0,
        retries: 1,
        max_sensors: 256,
        site_power_from_bmcs: true,
        endpoints,
    };
    let collector = Collector::new(cfg)?;
    let sink = match &o.server {
        Some(c) => {
            push_instance(c, &fleet).await?;
            Sink::Server(c.clone())
        }
        None => Sink::None,
    };
    let mut round_s = Vec::new();
    let mut readings_per_round = 0;
    let mut requests = 0;
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..o.rounds.max(1) {
        let before = sim
            .state
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let t0 = Instant::now();
        let (report, readings) = collector.round(super::now_s()).await;
        if let Some(b) = report.bmcs.iter().find(|b| b.error.is_some()) {
            anyhow::bail!("{} did not answer: {:?}", b.endpoint, b.error);
        }
        readings_per_round = readings.len();
        let d = send(&sink, readings).await?;
        accepted += d.accepted;
        rejected += d.rejected;
        round_s.push(t0.elapsed().as_secs_f64());
        requests = sim
            .state
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
    }
    let med = median(&round_s);
    let change_to_watch_s = match &o.server {
        None => None,
        Some(c) => Some(change_delay(c, &collector, &sink, &sim, &fleet.sites[0].id).await?),
    };
    Ok(CollectBenchReport {
        bmcs: o.bmcs,
        sites,
        concurrency: o.concurrency,
        readings_per_round,
        http_requests_per_round: requests,
        accepted,
        rejected,
        readings_per_s: readings_per_round as f64 / med.max(1e-9),
        bmc_polls_per_s: o.bmcs as f64 / med.max(1e-9),
        round_s,
        change_to_watch_s,
    })
}

/// Step BMC 0's power by +5 kW; collect every second; time until the
/// site's power in `WatchSites` (every 100 ms) shows it.
async fn change_delay(
    c: &Connect,
    collector: &Collector,
    sink: &Sink,
    sim: &bmc_sim::BmcSim,
    site: &str,
) -> anyhow::Result<f64> {
    let mut watch = TelemetryClient::new(c.channel().await?)
        .watch_sites(pb::WatchSitesRequest {
            sites: vec![site.to_string()],
            interval_ms: 100,
        })
        .await?
        .into_inner();
    // The site's power before the step.
    let before = loop {
        let states = watch
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("WatchSites ended"))??;
        if let Some(kw) = states.sites.first().and_then(|s| s.site_power_kw) {
            break kw;
        }
    };
    let step_kw = 5.0;
    sim.state
        .set_watts(0, sim.state.watts(0) + step_kw * 1000.0);
    let t0 = Instant::now();
    let collecting = async {
        loop {
            let (_, readings) = collector.round(super::now_s()).await;
            send(sink, readings).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    let seen = async {
        while let Some(states) = watch.next().await {
            let states = states?;
            if states
                .sites
                .first()
                .and_then(|s| s.site_power_kw)
                .is_some_and(|kw| kw >= before + step_kw * 0.99)
            {
                return Ok::<f64, anyhow::Error>(t0.elapsed().as_secs_f64());
            }
        }
        anyhow::bail!("WatchSites ended before the change showed")
    };
    tokio::select! {
        r = collecting => { r?; anyhow::bail!("collection stopped") }
        r = tokio::time::timeout(Duration::from_secs(30), seen) => r?,
    }
}
