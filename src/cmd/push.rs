//! `edgeplan push`: register an instance file's fleet with a running service.

use std::path::PathBuf;

use anyhow::Result;

use super::io::load_as_written;
use super::runtime::runtime;
use super::server_args::ServerArgs;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    #[arg(long)]
    pub instance: PathBuf,
    /// Also report the instance's `current` as where replicas run now
    /// (observed state; an upsert keeps a known workload's own).
    #[arg(long)]
    pub observed: bool,
    #[command(flatten)]
    pub auth: ServerArgs,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        server,
        instance,
        observed,
        auth,
    } = args;
    let inst = load_as_written(&instance)?;
    let connect = auth.connect(&server);
    let rt = runtime()?;
    let mut version = rt.block_on(edgeplan::service::client::push_instance(&connect, &inst))?;
    if observed && !inst.workloads.is_empty() {
        version = rt.block_on(edgeplan::service::client::report_observed(
            &connect,
            &inst,
            Some(version),
        ))?;
    }
    eprintln!(
        "pushed {} sites, {} links, {} regions, {} workloads; state version {version}",
        inst.sites.len(),
        inst.network.links.len(),
        inst.regions.len(),
        inst.workloads.len()
    );
    Ok(())
}
