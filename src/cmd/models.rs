//! `edgeplan models`: the built-in server and accelerator power models, and
//! the fit that makes the accelerator catalogue.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Fit the accelerator catalogue from its input and measured samples
    /// (this is how `models/accelerators.json` is made).
    FitAccelerators {
        /// The catalogue's input: measured devices and their servers, vendor devices.
        #[arg(long, default_value = "models/accelerators.in.json")]
        input: PathBuf,
        /// `server,gpu_util_pct,gpu_power_w` rows.
        #[arg(long, default_value = "data/gpu_power_hourly.csv")]
        samples: PathBuf,
        /// Where to write the catalogue; standard output when unset.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        None => list(),
        Some(Sub::FitAccelerators {
            input,
            samples,
            out,
        }) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let spec: edgeplan::accelerator_catalogue::CatalogueInput =
                serde_json::from_str(&read(&input)?)
                    .with_context(|| format!("parsing {}", input.display()))?;
            let catalogue = edgeplan::accelerator_catalogue::build(&spec, &read(&samples)?)?;
            let text = serde_json::to_string_pretty(&catalogue)? + "\n";
            match out {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{text}"),
            }
            for m in &catalogue.accelerators {
                if let Some(f) = &m.fit {
                    eprintln!(
                        "{:<22} idle {:>6.1} W  full {:>6.1} W  rmse {:>5.1} W  R² {:.3}  {} samples",
                        m.name, m.watts[0], m.watts[10], f.rmse_watts, f.r2, f.samples
                    );
                }
            }
            Ok(())
        }
    }
}

fn list() -> Result<()> {
    println!("servers (SPECpower_ssj2008):");
    for m in edgeplan::server_models::builtin().values() {
        println!(
            "  {:<24} {:>3} cores  idle {:>6.1} W  full {:>6.1} W  {} ({})",
            m.name,
            m.cores,
            m.watts[0],
            m.watts[10],
            m.system,
            m.spec_result_id.as_deref().unwrap_or("-")
        );
    }
    println!("accelerators (per device):");
    for m in edgeplan::accelerator_models::builtin().values() {
        let basis = match &m.fit {
            Some(f) => format!("measured, rmse {:.1} W", f.rmse_watts),
            None => "vendor board power, not measured".to_string(),
        };
        println!(
            "  {:<24} idle {:>6.1} W  full {:>6.1} W  TDP {:>4.0} W  {} ({basis})",
            m.name, m.watts[0], m.watts[10], m.tdp_watts, m.device
        );
    }
    Ok(())
}
