//! `edgeplan models`: the built-in server power models.

use anyhow::Result;

// No flags; an `Args` all the same, so every subcommand has one shape.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    for m in edgeplan::server_models::builtin().values() {
        println!(
            "{:<24} {:>3} cores  idle {:>6.1} W  full {:>6.1} W  {} ({})",
            m.name,
            m.cores,
            m.watts[0],
            m.watts[10],
            m.system,
            m.spec_result_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
