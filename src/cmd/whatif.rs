//! `edgeplan whatif`: what-if scenarios run in parallel, their KPIs compared
//! and optionally written as tables.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::ValueEnum;

use edgeplan::clock::Deadline;
use edgeplan::solver::SolveOptions;
use edgeplan::tables::TableFormat;
use edgeplan::whatif::{apply, expand, parse};

use super::io::{load, read};

#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (YAML or JSON).
    #[arg(long)]
    pub scenarios: PathBuf,
    /// Where to write the KPI table; the per-site table goes beside it (`NAME-sites.EXT`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: Option<TableFormatArg>,
    /// One scenario at a time (the results are identical).
    #[arg(long)]
    pub sequential: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        scenarios,
        out,
        format,
        sequential,
    } = args;
    let file =
        parse(&read(&scenarios)?).map_err(|i| anyhow::anyhow!("{}: {i}", scenarios.display()))?;
    let base_path = scenarios
        .parent()
        .unwrap_or(Path::new("."))
        .join(&file.base);
    let base = load(&base_path)?;
    let list = match expand(&file) {
        Ok(l) => l,
        Err(issues) => {
            for i in &issues {
                eprintln!("{}: {i}", scenarios.display());
            }
            bail!("{} has {} problem(s)", scenarios.display(), issues.len());
        }
    };
    // Check every scenario before running any.
    let issues: Vec<_> = list
        .iter()
        .filter_map(|s| apply(&base, s, &format!("scenario {:?}", s.name)).err())
        .flatten()
        .collect();
    if !issues.is_empty() {
        for i in &issues {
            eprintln!("{}: {i}", scenarios.display());
        }
        bail!("{} has {} problem(s)", scenarios.display(), issues.len());
    }
    let bar = indicatif::ProgressBar::new(list.len() as u64 + 1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} scenarios {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let results = edgeplan::whatif::run(
        &base,
        &list,
        &SolveOptions {
            // What-if stops each solve on its work budget, never the clock.
            deadline: Deadline::NONE,
            relative_gap: file.gap,
            threads: Some(1),
            seed: file.seed,
            method: file.method,
            work: file.work,
            deterministic: true,
        },
        !sequential,
        &|_, _| bar.inc(1),
    )?;
    bar.finish_and_clear();
    eprint!("{}", edgeplan::whatif::comparison_table(&results));
    eprintln!(
        "{} scenarios in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = out {
        let fmt = table_format(format, &path);
        let sites = edgeplan::tables::write(&path, &results, fmt)?;
        eprintln!("wrote {} and {}", path.display(), sites.display());
    } else {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// `--format`, else the file's extension (CSV by default).
pub fn table_format(format: Option<TableFormatArg>, path: &Path) -> TableFormat {
    match format {
        Some(TableFormatArg::Csv) => TableFormat::Csv,
        Some(TableFormatArg::Parquet) => TableFormat::Parquet,
        Some(TableFormatArg::Json) => TableFormat::Json,
        None => match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => TableFormat::Parquet,
            Some("json") => TableFormat::Json,
            _ => TableFormat::Csv,
        },
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TableFormatArg {
    Csv,
    Parquet,
    Json,
}
