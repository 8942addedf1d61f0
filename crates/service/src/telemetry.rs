//! The Telemetry service: batched Synse-shaped readings through the core's
//! sanity checks into the telemetry state; the reply comes once the accepted
//! readings are on disk. A watch streams each site's state.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::{self, Reason};
use super::Shared;
use edgeplan_api::pb;

pub struct TelemetryApi(pub Arc<Shared>);

pub use edgeplan_api::intake::{take_batch, Tally};

/// Take out the readings a site-scoped token may not write: each rejected
/// (`site_not_allowed`) and counted, none reaches the state or the log.
fn keep_scoped(
    shared: &Shared,
    scope: Option<&super::auth::SiteScope>,
    batch: &mut pb::ReadingBatch,
    tally: &mut Tally,
    batch_no: u64,
) {
    let Some(scope) = scope else {
        return;
    };
    let mut refused = 0;
    let readings = std::mem::take(&mut batch.readings);
    for (index, r) in readings.into_iter().enumerate() {
        let site = if r.site.is_empty() {
            &batch.site
        } else {
            &r.site
        };
        if scope.sites.contains(site) {
            batch.readings.push(r);
        } else {
            if refused == 0 {
                tracing::warn!(token = %scope.token, %site, "readings for a site the token may not write refused");
            }
            refused += 1;
            tally.reject(batch_no, index, &r.device_id, SITE_NOT_ALLOWED.into());
        }
    }
    shared.metrics.readings_site_not_allowed(refused);
}

/// The rejection reason of a reading for a site its token may not write.
pub const SITE_NOT_ALLOWED: &str = "site_not_allowed";

/// How long an `Ingest` call waits for its batches to come back from the
/// shared log (cluster mode).
const LOG_WAIT: Duration = Duration::from_secs(30);

/// Where a batch came from, as far as it makes the batch one of a kind:
/// the client's batch id (`IngestAcked`) or the bus message. In cluster
/// mode the shared log takes each once.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub batch_id: Option<String>,
    pub bus: Option<super::store::BusKey>,
}

/// Every source's way in (the gRPC stream and the bus): batches through
/// [`take_batch`], durable before this returns. With the embedded store
/// they are taken here and the state written; in cluster mode they are
/// appended to the shared log (a batch whose [`Source`] was logged
/// before is dropped) and every replica takes them from there, in log order.
/// With `wait`, returns each batch's tally (in cluster mode, once this
/// replica applied them); otherwise empty tallies.
pub async fn intake(
    shared: &Arc<Shared>,
    batches: Vec<(Source, pb::ReadingBatch)>,
    wait: bool,
) -> Result<Vec<Tally>, Status> {
    let internal = |e: tokio::task::JoinError| errors::internal(e);
    let n = batches.len();
    if !shared.store.is_cluster() {
        let s = shared.clone();
        let tallies = tokio::task::spawn_blocking(move || {
            let mut hub = s.telemetry();
            let now = super::now_s();
            batches
                .into_iter()
                .map(|(_, batch)| {
                    let mut tally = Tally::default();
                    take_batch(&mut hub, 0, batch, &mut tally, now);
                    tally
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(internal)?;
        let s = shared.clone();
        tokio::task::spawn_blocking(move || s.flush_telemetry())
            .await
            .map_err(internal)??;
        shared.replan_wake.notify_one();
        return Ok(tallies);
    }
    if n == 0 {
        return Ok(Vec::new()); // every logged batch is already durable
    }
    let origin = wait.then(|| shared.cluster.replica_id.clone());
    let entries = batches
        .into_iter()
        .map(|(source, batch)| super::store::LogEntry {
            dedupe: source.batch_id.map(|id| format!("grpc/{id}")),
            bus: source.bus,
            origin: origin.clone(),
            batch: batch.encode_to_vec(),
        })
        .collect();
    let s = shared.clone();
    let seqs = tokio::task::spawn_blocking(move || s.store.append_telemetry(entries))
        .await
        .map_err(internal)?
        .map_err(|e| {
            errors::error(
                Reason::StoreUnavailable,
                format!("cannot log telemetry: {e}"),
            )
        })?;
    shared.cluster.tail_wake.notify_one();
    let dropped = seqs.iter().filter(|s| s.is_none()).count() as u64;
    shared
        .cluster
        .log_duplicates
        .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
    if !wait {
        return Ok(Vec::new());
    }
    let seqs: Vec<u64> = seqs.into_iter().flatten().collect();
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    loop {
        if let Some(tallies) = shared.cluster.take_tallies(&seqs) {
            debug_assert_eq!(tallies.len(), seqs.len()); // a deduplicated entry has none
            return Ok(tallies);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(errors::error(
                Reason::StoreUnavailable,
                "telemetry was logged but not applied within 30 s; it will be applied",
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Write accepted readings to disk every couple of seconds, so a stream
/// that never ends still gets stored.
pub async fn flusher(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || s.flush_telemetry()).await;
    }
}

/// A stream's rate limit: after `n` readings it may not run ahead of
/// `n / rate` seconds since it opened, so a fast sender is slowed to the
/// limit (HTTP/2 flow control pushes back on it) instead of being cut off.
struct Pace {
    rate_per_s: f64,
    start: tokio::time::Instant,
    readings: f64,
}

impl Pace {
    fn new(rate_per_s: f64) -> Pace {
        Pace {
            rate_per_s,
            start: tokio::time::Instant::now(),
            readings: 0.0,
        }
    }

    async fn wait(&mut self, readings: usize) {
        if self.rate_per_s <= 0.0 {
            return;
        }
        // Admit this batch once the earlier ones have had their time.
        let due = self.start + edgeplan_model::duration_s(self.readings / self.rate_per_s);
        self.readings += readings as f64;
        tokio::time::sleep_until(due).await;
    }
}

type SiteStream = Pin<Box<dyn Stream<Item = Result<pb::SiteStates, Status>> + Send>>;
type AckStream = Pin<Box<dyn Stream<Item = Result<pb::IngestAck, Status>> + Send>>;

/// One batch of `IngestAcked`: refused whole, a duplicate, or taken and
/// durable — its ack. Only a store that cannot be written ends the stream.
async fn acked(
    shared: &Arc<Shared>,
    batch_id: String,
    mut batch: pb::ReadingBatch,
    scope: Option<&super::auth::SiteScope>,
) -> Result<pb::IngestAck, Status> {
    let refuse = |why: String| pb::IngestAck {
        batch_id: batch_id.clone(),
        error_reason: Reason::InvalidField.as_str().into(),
        error: why,
        ..Default::default()
    };
    if batch_id.is_empty() || batch_id.chars().count() > 128 {
        return Ok(refuse("batch_id: must be 1 to 128 characters".into()));
    }
    let max = shared.config.max_batch_readings;
    if batch.readings.len() > max {
        return Ok(refuse(format!(
            "readings: {} readings, at most {max} per batch",
            batch.readings.len()
        )));
    }
    let mut refused = Tally::default();
    keep_scoped(shared, scope, &mut batch, &mut refused, 0);
    let tally = if shared.store.is_cluster() {
        // The shared log drops an entry whose key it has logged before.
        let source = Source {
            batch_id: Some(batch_id.clone()),
            bus: None,
        };
        intake(shared, vec![(source, batch)], true).await?.pop()
    } else {
        let s = shared.clone();
        let id = batch_id.clone();
        let tally = tokio::task::spawn_blocking(move || {
            let mut hub = s.telemetry();
            if !hub.state.first_time(&id) {
                return None;
            }
            let mut tally = Tally::default();
            take_batch(&mut hub, 0, batch, &mut tally, super::now_s());
            hub.dirty = true; // the id is state to keep, even if no reading was
            Some(tally)
        })
        .await
        .map_err(errors::internal)?;
        intake(shared, Vec::new(), false).await?; // durable before the ack
        tally
    };
    let tally = tally.map(|t| {
        refused.absorb(t, 0);
        refused
    });
    Ok(match tally {
        None => pb::IngestAck {
            batch_id,
            duplicate: true,
            ..Default::default()
        },
        Some(t) => pb::IngestAck {
            batch_id,
            accepted: t.accepted,
            rejected: t.rejected,
            rejected_by_reason: t.by_reason.into_iter().collect(),
            examples: t.examples,
            ..Default::default()
        },
    })
}

/// One of the `max_ingest_streams` permits, held while a stream is open.
fn ingest_permit(shared: &Shared) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    shared
        .ingest_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            errors::error(
                Reason::Limit,
                format!(
                    "{} ingest streams are open, the most this server takes",
                    shared.config.max_ingest_streams
                ),
            )
        })
}

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetryApi {
    async fn ingest(
        &self,
        req: Request<Streaming<pb::ReadingBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
        let _permit = ingest_permit(&self.0)?;
        let scope = req.extensions().get::<super::auth::SiteScope>().cloned();
        let mut stream = req.into_inner();
        let max = self.0.config.max_batch_readings;
        let mut pace = Pace::new(self.0.config.max_ingest_readings_per_s);
        let mut tally = Tally::default();
        while let Some(mut batch) = stream.message().await? {
            pace.wait(batch.readings.len()).await;
            let batch_no = tally.batches;
            tally.batches += 1;
            if batch.readings.len() > max {
                return Err(errors::field(
                    "readings",
                    format!(
                        "batch {batch_no}: {} readings, at most {max} per batch",
                        batch.readings.len()
                    ),
                ));
            }
            keep_scoped(&self.0, scope.as_ref(), &mut batch, &mut tally, batch_no);
            if self.0.store.is_cluster() {
                // Logged batch by batch: a stream that never ends still lands.
                for t in intake(&self.0, vec![(Source::default(), batch)], true).await? {
                    tally.absorb(t, batch_no);
                }
            } else {
                let shared = self.0.clone();
                tally = tokio::task::spawn_blocking(move || {
                    let now = super::now_s();
                    take_batch(&mut shared.telemetry(), batch_no, batch, &mut tally, now);
                    tally
                })
                .await
                .map_err(errors::internal)?;
            }
        }
        // Durable before the reply (embedded: the state is written now).
        intake(&self.0, Vec::new(), false).await?;
        Ok(Response::new(pb::IngestSummary {
            accepted: tally.accepted,
            rejected: tally.rejected,
            rejected_by_reason: tally.by_reason.into_iter().collect(),
            examples: tally.examples,
            batches: tally.batches,
        }))
    }

    type IngestAckedStream = AckStream;

    async fn ingest_acked(
        &self,
        req: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<Self::IngestAckedStream>, Status> {
        let permit = ingest_permit(&self.0)?;
        let scope = req.extensions().get::<super::auth::SiteScope>().cloned();
        let mut stream = req.into_inner();
        let shared = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _permit = permit;
            let mut pace = Pace::new(shared.config.max_ingest_readings_per_s);
            loop {
                let item = match stream.message().await {
                    Ok(Some(item)) => item,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let batch = item.batch.unwrap_or_default();
                pace.wait(batch.readings.len()).await;
                let ack = acked(&shared, item.batch_id, batch, scope.as_ref()).await;
                if tx.send(ack).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stats(
        &self,
        _req: Request<pb::TelemetryStatsRequest>,
    ) -> Result<Response<pb::TelemetryStats>, Status> {
        let hub = self.0.telemetry();
        Ok(Response::new(pb::TelemetryStats {
            accepted: hub.state.accepted,
            rejected_by_reason: hub
                .state
                .rejected
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            sensors: hub.state.sensors.len() as u64,
            samples: hub.state.sensors.values().map(|s| s.count).sum(),
            log_applied: self.0.cluster.applied.load(Ordering::Acquire),
            bus_messages: self.0.cluster.bus_messages.load(Ordering::Relaxed),
            bus_redelivered: self.0.cluster.bus_redelivered.load(Ordering::Relaxed),
            log_duplicates: self.0.cluster.log_duplicates.load(Ordering::Relaxed),
        }))
    }

    type WatchSitesStream = SiteStream;

    async fn watch_sites(
        &self,
        req: Request<pb::WatchSitesRequest>,
    ) -> Result<Response<Self::WatchSitesStream>, Status> {
        let req = req.into_inner();
        let interval = Duration::from_millis(u64::from(req.interval_ms.max(100)));
        let known: Vec<String> = self
            .0
            .state()
            .instance
            .sites
            .iter()
            .map(|s| s.id.clone())
            .collect();
        if let Some(unknown) = req.sites.iter().find(|s| !known.contains(s)) {
            return Err(errors::not_found(
                "site",
                unknown,
                format!("site {unknown} is not in the inventory"),
            ));
        }
        let shared = self.0.clone();
        let wanted = req.sites;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let s = shared.clone();
                let w = wanted.clone();
                let states = tokio::task::spawn_blocking(move || site_states(&s, &w))
                    .await
                    .unwrap_or_else(|e| Err(errors::internal(e)));
                if tx.send(states).await.is_err() {
                    return; // the client went away
                }
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Each wanted site's sensors and, from the current placement under the
/// effective limits, its headroom.
pub fn site_states(shared: &Shared, wanted: &[String]) -> Result<pb::SiteStates, Status> {
    let view = super::view::View::now(shared)?;
    let hub = shared.telemetry();
    let mut out = Vec::new();
    for kpi in &view.eval.sites {
        if !wanted.is_empty() && !wanted.contains(&kpi.site) {
            continue;
        }
        let summary = hub.state.site_summary(&kpi.site, view.now_s);
        let sensors = hub
            .state
            .sensors
            .values()
            .filter(|s| s.site == kpi.site)
            .count() as u32;
        out.push(pb::SiteState {
            site: kpi.site.clone(),
            ambient_c: summary.ambient_c,
            humidity_pct: summary.humidity_pct,
            max_inlet_c: summary.max_inlet_p95_c,
            site_power_kw: summary.site_power_kw.or(summary.rack_power_kw),
            utilization: hub
                .state
                .latest(
                    &kpi.site,
                    edgeplan_telemetry::telemetry::SensorKind::Utilization,
                    None,
                )
                .map(|s| s.ewma),
            fresh_sensors: sensors.saturating_sub(summary.stale_sensors as u32),
            stale_sensors: summary.stale_sensors as u32,
            it_kw: kpi.it_kw,
            it_limit_kw: kpi.it_limit_kw,
            inlet_headroom_c: kpi.inlet_limit_c - kpi.inlet_c,
            power_headroom_kw: kpi.it_limit_kw - kpi.it_kw,
            binding: format!("{:?}", kpi.binding).to_lowercase(),
            binding_limit: match kpi.binding {
                edgeplan_physics::physics::PowerLimit::PowerCap => pb::PowerLimit::PowerCap,
                edgeplan_physics::physics::PowerLimit::Cooling => pb::PowerLimit::Cooling,
                edgeplan_physics::physics::PowerLimit::Inlet => pb::PowerLimit::Inlet,
            } as i32,
        });
    }
    Ok(pb::SiteStates { sites: out })
}
