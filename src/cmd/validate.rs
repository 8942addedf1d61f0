//! `edgeplan validate`: check an instance file, listing every problem.

use std::path::PathBuf;

use anyhow::Result;

use super::io::load;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    load(&args.file)?;
    eprintln!("{}: valid", args.file.display());
    Ok(())
}
