//! `edgeplan verify-plan`: replay a plan against an instance; fails (exit
//! code 1) when the plan is unsafe.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::io::{load, read};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    #[arg(long)]
    pub plan: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { instance, plan } = args;
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
    Ok(ExitCode::SUCCESS)
}
