//! `edgeplan schema`: the JSON Schema of the instance format.

use anyhow::Result;

use edgeplan::instance;

// No flags; an `Args` all the same, so every subcommand has one shape.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&instance::json_schema())?
    );
    Ok(())
}
