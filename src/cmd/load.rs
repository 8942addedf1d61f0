//! `edgeplan load` (alias `load-telemetry`): load a running service for a
//! fixed time and report its throughput, latencies, errors and memory.

use anyhow::{bail, Result};

use super::runtime::runtime;
use super::server_args::ServerArgs;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    #[arg(long, default_value_t = 250)]
    pub sites: usize,
    #[arg(long, default_value_t = 18)]
    pub racks_per_site: usize,
    /// Workloads in the synthetic fleet (what solves place; 0: sites only).
    #[arg(long, default_value_t = 0)]
    pub workloads: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Concurrent Ingest streams.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Batches per Ingest call, each call timed to its ack (0: one call per stream).
    #[arg(long, default_value_t = 0)]
    pub batches_per_call: usize,
    /// Concurrent loops of Solve (dry-run) calls.
    #[arg(long, default_value_t = 0)]
    pub solvers: usize,
    #[arg(long, default_value_t = 1.0)]
    pub solve_time_limit: f64,
    /// Concurrent WatchSites streams.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// The server's pid, to sample its memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[command(flatten)]
    pub auth: ServerArgs,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
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
        report.sensors, report.accepted, report.rejected, report.seconds, report.samples_per_s,
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
    if let (Some(first), Some(last)) = (report.server_rss_mib.first(), report.server_rss_mib.last())
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
    Ok(())
}
