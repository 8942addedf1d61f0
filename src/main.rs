//! The `edgeplan` command line: a thin shell over the library (file I/O,
//! argument parsing, exit codes, timing). No placement logic lives here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use edgeplan::fast::{diff, Change, Replanner, DEFAULT_REPLAN_TIME_LIMIT, DEFAULT_WORK};
use edgeplan::gen::{generate, GenOptions};
use edgeplan::instance::{self, Format, Instance};
use edgeplan::milp::Milp;
use edgeplan::placement::Placement;
use edgeplan::problem::Problem;
use edgeplan::report::SolveReport;
use edgeplan::solver::{solve, Method, SolveOptions};
use edgeplan::validate::{validate, validate_and_build};
use edgeplan::verify::verify;

#[derive(Parser)]
#[command(
    name = "edgeplan",
    version,
    about = "Workload-aware placement for fleets of micro data centers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the CLI reaches a running service: token and TLS.
#[derive(clap::Args, Clone, Debug)]
struct ServerArgs {
    /// Bearer token for a service with `auth.tokens` (`edgeplan token` makes one).
    #[arg(long, env = "EDGEPLAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA to trust for an https:// service.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a service that requires mutual TLS.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Name to check the service's certificate against, if not the URL's host.
    #[arg(long)]
    tls_domain: Option<String>,
}

impl ServerArgs {
    fn connect(&self, url: &str) -> edgeplan::service::client::Connect {
        let tls = url.starts_with("https://") || self.ca_cert.is_some();
        edgeplan::service::client::Connect {
            url: url.to_string(),
            token: self.token.clone(),
            tls: tls.then(|| edgeplan::service::auth::ClientTls {
                ca: self.ca_cert.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
                domain: self.tls_domain.clone(),
            }),
        }
    }
}

/// `provisioner-sim`'s injected faults (each a share of calls, 0–1).
#[derive(clap::Args, Clone, Debug)]
struct FaultArgs {
    /// Answer UNAVAILABLE without executing.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Execute but never answer (the ack is lost).
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// Answer late (up to twice the step's expected time more).
    #[arg(long, default_value_t = 0.0)]
    slow_rate: f64,
    /// Flag a first answer as a duplicate.
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    /// Exit right after journaling this many executions, unanswered.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Append every call (key, what happened) to this file.
    #[arg(long)]
    call_log: Option<PathBuf>,
}

impl From<FaultArgs> for edgeplan::service::provisioner_sim::Faults {
    fn from(a: FaultArgs) -> Self {
        edgeplan::service::provisioner_sim::Faults {
            error_rate: a.error_rate,
            timeout_rate: a.timeout_rate,
            slow_rate: a.slow_rate,
            duplicate_rate: a.duplicate_rate,
            exit_after: a.exit_after,
            call_log: a.call_log,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// See edgeplan work: a real-city fleet, live telemetry, a heat wave and
    /// a price spike, re-plans executed by a provisioner, an operator report.
    Demo {
        #[arg(long, default_value_t = 8)]
        sites: usize,
        #[arg(long, default_value_t = 40)]
        workloads: usize,
        /// Seconds the story runs (plus a few to finish and report).
        #[arg(long, default_value_t = 90.0)]
        duration: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where the operator report goes.
        #[arg(long, default_value = "edgeplan-demo-report.html")]
        report: PathBuf,
        /// Keep the service's data here (default: a temporary directory, removed at the end).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the gRPC service (inventory, telemetry, placement, dispatch).
    Serve {
        /// YAML file with the service's settings (see README); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:50051).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Directory of the database file (default ./edgeplan-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Provisioner endpoint, e.g. http://127.0.0.1:50052 (repeatable).
        #[arg(long = "provisioner")]
        provisioners: Vec<String>,
        /// Re-plan on its own when a site crosses a threshold.
        #[arg(long)]
        continuous: bool,
        /// Approve automatic plans without an operator.
        #[arg(long)]
        auto_approve: bool,
        /// Ask provisioners to take this share of each step's modelled time.
        #[arg(long)]
        time_scale: Option<f64>,
        /// Cluster mode: the shared PostgreSQL store, postgres://user@host/db
        /// (default: the embedded file in --data-dir).
        #[arg(long, env = "EDGEPLAN_STORE")]
        store: Option<String>,
        /// Cluster mode: this replica's name (default: host name and pid).
        #[arg(long)]
        replica_id: Option<String>,
        /// Take telemetry from NATS JetStream too, e.g. nats://127.0.0.1:4222.
        #[arg(long)]
        nats: Option<String>,
    },
    /// Run the reference provisioner, which simulates executing plan steps.
    ProvisionerSim {
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: std::net::SocketAddr,
        /// Append every executed step here (and honour its keys after a restart).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Steps of this workload fail (repeatable).
        #[arg(long = "fail-workload")]
        fail_workloads: Vec<String>,
        /// Share of steps that fail at random.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Multiplier on each step's expected duration.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Serve TLS with this PEM certificate chain …
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// … and this PEM key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this PEM CA (mutual TLS).
        #[arg(long, requires = "tls_cert")]
        client_ca: Option<PathBuf>,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Make a bearer token for `serve`'s `auth.tokens`: prints the token
    /// (give it to its holder) and the config entry (only its SHA-256).
    Token {
        /// Who holds it; denials are logged under this name.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: edgeplan::service::auth::Role,
    },
    /// Publish synthetic site telemetry to NATS JetStream (what sites'
    /// gateways do in cluster mode); with --server, register the fleet and
    /// wait until the service's state holds every reading, then print the
    /// rate end to end.
    Publish {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Register the fleet with this service and wait for the readings.
        #[arg(long)]
        server: Option<String>,
        #[arg(long, default_value_t = 50)]
        sites: usize,
        #[arg(long, default_value_t = 18)]
        racks_per_site: usize,
        /// Readings per message.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Messages awaiting JetStream's confirmation, at most.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Give up waiting for the readings after this many seconds.
        #[arg(long, default_value_t = 120.0)]
        wait: f64,
        /// The stream and its subjects (as in serve.yaml's `nats`).
        #[arg(long, default_value = "EDGEPLAN_TELEMETRY")]
        stream: String,
        #[arg(long, default_value = "edgeplan.telemetry")]
        subject_prefix: String,
        /// First timestamp, s since the epoch (default: now).
        #[arg(long, default_value_t = 0.0)]
        t0: f64,
        #[command(flatten)]
        auth: ServerArgs,
    },
    /// Load a running service: telemetry streams, solves and watches for a
    /// fixed time; prints samples/s, ack and solve latency, errors, memory.
    #[command(alias = "load-telemetry")]
    Load {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        server: String,
        #[arg(long, default_value_t = 250)]
        sites: usize,
        #[arg(long, default_value_t = 18)]
        racks_per_site: usize,
        /// Workloads in the synthetic fleet (what solves place; 0: sites only).
        #[arg(long, default_value_t = 0)]
        workloads: usize,
        /// Readings per batch.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Concurrent Ingest streams.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        /// Batches per Ingest call, each call timed to its ack (0: one call per stream).
        #[arg(long, default_value_t = 0)]
        batches_per_call: usize,
        /// Concurrent loops of Solve (dry-run) calls.
        #[arg(long, default_value_t = 0)]
        solvers: usize,
        #[arg(long, default_value_t = 1.0)]
        solve_time_limit: f64,
        /// Concurrent WatchSites streams.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// The server's pid, to sample its memory.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        auth: ServerArgs,
    },
    /// Write the operator report: one self-contained HTML page, or Markdown.
    Report {
        /// The instance (with today's placement); or use --server, or --whatif alone.
        #[arg(long, required_unless_present_any = ["server", "whatif"])]
        instance: Option<PathBuf>,
        /// A placement (or `solve`'s output) to report on; default today's placement.
        #[arg(long)]
        placement: Option<PathBuf>,
        /// A migration plan (`solve --plan-out` or `plan`).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// What-if results: the JSON `edgeplan whatif` prints without --out.
        #[arg(long)]
        whatif: Option<PathBuf>,
        /// Report on a running service's state (inventory, latest plan).
        #[arg(long, conflicts_with = "instance")]
        server: Option<String>,
        #[command(flatten)]
        auth: ServerArgs,
        #[arg(long, value_enum, default_value = "html")]
        format: ReportFormat,
        #[arg(long)]
        title: Option<String>,
        /// Where to write (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Register an instance file's fleet with a running service.
    Push {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        server: String,
        #[arg(long)]
        instance: PathBuf,
        /// Also report the instance's `current` as where replicas run now
        /// (observed state; an upsert keeps a known workload's own).
        #[arg(long)]
        observed: bool,
        #[command(flatten)]
        auth: ServerArgs,
    },
    /// Check an instance file; lists every problem with its path.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the instance format.
    Schema,
    /// List the built-in server power models.
    Models,
    /// Solve the exact placement model.
    Solve {
        #[arg(long)]
        instance: PathBuf,
        /// Where to write the placement JSON (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds before returning the best placement found (ignored with
        /// --deterministic).
        #[arg(long, default_value_t = 60.0)]
        time_limit: f64,
        /// Gap at which to stop, on the cost of what is placed:
        /// (objective − bound) / placed cost (default 1e-4).
        #[arg(long)]
        gap: Option<f64>,
        /// HiGHS random seed.
        #[arg(long, default_value_t = 0)]
        seed: u32,
        /// Work budget (machine-independent units: Lagrangian iterations ×
        /// candidate pairs, local-search trials, HiGHS nodes × columns); the
        /// search stops when it or the time limit runs out.
        #[arg(long)]
        work: Option<u64>,
        /// Stop on the work budget alone (--work, or 200,000,000), never on
        /// the clock: the same placement on any machine, however loaded.
        #[arg(long)]
        deterministic: bool,
        /// auto (the fast path, then HiGHS when the model is small and the
        /// gap still open), exact (HiGHS) or fast (Lagrangian bound + local search).
        #[arg(long, default_value = "auto")]
        method: Method,
        /// Also plan the migration from today's placement and write it here.
        #[arg(long)]
        plan_out: Option<PathBuf>,
    },
    /// Solve INSTANCE on the fast path, then re-plan incrementally for the
    /// changes that turn it into CHANGED (a site's telemetry, a workload's
    /// demand…): only what must change moves.
    Replan {
        #[arg(long)]
        instance: PathBuf,
        /// The instance after the change (same sites and workloads).
        #[arg(long)]
        changed: PathBuf,
        /// Where to write the re-planned placement JSON (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds for the first solve.
        #[arg(long, default_value_t = 10.0)]
        time_limit: f64,
        /// Gap (on the placed cost) at which the first solve stops.
        #[arg(long, default_value_t = 0.005)]
        gap: f64,
        /// Work budget of the first solve and of the re-plan (see `solve`).
        #[arg(long)]
        work: Option<u64>,
        /// Both stop on the work budget alone, never on the clock.
        #[arg(long)]
        deterministic: bool,
        /// Also plan the migration from today's placement and write it here.
        #[arg(long)]
        plan_out: Option<PathBuf>,
    },
    /// Plan the migration from today's placement to a target placement.
    Plan {
        #[arg(long)]
        instance: PathBuf,
        /// A placement, or the output of `solve`.
        #[arg(long)]
        target: PathBuf,
        /// Where to write the plan JSON (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replay a plan against an instance: safety at every wave, limits, end state, staleness.
    VerifyPlan {
        #[arg(long)]
        instance: PathBuf,
        #[arg(long)]
        plan: PathBuf,
    },
    /// Check a placement against an instance; lists every violation.
    Verify {
        #[arg(long)]
        instance: PathBuf,
        /// A placement, or the output of `solve`.
        #[arg(long)]
        placement: PathBuf,
    },
    /// Write the exact MILP in a standard format.
    Export {
        #[arg(long)]
        instance: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Mps)]
        format: ExportFormat,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply sensor telemetry to an instance: sanity checks, fitted thermal and
    /// power models, ambient and demand forecasts → the effective instance.
    Telemetry {
        #[arg(long)]
        instance: PathBuf,
        /// CSV with columns timestamp_s,sensor,site,rack,kind,unit,value, or a
        /// Parquet archive written by `--archive`.
        #[arg(long)]
        readings: PathBuf,
        /// Also write the accepted readings to this Parquet file.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// The time to evaluate at (Unix s); defaults to the newest reading.
        #[arg(long)]
        now: Option<f64>,
        /// Where to write the effective instance (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the report (fits, forecasts, fallbacks, rejections) as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run what-if scenarios in parallel and compare their KPIs.
    Whatif {
        /// Scenario file (YAML or JSON).
        #[arg(long)]
        scenarios: PathBuf,
        /// Where to write the KPI table; the per-site table goes beside it (`NAME-sites.EXT`).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum)]
        format: Option<TableFormatArg>,
        /// One scenario at a time (the results are identical).
        #[arg(long)]
        sequential: bool,
    },
    /// Scale benchmark: per size, generate an instance, solve it in a fresh
    /// process and print method, wall time, objective, bound, gap and peak
    /// memory.
    Bench {
        /// Sizes as REPLICASxSITES:SECONDS:GAP, comma-separated.
        #[arg(long, default_value = "5000x100:1:0.005,100000x1000:10:0.01")]
        sizes: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of the fleet's CPU the demand uses.
        #[arg(long, default_value_t = 0.7)]
        load: f64,
        #[arg(long, default_value = "fast")]
        method: Method,
        /// Keep the generated instances here (for `scripts/peer.py`).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Internal: solve this instance and print one JSON line.
        #[arg(long, hide = true)]
        one: Option<PathBuf>,
        #[arg(long, hide = true, default_value_t = 10.0)]
        time_limit: f64,
        #[arg(long, hide = true, default_value_t = 0.01)]
        gap: f64,
        /// After each solve, this many incremental re-plans (one site's
        /// heat, cooling or price, or one workload's demand, in turn); prints
        /// their median and worst time.
        #[arg(long, default_value_t = 20)]
        replans: usize,
    },
    /// Generate a realistic instance from the shipped real data.
    Gen {
        #[arg(long, default_value_t = 12)]
        sites: usize,
        #[arg(long, default_value_t = 60)]
        workloads: usize,
        /// Add workloads until this many replicas (overrides --workloads).
        #[arg(long)]
        replicas: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of the fleet's CPU the demand uses.
        #[arg(long, default_value_t = 0.75)]
        load: f64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TableFormatArg {
    Csv,
    Parquet,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Html,
    Md,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Mps,
    Lp,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("EDGEPLAN_LOG"))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Parse and validate; every problem is printed before failing.
fn load(path: &Path) -> Result<Instance> {
    Ok(load_problem(path)?.0)
}

/// Parse, validate, and the problem validation built (built once).
fn load_problem(path: &Path) -> Result<(Instance, Problem)> {
    let inst = instance::parse(&read(path)?, Format::from_path(path))
        .with_context(|| format!("{} is not a valid instance", path.display()))?;
    match validate_and_build(&inst) {
        Ok(problem) => Ok((inst, problem)),
        Err(issues) => {
            for i in &issues {
                eprintln!("{}: {i}", path.display());
            }
            bail!("{} has {} problem(s)", path.display(), issues.len());
        }
    }
}

/// One CSV row of telemetry.
#[derive(serde::Deserialize)]
struct Row {
    timestamp_s: f64,
    sensor: String,
    site: String,
    rack: Option<String>,
    kind: edgeplan::telemetry::SensorKind,
    unit: String,
    value: f64,
}

/// Readings from a CSV file or a Parquet archive (by extension); malformed
/// rows are reported (the first few by line) and counted.
fn read_readings(path: &Path) -> Result<(Vec<edgeplan::telemetry::Reading>, u64)> {
    if path.extension().and_then(|e| e.to_str()) == Some("parquet") {
        let (readings, errors) = edgeplan::archive::read(path)?;
        for e in errors.iter().take(5) {
            eprintln!("{e}");
        }
        return Ok((readings, errors.len() as u64));
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut readings = Vec::new();
    let mut malformed = 0u64;
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        match row {
            Ok(r) => readings.push(edgeplan::telemetry::Reading {
                sensor: r.sensor,
                site: r.site,
                rack: r.rack.filter(|s| !s.is_empty()),
                kind: r.kind,
                unit: r.unit,
                value: r.value,
                timestamp_s: r.timestamp_s,
            }),
            Err(e) => {
                malformed += 1;
                if malformed <= 5 {
                    eprintln!("{}: line {}: {e}", path.display(), i + 2);
                }
            }
        }
    }
    Ok((readings, malformed))
}

/// Ingest readings; returns the state, the accepted readings and the malformed count.
fn read_telemetry(
    inst: &Instance,
    path: &Path,
) -> Result<(
    edgeplan::telemetry::TelemetryState,
    Vec<edgeplan::telemetry::Reading>,
    u64,
)> {
    let (readings, malformed) = read_readings(path)?;
    let mut state = edgeplan::telemetry::TelemetryState::new(Default::default());
    let sites: std::collections::HashSet<&str> = inst.sites.iter().map(|s| s.id.as_str()).collect();
    let accepted = readings
        .into_iter()
        .filter(|r| state.ingest(r, |s| sites.contains(s)).is_ok())
        .collect();
    Ok((state, accepted, malformed))
}

/// A running service's inventory (as an instance) and its latest plan that
/// is not superseded.
async fn fetch_live(
    server: &edgeplan::service::client::Connect,
) -> Result<(Instance, Option<edgeplan::plan::Plan>)> {
    use edgeplan::api::pb;
    let channel = server.channel().await?;
    let mut inv = pb::inventory_client::InventoryClient::new(channel.clone());
    let snap = inv
        .get_inventory(pb::GetInventoryRequest {})
        .await?
        .into_inner();
    let inst: Instance = serde_json::from_str(&snap.instance_json)?;
    let mut placement = pb::placement_client::PlacementClient::new(channel);
    let plans = placement
        .list_plans(pb::ListPlansRequest {})
        .await?
        .into_inner()
        .plans;
    let latest = plans
        .iter()
        .rev()
        .find(|p| p.state != pb::PlanState::Superseded as i32);
    let plan = match latest {
        Some(p) => {
            let view = placement
                .get_plan(pb::PlanRef { plan_id: p.plan_id })
                .await?
                .into_inner();
            Some(serde_json::from_str(&view.plan_json)?)
        }
        None => None,
    };
    Ok((inst, plan))
}

/// One benchmark size: (replicas, sites, seconds, gap).
fn parse_sizes(text: &str) -> Result<Vec<(usize, usize, f64, f64)>> {
    text.split(',')
        .map(|item| {
            let parse = || -> Option<(usize, usize, f64, f64)> {
                let mut parts = item.trim().split(':');
                let (replicas, sites) = parts.next()?.split_once('x')?;
                let seconds = parts.next().map_or(Some(10.0), |v| v.parse().ok())?;
                let gap = parts.next().map_or(Some(0.01), |v| v.parse().ok())?;
                Some((replicas.parse().ok()?, sites.parse().ok()?, seconds, gap))
            };
            parse().ok_or_else(|| {
                anyhow::anyhow!("--sizes: {item:?} is not REPLICASxSITES[:SECONDS[:GAP]]")
            })
        })
        .collect()
}

fn bench(
    sizes: &str,
    seed: u64,
    load: f64,
    method: Method,
    keep: Option<&Path>,
    replans: usize,
) -> Result<()> {
    let sizes = parse_sizes(sizes)?;
    let temp = std::env::temp_dir().join(format!("edgeplan-bench-{}", std::process::id()));
    let dir = keep.unwrap_or(&temp);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    println!(
        "{:>9} {:>6} {:>7} {:>6} {:>8} {:>8} {:>14} {:>14} {:>8} {:>9} {:>11} {:>11}",
        "replicas",
        "sites",
        "limit_s",
        "method",
        "build_s",
        "solve_s",
        "objective",
        "bound",
        "gap_%",
        "peak_MiB",
        "replan_p50",
        "replan_max"
    );
    for (replicas, sites, seconds, gap) in sizes {
        let inst = generate(&GenOptions {
            sites,
            workloads: 0,
            replicas: Some(replicas),
            seed,
            load,
        })
        .map_err(anyhow::Error::msg)?;
        let path = dir.join(format!("bench-{replicas}x{sites}-seed{seed}.json"));
        fs::write(&path, serde_json::to_string(&inst)?)?;
        drop(inst);
        let out = std::process::Command::new(&exe)
            .arg("bench")
            .arg("--one")
            .arg(&path)
            .arg("--method")
            .arg(format!("{method:?}").to_lowercase())
            .arg("--time-limit")
            .arg(seconds.to_string())
            .arg("--gap")
            .arg(gap.to_string())
            .arg("--replans")
            .arg(replans.to_string())
            .arg("--seed")
            .arg(seed.to_string())
            .output()?;
        if !out.status.success() {
            bail!(
                "{replicas}x{sites}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if keep.is_none() {
            let _ = fs::remove_file(&path);
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>9} {:>6} {:>7} {:>6} {:>8.2} {:>8.2} {:>14.4} {:>14.4} {:>8.3} {:>9.0} {:>8.1} ms {:>8.1} ms",
            replicas,
            sites,
            seconds,
            r["method"].as_str().unwrap_or("?"),
            num("build_s"),
            num("solve_s"),
            num("objective"),
            num("bound"),
            num("gap") * 100.0,
            num("peak_mib"),
            num("replan_p50_ms"),
            num("replan_max_ms"),
        );
    }
    if keep.is_none() {
        let _ = fs::remove_dir(&temp);
    }
    Ok(())
}

/// Fail when the independent verifier finds a broken rule in `x`.
fn verified(inst: &Instance, problem: &Problem, x: &[Vec<(usize, u32)>]) -> Result<()> {
    let report = verify(inst, &problem.placement_of(x));
    if let Some(v) = report.violations.first() {
        bail!(
            "the placement breaks {} rule(s), first {} at {}: {}",
            report.violations.len(),
            v.rule,
            v.item,
            v.message
        );
    }
    Ok(())
}

/// Load, build and solve one instance, then time `replans` incremental
/// re-plans; print the figures as one JSON line.
fn bench_one(
    path: &Path,
    method: Method,
    time_limit: f64,
    gap: f64,
    replans: usize,
    seed: u64,
) -> Result<()> {
    let started = Instant::now();
    let (inst, problem) = load_problem(path)?;
    let build_s = started.elapsed().as_secs_f64();
    let solving = Instant::now();
    let solved = solve(
        &problem,
        &SolveOptions {
            time_limit_s: Some(time_limit),
            relative_gap: Some(gap),
            threads: None,
            seed: 0,
            method,
            work: None,
            deterministic: false,
        },
    )?;
    let solve_s = solving.elapsed().as_secs_f64();
    verified(&inst, &problem, &solved.x)?;
    let peak_kib: f64 = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN);
    let mut replan_ms = Vec::new();
    let mut replan_gap = f64::NAN;
    if replans > 0 {
        let mut current = inst;
        let mut replanner = Replanner::new(problem, &solved.x, solved.price.clone());
        for (i, scenario) in bench_changes(&current, replans, seed).iter().enumerate() {
            let next = edgeplan::whatif::apply(&current, scenario, "bench")
                .map_err(|e| anyhow::anyhow!("bench change {i}: {e:?}"))?;
            let Some(changes) = diff(replanner.problem(), &current, &next) else {
                bail!("bench change {i} is structural");
            };
            let t = Instant::now();
            let r = replanner.apply(&next, &changes)?;
            replan_ms.push(t.elapsed().as_secs_f64() * 1e3);
            replan_gap = r.gap;
            current = next;
        }
        // The final placement against the changed instance, independently.
        let rebuilt = Problem::build(&current)?;
        verified(&current, &rebuilt, &replanner.placement())?;
    }
    replan_ms.sort_by(f64::total_cmp);
    let nan = f64::NAN;
    println!(
        "{}",
        serde_json::json!({
            "method": solved.method,
            "build_s": build_s,
            "solve_s": solve_s,
            "objective": solved.objective,
            "bound": solved.bound,
            "gap": solved.gap,
            "peak_mib": peak_kib / 1024.0,
            "replan_p50_ms": replan_ms.get(replan_ms.len() / 2).copied().unwrap_or(nan),
            "replan_max_ms": replan_ms.last().copied().unwrap_or(nan),
            "replan_final_gap": replan_gap,
        })
    );
    Ok(())
}

/// `n` single changes in turn, deterministic for `seed`: a heat wave
/// (+10 °C), half the cooling lost, the electricity price halved at one
/// site; one workload's replicas doubled.
fn bench_changes(inst: &Instance, n: usize, seed: u64) -> Vec<edgeplan::whatif::Scenario> {
    use edgeplan::whatif::{Perturbation, Scenario, Selection};
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |m: usize| {
        // xorshift: enough to spread the changes over the fleet.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m.max(1) as u64) as usize
    };
    (0..n)
        .map(|i| {
            let site = inst.sites[next(inst.sites.len())].id.clone();
            let perturbation = match i % 4 {
                0 => Perturbation::HeatWave {
                    sites: vec![site],
                    delta_c: 10.0,
                    from_hour: 0,
                    hours: None,
                },
                1 => Perturbation::CoolingLoss {
                    site,
                    fraction: 0.5,
                },
                2 => Perturbation::Price {
                    sites: vec![site],
                    multiplier: 0.5,
                    series: None,
                },
                _ => Perturbation::DemandGrowth {
                    factor: 2.0,
                    selection: Selection {
                        regions: Vec::new(),
                        workloads: vec![inst.workloads[next(inst.workloads.len())].id.clone()],
                    },
                },
            };
            Scenario {
                name: format!("change {i}"),
                perturbations: vec![perturbation],
            }
        })
        .collect()
}

/// `edgeplan replan`: the first solve, the diff, the incremental re-plan.
fn replan(
    before: &Path,
    changed: &Path,
    out: Option<&Path>,
    options: SolveOptions,
    plan_out: Option<&Path>,
) -> Result<()> {
    let (old, problem) = load_problem(before)?;
    let new = load(changed)?;
    let started = Instant::now();
    let solved = solve(&problem, &options)?;
    eprintln!(
        "first solve of {}: objective {:.4}, bound {:.4}, gap {:.3} % on the placed cost, in {:.2} s",
        before.display(),
        solved.objective,
        solved.bound,
        solved.gap * 100.0,
        started.elapsed().as_secs_f64()
    );
    let (problem, solved) = match diff(&problem, &old, &new) {
        Some(changes) => {
            let names: Vec<String> = changes
                .iter()
                .map(|c| match *c {
                    Change::Site(i) => format!("site {}", new.sites[i].id),
                    Change::Workload(i) => format!("workload {}", new.workloads[i].id),
                })
                .collect();
            let mut replanner = Replanner::new(problem, &solved.x, solved.price);
            if options.deterministic {
                replanner.set_limits(None, Some(options.work.unwrap_or(DEFAULT_WORK)));
            } else if options.work.is_some() {
                replanner.set_limits(Some(DEFAULT_REPLAN_TIME_LIMIT), options.work);
            }
            let started = Instant::now();
            let r = replanner.apply(&new, &changes)?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            eprintln!(
                "changed: {}",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            );
            eprintln!(
                "re-plan: {} workload(s) moved, {} replica(s) started elsewhere, in {elapsed_ms:.1} ms{}; objective {:.4}, bound {:.4}, gap {:.3} % on the placed cost",
                r.moved.len(),
                r.replicas_started,
                if r.rebuilt { " (candidate layout rebuilt)" } else { "" },
                r.objective,
                r.bound,
                r.gap * 100.0
            );
            let x = replanner.placement();
            let problem = Problem::build(&new)?;
            let solved = edgeplan::solver::Solved::replanned(x, &r);
            (problem, solved)
        }
        None => {
            eprintln!(
                "the change is structural (sites, workloads, network or weights): solving afresh"
            );
            let problem = Problem::build(&new)?;
            let solved = solve(&problem, &options)?;
            (problem, solved)
        }
    };
    verified(&new, &problem, &solved.x)?;
    let report = SolveReport::new(&problem, &solved);
    write_out(out, &(serde_json::to_string_pretty(&report)? + "\n"))?;
    if let Some(path) = plan_out {
        let plan = edgeplan::plan::plan(&new, &problem, &report.placement)?;
        fs::write(path, serde_json::to_string_pretty(&plan)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprint!("{}", plan.summary());
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo {
            sites,
            workloads,
            duration,
            seed,
            report,
            data_dir,
        } => {
            let opts = edgeplan::service::demo::DemoOptions {
                sites,
                workloads,
                duration_s: duration,
                seed,
                report,
                data_dir,
            };
            runtime()?.block_on(edgeplan::service::demo::run(&opts))?;
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            provisioners,
            continuous,
            auto_approve,
            time_scale,
            store,
            replica_id,
            nats,
        } => {
            let mut cfg: edgeplan::service::Config = match &config {
                Some(path) => {
                    let text = read(path)?;
                    let value: serde_json::Value = serde_yaml::from_str(&text)
                        .with_context(|| format!("{} is not YAML", path.display()))?;
                    serde_path_to_error::deserialize(value).map_err(|e| {
                        anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner())
                    })?
                }
                None => edgeplan::service::Config::default(),
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if !provisioners.is_empty() {
                cfg.provisioners = provisioners;
            }
            cfg.continuous.enabled |= continuous;
            cfg.continuous.auto_approve |= auto_approve;
            if let Some(t) = time_scale {
                cfg.dispatch.time_scale = t;
            }
            if store.is_some() {
                cfg.store = store;
            }
            if let Some(r) = replica_id {
                cfg.cluster.replica_id = r;
            }
            if let Some(url) = nats {
                cfg.nats.get_or_insert_with(Default::default).url = url;
            }
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.listen))?;
                let data = match &cfg.store {
                    Some(url) => {
                        format!("store {}", edgeplan::service::store::postgres::redact(url))
                    }
                    None => format!("data in {}", cfg.data_dir.display()),
                };
                eprintln!("edgeplan listening on {} ({data})", listener.local_addr()?);
                edgeplan::service::serve_on(cfg, listener, shutdown_signal()).await
            })?;
        }
        Command::ProvisionerSim {
            listen,
            journal,
            fail_workloads,
            fail_rate,
            speed,
            seed,
            tls_cert,
            tls_key,
            client_ca,
            faults,
        } => {
            let cfg = edgeplan::service::provisioner_sim::SimConfig {
                listen,
                fail_workloads,
                fail_rate,
                seed,
                journal,
                speed,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| edgeplan::service::auth::ServerTls {
                        cert,
                        key,
                        client_ca,
                    }),
                faults: faults.into(),
            };
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.listen))?;
                eprintln!("provisioner-sim listening on {}", listener.local_addr()?);
                edgeplan::service::provisioner_sim::serve_on(cfg, listener, shutdown_signal()).await
            })?;
        }
        Command::Token { name, role } => {
            use edgeplan::service::auth::{new_token, token_sha256};
            let token = new_token();
            let entry = edgeplan::service::auth::TokenConfig {
                name,
                role,
                sha256: token_sha256(&token),
            };
            println!("{token}");
            eprintln!(
                "give the token above to its holder; add this under auth.tokens in serve.yaml:\n  - {}",
                serde_json::to_string(&entry)?
            );
        }
        Command::Publish {
            nats,
            server,
            sites,
            racks_per_site,
            batch,
            messages,
            in_flight,
            wait,
            stream,
            subject_prefix,
            t0,
            auth,
        } => {
            let opts = edgeplan::service::publish::PublishOptions {
                bus: edgeplan::service::bus::BusConfig {
                    url: nats,
                    stream,
                    subject_prefix,
                    ..Default::default()
                },
                server: server.map(|s| auth.connect(&s)),
                sites,
                racks_per_site,
                batch,
                messages,
                in_flight,
                wait_s: wait,
                t0,
            };
            let report = runtime()?.block_on(edgeplan::service::publish::run(&opts))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!(
                "published {} readings in {} messages in {:.2} s ({:.0} readings/s)",
                report.readings, report.messages, report.publish_s, report.published_per_s
            );
            if let Some(a) = &report.arrived {
                eprintln!(
                    "in the service's state: {} accepted, {} rejected, {:.2} s after the first publish ({:.0} readings/s end to end)",
                    a.accepted, a.rejected, a.seconds, a.readings_per_s
                );
                if !a.complete {
                    anyhow::bail!("not every reading arrived within {wait} s");
                }
            }
        }
        Command::Load {
            server,
            sites,
            racks_per_site,
            workloads,
            batch,
            seconds,
            streams,
            batches_per_call,
            solvers,
            solve_time_limit,
            watchers,
            server_pid,
            auth,
        } => {
            let opts = edgeplan::service::load::LoadOptions {
                server: auth.connect(&server),
                sites,
                racks_per_site,
                workloads,
                batch,
                seconds,
                streams,
                batches_per_call,
                solvers,
                solve_time_limit_s: solve_time_limit,
                watchers,
                server_pid,
            };
            let report = runtime()?.block_on(edgeplan::service::load::run(&opts))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!(
                "{} sensors: {} readings accepted ({} rejected) in {:.1} s = {:.0} samples/s",
                report.sensors,
                report.accepted,
                report.rejected,
                report.seconds,
                report.samples_per_s,
            );
            let lat = |name: &str, l: &edgeplan::service::load::Latency| {
                if l.count > 0 {
                    eprintln!(
                        "{name}: {} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                        l.count, l.p50_ms, l.p99_ms, l.max_ms
                    );
                }
            };
            lat("ingest ack", &report.ingest_ack);
            lat("solve", &report.solve);
            if watchers > 0 {
                eprintln!("watch: {} messages", report.watch_messages);
            }
            if let (Some(first), Some(last)) =
                (report.server_rss_mib.first(), report.server_rss_mib.last())
            {
                eprintln!(
                    "server RSS {:.0} MiB at {:.0} s → {:.0} MiB at {:.0} s",
                    first.1, first.0, last.1, last.0
                );
            }
            eprintln!("errors: {} {:?}", report.errors, report.error_examples);
            if report.errors > 0 {
                bail!("{} calls failed", report.errors);
            }
        }
        Command::Report {
            instance,
            placement,
            plan,
            whatif,
            server,
            auth,
            format,
            title,
            out,
        } => {
            let results: Option<Vec<edgeplan::whatif::ScenarioResult>> = match &whatif {
                Some(path) => Some(serde_json::from_str(&read(path)?).with_context(|| {
                    format!(
                        "{} is not what-if results (edgeplan whatif's JSON)",
                        path.display()
                    )
                })?),
                None => None,
            };
            let (inst, live_plan) = match (&instance, &server, &results) {
                (Some(path), _, _) => (load(path)?, None),
                (None, Some(url), _) => runtime()?.block_on(fetch_live(&auth.connect(url)))?,
                (None, None, Some(results)) => {
                    // What-if results alone: the comparison and the base's sites.
                    let title = title.unwrap_or_else(|| "edgeplan what-if report".into());
                    let text = match format {
                        ReportFormat::Html => {
                            edgeplan::operator_report::whatif_html(&title, results)
                        }
                        ReportFormat::Md => {
                            edgeplan::operator_report::whatif_markdown(&title, results)
                        }
                    };
                    write_out(out.as_deref(), &text)?;
                    return Ok(ExitCode::SUCCESS);
                }
                (None, None, None) => bail!("give --instance, --server or --whatif"),
            };
            let problem = Problem::build(&inst)?;
            let x = match &placement {
                Some(path) => {
                    let p: Placement = serde_json::from_str(&read(path)?)
                        .with_context(|| format!("{} is not a placement", path.display()))?;
                    problem.index_placement(&p)?
                }
                None => problem.current_placement(),
            };
            let plan: Option<edgeplan::plan::Plan> = match &plan {
                Some(path) => Some(
                    serde_json::from_str(&read(path)?)
                        .with_context(|| format!("{} is not a plan", path.display()))?,
                ),
                None => live_plan,
            };
            let title = title.unwrap_or_else(|| {
                if inst.name.is_empty() {
                    "edgeplan report".to_string()
                } else {
                    format!("edgeplan report: {}", inst.name)
                }
            });
            let input = edgeplan::operator_report::ReportInput {
                title: &title,
                instance: &inst,
                problem: &problem,
                x: &x,
                plan: plan.as_ref(),
                whatif: results.as_deref(),
            };
            let text = match format {
                ReportFormat::Html => edgeplan::operator_report::html(&input),
                ReportFormat::Md => edgeplan::operator_report::markdown(&input),
            };
            write_out(out.as_deref(), &text)?;
            if let Some(path) = &out {
                eprintln!("report written to {}", path.display());
            }
        }
        Command::Push {
            server,
            instance,
            observed,
            auth,
        } => {
            let inst = load(&instance)?;
            let connect = auth.connect(&server);
            let rt = runtime()?;
            let mut version =
                rt.block_on(edgeplan::service::client::push_instance(&connect, &inst))?;
            if observed && !inst.workloads.is_empty() {
                version = rt.block_on(edgeplan::service::client::report_observed(
                    &connect,
                    &inst,
                    Some(version),
                ))?;
            }
            eprintln!(
                "pushed {} sites, {} links, {} regions, {} workloads; state version {version}",
                inst.sites.len(),
                inst.network.links.len(),
                inst.regions.len(),
                inst.workloads.len()
            );
        }
        Command::Validate { file } => {
            load(&file)?;
            eprintln!("{}: valid", file.display());
        }
        Command::Schema => println!(
            "{}",
            serde_json::to_string_pretty(&instance::json_schema())?
        ),
        Command::Models => {
            for m in edgeplan::server_models::builtin().values() {
                println!(
                    "{:<24} {:>3} cores  idle {:>6.1} W  full {:>6.1} W  {} ({})",
                    m.name,
                    m.cores,
                    m.watts[0],
                    m.watts[10],
                    m.system,
                    m.spec_result_id.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Solve {
            instance,
            out,
            time_limit,
            gap,
            seed,
            work,
            deterministic,
            method,
            plan_out,
        } => {
            let (inst, problem) = load_problem(&instance)?;
            let started = Instant::now();
            let solved = solve(
                &problem,
                &SolveOptions {
                    time_limit_s: Some(time_limit),
                    relative_gap: gap,
                    threads: None,
                    seed,
                    method,
                    work,
                    deterministic,
                },
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            let report = SolveReport::new(&problem, &solved);
            write_out(
                out.as_deref(),
                &(serde_json::to_string_pretty(&report)? + "\n"),
            )?;
            eprint!("{}", report.summary());
            eprintln!("  solved in {elapsed:.2} s");
            if let Some(path) = plan_out {
                let plan = edgeplan::plan::plan(&inst, &problem, &report.placement)?;
                fs::write(&path, serde_json::to_string_pretty(&plan)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprint!("{}", plan.summary());
            }
        }
        Command::Replan {
            instance,
            changed,
            out,
            time_limit,
            gap,
            work,
            deterministic,
            plan_out,
        } => replan(
            &instance,
            &changed,
            out.as_deref(),
            SolveOptions {
                time_limit_s: Some(time_limit),
                relative_gap: Some(gap),
                threads: None,
                seed: 0,
                method: Method::Fast,
                work,
                deterministic,
            },
            plan_out.as_deref(),
        )?,
        Command::Plan {
            instance,
            target,
            out,
        } => {
            let (inst, problem) = load_problem(&instance)?;
            let target: Placement = serde_json::from_str(&read(&target)?)
                .with_context(|| format!("{} is not a placement", target.display()))?;
            let plan = edgeplan::plan::plan(&inst, &problem, &target)?;
            write_out(
                out.as_deref(),
                &(serde_json::to_string_pretty(&plan)? + "\n"),
            )?;
            eprint!("{}", plan.summary());
        }
        Command::VerifyPlan { instance, plan } => {
            let inst = load(&instance)?;
            let plan: edgeplan::plan::Plan = serde_json::from_str(&read(&plan)?)
                .with_context(|| format!("{} is not a plan", plan.display()))?;
            let report = edgeplan::verify::verify_plan(&inst, &plan);
            println!("{}", serde_json::to_string_pretty(&report)?);
            for v in &report.violations {
                eprintln!("violation [{}] {}", v.rule, v.message);
            }
            for o in &report.overloads {
                eprintln!("overloaded at the start [{}] {}", o.rule, o.message);
            }
            if report.stale {
                eprintln!(
                    "the instance changed since the plan was made: {}",
                    if report.valid {
                        "the plan still holds"
                    } else {
                        "the plan is superseded"
                    }
                );
            }
            if !report.valid {
                eprintln!("{} violation(s)", report.violations.len());
                return Ok(ExitCode::FAILURE);
            }
            eprintln!(
                "plan is safe at every wave{}",
                if report.reaches_target {
                    " and reaches its target"
                } else {
                    "; it stops short of its target (see blocked)"
                }
            );
        }
        Command::Verify {
            instance,
            placement,
        } => {
            let inst = load(&instance)?;
            let p: Placement = serde_json::from_str(&read(&placement)?)
                .with_context(|| format!("{} is not a placement", placement.display()))?;
            let report = verify(&inst, &p);
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.feasible {
                for v in &report.violations {
                    eprintln!("violation [{}] {}", v.rule, v.message);
                }
                eprintln!("{} violation(s)", report.violations.len());
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("feasible; objective {:.4}/h", report.objective.total);
        }
        Command::Export {
            instance,
            format,
            out,
        } => {
            let (inst, problem) = load_problem(&instance)?;
            let milp = Milp::build(&problem);
            let name = if inst.name.is_empty() {
                "edgeplan"
            } else {
                &inst.name
            };
            let text = match format {
                ExportFormat::Mps => milp.to_mps(name),
                ExportFormat::Lp => milp.to_lp(name),
            };
            write_out(out.as_deref(), &text)?;
            eprintln!("{} columns, {} rows", milp.columns.len(), milp.rows.len());
        }
        Command::Telemetry {
            instance,
            readings,
            archive,
            now,
            out,
            report,
        } => {
            let inst = load(&instance)?;
            let (state, accepted, malformed) = read_telemetry(&inst, &readings)?;
            if let Some(path) = &archive {
                edgeplan::archive::write(path, &accepted)?;
                eprintln!("archived {} readings to {}", accepted.len(), path.display());
            }
            let now_s =
                now.unwrap_or_else(|| state.sensors.values().map(|s| s.last_s).fold(0.0, f64::max));
            let (effective, rep) = edgeplan::effective::effective_instance(
                &inst,
                &state,
                now_s,
                &edgeplan::effective::EffectiveOptions::default(),
            );
            let issues = validate(&effective);
            if !issues.is_empty() {
                for i in &issues {
                    eprintln!("effective instance: {i}");
                }
                bail!("telemetry makes the instance invalid; nothing written");
            }
            write_out(
                out.as_deref(),
                &(serde_json::to_string_pretty(&effective)? + "\n"),
            )?;
            if let Some(path) = report {
                fs::write(&path, serde_json::to_string_pretty(&rep)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            eprintln!(
                "telemetry: {} readings accepted, {} rejected, {malformed} malformed",
                rep.accepted,
                rep.rejected.values().sum::<u64>()
            );
            for (reason, n) in &rep.rejected {
                eprintln!("  rejected {n}: {reason}");
            }
            for s in &rep.sites {
                eprintln!(
                    "  {}: IT limit {:.2} → {:.2} kW at {:.1} °C (ambient {:?}, recirculation {:?} {:.3} °C/kW, calibration {:.3})",
                    s.site, s.it_limit_kw_declared, s.it_limit_kw, s.ambient_c, s.ambient_source, s.recirc_source, s.recirc_c_per_kw, s.calibration
                );
                for n in &s.notes {
                    eprintln!("    {n}");
                }
            }
        }
        Command::Whatif {
            scenarios,
            out,
            format,
            sequential,
        } => {
            use edgeplan::tables::TableFormat;
            use edgeplan::whatif::{apply, expand, parse, run};
            let file = parse(&read(&scenarios)?)
                .map_err(|i| anyhow::anyhow!("{}: {i}", scenarios.display()))?;
            let base_path = scenarios
                .parent()
                .unwrap_or(Path::new("."))
                .join(&file.base);
            let base = load(&base_path)?;
            let list = match expand(&file) {
                Ok(l) => l,
                Err(issues) => {
                    for i in &issues {
                        eprintln!("{}: {i}", scenarios.display());
                    }
                    bail!("{} has {} problem(s)", scenarios.display(), issues.len());
                }
            };
            // Check every scenario before running any.
            let issues: Vec<_> = list
                .iter()
                .filter_map(|s| apply(&base, s, &format!("scenario {:?}", s.name)).err())
                .flatten()
                .collect();
            if !issues.is_empty() {
                for i in &issues {
                    eprintln!("{}: {i}", scenarios.display());
                }
                bail!("{} has {} problem(s)", scenarios.display(), issues.len());
            }
            let bar = indicatif::ProgressBar::new(list.len() as u64 + 1);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} scenarios {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = Instant::now();
            let results = run(
                &base,
                &list,
                &SolveOptions {
                    time_limit_s: Some(file.time_limit_s),
                    relative_gap: file.gap,
                    threads: Some(1),
                    seed: file.seed,
                    method: file.method,
                    work: file.work,
                    deterministic: true,
                },
                !sequential,
                &|_, _| bar.inc(1),
            )?;
            bar.finish_and_clear();
            eprint!("{}", edgeplan::whatif::comparison_table(&results));
            eprintln!(
                "{} scenarios in {:.1} s",
                results.len(),
                started.elapsed().as_secs_f64()
            );
            if let Some(path) = out {
                let fmt = match format {
                    Some(TableFormatArg::Csv) => TableFormat::Csv,
                    Some(TableFormatArg::Parquet) => TableFormat::Parquet,
                    Some(TableFormatArg::Json) => TableFormat::Json,
                    None => match path.extension().and_then(|e| e.to_str()) {
                        Some("parquet") => TableFormat::Parquet,
                        Some("json") => TableFormat::Json,
                        _ => TableFormat::Csv,
                    },
                };
                let sites = edgeplan::tables::write(&path, &results, fmt)?;
                eprintln!("wrote {} and {}", path.display(), sites.display());
            } else {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
        }
        Command::Bench {
            sizes,
            seed,
            load: share,
            method,
            keep,
            one,
            time_limit,
            gap,
            replans,
        } => match one {
            Some(path) => bench_one(&path, method, time_limit, gap, replans, seed)?,
            None => bench(&sizes, seed, share, method, keep.as_deref(), replans)?,
        },
        Command::Gen {
            sites,
            workloads,
            replicas,
            seed,
            load: share,
            out,
        } => {
            let inst = generate(&GenOptions {
                sites,
                workloads,
                replicas,
                seed,
                load: share,
            })
            .map_err(anyhow::Error::msg)?;
            let text = match out.as_deref().map(Format::from_path) {
                Some(Format::Yaml) => serde_yaml::to_string(&inst)?,
                _ => serde_json::to_string_pretty(&inst)? + "\n",
            };
            write_out(out.as_deref(), &text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
