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

/// Parse, validate, and the problem validation built (built once). Series
/// anchored to a start time are read at this machine's clock, as the
/// service reads them at each solve.
pub fn load_problem(path: &Path) -> Result<(Instance, Problem)> {
    load_checked(path, Some(edgeplan::service::now_s()))
}

/// [`load`] keeping anchored series as written (to hand them on: `push`).
pub fn load_as_written(path: &Path) -> Result<Instance> {
    Ok(load_checked(path, None)?.0)
}

fn load_checked(path: &Path, read_at_s: Option<f64>) -> Result<(Instance, Problem)> {
    let mut inst = instance::parse(&read(path)?, Format::from_path(path))
        .with_context(|| format!("{} is not a valid instance", path.display()))?;
    if let Some(now_s) = read_at_s {
        inst.read_at(now_s);
    }
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
