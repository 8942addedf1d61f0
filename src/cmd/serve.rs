//! `edgeplan serve`: the gRPC service, its settings from a YAML file with
//! flags on top.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::io::read;
use super::runtime::{runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
    /// YAML file with the service's settings (see README); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:50051).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// The HTTP port: Prometheus metrics (/metrics), a JSON status
    /// (/status) and the live operator report (/), e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// Directory of the database file (default ./edgeplan-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Provisioner endpoint, e.g. http://127.0.0.1:50052 (repeatable).
    #[arg(long = "provisioner")]
    pub provisioners: Vec<String>,
    /// Re-plan on its own when a site crosses a threshold.
    #[arg(long)]
    pub continuous: bool,
    /// Approve automatic plans without an operator.
    #[arg(long)]
    pub auto_approve: bool,
    /// Ask provisioners to take this share of each step's modelled time.
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Cluster mode: the shared PostgreSQL store, postgres://user@host/db
    /// (default: the embedded file in --data-dir).
    #[arg(long, env = "EDGEPLAN_STORE")]
    pub store: Option<String>,
    /// Cluster mode: this replica's name (default: host name and pid).
    #[arg(long)]
    pub replica_id: Option<String>,
    /// Take telemetry from NATS JetStream too, e.g. nats://127.0.0.1:4222.
    #[arg(long)]
    pub nats: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        config,
        listen,
        http,
        data_dir,
        provisioners,
        continuous,
        auto_approve,
        time_scale,
        store,
        replica_id,
        nats,
    } = args;
    let mut cfg: edgeplan::service::Config = match &config {
        Some(path) => {
            let text = read(path)?;
            let value: serde_json::Value = serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not YAML", path.display()))?;
            serde_path_to_error::deserialize(value)
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?
        }
        None => edgeplan::service::Config::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(h) = http {
        cfg.http = Some(edgeplan::service::http::HttpConfig { listen: h });
    }
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if !provisioners.is_empty() {
        cfg.provisioners = provisioners;
    }
    cfg.continuous.enabled |= continuous;
    cfg.continuous.auto_approve |= auto_approve;
    if let Some(t) = time_scale {
        cfg.dispatch.time_scale = t;
    }
    if store.is_some() {
        cfg.store = store;
    }
    if let Some(r) = replica_id {
        cfg.cluster.replica_id = r;
    }
    if let Some(url) = nats {
        cfg.nats.get_or_insert_with(Default::default).url = url;
    }
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let data = match &cfg.store {
            Some(url) => {
                format!("store {}", edgeplan::service::store::postgres::redact(url))
            }
            None => format!("data in {}", cfg.data_dir.display()),
        };
        let http = match &cfg.http {
            Some(h) => {
                let l = tokio::net::TcpListener::bind(h.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (http)", h.listen))?;
                let scheme = if cfg.tls.is_some() { "https" } else { "http" };
                // Before the gRPC line: whoever waits for that has both.
                eprintln!(
                    "edgeplan HTTP on {scheme}://{}/ (live report; /metrics, /status)",
                    l.local_addr()?
                );
                Some(l)
            }
            None => None,
        };
        eprintln!("edgeplan listening on {} ({data})", listener.local_addr()?);
        edgeplan::service::serve_listeners(cfg, listener, http, shutdown_signal()).await
    })?;
    Ok(())
}
