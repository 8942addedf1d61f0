//! `edgeplan gen`: a realistic instance from the shipped real data.

use std::path::PathBuf;

use anyhow::Result;

use edgeplan::gen::{generate_family, Family, GenOptions};
use edgeplan::instance::Format;

use super::io::write_out;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 12)]
    pub sites: usize,
    #[arg(long, default_value_t = 60)]
    pub workloads: usize,
    /// Add workloads until this many replicas (overrides --workloads).
    #[arg(long)]
    pub replicas: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of the fleet's CPU the demand uses.
    #[arg(long, default_value_t = 0.75)]
    pub load: f64,
    /// standard, gpu-tight (a quarter of the workloads want 1–8 GPUs, at
    /// about 95 % of the GPU supply), metro (ten sites to a network node)
    /// or rules (anti-affinity, affinity and failure-domain spread).
    #[arg(long, default_value = "standard")]
    pub family: Family,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        sites,
        workloads,
        replicas,
        seed,
        load,
        family,
        out,
    } = args;
    let inst = generate_family(
        &GenOptions {
            sites,
            workloads,
            replicas,
            seed,
            load,
        },
        family,
    )
    .map_err(anyhow::Error::msg)?;
    let text = match out.as_deref().map(Format::from_path) {
        Some(Format::Yaml) => serde_yaml::to_string(&inst)?,
        _ => serde_json::to_string_pretty(&inst)? + "\n",
    };
    write_out(out.as_deref(), &text)?;
    Ok(())
}
