//! The flags every client subcommand shares to reach a running service.

use std::path::PathBuf;

/// How the CLI reaches a running service: token and TLS.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Bearer token for a service with `auth.tokens` (`edgeplan token` makes one).
    #[arg(long, env = "EDGEPLAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA to trust for an https:// service.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a service that requires mutual TLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name to check the service's certificate against, if not the URL's host.
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ServerArgs {
    pub fn connect(&self, url: &str) -> edgeplan::service::client::Connect {
        let tls = url.starts_with("https://") || self.ca_cert.is_some();
        edgeplan::service::client::Connect {
            url: url.to_string(),
            token: self.token.clone(),
            tls: tls.then(|| edgeplan::service::auth::ClientTls {
                ca: self.ca_cert.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
                domain: self.tls_domain.clone(),
            }),
        }
    }
}
