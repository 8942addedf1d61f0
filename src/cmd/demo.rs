//! `edgeplan demo`: the whole story (fleet, telemetry, heat wave, price
//! spike, re-plans, report) run by the service crate.

use std::path::PathBuf;

use anyhow::Result;

use super::runtime::runtime;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8)]
    pub sites: usize,
    #[arg(long, default_value_t = 40)]
    pub workloads: usize,
    /// Seconds the story runs (plus a few to finish and report).
    #[arg(long, default_value_t = 90.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where the operator report goes.
    #[arg(long, default_value = "edgeplan-demo-report.html")]
    pub report: PathBuf,
    /// Keep the service's data here (default: a temporary directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The live view's address (the operator report as the service sees
    /// the fleet, /metrics, /status); a free port if this one is taken.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http: std::net::SocketAddr,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        sites,
        workloads,
        duration,
        seed,
        report,
        data_dir,
        http,
    } = args;
    let opts = edgeplan::service::demo::DemoOptions {
        sites,
        workloads,
        duration_s: duration,
        seed,
        report,
        data_dir,
        http,
    };
    runtime()?.block_on(edgeplan::service::demo::run(&opts))?;
    Ok(())
}
