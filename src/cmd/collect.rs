//! `edgeplan collect`: poll servers' BMCs over Redfish and send what they
//! read to the service or to NATS JetStream.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::runtime::runtime;
use super::server_args::ServerArgs;
use edgeplan::service::collect::{send, CollectConfig, Collector, Sink};

#[derive(clap::Args)]
pub struct Args {
    /// The BMCs and how to poll them (`collect.yaml`, see the README).
    #[arg(long)]
    pub config: PathBuf,
    /// Send readings to this service (`Ingest`).
    #[arg(long, conflicts_with = "nats")]
    pub server: Option<String>,
    /// Publish readings to NATS JetStream instead (`<subject-prefix>.<site>`).
    #[arg(long)]
    pub nats: Option<String>,
    #[arg(long, default_value = "edgeplan.telemetry")]
    pub subject_prefix: String,
    /// Stop after this many rounds (0: run until stopped).
    #[arg(long, default_value_t = 0)]
    pub rounds: u64,
    /// Print each round as JSON on stdout (the summary line goes to stderr either way).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: ServerArgs,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = CollectConfig::load(&args.config)?;
    let sink = match (&args.server, &args.nats) {
        (Some(s), _) => Sink::Server(args.auth.connect(s)),
        (None, Some(n)) => Sink::Nats {
            url: n.clone(),
            subject_prefix: args.subject_prefix.clone(),
        },
        (None, None) => Sink::None,
    };
    runtime()?.block_on(async {
        let collector = Collector::new(cfg)?;
        let mut done = 0u64;
        let mut next = tokio::time::Instant::now();
        loop {
            let ts = edgeplan::service::now_s();
            let (report, readings) = collector.round(ts).await;
            let failed: Vec<String> = report
                .bmcs
                .iter()
                .filter_map(|b| b.error.as_ref().map(|e| format!("{} ({e})", b.endpoint)))
                .collect();
            let skipped: usize = report.bmcs.iter().map(|b| b.skipped.len()).sum();
            eprintln!(
                "round: {} BMCs in {:.2} s, {} readings, {} sensors or resources skipped, {} BMCs unanswered{}{}",
                report.bmcs.len(),
                report.seconds,
                report.readings,
                skipped,
                failed.len(),
                if failed.is_empty() { String::new() } else { format!(": {}", failed.join("; ")) },
                if report.held_back.is_empty() {
                    String::new()
                } else {
                    format!("; held back: {}", report.held_back.join("; "))
                }
            );
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            }
            match send(&sink, readings).await {
                Ok(d) if d.rejected > 0 => eprintln!(
                    "the service accepted {} readings and rejected {} (see its Stats for why)",
                    d.accepted, d.rejected
                ),
                Ok(_) => {}
                Err(e) => {
                // The next round tries again; a service that stays away
                // sees the sensors go stale, as it should.
                eprintln!("sending the round's readings failed: {e:#}");
                    if args.rounds > 0 && done + 1 >= args.rounds {
                        bail!("the last round's readings were not delivered: {e:#}");
                    }
                }
            }
            done += 1;
            if args.rounds > 0 && done >= args.rounds {
                return Ok(());
            }
            next += collector.interval();
            tokio::time::sleep_until(next).await;
        }
    })
}

/// `edgeplan collect-bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Simulated BMCs on loopback.
    #[arg(long, default_value_t = 1000)]
    pub bmcs: usize,
    #[arg(long, default_value_t = 20)]
    pub sites: usize,
    #[arg(long, default_value_t = 10)]
    pub bmcs_per_rack: usize,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Send to this service and time a BMC change to `WatchSites`.
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub auth: ServerArgs,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let opts = edgeplan::service::collect_bench::CollectBenchOptions {
        bmcs: args.bmcs,
        sites: args.sites,
        bmcs_per_rack: args.bmcs_per_rack,
        concurrency: args.concurrency,
        rounds: args.rounds,
        server: args.server.as_ref().map(|s| args.auth.connect(s)),
    };
    let report = runtime()?.block_on(edgeplan::service::collect_bench::run(&opts))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "{} BMCs, concurrency {}: {:.0} readings/s, {:.0} BMC polls/s (median round {:.3} s){}",
        report.bmcs,
        report.concurrency,
        report.readings_per_s,
        report.bmc_polls_per_s,
        {
            let mut r = report.round_s.clone();
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        },
        report.change_to_watch_s.map_or(String::new(), |s| format!(
            "; a BMC's change showed in WatchSites after {s:.2} s"
        ))
    );
    Ok(())
}
