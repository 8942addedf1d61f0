//! `edgeplan verify`: check a placement against an instance; fails (exit
//! code 1) on any violation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use edgeplan::placement::Placement;
use edgeplan::verify::verify;

use super::io::{load, read};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// A placement, or the output of `solve`.
    #[arg(long)]
    pub placement: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        instance,
        placement,
    } = args;
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
    Ok(ExitCode::SUCCESS)
}
