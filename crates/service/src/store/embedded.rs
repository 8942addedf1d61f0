//! The embedded backend: one redb file, `Durability::Immediate` (fsync) on
//! every commit. One process owns the file (redb locks it), so the lease is
//! only ever contended by that process; it is kept for the same semantics
//! as PostgreSQL.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{json, parse, Fence, Guard, Key, Raw, Row, StoreError, Table};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("sites");
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
const REGIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("regions");
const WORKLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("workloads");
const PLANS: TableDefinition<u64, &[u8]> = TableDefinition::new("plans");
const PLAN_META: TableDefinition<u64, &[u8]> = TableDefinition::new("plan_meta");
const STEPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("steps");

/// Schema version of the file. Version 1 had no generation or lease; both
/// read as absent (0 / free), so 1 → 2 needs no rewrite.
pub const SCHEMA_VERSION: u64 = 2;

fn ok<T, E: Into<redb::Error>>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Db(e.into().to_string()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    fence: u64,
    expires_s: f64,
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Embedded {
    db: Database,
}

fn entity(table: Table) -> Option<TableDefinition<'static, &'static str, &'static [u8]>> {
    Some(match table {
        Table::Meta => META,
        Table::Sites => SITES,
        Table::Links => LINKS,
        Table::Regions => REGIONS,
        Table::Workloads => WORKLOADS,
        Table::Plans | Table::PlanMeta | Table::Steps => return None,
    })
}

fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, StoreError> {
    match ok(meta.get(key))? {
        Some(v) => parse(key, v.value()),
        None => Ok(0),
    }
}

impl Embedded {
    /// Open (or create) the database file, make sure every table exists and
    /// bring the schema up to date.
    pub fn open(path: &Path) -> Result<Embedded, StoreError> {
        let db = ok(Database::create(path))?;
        let txn = ok(db.begin_write())?;
        {
            let mut meta = ok(txn.open_table(META))?;
            let found = meta_u64(&meta, "schema")?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::Schema {
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            if found < SCHEMA_VERSION {
                ok(meta.insert("schema", json(&SCHEMA_VERSION)?.as_slice()))?;
            }
            for t in [SITES, LINKS, REGIONS, WORKLOADS] {
                ok(txn.open_table(t))?;
            }
            ok(txn.open_table(PLANS))?;
            ok(txn.open_table(PLAN_META))?;
            ok(txn.open_table(STEPS))?;
        }
        ok(txn.commit())?;
        Ok(Embedded { db })
    }

    pub fn commit(&self, rows: Vec<Row>, guard: &Guard, bump: bool) -> Result<u64, StoreError> {
        let txn = ok(self.db.begin_write())?;
        let generation;
        {
            let mut meta = ok(txn.open_table(META))?;
            let found = meta_u64(&meta, "generation")?;
            if let Some(expected) = guard.generation {
                if expected != found {
                    return Err(StoreError::Stale { expected, found });
                }
            }
            if let Some(fence) = &guard.fence {
                check_fence(&meta, fence)?;
            }
            let mut plans = ok(txn.open_table(PLANS))?;
            let mut plan_meta = ok(txn.open_table(PLAN_META))?;
            let mut steps = ok(txn.open_table(STEPS))?;
            for r in rows {
                match (r.table, r.key, r.value) {
                    (Table::Plans, Key::Plan(id), Some(v)) => {
                        ok(plans.insert(id, v.as_slice()))?;
                    }
                    (Table::PlanMeta, Key::Plan(id), Some(v)) => {
                        ok(plan_meta.insert(id, v.as_slice()))?;
                    }
                    (Table::Steps, Key::Step(p, k), Some(v)) => {
                        ok(steps.insert((p, k), v.as_slice()))?;
                    }
                    (Table::Plans, Key::Plan(id), None) => {
                        ok(plans.remove(id))?;
                    }
                    (Table::PlanMeta, Key::Plan(id), None) => {
                        ok(plan_meta.remove(id))?;
                    }
                    (Table::Steps, Key::Step(p, k), None) => {
                        ok(steps.remove((p, k)))?;
                    }
                    (Table::Meta, Key::Name(k), Some(v)) => {
                        ok(meta.insert(k.as_str(), v.as_slice()))?;
                    }
                    (t, Key::Name(k), v) => {
                        let def = entity(t)
                            .ok_or_else(|| StoreError::Db(format!("bad row for {t:?}")))?;
                        let mut table = ok(txn.open_table(def))?;
                        match v {
                            Some(v) => ok(table.insert(k.as_str(), v.as_slice())).map(drop)?,
                            None => ok(table.remove(k.as_str())).map(drop)?,
                        }
                    }
                    (t, k, _) => return Err(StoreError::Db(format!("bad row {k:?} for {t:?}"))),
                }
            }
            generation = found + u64::from(bump);
            if bump {
                ok(meta.insert("generation", json(&generation)?.as_slice()))?;
            }
        }
        ok(txn.commit())?;
        Ok(generation)
    }

    pub fn raw(&self) -> Result<Raw, StoreError> {
        let txn = ok(self.db.begin_read())?;
        let mut raw = Raw::default();
        let meta = ok(txn.open_table(META))?;
        for row in ok(meta.iter())? {
            let (k, v) = ok(row)?;
            raw.meta.insert(k.value().to_string(), v.value().to_vec());
        }
        raw.generation = match raw.meta.get("generation") {
            Some(b) => parse("generation", b)?,
            None => 0,
        };
        for (i, def) in [SITES, LINKS, REGIONS, WORKLOADS].into_iter().enumerate() {
            let table = ok(txn.open_table(def))?;
            for row in ok(table.iter())? {
                let (k, v) = ok(row)?;
                raw.entities[i].push((k.value().to_string(), v.value().to_vec()));
            }
        }
        for row in ok(ok(txn.open_table(PLANS))?.iter())? {
            let (k, v) = ok(row)?;
            raw.plans.insert(k.value(), v.value().to_vec());
        }
        for row in ok(ok(txn.open_table(PLAN_META))?.iter())? {
            let (k, v) = ok(row)?;
            raw.plan_meta.insert(k.value(), v.value().to_vec());
        }
        for row in ok(ok(txn.open_table(STEPS))?.iter())? {
            let (k, v) = ok(row)?;
            let (plan, step) = k.value();
            raw.steps
                .entry(plan)
                .or_default()
                .push((step, v.value().to_vec()));
        }
        Ok(raw)
    }

    pub fn generation(&self) -> Result<u64, StoreError> {
        let txn = ok(self.db.begin_read())?;
        let meta = ok(txn.open_table(META))?;
        meta_u64(&meta, "generation")
    }

    pub fn acquire_lease(&self, holder: &str, ttl_s: f64) -> Result<Option<Fence>, StoreError> {
        let txn = ok(self.db.begin_write())?;
        let granted;
        {
            let mut meta = ok(txn.open_table(META))?;
            let lease: Option<Lease> = match ok(meta.get("lease"))? {
                Some(v) => Some(parse("lease", v.value())?),
                None => None,
            };
            let now = now_s();
            let fence = match &lease {
                Some(l) if l.holder == holder => l.fence,
                Some(l) if l.expires_s > now => return Ok(None),
                Some(l) => l.fence + 1,
                None => 1,
            };
            let next = Lease {
                holder: holder.to_string(),
                fence,
                expires_s: now + ttl_s,
            };
            ok(meta.insert("lease", json(&next)?.as_slice()))?;
            granted = Fence {
                holder: holder.to_string(),
                token: fence,
            };
        }
        ok(txn.commit())?;
        Ok(Some(granted))
    }

    pub fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let txn = ok(self.db.begin_write())?;
        {
            let mut meta = ok(txn.open_table(META))?;
            let lease: Option<Lease> = match ok(meta.get("lease"))? {
                Some(v) => Some(parse("lease", v.value())?),
                None => None,
            };
            if let Some(mut l) = lease.filter(|l| l.holder == holder) {
                l.expires_s = 0.0;
                ok(meta.insert("lease", json(&l)?.as_slice()))?;
            }
        }
        ok(txn.commit())
    }
}

fn check_fence(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    fence: &Fence,
) -> Result<(), StoreError> {
    let lease: Option<Lease> = match ok(meta.get("lease"))? {
        Some(v) => Some(parse("lease", v.value())?),
        None => None,
    };
    match lease {
        Some(l) if l.holder == fence.holder && l.fence == fence.token && l.expires_s > now_s() => {
            Ok(())
        }
        _ => Err(StoreError::Fenced {
            holder: fence.holder.clone(),
            fence: fence.token,
        }),
    }
}
