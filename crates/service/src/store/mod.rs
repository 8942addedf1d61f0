//! Durable state behind one interface, two backends: an embedded database
//! file (redb, the default) and PostgreSQL (cluster mode, several replicas
//! on one database). Both keep the same tables: the inventory, the policy,
//! the state version, the aggregated telemetry, plans and their step states,
//! a generation counter and the leader lease. Every write is one
//! transaction made durable before the caller acknowledges anything, so an
//! acknowledged write survives `kill -9`. Values are JSON of the core types.
//!
//! A commit may carry a [`Guard`]: the generation the caller's memory was
//! read at (refused as [`StoreError::Stale`] when another replica wrote
//! since) and the leader's fence (refused as [`StoreError::Fenced`] once
//! another replica holds the lease). The backends differ only in how rows
//! reach the disk; ops become rows ([`Row`]) and rows become [`Loaded`]
//! here, once.

pub mod embedded;
pub mod pg_tls;
pub mod postgres;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use edgeplan_model::accelerator_models::AcceleratorModel;
pub use edgeplan_model::instance::Policy;
use edgeplan_model::instance::{nodes_of, Instance, Link, Network, Region, Site, Workload};
use edgeplan_model::server_models::ServerModel;
use edgeplan_plan::execution::{Execution, PlanState, StepStatus};
use edgeplan_plan::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("stored value for {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode a value: {0}")]
    Encode(serde_json::Error),
    #[error(
        "the store has schema version {found}, this edgeplan knows up to {known}; upgrade edgeplan"
    )]
    Schema { found: u64, known: u64 },
    #[error("another replica changed the state (generation {found}, this replica read {expected}); read again and retry")]
    Stale { expected: u64, found: u64 },
    #[error(
        "replica {holder} no longer holds the leader lease (fence {fence}); its write is refused"
    )]
    Fenced { holder: String, fence: u64 },
    #[error("{0} needs the PostgreSQL store (cluster mode)")]
    Unsupported(&'static str),
    #[error("store {0:?}: expected a postgres:// or postgresql:// URL, or nothing for the embedded file")]
    BadUrl(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct PlanMeta {
    id: u64,
    state: PlanState,
    reason: String,
    inventory_version: u64,
    #[serde(default)]
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<edgeplan_plan::execution::RequestKey>,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    created_unix_s: f64,
    #[serde(default)]
    updated_unix_s: f64,
}

/// One write: applied together with the others of a [`Store::commit`].
pub enum Op<'a> {
    PutSite(&'a Site),
    DeleteSite(&'a str),
    PutLink(&'a Link),
    DeleteLink(&'a str),
    PutRegion(&'a Region),
    DeleteRegion(&'a str),
    PutWorkload(&'a Workload),
    DeleteWorkload(&'a str),
    Policy(&'a Policy),
    /// The fleet's own server models, all of them.
    ServerModels(&'a [ServerModel]),
    /// The fleet's own accelerator models, all of them.
    AcceleratorModels(&'a [AcceleratorModel]),
    Version(u64),
    /// A new plan with all its steps.
    NewPlan(&'a Execution),
    /// A plan's state (and error) changed.
    PlanState(&'a Execution),
    /// A plan gone from history (retention): the plan, its state, its steps.
    DeletePlan(&'a Execution),
    Step(u64, usize, &'a StepStatus),
    /// The aggregated telemetry, and (cluster mode) the last telemetry log
    /// entry it includes.
    Telemetry(&'a [u8], u64),
}

/// What a commit must find to go through.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The generation the caller's memory reflects.
    pub generation: Option<u64>,
    /// The lease the caller holds as leader.
    pub fence: Option<Fence>,
}

/// A leader's proof: the lease holder and the fence token it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub token: u64,
}

/// The stored tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Meta,
    Sites,
    Links,
    Regions,
    Workloads,
    /// Plan id → the plan itself (written once).
    Plans,
    /// Plan id → its state, reason, error (small; rewritten on every change).
    PlanMeta,
    /// (plan id, step id) → step status.
    Steps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Name(String),
    Plan(u64),
    Step(u64, u64),
}

/// One row written (`Some`) or deleted (`None`).
#[derive(Debug, Clone)]
pub struct Row {
    pub table: Table,
    pub key: Key,
    pub value: Option<Vec<u8>>,
}

/// Everything in a store, as rows, before it is parsed.
#[derive(Debug, Default)]
pub struct Raw {
    pub meta: BTreeMap<String, Vec<u8>>,
    /// Sites, links, regions, workloads: (key, value).
    pub entities: [Vec<(String, Vec<u8>)>; 4],
    pub plans: BTreeMap<u64, Vec<u8>>,
    pub plan_meta: BTreeMap<u64, Vec<u8>>,
    /// Plan id → (step, value) in step order.
    pub steps: BTreeMap<u64, Vec<(u64, Vec<u8>)>>,
    pub generation: u64,
}

/// The key of a link: its endpoints in order.
pub fn link_key(link: &Link) -> String {
    let (a, b) = if link.a <= link.b {
        (&link.a, &link.b)
    } else {
        (&link.b, &link.a)
    };
    format!("{a}|{b}")
}

/// Everything stored, as read at start-up (and by followers on a change).
pub struct Loaded {
    pub instance: Instance,
    pub version: u64,
    pub plans: Vec<Execution>,
    pub telemetry: Option<Vec<u8>>,
    /// The last telemetry log entry the stored telemetry includes.
    pub telemetry_through: u64,
    /// Bumped by every commit that changes the inventory or a plan.
    pub generation: u64,
}

/// One telemetry batch for the log (cluster mode).
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The client's key for the batch (`grpc/<batch_id>`); a second entry
    /// with the same key is dropped while the first is in the log.
    pub dedupe: Option<String>,
    /// The bus message the batch came in; a second entry for the same
    /// message is dropped, however long after the first.
    pub bus: Option<BusKey>,
    /// The replica that appended it, when it waits for its own tally.
    pub origin: Option<String>,
    /// The encoded `ReadingBatch`.
    pub batch: Vec<u8>,
}

/// One JetStream message: its stream (name and creation time, so that a
/// stream deleted and created again under its name is another) and its
/// sequence in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusKey {
    pub stream: String,
    pub created: String,
    pub seq: u64,
}

/// A logged batch, read back in log order.
#[derive(Debug, Clone)]
pub struct Logged {
    pub seq: u64,
    pub origin: Option<String>,
    pub batch: Vec<u8>,
    /// When it was logged (the store's clock, seconds since the epoch):
    /// the "now" every replica judges its readings' timestamps against.
    pub logged_at_s: f64,
}

pub enum Store {
    Embedded(embedded::Embedded),
    Postgres(postgres::PgStore),
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    // A value that cannot be encoded aborts the transaction: nothing half-written.
    serde_json::to_vec(v).map_err(StoreError::Encode)
}

fn parse<T: for<'de> Deserialize<'de>>(
    key: impl Into<String>,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.into(),
        source,
    })
}

impl Store {
    /// Open the store `url` names: a `postgres://` URL, or nothing for the
    /// embedded file `edgeplan.redb` in `data_dir`. Creates what is missing
    /// and applies schema migrations.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(url, None, data_dir)
    }

    /// As [`Store::open`], PostgreSQL over TLS with `tls` (required for a
    /// server off loopback: a plaintext link there is refused).
    pub fn open_with(
        url: Option<&str>,
        tls: Option<pg_tls::MakeRustls>,
        data_dir: &Path,
    ) -> Result<Store, StoreError> {
        match url {
            None | Some("") => {
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    StoreError::Db(format!("cannot create {}: {e}", data_dir.display()))
                })?;
                Ok(Store::Embedded(embedded::Embedded::open(
                    &data_dir.join("edgeplan.redb"),
                )?))
            }
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Store::Postgres(postgres::PgStore::open(u, tls)?))
            }
            Some(u) => Err(StoreError::BadUrl(u.to_string())),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Apply writes in one durable transaction. Returns the generation after it.
    pub fn commit(&self, ops: &[Op<'_>]) -> Result<u64, StoreError> {
        self.commit_guarded(ops, &Guard::default())
    }

    /// As [`commit`](Self::commit), refused unless `guard` holds.
    pub fn commit_guarded(&self, ops: &[Op<'_>], guard: &Guard) -> Result<u64, StoreError> {
        let rows = rows(ops)?;
        // Telemetry snapshots do not change what followers must reload.
        let bump = ops.iter().any(|o| !matches!(o, Op::Telemetry(..)));
        match self {
            Store::Embedded(s) => s.commit(rows, guard, bump),
            Store::Postgres(s) => s.commit(rows, guard, bump),
        }
    }

    /// Read everything back.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let raw = match self {
            Store::Embedded(s) => s.raw()?,
            Store::Postgres(s) => s.raw()?,
        };
        loaded(raw)
    }

    /// The generation now (followers poll it to know when to reload).
    pub fn generation(&self) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(s) => s.generation(),
            Store::Postgres(s) => s.generation(),
        }
    }

    /// Take or renew the leader lease for `holder` for `ttl_s`. The fence
    /// token grows by one each time the lease changes hands; `None` while
    /// another holder's lease runs.
    pub fn acquire_lease(&self, holder: &str, ttl_s: f64) -> Result<Option<Fence>, StoreError> {
        match self {
            Store::Embedded(s) => s.acquire_lease(holder, ttl_s),
            Store::Postgres(s) => s.acquire_lease(holder, ttl_s),
        }
    }

    /// Give the lease up now (a clean shutdown), if `holder` has it.
    pub fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.release_lease(holder),
            Store::Postgres(s) => s.release_lease(holder),
        }
    }

    /// Append telemetry batches to the shared log in one transaction, in
    /// order. Returns each entry's sequence number, or `None` for an entry
    /// whose key or bus message was already logged.
    pub fn append_telemetry(&self, entries: Vec<LogEntry>) -> Result<Vec<Option<u64>>, StoreError> {
        match self {
            Store::Embedded(_) => Err(StoreError::Unsupported("the telemetry log")),
            Store::Postgres(s) => s.append_telemetry(entries),
        }
    }

    /// Logged batches after `after`, oldest first, at most `limit`.
    pub fn telemetry_since(&self, after: u64, limit: u32) -> Result<Vec<Logged>, StoreError> {
        match self {
            Store::Embedded(_) => Err(StoreError::Unsupported("the telemetry log")),
            Store::Postgres(s) => s.telemetry_since(after, limit),
        }
    }

    /// Forget bus messages that can no longer come: those of `stream`
    /// below its first sequence, or of an earlier stream of that name,
    /// logged more than `keep_s` ago (a message pulled just before it left
    /// the stream may still be on its way to the log).
    pub fn prune_bus_keys(
        &self,
        stream: &str,
        created: &str,
        first_seq: u64,
        keep_s: f64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(_) => Err(StoreError::Unsupported("the telemetry log")),
            Store::Postgres(s) => s.prune_bus_keys(stream, created, first_seq, keep_s),
        }
    }

    /// Drop logged batches up to `through` older than `keep_s` (the bus
    /// keys stay, see [`Store::prune_bus_keys`]).
    pub fn prune_telemetry(&self, through: u64, keep_s: f64) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(_) => Err(StoreError::Unsupported("the telemetry log")),
            Store::Postgres(s) => s.prune_telemetry(through, keep_s),
        }
    }
}

fn row(table: Table, key: Key, value: Option<Vec<u8>>) -> Row {
    Row { table, key, value }
}

fn name(s: &str) -> Key {
    Key::Name(s.to_string())
}

/// Ops as rows, encoded once for either backend.
fn rows(ops: &[Op<'_>]) -> Result<Vec<Row>, StoreError> {
    let plan_meta = |e: &Execution| -> Result<Row, StoreError> {
        let m = PlanMeta {
            id: e.id,
            state: e.state,
            reason: e.reason.clone(),
            inventory_version: e.inventory_version,
            error: e.error.clone(),
            request: e.request.clone(),
            revision: e.revision,
            created_unix_s: e.created_unix_s,
            updated_unix_s: e.updated_unix_s,
        };
        Ok(row(Table::PlanMeta, Key::Plan(e.id), Some(json(&m)?)))
    };
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::PutSite(s) => out.push(row(Table::Sites, name(&s.id), Some(json(s)?))),
            Op::DeleteSite(id) => out.push(row(Table::Sites, name(id), None)),
            Op::PutLink(l) => out.push(row(Table::Links, Key::Name(link_key(l)), Some(json(l)?))),
            Op::DeleteLink(k) => out.push(row(Table::Links, name(k), None)),
            Op::PutRegion(r) => out.push(row(Table::Regions, name(&r.id), Some(json(r)?))),
            Op::DeleteRegion(id) => out.push(row(Table::Regions, name(id), None)),
            Op::PutWorkload(w) => out.push(row(Table::Workloads, name(&w.id), Some(json(w)?))),
            Op::DeleteWorkload(id) => out.push(row(Table::Workloads, name(id), None)),
            Op::Policy(p) => out.push(row(Table::Meta, name("policy"), Some(json(p)?))),
            Op::ServerModels(m) => {
                out.push(row(Table::Meta, name("server_models"), Some(json(m)?)))
            }
            Op::AcceleratorModels(m) => {
                out.push(row(Table::Meta, name("accelerator_models"), Some(json(m)?)))
            }
            Op::Version(v) => out.push(row(Table::Meta, name("version"), Some(json(v)?))),
            Op::NewPlan(e) => {
                out.push(row(Table::Plans, Key::Plan(e.id), Some(json(&e.plan)?)));
                out.push(plan_meta(e)?);
                for (k, st) in e.steps.iter().enumerate() {
                    out.push(row(
                        Table::Steps,
                        Key::Step(e.id, k as u64),
                        Some(json(st)?),
                    ));
                }
            }
            Op::PlanState(e) => out.push(plan_meta(e)?),
            Op::DeletePlan(e) => {
                out.push(row(Table::Plans, Key::Plan(e.id), None));
                out.push(row(Table::PlanMeta, Key::Plan(e.id), None));
                for k in 0..e.steps.len() {
                    out.push(row(Table::Steps, Key::Step(e.id, k as u64), None));
                }
            }
            Op::Step(plan, k, st) => out.push(row(
                Table::Steps,
                Key::Step(*plan, *k as u64),
                Some(json(st)?),
            )),
            Op::Telemetry(bytes, through) => {
                out.push(row(Table::Meta, name("telemetry"), Some(bytes.to_vec())));
                out.push(row(
                    Table::Meta,
                    name("telemetry_through"),
                    Some(json(through)?),
                ));
            }
        }
    }
    Ok(out)
}

/// Rows as the state they store.
fn loaded(mut raw: Raw) -> Result<Loaded, StoreError> {
    let meta_u64 = |raw: &Raw, key: &str| -> Result<u64, StoreError> {
        raw.meta.get(key).map_or(Ok(0), |b| parse(key, b))
    };
    let version = meta_u64(&raw, "version")?;
    let telemetry_through = meta_u64(&raw, "telemetry_through")?;
    let policy: Policy = match raw.meta.get("policy") {
        Some(b) => parse("policy", b)?,
        None => Policy::default(),
    };
    // The fleet's own server models: one small list, rewritten whole.
    let server_models: Vec<ServerModel> = match raw.meta.get("server_models") {
        Some(b) => parse("server_models", b)?,
        None => Vec::new(),
    };
    let accelerator_models: Vec<AcceleratorModel> = match raw.meta.get("accelerator_models") {
        Some(b) => parse("accelerator_models", b)?,
        None => Vec::new(),
    };
    let telemetry = raw.meta.remove("telemetry");
    fn all<T: for<'de> Deserialize<'de>>(
        rows: &[(String, Vec<u8>)],
        name: &str,
    ) -> Result<Vec<T>, StoreError> {
        rows.iter()
            .map(|(k, v)| parse(format!("{name}/{k}"), v))
            .collect()
    }
    let [s, l, r, w] = &raw.entities;
    let instance = assemble(
        &policy,
        server_models,
        accelerator_models,
        all(s, "sites")?,
        all(l, "links")?,
        all(r, "regions")?,
        all(w, "workloads")?,
    );
    let mut plans = Vec::new();
    for (id, m) in &raw.plan_meta {
        let m: PlanMeta = parse(format!("plan_meta/{id}"), m)?;
        let Some(body) = raw.plans.get(id) else {
            continue;
        };
        let plan: Plan = parse(format!("plans/{id}"), body)?;
        let steps = raw
            .steps
            .get(id)
            .map(|s| {
                s.iter()
                    .map(|(k, v)| parse(format!("steps/({id}, {k})"), v))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        plans.push(Execution {
            id: m.id,
            state: m.state,
            plan,
            steps,
            reason: m.reason,
            inventory_version: m.inventory_version,
            error: m.error,
            request: m.request,
            revision: m.revision,
            created_unix_s: m.created_unix_s,
            updated_unix_s: m.updated_unix_s,
        });
    }
    Ok(Loaded {
        instance,
        version,
        plans,
        telemetry,
        telemetry_through,
        generation: raw.generation,
    })
}

/// An instance from stored parts. Network nodes are those the sites,
/// regions and links name.
pub fn assemble(
    policy: &Policy,
    server_models: Vec<ServerModel>,
    accelerator_models: Vec<AcceleratorModel>,
    sites: Vec<Site>,
    links: Vec<Link>,
    regions: Vec<Region>,
    workloads: Vec<Workload>,
) -> Instance {
    let nodes = nodes_of(&sites, &regions, &links);
    Instance {
        name: policy.name.clone(),
        server_models,
        accelerator_models,
        sites,
        network: Network { nodes, links },
        regions,
        workloads,
        objective: policy.objective.clone(),
        limits: policy.limits.clone(),
    }
}
