//! The PostgreSQL backend (cluster mode). Every commit is one transaction
//! that first takes a transaction-scoped advisory lock, so commits from all
//! replicas are serialized and the generation check and the fence check
//! see the latest committed state. Telemetry batches go to an append-only
//! log whose inserts are serialized the same way, so sequence numbers
//! become visible in order and a reader that tails by sequence never skips
//! one. Schema migrations are numbered, applied in order at start under a
//! session advisory lock (replicas starting together apply each once) and
//! recorded in `schema_migrations`.
//!
//! The synchronous `postgres` client runs on a thread of its own (it
//! drives its own runtime, which cannot nest in the service's), one
//! connection per [`PgConn`]; a broken connection is opened again on the
//! next call.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::pg_tls::MakeRustls;

use super::{Fence, Guard, Key, LogEntry, Logged, Raw, Row, StoreError, Table};

/// Numbered migrations; never edit one that shipped, add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tables",
        "CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE sites (id text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE links (id text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE regions (id text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE workloads (id text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE plans (id bigint PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE plan_meta (id bigint PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE steps (plan_id bigint NOT NULL, step bigint NOT NULL, value bytea NOT NULL,
                         PRIMARY KEY (plan_id, step));
     CREATE TABLE generation (id int PRIMARY KEY CHECK (id = 1), value bigint NOT NULL);
     INSERT INTO generation VALUES (1, 0);
     CREATE TABLE leader_lease (id int PRIMARY KEY CHECK (id = 1), holder text NOT NULL,
                                fence bigint NOT NULL, expires_at timestamptz NOT NULL);
     INSERT INTO leader_lease VALUES (1, '', 0, 'epoch');
     CREATE TABLE telemetry_log (seq bigserial PRIMARY KEY, dedupe text UNIQUE, origin text,
                                 batch bytea NOT NULL,
                                 logged_at timestamptz NOT NULL DEFAULT now());",
    ),
    (
        2,
        "bus keys kept as long as the stream",
        // A bus message's key outlives its batch in the log: JetStream
        // delivers a message again for as long as the stream holds it (a
        // consumer lost and created again starts over), so the key goes
        // only once the message has left the stream. The stream's creation
        // time tells a stream deleted and created again under its name
        // (numbered from 1 again) from the one before. Keys the previous
        // build wrote (`nats:<stream>:<seq>` as the log's dedupe) stay
        // until the log is pruned; they have no creation time to carry.
        "CREATE TABLE bus_seen (stream text NOT NULL, created text NOT NULL, seq bigint NOT NULL,
                                seen_at timestamptz NOT NULL DEFAULT now(),
                                PRIMARY KEY (stream, created, seq));",
    ),
];

/// Advisory lock keys (arbitrary, fixed): commits, log appends, migrations.
/// The server ends a session idle this long inside a transaction, ms.
const IDLE_IN_TRANSACTION_MS: u64 = 2000;
/// A store connection that cannot deliver its bytes this long is ended.
const STORE_TCP_TIMEOUT: Duration = Duration::from_secs(10);
const COMMIT_LOCK: i64 = 0x6564_6765_0001;
const LOG_LOCK: i64 = 0x6564_6765_0002;
const MIGRATE_LOCK: i64 = 0x6564_6765_0003;

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Db(match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    })
}

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// One PostgreSQL connection on its own thread.
pub struct PgConn {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PgConn {
    /// Connect now (an unreachable server fails the start, naming it).
    pub fn connect(url: &str, tls: Option<MakeRustls>) -> Result<PgConn, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Db(format!("store URL: {e}")))?;
        match &tls {
            // Verified TLS or nothing: never a silent fallback to plaintext.
            Some(_) => {
                config.ssl_mode(postgres::config::SslMode::Require);
            }
            None => {
                for host in config.get_hosts() {
                    if let postgres::config::Host::Tcp(name) = host {
                        if !crate::auth::is_loopback_host(name) {
                            return Err(StoreError::Db(format!(
                                "store {}: {name} is not loopback, and a plaintext link \
                                 off loopback is refused: set store_tls (its ca at least)",
                                redact(url)
                            )));
                        }
                    }
                }
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A partition that drops packets: without these a call waits for
        // TCP's retransmissions to give up (about 15 min) with the state's
        // lock held, so this replica's reads wait as long. Unacknowledged
        // data (or unanswered keepalives) for 10 s ends the connection, and
        // the next call reconnects.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(STORE_TCP_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(5));
        }
        // A replica paused or cut off inside a transaction holds its locks
        // (the commit lock) until the server drops its session; without
        // this, that is when TCP gives up, hours later, and every other
        // replica waits that long. Our transactions are never idle longer
        // than a few milliseconds.
        let options = config.get_options().unwrap_or_default().to_string();
        if !options.contains("idle_in_transaction_session_timeout") {
            config.options(
                format!(
                    "{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
                )
                .trim(),
            );
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let shown = redact(url);
        std::thread::Builder::new()
            .name("edgeplan-pg".into())
            .spawn(move || {
                // The client runs its own runtime: connect here, off the service's.
                let open = |config: &postgres::Config| match &tls {
                    Some(t) => config.connect(t.clone()),
                    None => config.connect(NoTls),
                };
                let mut client = match open(&config) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        Some(c)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Db(format!(
                            "cannot connect to PostgreSQL at {shown}: {e}"
                        ))));
                        return;
                    }
                };
                for job in rx {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = open(&config).ok();
                    }
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Db(format!("cannot start the database thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| StoreError::Db("the database thread is gone".into()))??;
        Ok(PgConn {
            jobs: Mutex::new(tx),
        })
    }

    /// Run `f` on the connection and wait for its answer.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |client| {
            let r = match client.as_mut() {
                Some(c) => f(c),
                None => Err(StoreError::Db("PostgreSQL is unreachable".into())),
            };
            let _ = tx.send(r);
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| StoreError::Db("the database thread is gone".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Db("the database thread is gone".into()))?
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The store: one connection for commits and reads, one for the lease (so a
/// long read never delays a renewal), one for the telemetry log.
pub struct PgStore {
    main: PgConn,
    lease: PgConn,
    log: PgConn,
}

fn table_name(t: Table) -> &'static str {
    match t {
        Table::Meta => "meta",
        Table::Sites => "sites",
        Table::Links => "links",
        Table::Regions => "regions",
        Table::Workloads => "workloads",
        Table::Plans => "plans",
        Table::PlanMeta => "plan_meta",
        Table::Steps => "steps",
    }
}

fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Db(format!("{v} does not fit PostgreSQL's bigint")))
}

impl PgStore {
    pub fn open(url: &str, tls: Option<MakeRustls>) -> Result<PgStore, StoreError> {
        let main = PgConn::connect(url, tls.clone())?;
        main.run(migrate)?;
        Ok(PgStore {
            main,
            lease: PgConn::connect(url, tls.clone())?,
            log: PgConn::connect(url, tls)?,
        })
    }

    pub fn commit(&self, rows: Vec<Row>, guard: &Guard, bump: bool) -> Result<u64, StoreError> {
        let guard = guard.clone();
        self.main.run(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
                .map_err(pg)?;
            let found: i64 = tx
                .query_one("SELECT value FROM generation WHERE id = 1", &[])
                .map_err(pg)?
                .get(0);
            let found = found as u64;
            if let Some(expected) = guard.generation {
                if expected != found {
                    return Err(StoreError::Stale { expected, found });
                }
            }
            if let Some(f) = &guard.fence {
                let ok = tx
                    .query_opt(
                        "SELECT 1 FROM leader_lease WHERE id = 1 AND holder = $1 AND fence = $2
                         AND expires_at > now()",
                        &[&f.holder, &i64_of(f.token)?],
                    )
                    .map_err(pg)?
                    .is_some();
                if !ok {
                    return Err(StoreError::Fenced {
                        holder: f.holder.clone(),
                        fence: f.token,
                    });
                }
            }
            for r in rows {
                let t = table_name(r.table);
                match (r.key, r.value) {
                    (Key::Name(k), Some(v)) => tx.execute(
                        &format!(
                            "INSERT INTO {t} VALUES ($1, $2)
                             ON CONFLICT ({}) DO UPDATE SET value = EXCLUDED.value",
                            if r.table == Table::Meta { "key" } else { "id" }
                        ),
                        &[&k, &v],
                    ),
                    (Key::Name(k), None) => tx.execute(
                        &format!(
                            "DELETE FROM {t} WHERE {} = $1",
                            if r.table == Table::Meta { "key" } else { "id" }
                        ),
                        &[&k],
                    ),
                    (Key::Plan(id), Some(v)) => tx.execute(
                        &format!(
                            "INSERT INTO {t} VALUES ($1, $2)
                             ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value"
                        ),
                        &[&i64_of(id)?, &v],
                    ),
                    (Key::Step(p, k), Some(v)) => tx.execute(
                        "INSERT INTO steps VALUES ($1, $2, $3)
                         ON CONFLICT (plan_id, step) DO UPDATE SET value = EXCLUDED.value",
                        &[&i64_of(p)?, &i64_of(k)?, &v],
                    ),
                    (Key::Plan(id), None) => {
                        tx.execute(&format!("DELETE FROM {t} WHERE id = $1"), &[&i64_of(id)?])
                    }
                    (Key::Step(p, k), None) => tx.execute(
                        "DELETE FROM steps WHERE plan_id = $1 AND step = $2",
                        &[&i64_of(p)?, &i64_of(k)?],
                    ),
                }
                .map_err(pg)?;
            }
            let generation = found + u64::from(bump);
            if bump {
                tx.execute(
                    "UPDATE generation SET value = $1 WHERE id = 1",
                    &[&i64_of(generation)?],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)?;
            Ok(generation)
        })
    }

    pub fn raw(&self) -> Result<Raw, StoreError> {
        self.main.run(|c| {
            // One snapshot for every table.
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg)?;
            let mut raw = Raw::default();
            for row in tx.query("SELECT key, value FROM meta", &[]).map_err(pg)? {
                raw.meta.insert(row.get(0), row.get(1));
            }
            for (i, t) in ["sites", "links", "regions", "workloads"]
                .iter()
                .enumerate()
            {
                for row in tx
                    .query(&format!("SELECT id, value FROM {t} ORDER BY id"), &[])
                    .map_err(pg)?
                {
                    raw.entities[i].push((row.get(0), row.get(1)));
                }
            }
            for row in tx.query("SELECT id, value FROM plans", &[]).map_err(pg)? {
                raw.plans.insert(row.get::<_, i64>(0) as u64, row.get(1));
            }
            for row in tx
                .query("SELECT id, value FROM plan_meta", &[])
                .map_err(pg)?
            {
                raw.plan_meta
                    .insert(row.get::<_, i64>(0) as u64, row.get(1));
            }
            for row in tx
                .query(
                    "SELECT plan_id, step, value FROM steps ORDER BY plan_id, step",
                    &[],
                )
                .map_err(pg)?
            {
                raw.steps
                    .entry(row.get::<_, i64>(0) as u64)
                    .or_default()
                    .push((row.get::<_, i64>(1) as u64, row.get(2)));
            }
            let g: i64 = tx
                .query_one("SELECT value FROM generation WHERE id = 1", &[])
                .map_err(pg)?
                .get(0);
            raw.generation = g as u64;
            tx.commit().map_err(pg)?;
            Ok(raw)
        })
    }

    pub fn generation(&self) -> Result<u64, StoreError> {
        self.lease.run(|c| {
            let g: i64 = c
                .query_one("SELECT value FROM generation WHERE id = 1", &[])
                .map_err(pg)?
                .get(0);
            Ok(g as u64)
        })
    }

    pub fn acquire_lease(&self, holder: &str, ttl_s: f64) -> Result<Option<Fence>, StoreError> {
        let holder = holder.to_string();
        self.lease.run(move |c| {
            // The database's clock alone decides expiry: replicas' clocks
            // never meet.
            let row = c
                .query_opt(
                    "UPDATE leader_lease
                     SET fence = CASE WHEN holder = $1 AND expires_at > now() THEN fence ELSE fence + 1 END,
                         holder = $1,
                         expires_at = now() + make_interval(secs => $2)
                     WHERE id = 1 AND (holder = $1 OR expires_at <= now())
                     RETURNING fence",
                    &[&holder, &ttl_s],
                )
                .map_err(pg)?;
            Ok(row.map(|r| Fence {
                holder: holder.clone(),
                token: r.get::<_, i64>(0) as u64,
            }))
        })
    }

    pub fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let holder = holder.to_string();
        self.lease.run(move |c| {
            c.execute(
                "UPDATE leader_lease SET expires_at = now() WHERE id = 1 AND holder = $1",
                &[&holder],
            )
            .map_err(pg)
            .map(drop)
        })
    }

    pub fn append_telemetry(&self, entries: Vec<LogEntry>) -> Result<Vec<Option<u64>>, StoreError> {
        self.log.run(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
                .map_err(pg)?;
            let seen = tx
                .prepare(
                    "INSERT INTO bus_seen (stream, created, seq) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(pg)?;
            let insert = tx
                .prepare(
                    "INSERT INTO telemetry_log (dedupe, origin, batch) VALUES ($1, $2, $3)
                     ON CONFLICT (dedupe) DO NOTHING RETURNING seq",
                )
                .map_err(pg)?;
            let mut out = Vec::with_capacity(entries.len());
            for e in &entries {
                if let Some(key) = &e.bus {
                    let new = tx
                        .execute(&seen, &[&key.stream, &key.created, &i64_of(key.seq)?])
                        .map_err(pg)?;
                    if new == 0 {
                        out.push(None); // this message was logged before
                        continue;
                    }
                }
                let row = tx
                    .query_opt(&insert, &[&e.dedupe, &e.origin, &e.batch])
                    .map_err(pg)?;
                out.push(row.map(|r| r.get::<_, i64>(0) as u64));
            }
            tx.commit().map_err(pg)?;
            Ok(out)
        })
    }

    pub fn telemetry_since(&self, after: u64, limit: u32) -> Result<Vec<Logged>, StoreError> {
        let after = i64_of(after)?;
        self.log.run(move |c| {
            let rows = c
                .query(
                    "SELECT seq, origin, batch, EXTRACT(EPOCH FROM logged_at)::float8
                     FROM telemetry_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &i64::from(limit)],
                )
                .map_err(pg)?;
            Ok(rows
                .into_iter()
                .map(|r| Logged {
                    seq: r.get::<_, i64>(0) as u64,
                    origin: r.get(1),
                    batch: r.get(2),
                    logged_at_s: r.get(3),
                })
                .collect())
        })
    }

    pub fn prune_bus_keys(
        &self,
        stream: &str,
        created: &str,
        first_seq: u64,
        keep_s: f64,
    ) -> Result<u64, StoreError> {
        let (stream, created, first) =
            (stream.to_string(), created.to_string(), i64_of(first_seq)?);
        self.log.run(move |c| {
            c.execute(
                "DELETE FROM bus_seen WHERE stream = $1 AND (created <> $2 OR seq < $3)
                 AND seen_at < now() - make_interval(secs => $4)",
                &[&stream, &created, &first, &keep_s],
            )
            .map_err(pg)
        })
    }

    pub fn prune_telemetry(&self, through: u64, keep_s: f64) -> Result<u64, StoreError> {
        let through = i64_of(through)?;
        self.log.run(move |c| {
            c.execute(
                "DELETE FROM telemetry_log WHERE seq <= $1
                 AND logged_at < now() - make_interval(secs => $2)",
                &[&through, &keep_s],
            )
            .map_err(pg)
        })
    }
}

/// Apply the migrations the database lacks, in order, each in its own
/// transaction; refuse a database migrated past what this build knows.
fn migrate(c: &mut Client) -> Result<(), StoreError> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(pg)?;
    let result = (|| {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version bigint PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(pg)?;
        let found: i64 = c
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0);
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if found > known {
            return Err(StoreError::Schema {
                found: found as u64,
                known: known as u64,
            });
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
            let mut tx = c.transaction().map_err(pg)?;
            tx.batch_execute(sql)
                .map_err(|e| StoreError::Db(format!("migration {version} ({name}): {}", pg(e))))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .map_err(pg)?;
            tx.commit().map_err(pg)?;
            tracing::info!(version, name, "store: migration applied");
        }
        Ok(())
    })();
    let unlocked = c
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .map_err(pg);
    result.and(unlocked.map(drop))
}

/// The known schema version (for tests and `edgeplan` messages).
pub fn schema_version() -> u64 {
    MIGRATIONS.last().map_or(0, |m| m.0 as u64)
}
