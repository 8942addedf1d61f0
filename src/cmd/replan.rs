//! `edgeplan replan`: the first solve, the diff to the changed instance, the
//! incremental re-plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use edgeplan::clock::Deadline;
use edgeplan::fast::{diff, Change, Replanner, DEFAULT_REPLAN_TIME_LIMIT, DEFAULT_WORK};
use edgeplan::problem::Problem;
use edgeplan::report::SolveReport;
use edgeplan::solver::{solve, Method, SolveOptions};

use super::io::{load, load_problem, write, write_out};
use super::verified::verified;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// The instance after the change (same sites and workloads).
    #[arg(long)]
    pub changed: PathBuf,
    /// Where to write the re-planned placement JSON (stdout if absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds for the first solve.
    #[arg(long, default_value_t = 10.0)]
    pub time_limit: f64,
    /// Gap (on the placed cost) at which the first solve stops.
    #[arg(long, default_value_t = 0.005)]
    pub gap: f64,
    /// Work budget of the first solve and of the re-plan (see `solve`).
    #[arg(long)]
    pub work: Option<u64>,
    /// Both stop on the work budget alone, never on the clock.
    #[arg(long)]
    pub deterministic: bool,
    /// Also plan the migration from today's placement and write it here.
    #[arg(long)]
    pub plan_out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    replan(
        &args.instance,
        &args.changed,
        args.out.as_deref(),
        args.time_limit,
        SolveOptions {
            // Made once the instances are read (see `replan`).
            deadline: Deadline::NONE,
            relative_gap: Some(args.gap),
            threads: None,
            seed: 0,
            method: Method::Fast,
            work: args.work,
            deterministic: args.deterministic,
        },
        args.plan_out.as_deref(),
    )
}

/// `edgeplan replan`: the first solve, the diff, the incremental re-plan.
fn replan(
    before: &Path,
    changed: &Path,
    out: Option<&Path>,
    time_limit_s: f64,
    options: SolveOptions,
    plan_out: Option<&Path>,
) -> Result<()> {
    let (old, problem) = load_problem(before)?;
    let new = load(changed)?;
    // The first solve's time starts now, the files read.
    let options = SolveOptions {
        deadline: Deadline::after_s(time_limit_s),
        ..options
    };
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
                    Change::Site(i) => format!("site {}", new.sites[i.ix()].id),
                    Change::Workload(i) => format!("workload {}", new.workloads[i.ix()].id),
                })
                .collect();
            let mut replanner = Replanner::new(problem, &solved.x, solved.price);
            // Reproducible: the work budget alone; otherwise a wall-clock
            // guard too (and the replanner's own budget unless --work).
            let deadline = if options.deterministic {
                replanner.set_work(Some(options.work.unwrap_or(DEFAULT_WORK)));
                Deadline::NONE
            } else {
                if options.work.is_some() {
                    replanner.set_work(options.work);
                }
                Deadline::after(DEFAULT_REPLAN_TIME_LIMIT)
            };
            let started = Instant::now();
            let r = replanner.apply(&new, &changes, deadline)?;
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
        write(path, &(serde_json::to_string_pretty(&plan)? + "\n"))?;
        eprint!("{}", plan.summary());
    }
    Ok(())
}
