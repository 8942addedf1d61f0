//! Cluster mode: several `edgeplan serve` replicas on one PostgreSQL store.
//!
//! - **Every replica** serves the whole API. Its memory follows the store:
//!   a poll of the generation counter every `poll_interval_ms` reloads the
//!   state when another replica wrote; a write made from stale memory is
//!   refused by the store (generation guard) and memory reloaded.
//! - **One leader** runs dispatch and continuous mode. Leadership is a lease
//!   row in the store, renewed every `renew_interval_s` for `lease_ttl_s`
//!   by the database's clock; the fence token grows each time it changes
//!   hands, and every leader-only write carries it, so a deposed leader's
//!   writes are refused. A replica stops acting as leader at its renewal
//!   deadline (`renew_deadline_s` after it last asked, on its own monotonic
//!   clock, before the store's expiry), even if it cannot reach the store
//!   to hear so. The token goes with every provisioner call too, and a
//!   provisioner refuses a lower one than it has seen (`dispatch`).
//! - **Telemetry** goes through a shared log (`telemetry_log`): intake (gRPC
//!   or the bus) appends batches, every replica applies them in log order
//!   through the same `take_batch`, so all replicas converge on one state.
//!   The leader snapshots the state with the log position it includes and
//!   prunes the log behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::store::{Fence, Guard, Op, StoreError};
use super::telemetry::{take_batch, Tally};
use super::Shared;
use edgeplan_api::pb;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's name in the lease and the logs; unique per replica.
    /// Empty: host name and process id.
    pub replica_id: String,
    /// A leader that stops renewing loses the lease after this long, s.
    pub lease_ttl_s: f64,
    /// Every replica asks for the lease this often, s.
    pub renew_interval_s: f64,
    /// A leader stops leading (dispatch, continuous mode, leader-only
    /// writes) this long after its last successful request began, by its
    /// own monotonic clock; unset: `lease_ttl_s - renew_interval_s`. Below
    /// the lease, so a paused or cut-off leader gives up before the store
    /// lets another take over.
    pub renew_deadline_s: Option<f64>,
    /// How often a replica checks the store for other replicas' writes and
    /// the telemetry log for new batches, ms.
    pub poll_interval_ms: u64,
    /// The leader writes a telemetry snapshot this often, s.
    pub telemetry_snapshot_s: f64,
    /// Logged telemetry batches are kept at least this long after a
    /// snapshot includes them (`IngestAcked` batch ids with them; bus
    /// message keys stay while the stream holds the message), s.
    pub telemetry_keep_s: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replica_id: String::new(),
            lease_ttl_s: 5.0,
            renew_interval_s: 1.0,
            renew_deadline_s: None,
            poll_interval_ms: 200,
            telemetry_snapshot_s: 10.0,
            telemetry_keep_s: 600.0,
        }
    }
}

impl ClusterConfig {
    /// Every duration finite and positive, and renewals well inside the
    /// lease; the offending setting named otherwise.
    pub fn check(&self) -> Result<(), String> {
        edgeplan_model::settings::positive_seconds(
            "cluster.",
            &[
                ("lease_ttl_s", self.lease_ttl_s),
                ("renew_interval_s", self.renew_interval_s),
                ("telemetry_snapshot_s", self.telemetry_snapshot_s),
                ("telemetry_keep_s", self.telemetry_keep_s),
            ],
        )?;
        if self.renew_interval_s * 2.0 > self.lease_ttl_s {
            return Err(format!(
                "cluster.renew_interval_s: {} s must be at most half of lease_ttl_s ({} s), \
                 or a busy leader loses its lease between renewals",
                self.renew_interval_s, self.lease_ttl_s
            ));
        }
        let deadline = self.renew_deadline();
        if !(deadline > self.renew_interval_s && deadline < self.lease_ttl_s) {
            return Err(format!(
                "cluster.renew_deadline_s: {deadline} s must be above renew_interval_s ({} s) \
                 and below lease_ttl_s ({} s)",
                self.renew_interval_s, self.lease_ttl_s
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err("cluster.poll_interval_ms: must be at least 1".into());
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// How long after a successful request began this replica trusts it leads, s.
    pub fn renew_deadline(&self) -> f64 {
        self.renew_deadline_s
            .unwrap_or(self.lease_ttl_s - self.renew_interval_s)
    }
}

/// This replica's part in the cluster.
pub struct Node {
    pub replica_id: String,
    cluster: bool,
    /// The lease held, and until when this replica's clock trusts it.
    lease: Mutex<Option<(Fence, Instant)>>,
    /// The last fence held (for status and refusals).
    last_fence: AtomicU64,
    /// The telemetry log is applied through this entry.
    pub applied: AtomicU64,
    /// The store generation memory holds, readable without the state's
    /// lock (which a store call cut off mid-way can hold for a while).
    pub generation: AtomicU64,
    /// Tallies of batches this replica appended, by log entry, until their
    /// `Ingest` call takes them.
    own_tallies: Mutex<HashMap<u64, Tally>>,
    /// Wakes the telemetry tail (this replica appended).
    pub tail_wake: Notify,
    /// Bus messages taken, redelivered ones among them, and batches the
    /// log already held (for `Telemetry.Stats`).
    pub bus_messages: AtomicU64,
    pub bus_redelivered: AtomicU64,
    pub log_duplicates: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    pub fn new(cfg: &ClusterConfig, cluster: bool, telemetry_through: u64) -> Node {
        let replica_id = if cfg.replica_id.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "edgeplan".into());
            format!("{host}-{}", std::process::id())
        } else {
            cfg.replica_id.clone()
        };
        Node {
            replica_id,
            cluster,
            lease: Mutex::new(None),
            last_fence: AtomicU64::new(0),
            applied: AtomicU64::new(telemetry_through),
            generation: AtomicU64::new(0),
            own_tallies: Mutex::new(HashMap::new()),
            tail_wake: Notify::new(),
            bus_messages: AtomicU64::new(0),
            bus_redelivered: AtomicU64::new(0),
            log_duplicates: AtomicU64::new(0),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The fence while this replica leads and its clock trusts the lease.
    pub fn fence(&self) -> Option<Fence> {
        match &*lock(&self.lease) {
            Some((f, until)) if Instant::now() < *until => Some(f.clone()),
            _ => None,
        }
    }

    /// Whether this replica runs dispatch and continuous mode: always with
    /// the embedded store, with a valid lease in cluster mode.
    pub fn is_leader(&self) -> bool {
        !self.cluster || self.fence().is_some()
    }

    pub fn last_fence(&self) -> u64 {
        self.last_fence.load(Ordering::Relaxed)
    }

    /// The fence a leader-only write carries; refused here already when
    /// this replica does not lead.
    pub fn fence_for_write(&self) -> Result<Option<Fence>, StoreError> {
        if !self.cluster {
            return Ok(None);
        }
        self.fence().map(Some).ok_or_else(|| StoreError::Fenced {
            holder: self.replica_id.clone(),
            fence: self.last_fence(),
        })
    }

    /// The tallies of these log entries, once all are applied here.
    pub fn take_tallies(&self, seqs: &[u64]) -> Option<Vec<Tally>> {
        let mut own = lock(&self.own_tallies);
        if !seqs.iter().all(|s| own.contains_key(s)) {
            return None;
        }
        Some(seqs.iter().filter_map(|s| own.remove(s)).collect())
    }
}

/// The cluster tasks (none with the embedded store).
pub fn start(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    if !shared.cluster.cluster {
        return Vec::new();
    }
    vec![
        tokio::spawn(elect(shared.clone())),
        tokio::spawn(follow(shared.clone())),
        tokio::spawn(tail(shared.clone())),
        tokio::spawn(snapshots(shared.clone())),
    ]
}

/// Give the lease up on a clean shutdown, so another replica takes over
/// at its next renewal instead of after the lease runs out.
pub fn step_down(shared: &Shared) {
    if shared.cluster.cluster && lock(&shared.cluster.lease).take().is_some() {
        if let Err(e) = shared.store.release_lease(&shared.cluster.replica_id) {
            tracing::warn!("cannot release the leader lease: {e}");
        }
    }
}

async fn elect(shared: Arc<Shared>) {
    let cfg = shared.config.cluster.clone();
    // Checked at start (`ClusterConfig::check`): finite, positive, renewals
    // at most half the lease.
    let ttl = edgeplan_model::duration_s(cfg.lease_ttl_s);
    let deadline = edgeplan_model::duration_s(cfg.renew_deadline());
    let every = edgeplan_model::duration_s(cfg.renew_interval_s);
    let node = &shared.cluster;
    loop {
        // Counted from before the request: the store's expiry is later.
        let asked = Instant::now();
        let s = shared.clone();
        let got = tokio::task::spawn_blocking(move || {
            s.store
                .acquire_lease(&s.cluster.replica_id, ttl.as_secs_f64())
        })
        .await;
        let was = node.is_leader();
        match got {
            Ok(Ok(Some(fence))) => {
                node.last_fence.store(fence.token, Ordering::Relaxed);
                let token = fence.token;
                *lock(&node.lease) = Some((fence, asked + deadline));
                if !was {
                    tracing::info!(replica = %node.replica_id, fence = token, "leader: took the lease");
                    // Resume from the stored step states.
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut state = s.state();
                        state.generation = 0;
                        if let Err(e) = s.reload(&mut state) {
                            tracing::error!("cannot reload the state: {e}");
                        }
                    })
                    .await;
                    shared.dispatch_wake.notify_one();
                    shared.replan_wake.notify_one();
                }
            }
            Ok(Ok(None)) => {
                if lock(&node.lease).take().is_some() {
                    tracing::warn!(replica = %node.replica_id, "leader: another replica holds the lease now");
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot renew the leader lease: {e}"),
            Err(e) => tracing::warn!("lease task failed: {e}"),
        }
        if was && !node.is_leader() {
            tracing::warn!(replica = %node.replica_id, "leader: stepped down");
        }
        tokio::time::sleep(every).await;
    }
}

/// Reload memory when another replica wrote.
async fn follow(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.config.cluster.poll_interval_ms.max(10));
    loop {
        tokio::time::sleep(every).await;
        let s = shared.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let generation = s.store.generation()?;
            let mut state = s.state();
            if generation > state.generation {
                s.reload(&mut state)?;
            }
            Ok(())
        })
        .await;
        match r {
            Ok(Err(e)) => tracing::warn!("cannot follow the store: {e}"),
            Err(e) => tracing::warn!("follow task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Apply the telemetry log, in order, to this replica's telemetry state.
async fn tail(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.config.cluster.poll_interval_ms.max(10));
    loop {
        let s = shared.clone();
        let r = tokio::task::spawn_blocking(move || apply_log(&s)).await;
        let applied = match r {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::warn!("cannot read the telemetry log: {e}");
                0
            }
            Err(e) => {
                tracing::warn!("telemetry log task failed: {e}");
                0
            }
        };
        if applied > 0 {
            shared.replan_wake.notify_one();
            continue; // more may be waiting
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.cluster.tail_wake.notified() => {}
        }
    }
}

/// Log entries read per round.
const TAIL_BATCH: u32 = 256;

fn apply_log(shared: &Shared) -> Result<usize, StoreError> {
    let node = &shared.cluster;
    let after = node.applied.load(Ordering::Acquire);
    let rows = shared.store.telemetry_since(after, TAIL_BATCH)?;
    if rows.is_empty() {
        return Ok(0);
    }
    // An inventory change committed before these batches were logged (a
    // site registered on another replica, then its readings) must be seen
    // before they are applied: read the generation after the rows.
    let generation = shared.store.generation()?;
    {
        let mut state = shared.state();
        if generation > state.generation {
            shared.reload(&mut state)?;
        }
    }
    let mut hub = shared.telemetry();
    let mut own = Vec::new();
    for row in &rows {
        let mut tally = Tally::default();
        match pb::ReadingBatch::decode(row.batch.as_slice()) {
            Ok(batch) => take_batch(&mut hub, 0, batch, &mut tally, row.logged_at_s),
            // Intake encoded it; a corrupt entry is skipped, not retried forever.
            Err(e) => tracing::error!(seq = row.seq, "telemetry log entry is corrupt: {e}"),
        }
        if row.origin.as_deref() == Some(node.replica_id.as_str()) {
            own.push((row.seq, tally));
        }
    }
    let last = rows.last().map_or(after, |r| r.seq);
    node.applied.store(last, Ordering::Release);
    drop(hub);
    lock(&node.own_tallies).extend(own);
    Ok(rows.len())
}

/// The leader's telemetry snapshots (what a starting replica loads before
/// tailing the log from the position it includes) and the log's pruning.
async fn snapshots(shared: Arc<Shared>) {
    let cfg = shared.config.cluster.clone();
    let every = edgeplan_model::duration_s(cfg.telemetry_snapshot_s);
    loop {
        tokio::time::sleep(every).await;
        let Some(fence) = shared.cluster.fence() else {
            continue;
        };
        let s = shared.clone();
        let keep_s = cfg.telemetry_keep_s;
        let r = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            let (bytes, through) = {
                let hub = s.telemetry();
                let through = s.cluster.applied.load(Ordering::Acquire);
                (
                    serde_json::to_vec(&hub.state).map_err(StoreError::Encode)?,
                    through,
                )
            };
            s.store.commit_guarded(
                &[Op::Telemetry(&bytes, through)],
                &Guard {
                    generation: None,
                    fence: Some(fence),
                },
            )?;
            s.store.prune_telemetry(through, keep_s)
        })
        .await;
        match r {
            Ok(Ok(pruned)) => tracing::debug!(pruned, "telemetry snapshot written"),
            Ok(Err(e)) => tracing::warn!("telemetry snapshot: {e}"),
            Err(e) => tracing::warn!("telemetry snapshot task failed: {e}"),
        }
    }
}
