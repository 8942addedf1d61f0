//! `edgeplan demo`: the whole story (a real fleet, real hours of 2023's
//! weather and prices as telemetry, re-plans, the live view, the report)
//! run by the service crate.

use std::path::PathBuf;

use anyhow::Result;

use super::runtime::runtime;

#[derive(clap::Args)]
pub struct Args {
    /// A fleet file (YAML or JSON) instead of the shipped demo fleet
    /// (examples/demo-fleet.yaml: twelve sites in three US grid zones).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// The first real hour of 2023 to run through (UTC, YYYY-MM-DDTHH):
    /// by default midnight in Texas on 9 August, ERCOT's heat and price spike.
    #[arg(long, default_value = edgeplan::service::demo::DEFAULT_FROM)]
    pub from: String,
    /// Real hours to run through.
    #[arg(long, default_value_t = edgeplan::service::demo::DEFAULT_HOURS)]
    pub hours: usize,
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
        fleet,
        from,
        hours,
        duration,
        seed,
        report,
        data_dir,
        http,
    } = args;
    let opts = edgeplan::service::demo::DemoOptions {
        fleet,
        from,
        hours,
        duration_s: duration,
        seed,
        report,
        data_dir,
        http,
    };
    runtime()?.block_on(edgeplan::service::demo::run(&opts))?;
    Ok(())
}
