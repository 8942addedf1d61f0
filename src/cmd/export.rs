//! `edgeplan export`: the exact MILP as MPS or LP.

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;

use edgeplan::milp::Milp;

use super::io::{load_problem, write_out};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormat::Mps)]
    pub format: ExportFormat,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        format,
        out,
    } = args;
    let (inst, problem) = load_problem(&instance)?;
    let milp = Milp::build(&problem);
    let name = if inst.name.is_empty() {
        "edgeplan"
    } else {
        &inst.name
    };
    let text = match format {
        ExportFormat::Mps => milp.to_mps(name),
        ExportFormat::Lp => milp.to_lp(name),
    };
    write_out(out.as_deref(), &text)?;
    eprintln!("{} columns, {} rows", milp.columns.len(), milp.rows.len());
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Mps,
    Lp,
}
