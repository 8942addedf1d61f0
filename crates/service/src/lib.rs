//! The gRPC service (shell): inventory, telemetry, placement and plan
//! dispatch around the pure core, with its state in an embedded database.
//!
//! One [`Shared`] value holds what the handlers and the background tasks
//! (dispatcher, continuous re-planning, telemetry flusher) share. Writes take
//! the state lock, commit to the store, then change memory, so memory never
//! runs ahead of the disk. Locks are never held across an `.await`.

pub mod auth;
pub mod bmc_sim;
pub mod bus;
pub mod client;
pub mod cluster;
pub mod collect;
pub mod collect_bench;
pub mod continuous;
pub mod demo;
pub mod dispatch;
pub mod errors;
pub mod health;
pub mod http;
pub mod inventory;
pub mod load;
pub mod metrics;
pub mod paging;
pub mod placement;
pub mod provisioner_sim;
pub mod publish;
pub mod spot;
pub mod store;
pub mod telemetry;
pub mod view;
pub mod whatif;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};
use tonic::Status;

use edgeplan_api::pb;
use edgeplan_model::error::Issue;
use edgeplan_model::instance::Instance;
use edgeplan_model::instance::Policy;
use edgeplan_plan::execution::Execution;
use edgeplan_telemetry::telemetry::{SanityLimits, TelemetryState};
use store::Store;

/// How the service runs. Every field has a default; a YAML file overrides
/// them (`edgeplan serve --config FILE`), flags override the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The HTTP port: Prometheus metrics, a JSON status and the live
    /// operator report (`http::HttpConfig`). Unset: none.
    pub http: Option<http::HttpConfig>,
    /// Where the database file (`edgeplan.redb`) lives.
    pub data_dir: PathBuf,
    /// The shared store for cluster mode, `postgres://user@host/db`. Unset:
    /// the embedded file in `data_dir`.
    pub store: Option<String>,
    /// Cluster mode: this replica's name and the leader lease.
    pub cluster: cluster::ClusterConfig,
    /// Telemetry from NATS JetStream beside the gRPC stream. Unset: none.
    pub nats: Option<bus::BusConfig>,
    /// Provisioner endpoints (`http://host:port`); steps go to the first
    /// that answers. Empty: approved plans wait.
    pub provisioners: Vec<String>,
    pub dispatch: DispatchConfig,
    pub continuous: ContinuousConfig,
    pub telemetry: SanityLimits,
    /// Largest request message, bytes.
    pub max_message_bytes: usize,
    /// Most readings in one batch.
    pub max_batch_readings: usize,
    /// Most concurrent requests per connection.
    pub max_concurrent_requests: usize,
    /// Default solve time limit, seconds.
    pub solve_time_limit_s: f64,
    /// Most readings per second on one `Ingest` stream (0: no limit); a
    /// faster stream is slowed down, not cut off (backpressure).
    pub max_ingest_readings_per_s: f64,
    /// Most `Ingest` streams open at once; one more is refused
    /// (RESOURCE_EXHAUSTED).
    pub max_ingest_streams: usize,
    /// `WhatIf`: most scenarios in one call, sweeps expanded …
    pub max_whatif_scenarios: usize,
    /// … most values in one sweep …
    pub max_whatif_sweep_values: usize,
    /// … the longest time limit a document may name, seconds …
    pub max_whatif_time_limit_s: f64,
    /// … and the largest work budget of each scenario's solve (what-if
    /// runs on the budget alone, for the same tables on any machine).
    pub max_whatif_work: u64,
    /// Serve TLS (and mutual TLS with `client_ca`). Unset: plaintext.
    pub tls: Option<auth::ServerTls>,
    /// Bearer tokens and their roles. None: no authentication.
    pub auth: auth::AuthConfig,
    /// TLS towards provisioners (their URLs then start with `https://`).
    pub provisioner_tls: Option<auth::ClientTls>,
    /// TLS towards the PostgreSQL store (`ca` required; `cert` and `key`
    /// for a client certificate; `domain` if not the URL's host). Required
    /// when the store is off loopback.
    pub store_tls: Option<auth::ClientTls>,
    /// Ended plans kept (the newest; succeeded, failed, cancelled or
    /// superseded): storing a new plan deletes older ended ones beyond
    /// this. Plans not ended are always kept.
    pub keep_ended_plans: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http: None,
            data_dir: PathBuf::from("edgeplan-data"),
            store: None,
            cluster: cluster::ClusterConfig::default(),
            nats: None,
            provisioners: Vec::new(),
            dispatch: DispatchConfig::default(),
            continuous: ContinuousConfig::default(),
            telemetry: SanityLimits::default(),
            max_message_bytes: 16 << 20,
            max_batch_readings: 100_000,
            max_concurrent_requests: 64,
            solve_time_limit_s: 10.0,
            max_ingest_readings_per_s: 0.0,
            max_ingest_streams: 256,
            max_whatif_scenarios: 64,
            max_whatif_sweep_values: 32,
            max_whatif_time_limit_s: 60.0,
            max_whatif_work: edgeplan_solve::fast::DEFAULT_WORK,
            tls: None,
            auth: auth::AuthConfig::default(),
            provisioner_tls: None,
            store_tls: None,
            keep_ended_plans: 500,
        }
    }
}

/// How steps reach the provisioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// A call's deadline: the step's expected duration × this factor …
    pub timeout_factor: f64,
    /// … plus this many seconds.
    pub timeout_slack_s: f64,
    /// Calls per step before it counts as failed (timeouts and transport errors).
    pub max_attempts: u32,
    /// First retry after this long; doubled each time.
    pub backoff_initial_ms: u64,
    /// Steps the provisioner is told to take this fraction of their modelled
    /// time (simulations and tests run faster than real migrations).
    pub time_scale: f64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            timeout_factor: 3.0,
            timeout_slack_s: 30.0,
            max_attempts: 4,
            backoff_initial_ms: 250,
            time_scale: 1.0,
        }
    }
}

impl DispatchConfig {
    /// Every setting a number the dispatcher can turn into a deadline or a
    /// backoff (finite, in range); the offending setting named otherwise.
    pub fn check(&self) -> Result<(), String> {
        edgeplan_model::settings::non_negative(
            "dispatch.",
            &[
                ("timeout_factor", self.timeout_factor),
                ("timeout_slack_s", self.timeout_slack_s),
                ("time_scale", self.time_scale),
            ],
        )?;
        if self.max_attempts == 0 {
            return Err("dispatch.max_attempts: must be at least 1".into());
        }
        // Doubled after each attempt: an hour to start with is plenty.
        if !(1..=3_600_000).contains(&self.backoff_initial_ms) {
            return Err(format!(
                "dispatch.backoff_initial_ms: must be within 1..=3600000, got {}",
                self.backoff_initial_ms
            ));
        }
        Ok(())
    }
}

/// Re-planning on its own when telemetry or demand moves a site past a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuousConfig {
    pub enabled: bool,
    /// How often sites are assessed, seconds.
    pub interval_s: f64,
    /// A site alarms when inlet headroom falls below this, °C …
    pub min_inlet_headroom_c: f64,
    /// … and clears only above it plus this, °C (hysteresis).
    pub inlet_hysteresis_c: f64,
    /// A site alarms when IT power exceeds this share of its effective limit
    /// (1: the placement no longer fits; the optimizer itself fills sites up
    /// to their limit, so a lower value alarms after every plan) …
    pub max_power_use: f64,
    /// … and clears only below it less this share.
    pub power_hysteresis: f64,
    /// Re-plan when replicas miss their latency SLO.
    pub slo: bool,
    /// At least this long between automatic plans, seconds.
    pub min_interval_s: f64,
    /// Approve automatic plans without an operator.
    pub auto_approve: bool,
    /// After a plan fails, plan again from the actual state.
    pub replan_on_failure: bool,
    /// When the inventory changed (a price, a demand, a site), re-plan if a
    /// solve beats today's placement by at least this share of its placed
    /// cost per hour (the unplaced penalty left out, so it cannot hide a
    /// saving; fewer unplaced replicas always count; 0 turns it off).
    pub min_gain: f64,
    /// Re-plan incrementally when only sites' telemetry-driven figures or
    /// workloads' demands changed since the last solve: only what must
    /// change moves (see `fast::Replanner`). Anything else (sites or
    /// workloads added or removed, the network, the weights) solves afresh.
    pub incremental: bool,
}

impl Default for ContinuousConfig {
    fn default() -> Self {
        ContinuousConfig {
            enabled: false,
            interval_s: 5.0,
            min_inlet_headroom_c: 1.0,
            inlet_hysteresis_c: 1.0,
            max_power_use: 1.0,
            power_hysteresis: 0.05,
            slo: true,
            min_interval_s: 60.0,
            auto_approve: false,
            replan_on_failure: true,
            incremental: true,
            min_gain: 0.02,
        }
    }
}

/// The inventory and plans, as stored.
pub struct State {
    pub instance: Instance,
    pub policy: Policy,
    pub version: u64,
    pub plans: BTreeMap<u64, Execution>,
    /// The store's generation this memory reflects.
    pub generation: u64,
}

impl State {
    pub fn next_plan_id(&self) -> u64 {
        self.plans.keys().next_back().map_or(1, |k| k + 1)
    }
}

pub use edgeplan_api::intake::TelemetryHub;

/// A change to a plan, for `WatchPlan`.
#[derive(Debug, Clone)]
pub struct PlanChange {
    pub plan_id: u64,
    pub step: Option<usize>,
}

pub struct Shared {
    pub config: Config,
    pub store: Store,
    state: Mutex<State>,
    telemetry: Mutex<TelemetryHub>,
    pub plan_changes: broadcast::Sender<PlanChange>,
    /// Wakes the dispatcher (a plan was approved, a step finished).
    pub dispatch_wake: Notify,
    /// Wakes continuous mode (a plan ended).
    pub replan_wake: Notify,
    /// One permit per open `Ingest` stream.
    pub ingest_streams: Arc<tokio::sync::Semaphore>,
    /// Leadership and the telemetry log (cluster mode).
    pub cluster: cluster::Node,
    /// Counters since start, for `/metrics`.
    pub metrics: metrics::Metrics,
    /// The last responses to stored solves with a request id, so a retry
    /// on this replica gets the very answer the first call got.
    solve_replies: Mutex<std::collections::VecDeque<(String, edgeplan_api::pb::SolveResponse)>>,
}

/// Solve responses kept for retries (each can hold a whole placement).
const SOLVE_REPLIES_KEPT: usize = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave half a write: memory is
    // changed only after the store committed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Open the data directory and read the stored state.
    pub fn open(config: Config) -> anyhow::Result<Arc<Shared>> {
        let tls = match &config.store_tls {
            Some(t) => Some(store::pg_tls::MakeRustls::new(
                Arc::new(t.rustls_client("store_tls")?),
                t.domain.clone(),
            )),
            None => None,
        };
        let store = Store::open_with(config.store.as_deref(), tls, &config.data_dir)?;
        let loaded = store.load()?;
        let mut telemetry = match &loaded.telemetry {
            Some(bytes) => serde_json::from_slice::<TelemetryState>(bytes)
                .map_err(|e| anyhow::anyhow!("stored telemetry is corrupt: {e}"))?,
            None => TelemetryState::default(),
        };
        telemetry.limits = config.telemetry.clone();
        telemetry.reindex();
        let sites = loaded.instance.sites.iter().map(|s| s.id.clone()).collect();
        let policy = Policy {
            name: loaded.instance.name.clone(),
            objective: loaded.instance.objective.clone(),
            limits: loaded.instance.limits.clone(),
        };
        let (plan_changes, _) = broadcast::channel(1024);
        let cluster = cluster::Node::new(
            &config.cluster,
            store.is_cluster(),
            loaded.telemetry_through,
        );
        cluster
            .generation
            .store(loaded.generation, std::sync::atomic::Ordering::Release);
        Ok(Arc::new(Shared {
            cluster,
            metrics: Default::default(),
            ingest_streams: Arc::new(tokio::sync::Semaphore::new(config.max_ingest_streams)),
            config,
            store,
            state: Mutex::new(State {
                instance: loaded.instance,
                policy,
                version: loaded.version,
                plans: loaded.plans.into_iter().map(|e| (e.id, e)).collect(),
                generation: loaded.generation,
            }),
            telemetry: Mutex::new(TelemetryHub {
                state: telemetry,
                sites,
                dirty: false,
            }),
            plan_changes,
            solve_replies: Mutex::new(Default::default()),
            dispatch_wake: Notify::new(),
            replan_wake: Notify::new(),
        }))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn telemetry(&self) -> MutexGuard<'_, TelemetryHub> {
        lock(&self.telemetry)
    }

    /// Commit `ops`, made from `state`, and note the new generation. In
    /// cluster mode the commit is refused if another replica wrote since
    /// `state` was read (memory is then reloaded; the caller reports or
    /// retries), and `leader_only` writes are refused unless this replica
    /// holds the lease.
    pub fn commit(
        &self,
        state: &mut State,
        ops: &[store::Op<'_>],
        leader_only: bool,
    ) -> Result<(), store::StoreError> {
        let guard = store::Guard {
            generation: Some(state.generation),
            fence: if leader_only {
                self.cluster.fence_for_write()?
            } else {
                None
            },
        };
        match self.store.commit_guarded(ops, &guard) {
            Ok(generation) => {
                state.generation = generation;
                self.cluster
                    .generation
                    .store(generation, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(e @ store::StoreError::Stale { .. }) => {
                if let Err(r) = self.reload(state) {
                    tracing::error!("cannot reload the state: {r}");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Replace `state` with what the store holds now (another replica
    /// wrote); wake whoever watches what changed.
    pub fn reload(&self, state: &mut State) -> Result<(), store::StoreError> {
        let loaded = self.store.load()?;
        if loaded.generation <= state.generation && state.generation != 0 {
            return Ok(());
        }
        let plans: BTreeMap<u64, Execution> = loaded.plans.into_iter().map(|e| (e.id, e)).collect();
        let changed: Vec<u64> = plans
            .iter()
            .filter(|(id, e)| state.plans.get(id) != Some(e))
            .map(|(id, _)| *id)
            .collect();
        state.policy = Policy {
            name: loaded.instance.name.clone(),
            objective: loaded.instance.objective.clone(),
            limits: loaded.instance.limits.clone(),
        };
        self.telemetry().sites = loaded.instance.sites.iter().map(|s| s.id.clone()).collect();
        state.instance = loaded.instance;
        state.version = loaded.version;
        state.plans = plans;
        state.generation = loaded.generation;
        self.cluster
            .generation
            .store(loaded.generation, std::sync::atomic::Ordering::Release);
        for id in changed {
            self.notify_plan(id, None);
        }
        self.dispatch_wake.notify_one();
        self.replan_wake.notify_one();
        Ok(())
    }

    /// Write the telemetry state if readings arrived since the last write
    /// (embedded store; in cluster mode the telemetry log is the durable
    /// copy and the leader writes snapshots, see [`cluster`]).
    pub fn flush_telemetry(&self) -> Result<(), Status> {
        if self.store.is_cluster() {
            return Ok(());
        }
        let bytes = {
            let mut hub = self.telemetry();
            if !hub.dirty {
                return Ok(());
            }
            hub.dirty = false;
            serde_json::to_vec(&hub.state).map_err(errors::internal)?
        };
        self.store
            .commit(&[store::Op::Telemetry(&bytes, 0)])
            .map(drop)
            .map_err(|e| {
                self.telemetry().dirty = true;
                errors::error(
                    errors::Reason::StoreUnavailable,
                    format!("cannot store telemetry: {e}"),
                )
            })
    }

    /// The response a stored solve with this request id got here, if kept.
    pub fn solve_reply(&self, request_id: &str) -> Option<edgeplan_api::pb::SolveResponse> {
        lock(&self.solve_replies)
            .iter()
            .find(|(id, _)| id == request_id)
            .map(|(_, r)| r.clone())
    }

    pub fn remember_solve_reply(
        &self,
        request_id: String,
        response: edgeplan_api::pb::SolveResponse,
    ) {
        let mut kept = lock(&self.solve_replies);
        if kept.len() == SOLVE_REPLIES_KEPT {
            kept.pop_front();
        }
        kept.push_back((request_id, response));
    }

    pub fn notify_plan(&self, plan_id: u64, step: Option<usize>) {
        let _ = self.plan_changes.send(PlanChange { plan_id, step });
    }
}

/// A failed commit as a status: WRITE_CONFLICT (ABORTED: retry) when
/// another replica wrote first or this one lost the lease,
/// STORE_UNAVAILABLE (UNAVAILABLE: retry later) otherwise.
pub fn store_status(what: &str, e: store::StoreError) -> Status {
    let reason = match e {
        store::StoreError::Stale { .. } | store::StoreError::Fenced { .. } => {
            errors::Reason::WriteConflict
        }
        _ => errors::Reason::StoreUnavailable,
    };
    errors::error(reason, format!("{what}: {e}"))
}

/// Seconds since the Unix epoch (the shell's clock; the core gets time as a value).
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// INVALID_INVENTORY listing every issue in BadRequest, with index paths
/// (`sites[3]`) rewritten to ids (`sites[id=lisbon]`) so the caller sees
/// its own names.
pub fn invalid(issues: &[Issue], instance: &Instance) -> Status {
    let lists: [(&str, Vec<&str>); 3] = [
        (
            "sites",
            instance.sites.iter().map(|s| s.id.as_str()).collect(),
        ),
        (
            "regions",
            instance.regions.iter().map(|r| r.id.as_str()).collect(),
        ),
        (
            "workloads",
            instance.workloads.iter().map(|w| w.id.as_str()).collect(),
        ),
    ];
    let rewrite = |path: &str| -> String {
        for (name, ids) in &lists {
            if let Some(rest) = path.strip_prefix(&format!("{name}[")) {
                if let Some((idx, tail)) = rest.split_once(']') {
                    if let Some(id) = idx.parse::<usize>().ok().and_then(|i| ids.get(i)) {
                        return format!("{name}[id={id}]{tail}");
                    }
                }
            }
        }
        if let Some(rest) = path.strip_prefix("network.links[") {
            if let Some((idx, tail)) = rest.split_once(']') {
                if let Some(l) = idx
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| instance.network.links.get(i))
                {
                    return format!("links[id={}]{tail}", store::link_key(l));
                }
            }
        }
        path.to_string()
    };
    errors::bad_request(
        errors::Reason::InvalidInventory,
        issues
            .iter()
            .map(|i| (rewrite(&i.path), i.message.clone()))
            .collect(),
    )
}

/// Start everything and serve until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve_on(config, listener, shutdown).await
}

/// As [`serve`], on a bound listener (port 0 in tests); the HTTP port, if
/// configured, is bound here.
pub async fn serve_on(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let http = match &config.http {
        Some(h) => Some(
            tokio::net::TcpListener::bind(h.listen)
                .await
                .map_err(|e| anyhow::anyhow!("http.listen {}: {e}", h.listen))?,
        ),
        None => None,
    };
    serve_listeners(config, listener, http, shutdown).await
}

/// As [`serve_on`], with the HTTP port's listener bound by the caller (who
/// then knows its address).
pub async fn serve_listeners(
    config: Config,
    listener: tokio::net::TcpListener,
    http_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.cluster.check().map_err(anyhow::Error::msg)?;
    config.dispatch.check().map_err(anyhow::Error::msg)?;
    config.telemetry.check().map_err(anyhow::Error::msg)?;
    edgeplan_model::settings::positive_seconds(
        "",
        &[("max_whatif_time_limit_s", config.max_whatif_time_limit_s)],
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(bus) = &config.nats {
        edgeplan_model::settings::positive_seconds(
            "nats.",
            &[
                ("ack_wait_s", bus.ack_wait_s),
                ("stream_max_age_s", bus.stream_max_age_s),
            ],
        )
        .map_err(anyhow::Error::msg)?;
        bus.check_link()?;
        if let Some(tls) = &bus.tls {
            tls.rustls_client("nats.tls")?; // a missing file fails the start
        }
    }
    if config.keep_ended_plans == 0 {
        anyhow::bail!("keep_ended_plans: must be at least 1 (the plan just ended)");
    }
    let tokens = Arc::new(auth::TokenTable::new(auth::Tokens::new(&config.auth)?));
    let tls = config.tls.as_ref().map(auth::ServerTls::load).transpose()?;
    let http_tls = match &http_listener {
        Some(l) => {
            http::check(l.local_addr()?, config.tls.is_some(), &tokens.get())
                .map_err(anyhow::Error::msg)?;
            config
                .tls
                .as_ref()
                .map(auth::ServerTls::rustls_config)
                .transpose()?
        }
        None => None,
    };
    if let Some(t) = &config.provisioner_tls {
        t.load()?; // a missing file fails the start, not every dispatch
    }
    let shared = Shared::open(config)?;
    let addr = listener.local_addr()?;
    if !tokens.get().enabled() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no auth.tokens configured: every caller may do everything");
    }
    let max = shared.config.max_message_bytes;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in API.into_iter().chain([""]) {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Both reflection versions: grpcurl and grpcui speak v1, Python's
    // grpcio-reflection and older tools v1alpha. Only the services this
    // port serves are listed: the proto also declares `Provisioner`, which
    // the provisioner implements, not edgeplan.
    const API: [&str; 3] = [
        "edgeplan.v1.Inventory",
        "edgeplan.v1.Telemetry",
        "edgeplan.v1.Placement",
    ];
    const SERVED: [&str; 6] = [
        API[0],
        API[1],
        API[2],
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(edgeplan_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in SERVED {
            b = b.with_service_name(name);
        }
        b
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let mut tasks = vec![
        tokio::spawn(dispatch::run(shared.clone())),
        tokio::spawn(continuous::run(shared.clone())),
        tokio::spawn(telemetry::flusher(shared.clone())),
    ];
    tasks.push(tokio::spawn(health::watch(
        shared.clone(),
        health_reporter,
        API.to_vec(),
    )));
    tasks.extend(cluster::start(&shared));
    tasks.push(tokio::spawn(auth::reload_tokens(
        shared.config.auth.clone(),
        tokens.clone(),
        Duration::from_secs(1),
    )));
    if let Some(l) = http_listener {
        tracing::info!(addr = %l.local_addr()?, tls = http_tls.is_some(), "edgeplan HTTP port (metrics, status, live report)");
        let (s, t) = (shared.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = http::serve(s, t, l, http_tls, std::future::pending()).await {
                tracing::error!("HTTP port stopped: {e}");
            }
        }));
    }
    if shared.config.nats.is_some() {
        tasks.push(tokio::spawn(bus::run(shared.clone())));
    }
    match &shared.config.store {
        Some(url) => tracing::info!(%addr, store = %store::postgres::redact(url),
            replica = %shared.cluster.replica_id, "edgeplan serving (cluster mode)"),
        None => {
            tracing::info!(%addr, data_dir = %shared.config.data_dir.display(), "edgeplan serving")
        }
    }

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .layer(auth::AuthLayer(tokens))
        .concurrency_limit_per_connection(shared.config.max_concurrent_requests)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::inventory_server::InventoryServer::new(inventory::InventoryApi(shared.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::telemetry_server::TelemetryServer::new(telemetry::TelemetryApi(shared.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::placement_server::PlacementServer::new(placement::PlacementApi(shared.clone()))
                .max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    for t in tasks {
        t.abort();
    }
    shared.flush_telemetry().ok();
    cluster::step_down(&shared);
    result.map_err(Into::into)
}
