//! `edgeplan plan`: the migration from today's placement to a target.

use std::path::PathBuf;

use anyhow::{Context, Result};

use edgeplan::placement::Placement;

use super::io::{load_problem, read, write_out};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    /// A placement, or the output of `solve`.
    #[arg(long)]
    pub target: PathBuf,
    /// Where to write the plan JSON (stdout if absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        target,
        out,
    } = args;
    let (inst, problem) = load_problem(&instance)?;
    let target: Placement = serde_json::from_str(&read(&target)?)
        .with_context(|| format!("{} is not a placement", target.display()))?;
    let plan = edgeplan::plan::plan(&inst, &problem, &target)?;
    write_out(
        out.as_deref(),
        &(serde_json::to_string_pretty(&plan)? + "\n"),
    )?;
    eprint!("{}", plan.summary());
    Ok(())
}
