//! `edgeplan spot-prices`: the per-site spot prices of an instance (from
//! the optimizer's multipliers on its on-demand work, with the energy and
//! carbon floor), each explained, and what its spot workloads get at them.

use std::path::PathBuf;

use anyhow::Result;

use edgeplan::clock::Deadline;
use edgeplan::solver::{solve, SolveOptions};
use edgeplan::spot;

use super::io::{load_problem, write_out};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// Where to write the prices and admissions as JSON (stdout if absent;
    /// the table goes to stderr).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds for the on-demand solve (ignored with --deterministic).
    #[arg(long, default_value_t = 60.0)]
    pub time_limit: f64,
    /// Stop on the work budget alone: the same prices on any machine.
    #[arg(long)]
    pub deterministic: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        out,
        time_limit,
        deterministic,
    } = args;
    let (_, problem) = load_problem(&instance)?;
    let options = SolveOptions {
        deadline: Deadline::after_s(time_limit),
        deterministic,
        ..SolveOptions::default()
    };
    let solved = solve(&problem, &options)?;
    let market = match solved.market.as_deref() {
        Some(m) => m.clone(),
        // No spot workload: the prices alone, on the solve's placement.
        None => spot::on(&problem, &solved.x, None, 0.0),
    };
    write_out(
        out.as_deref(),
        &(serde_json::to_string_pretty(&market)? + "\n"),
    )?;
    eprintln!(
        "on-demand work placed first ({:?}, gap {:.2} % on the placed cost); prices per unit-hour above the floor:",
        solved.status,
        100.0 * solved.gap
    );
    for s in &market.sites {
        eprintln!("  {}", s.text);
    }
    for a in &market.admitted {
        eprintln!(
            "  admitted: {} × {} at {} for {:.4}/replica-hour",
            a.replicas, a.workload, a.site, a.price_per_replica_hour
        );
    }
    for l in &market.left_out {
        eprintln!("  left out: {} replica(s) of {}", l.replicas, l.text);
    }
    eprintln!(
        "spot revenue at these prices: {:.4}/h",
        market.revenue_per_hour
    );
    Ok(())
}
