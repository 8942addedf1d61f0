//! Files in and out: reading text, writing to a file or stdout, and loading
//! an instance (parsed and validated, every problem printed).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use edgeplan::instance::{self, Format, Instance};
use edgeplan::problem::Problem;
use edgeplan::validate::validate_and_build;

pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// To the file if there is one, else to stdout.
pub fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => write(p, text),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Parse and validate; every problem is printed before failing.
pub fn load(path: &Path) -> Result<Instance> {
    Ok(load_problem(path)?.0)
}

/// Parse, validate, and the problem validation built (built once).
pub fn load_problem(path: &Path) -> Result<(Instance, Problem)> {
    let inst = instance::parse(&read(path)?, Format::from_path(path))
        .with_context(|| format!("{} is not a valid instance", path.display()))?;
    match validate_and_build(&inst) {
        Ok(problem) => Ok((inst, problem)),
        Err(issues) => {
            for i in &issues {
                eprintln!("{}: {i}", path.display());
            }
            bail!("{} has {} problem(s)", path.display(), issues.len());
        }
    }
}
