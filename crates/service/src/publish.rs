//! `edgeplan publish`: a site gateway's telemetry onto NATS JetStream, for
//! trying and measuring the bus. Publishes synthetic sweeps of a fleet's
//! sensors (the load generator's, see [`super::load`]) as encoded
//! `ReadingBatch` messages on `<subject_prefix>.<site>`, each confirmed by
//! JetStream; with a server, registers the fleet first and then waits until
//! the service's telemetry state holds every reading, which measures the
//! whole path (bus → replicas → log → state).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use prost::Message;
use serde::Serialize;

use super::bus::BusConfig;
use super::client::Connect;
use super::load::{load_fleet, site_sensors, Sweeps};
use edgeplan_api::pb;
use edgeplan_api::pb::telemetry_client::TelemetryClient;

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub bus: BusConfig,
    /// Register the fleet here and wait for the readings to arrive.
    pub server: Option<Connect>,
    pub sites: usize,
    pub racks_per_site: usize,
    /// Readings per message.
    pub batch: usize,
    pub messages: usize,
    /// Messages published but not yet confirmed, at most.
    pub in_flight: usize,
    /// Give up waiting for the readings after this long, s.
    pub wait_s: f64,
    /// Timestamps start here (s since the epoch; 0: now).
    pub t0: f64,
}

#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub messages: usize,
    pub readings: u64,
    pub publish_s: f64,
    pub published_per_s: f64,
    /// With a server: readings its state gained, and how fast.
    pub arrived: Option<Arrived>,
}

#[derive(Debug, Serialize)]
pub struct Arrived {
    pub accepted: u64,
    pub rejected: u64,
    /// The service's rejections by reason since it started (all sources).
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
    /// From the first publish to the last reading in the state.
    pub seconds: f64,
    pub readings_per_s: f64,
    pub complete: bool,
}

async fn stats(
    client: &mut TelemetryClient<super::client::AuthChannel>,
) -> anyhow::Result<pb::TelemetryStats> {
    Ok(client
        .stats(pb::TelemetryStatsRequest {})
        .await?
        .into_inner())
}

async fn totals(
    client: &mut TelemetryClient<super::client::AuthChannel>,
) -> anyhow::Result<(u64, u64)> {
    let s = stats(client).await?;
    Ok((s.accepted, s.rejected_by_reason.values().sum()))
}

pub async fn run(opts: &PublishOptions) -> anyhow::Result<PublishReport> {
    let fleet = load_fleet(opts.sites.max(1), 0)?;
    let mut watch = match &opts.server {
        Some(server) => {
            super::client::push_instance(server, &fleet).await?;
            Some(TelemetryClient::new(server.channel().await?))
        }
        None => None,
    };
    let before = match &mut watch {
        Some(c) => totals(c).await?,
        None => (0, 0),
    };
    let client = opts.bus.connect().await?;
    let js = jetstream::new(client);
    super::bus::stream(&js, &opts.bus).await?;
    let mut sweeps = Sweeps {
        sites: fleet
            .sites
            .iter()
            .map(|s| (s.id.clone(), site_sensors(&s.id, opts.racks_per_site)))
            .collect(),
        batch: opts.batch.max(1),
        t0: if opts.t0 > 0.0 {
            opts.t0
        } else {
            super::now_s()
        },
        next: 0,
        sweep: 0,
    };
    let start = Instant::now();
    let mut pending = VecDeque::new();
    let mut readings = 0u64;
    for _ in 0..opts.messages {
        let batch = sweeps.next_batch();
        readings += batch.readings.len() as u64;
        let subject = format!("{}.{}", opts.bus.subject_prefix, batch.site);
        let ack = js
            .publish(subject, batch.encode_to_vec().into())
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        pending.push_back(ack);
        if pending.len() >= opts.in_flight.max(1) {
            if let Some(a) = pending.pop_front() {
                a.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
            }
        }
    }
    for a in pending {
        a.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let arrived = match &mut watch {
        Some(c) => {
            let deadline = start + edgeplan_model::duration_s(opts.wait_s);
            let mut now = totals(c).await?;
            while now.0 + now.1 < before.0 + before.1 + readings && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                now = totals(c).await?;
            }
            let seconds = start.elapsed().as_secs_f64();
            let accepted = now.0 - before.0;
            let rejected = now.1 - before.1;
            Some(Arrived {
                accepted,
                rejected,
                rejected_by_reason: stats(c).await?.rejected_by_reason.into_iter().collect(),
                seconds,
                readings_per_s: accepted as f64 / seconds,
                complete: accepted + rejected >= readings,
            })
        }
        None => None,
    };
    Ok(PublishReport {
        messages: opts.messages,
        readings,
        publish_s,
        published_per_s: readings as f64 / publish_s,
        arrived,
    })
}
