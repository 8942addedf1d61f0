//! `edgeplan publish`: synthetic site telemetry onto NATS JetStream, and
//! optionally the wait until a service holds it.

use anyhow::{bail, Result};

use super::runtime::runtime;
use super::server_args::ServerArgs;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Register the fleet with this service and wait for the readings.
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub sites: usize,
    #[arg(long, default_value_t = 18)]
    pub racks_per_site: usize,
    /// Readings per message.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Messages awaiting JetStream's confirmation, at most.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Give up waiting for the readings after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub wait: f64,
    /// The stream and its subjects (as in serve.yaml's `nats`).
    #[arg(long, default_value = "EDGEPLAN_TELEMETRY")]
    pub stream: String,
    #[arg(long, default_value = "edgeplan.telemetry")]
    pub subject_prefix: String,
    /// First timestamp, s since the epoch (default: now).
    #[arg(long, default_value_t = 0.0)]
    pub t0: f64,
    #[command(flatten)]
    pub auth: ServerArgs,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        nats,
        server,
        sites,
        racks_per_site,
        batch,
        messages,
        in_flight,
        wait,
        stream,
        subject_prefix,
        t0,
        auth,
    } = args;
    let opts = edgeplan::service::publish::PublishOptions {
        bus: edgeplan::service::bus::BusConfig {
            url: nats,
            stream,
            subject_prefix,
            ..Default::default()
        },
        server: server.map(|s| auth.connect(&s)),
        sites,
        racks_per_site,
        batch,
        messages,
        in_flight,
        wait_s: wait,
        t0,
    };
    let report = runtime()?.block_on(edgeplan::service::publish::run(&opts))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "published {} readings in {} messages in {:.2} s ({:.0} readings/s)",
        report.readings, report.messages, report.publish_s, report.published_per_s
    );
    if let Some(a) = &report.arrived {
        eprintln!(
            "in the service's state: {} accepted, {} rejected, {:.2} s after the first publish ({:.0} readings/s end to end)",
            a.accepted, a.rejected, a.seconds, a.readings_per_s
        );
        if !a.complete {
            bail!("not every reading arrived within {wait} s");
        }
    }
    Ok(())
}
