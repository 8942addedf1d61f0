//! Durable state in one embedded database file (redb): the inventory, the
//! policy, the state version, the aggregated telemetry, plans and their step
//! states. Every write is one transaction committed with `Durability::
//! Immediate` (fsync) before the caller acknowledges anything, so an
//! acknowledged write survives `kill -9`. Values are JSON of the core types.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::execution::{Execution, PlanState, StepStatus};
use crate::instance::{Instance, Link, Network, Node, ObjectiveWeights, Region, Site, Workload};
use crate::plan::Plan;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("sites");
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
const REGIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("regions");
const WORKLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("workloads");
/// Plan id → the plan itself (written once).
const PLANS: TableDefinition<u64, &[u8]> = TableDefinition::new("plans");
/// Plan id → its state, reason, error (small; rewritten on every change).
const PLAN_META: TableDefinition<u64, &[u8]> = TableDefinition::new("plan_meta");
/// (plan id, step id) → step status.
const STEPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("steps");

/// Schema version of the file; bumped with migrations.
const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("stored value for {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode a value: {0}")]
    Encode(serde_json::Error),
    #[error("data file has schema version {found}, this edgeplan reads {SCHEMA_VERSION}")]
    Schema { found: u64 },
}

macro_rules! db {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

/// Objective weights, limits and the fleet's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub name: String,
    pub objective: ObjectiveWeights,
    pub limits: crate::instance::Limits,
}

#[derive(Debug, Serialize, Deserialize)]
struct PlanMeta {
    id: u64,
    state: PlanState,
    reason: String,
    inventory_version: u64,
    #[serde(default)]
    error: String,
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
    Version(u64),
    /// A new plan with all its steps.
    NewPlan(&'a Execution),
    /// A plan's state (and error) changed.
    PlanState(&'a Execution),
    Step(u64, usize, &'a StepStatus),
    Telemetry(&'a [u8]),
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

/// Everything stored, as read at start-up.
pub struct Loaded {
    pub instance: Instance,
    pub version: u64,
    pub plans: Vec<Execution>,
    pub telemetry: Option<Vec<u8>>,
}

pub struct Store {
    db: Database,
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
    /// Open (or create) the database file and make sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = db!(Database::create(path))?;
        let txn = db!(db.begin_write())?;
        {
            let mut meta = db!(txn.open_table(META))?;
            let found = match db!(meta.get("schema"))? {
                Some(v) => Some(parse::<u64>("schema", v.value())?),
                None => None,
            };
            match found {
                Some(v) if v != SCHEMA_VERSION => return Err(StoreError::Schema { found: v }),
                Some(_) => {}
                None => {
                    db!(meta.insert("schema", json(&SCHEMA_VERSION)?.as_slice()))?;
                }
            }
            db!(txn.open_table(SITES))?;
            db!(txn.open_table(LINKS))?;
            db!(txn.open_table(REGIONS))?;
            db!(txn.open_table(WORKLOADS))?;
            db!(txn.open_table(PLANS))?;
            db!(txn.open_table(PLAN_META))?;
            db!(txn.open_table(STEPS))?;
        }
        db!(txn.commit())?;
        Ok(Store { db })
    }

    /// Apply writes in one durable transaction.
    pub fn commit(&self, ops: &[Op<'_>]) -> Result<(), StoreError> {
        let txn = db!(self.db.begin_write())?;
        {
            let mut meta = db!(txn.open_table(META))?;
            let mut sites = db!(txn.open_table(SITES))?;
            let mut links = db!(txn.open_table(LINKS))?;
            let mut regions = db!(txn.open_table(REGIONS))?;
            let mut workloads = db!(txn.open_table(WORKLOADS))?;
            let mut plans = db!(txn.open_table(PLANS))?;
            let mut plan_meta = db!(txn.open_table(PLAN_META))?;
            let mut steps = db!(txn.open_table(STEPS))?;
            let put_meta = |t: &mut redb::Table<u64, &[u8]>, e: &Execution| {
                let m = PlanMeta {
                    id: e.id,
                    state: e.state,
                    reason: e.reason.clone(),
                    inventory_version: e.inventory_version,
                    error: e.error.clone(),
                };
                db!(t.insert(e.id, json(&m)?.as_slice())).map(|_| ())
            };
            for op in ops {
                match op {
                    Op::PutSite(s) => {
                        db!(sites.insert(s.id.as_str(), json(s)?.as_slice())).map(drop)?
                    }
                    Op::DeleteSite(id) => db!(sites.remove(*id)).map(drop)?,
                    Op::PutLink(l) => {
                        db!(links.insert(link_key(l).as_str(), json(l)?.as_slice())).map(drop)?
                    }
                    Op::DeleteLink(k) => db!(links.remove(*k)).map(drop)?,
                    Op::PutRegion(r) => {
                        db!(regions.insert(r.id.as_str(), json(r)?.as_slice())).map(drop)?
                    }
                    Op::DeleteRegion(id) => db!(regions.remove(*id)).map(drop)?,
                    Op::PutWorkload(w) => {
                        db!(workloads.insert(w.id.as_str(), json(w)?.as_slice())).map(drop)?
                    }
                    Op::DeleteWorkload(id) => db!(workloads.remove(*id)).map(drop)?,
                    Op::Policy(p) => db!(meta.insert("policy", json(p)?.as_slice())).map(drop)?,
                    Op::Version(v) => db!(meta.insert("version", json(v)?.as_slice())).map(drop)?,
                    Op::NewPlan(e) => {
                        db!(plans.insert(e.id, json(&e.plan)?.as_slice()))?;
                        put_meta(&mut plan_meta, e)?;
                        for (k, st) in e.steps.iter().enumerate() {
                            db!(steps.insert((e.id, k as u64), json(st)?.as_slice()))?;
                        }
                    }
                    Op::PlanState(e) => put_meta(&mut plan_meta, e)?,
                    Op::Step(plan, k, st) => {
                        db!(steps.insert((*plan, *k as u64), json(st)?.as_slice())).map(drop)?
                    }
                    Op::Telemetry(bytes) => db!(meta.insert("telemetry", *bytes)).map(drop)?,
                }
            }
        }
        db!(txn.commit())
    }

    /// Read everything back (at start-up).
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = db!(self.db.begin_read())?;
        let meta = db!(txn.open_table(META))?;
        let get_meta = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(db!(meta.get(key))?.map(|v| v.value().to_vec()))
        };
        let version = match get_meta("version")? {
            Some(b) => parse("version", &b)?,
            None => 0,
        };
        let policy: Policy = match get_meta("policy")? {
            Some(b) => parse("policy", &b)?,
            None => Policy::default(),
        };
        let telemetry = get_meta("telemetry")?;

        fn all<T: for<'de> Deserialize<'de>>(
            txn: &redb::ReadTransaction,
            def: TableDefinition<&str, &[u8]>,
            name: &str,
        ) -> Result<Vec<T>, StoreError> {
            let table = db!(txn.open_table(def))?;
            let mut out = Vec::new();
            for row in db!(table.iter())? {
                let (k, v) = db!(row)?;
                out.push(parse(format!("{name}/{}", k.value()), v.value())?);
            }
            Ok(out)
        }
        let sites: Vec<Site> = all(&txn, SITES, "sites")?;
        let links: Vec<Link> = all(&txn, LINKS, "links")?;
        let regions: Vec<Region> = all(&txn, REGIONS, "regions")?;
        let workloads: Vec<Workload> = all(&txn, WORKLOADS, "workloads")?;
        let instance = assemble(&policy, sites, links, regions, workloads);

        let plans_t = db!(txn.open_table(PLANS))?;
        let meta_t = db!(txn.open_table(PLAN_META))?;
        let steps_t = db!(txn.open_table(STEPS))?;
        let mut plans = Vec::new();
        for row in db!(meta_t.iter())? {
            let (id, m) = db!(row)?;
            let id = id.value();
            let m: PlanMeta = parse(format!("plan_meta/{id}"), m.value())?;
            let Some(body) = db!(plans_t.get(id))? else {
                continue;
            };
            let plan: Plan = parse(format!("plans/{id}"), body.value())?;
            let mut statuses = Vec::with_capacity(plan.steps.len());
            for row in db!(steps_t.range((id, 0)..=(id, u64::MAX)))? {
                let (k, v) = db!(row)?;
                statuses.push(parse(format!("steps/{:?}", k.value()), v.value())?);
            }
            plans.push(Execution {
                id: m.id,
                state: m.state,
                plan,
                steps: statuses,
                reason: m.reason,
                inventory_version: m.inventory_version,
                error: m.error,
            });
        }
        Ok(Loaded {
            instance,
            version,
            plans,
            telemetry,
        })
    }
}

/// An instance from stored parts. Network nodes are those the sites,
/// regions and links name.
pub fn assemble(
    policy: &Policy,
    sites: Vec<Site>,
    links: Vec<Link>,
    regions: Vec<Region>,
    workloads: Vec<Workload>,
) -> Instance {
    let nodes = nodes_of(&sites, &regions, &links);
    Instance {
        name: policy.name.clone(),
        server_models: Vec::new(),
        sites,
        network: Network { nodes, links },
        regions,
        workloads,
        objective: policy.objective.clone(),
        limits: policy.limits.clone(),
    }
}

/// The network nodes the sites, regions and links name, sorted.
pub fn nodes_of(sites: &[Site], regions: &[Region], links: &[Link]) -> Vec<Node> {
    let mut ids: Vec<&str> = sites
        .iter()
        .map(|s| s.node_id())
        .chain(regions.iter().map(|r| r.node.as_str()))
        .chain(links.iter().flat_map(|l| [l.a.as_str(), l.b.as_str()]))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| Node { id: id.to_string() })
        .collect()
}
