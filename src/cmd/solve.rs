//! `edgeplan solve`: the exact placement model, and optionally the migration
//! plan to its answer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use edgeplan::clock::Deadline;
use edgeplan::report::SolveReport;
use edgeplan::solver::{solve, Method, SolveOptions};

use super::io::{load_problem, write, write_out};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// Where to write the placement JSON (stdout if absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds before returning the best placement found (ignored with
    /// --deterministic).
    #[arg(long, default_value_t = 60.0)]
    pub time_limit: f64,
    /// Gap at which to stop, on the cost of what is placed:
    /// (objective − bound) / placed cost (default 1e-4).
    #[arg(long)]
    pub gap: Option<f64>,
    /// HiGHS random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Work budget (machine-independent units: Lagrangian iterations ×
    /// candidate pairs, local-search trials, HiGHS nodes × columns); the
    /// search stops when it or the time limit runs out.
    #[arg(long)]
    pub work: Option<u64>,
    /// Stop on the work budget alone (--work, or 200,000,000), never on
    /// the clock: the same placement on any machine, however loaded.
    #[arg(long)]
    pub deterministic: bool,
    /// auto (the fast path, then HiGHS when the model is small and the
    /// gap still open), exact (HiGHS) or fast (Lagrangian bound + local search).
    #[arg(long, default_value = "auto")]
    pub method: Method,
    /// Also plan the migration from today's placement and write it here.
    #[arg(long)]
    pub plan_out: Option<PathBuf>,
    /// What an unplaced replica's explanation lists: the sites within
    /// latency reach (out-of-reach ones only counted), or all sites.
    #[arg(long, value_enum, default_value = "within-reach")]
    pub explain: ExplainDetail,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExplainDetail {
    WithinReach,
    All,
}

impl From<ExplainDetail> for edgeplan::explain::Detail {
    fn from(d: ExplainDetail) -> Self {
        match d {
            ExplainDetail::WithinReach => edgeplan::explain::Detail::WithinReach,
            ExplainDetail::All => edgeplan::explain::Detail::All,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        out,
        time_limit,
        gap,
        seed,
        work,
        deterministic,
        method,
        plan_out,
        explain,
    } = args;
    let (inst, problem) = load_problem(&instance)?;
    let started = Instant::now();
    let solved = solve(
        &problem,
        &SolveOptions {
            deadline: Deadline::after_s(time_limit),
            relative_gap: gap,
            threads: None,
            seed,
            method,
            work,
            deterministic,
        },
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let report = SolveReport::explained(&problem, &solved, explain.into());
    write_out(
        out.as_deref(),
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    eprint!("{}", report.summary());
    eprintln!("  solved in {elapsed:.2} s");
    if let Some(path) = plan_out {
        let plan = edgeplan::plan::plan(&inst, &problem, &report.placement)?;
        write(&path, &(serde_json::to_string_pretty(&plan)? + "\n"))?;
        eprint!("{}", plan.summary());
    }
    Ok(())
}
