//! `edgeplan provisioner-sim`: the reference provisioner, with faults to
//! inject.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::runtime::{runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: std::net::SocketAddr,
    /// Append every executed step here (and honour its keys after a restart).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Steps of this workload fail (repeatable).
    #[arg(long = "fail-workload")]
    pub fail_workloads: Vec<String>,
    /// Share of steps that fail at random.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Multiplier on each step's expected duration.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Serve TLS with this PEM certificate chain …
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// … and this PEM key.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        listen,
        journal,
        fail_workloads,
        fail_rate,
        speed,
        seed,
        tls_cert,
        tls_key,
        client_ca,
        faults,
    } = args;
    let cfg = edgeplan::service::provisioner_sim::SimConfig {
        listen,
        fail_workloads,
        fail_rate,
        seed,
        journal,
        speed,
        tls: tls_cert
            .zip(tls_key)
            .map(|(cert, key)| edgeplan::service::auth::ServerTls {
                cert,
                key,
                client_ca,
            }),
        faults: faults.into(),
    };
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        eprintln!("provisioner-sim listening on {}", listener.local_addr()?);
        edgeplan::service::provisioner_sim::serve_on(cfg, listener, shutdown_signal()).await
    })?;
    Ok(())
}

/// `provisioner-sim`'s injected faults (each a share of calls, 0–1).
#[derive(clap::Args, Clone, Debug)]
pub struct FaultArgs {
    /// Answer UNAVAILABLE without executing.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Execute but never answer (the ack is lost).
    #[arg(long, default_value_t = 0.0)]
    pub timeout_rate: f64,
    /// Answer late (up to twice the step's expected time more).
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// Flag a first answer as a duplicate.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Exit right after journaling this many executions, unanswered.
    #[arg(long)]
    pub exit_after: Option<u64>,
    /// Append every call (key, what happened) to this file.
    #[arg(long)]
    pub call_log: Option<PathBuf>,
}

impl From<FaultArgs> for edgeplan::service::provisioner_sim::Faults {
    fn from(a: FaultArgs) -> Self {
        edgeplan::service::provisioner_sim::Faults {
            error_rate: a.error_rate,
            timeout_rate: a.timeout_rate,
            slow_rate: a.slow_rate,
            duplicate_rate: a.duplicate_rate,
            exit_after: a.exit_after,
            call_log: a.call_log,
        }
    }
}
