//! Who may call what, and over which channel: bearer tokens mapped to roles
//! and checked per gRPC method before any handler runs (a tower layer in
//! front of every service), and the TLS settings of the server and of its
//! connections to provisioners.
//!
//! The configuration holds each token's SHA-256, never the token itself, so
//! neither the config file nor a log line can leak a credential; denials are
//! logged by the token's name.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::Status;

use crate::errors::{self, Reason};

/// What a token lets its holder do. Read-only ⊂ planner ⊂ admin; the
/// telemetry writer may only ingest (a site gateway needs nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Inventory, plans and site states: read and watch.
    ReadOnly,
    /// `Telemetry.Ingest` only.
    TelemetryWriter,
    /// Read, plus solve, what-if, approve, skip and cancel.
    Planner,
    /// Everything, including inventory changes.
    Admin,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health checks: load balancers probe without credentials.
    Open,
    Read,
    Telemetry,
    Plan,
    Admin,
}

impl Role {
    pub fn allows(self, need: Need) -> bool {
        match (self, need) {
            (_, Need::Open) | (Role::Admin, _) => true,
            (Role::TelemetryWriter, need) => need == Need::Telemetry,
            (Role::Planner, need) => matches!(need, Need::Read | Need::Plan),
            (Role::ReadOnly, need) => need == Need::Read,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::TelemetryWriter => "telemetry-writer",
            Role::Planner => "planner",
            Role::Admin => "admin",
        }
    }
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::Open => "no credentials",
            Need::Read => "read-only, planner or admin",
            Need::Telemetry => "telemetry-writer or admin",
            Need::Plan => "planner or admin",
            Need::Admin => "admin",
        }
    }
}

/// The role a gRPC method (`/package.Service/Method`) needs. Unknown
/// methods need admin: a new RPC is closed until it is classified here.
pub fn need_for(path: &str) -> Need {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Need::Open,
        (s, _) if s.starts_with("grpc.reflection.") => Need::Read,
        ("edgeplan.v1.Inventory", "GetInventory") => Need::Read,
        ("edgeplan.v1.Telemetry", "Ingest" | "IngestAcked") => Need::Telemetry,
        ("edgeplan.v1.Telemetry", "WatchSites" | "Stats") => Need::Read,
        (
            "edgeplan.v1.Placement",
            "GetPlan" | "ListPlans" | "WatchPlan" | "Replica" | "GetSpotPrices" | "WatchSpotPrices",
        ) => Need::Read,
        (
            "edgeplan.v1.Placement",
            "Solve" | "WhatIf" | "ApprovePlan" | "SkipStep" | "CancelPlan",
        ) => Need::Plan,
        _ => Need::Admin,
    }
}

/// Tokens and what they may do. No tokens: authentication is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// More tokens, in a YAML file of their own (`tokens: [...]`, entries as
    /// above), re-read when it changes: rotate a token without a restart.
    /// A file that does not check is refused by name and the tokens in
    /// force are kept.
    pub tokens_file: Option<PathBuf>,
}

/// The contents of `auth.tokens_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenConfig>,
}

/// One credential: `edgeplan token --name N --role R` makes one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (logged on denial instead of the token).
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The sites whose readings it may write (a site gateway's token);
    /// empty: every site. A reading for another site is rejected
    /// (`site_not_allowed`) and counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

/// The sites a caller's token may write readings for; put in a request's
/// extensions by the auth layer when the token is scoped.
#[derive(Debug, Clone)]
pub struct SiteScope {
    pub token: String,
    pub sites: Arc<std::collections::BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.tokens[{index}] ({name}): sha256 must be 64 hex digits")]
    BadHash { index: usize, name: String },
    #[error("auth.tokens[{index}]: the name {name:?} is used twice")]
    DuplicateName { index: usize, name: String },
    #[error("auth.tokens[{index}] ({name}): the same token as {other}")]
    DuplicateToken {
        index: usize,
        name: String,
        other: String,
    },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("auth.tokens_file {path}: {why}")]
    TokensFile { path: PathBuf, why: String },
}

/// A host name or address on this machine's loopback: the one place a
/// plaintext link (store, NATS) is allowed.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Hex SHA-256, the form tokens are configured in.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random token (256 bits from the OS, hex).
pub fn new_token() -> String {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checked token table.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Holder>,
}

#[derive(Debug)]
struct Holder {
    name: String,
    role: Role,
    scope: Option<SiteScope>,
}

impl Tokens {
    /// The inline tokens and those of `tokens_file`, checked together.
    pub fn new(config: &AuthConfig) -> Result<Tokens, AuthError> {
        let mut all = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            let text = read("auth.tokens_file", path)?;
            let file: TokensFile =
                serde_yaml::from_slice(&text).map_err(|e| AuthError::TokensFile {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            all.extend(file.tokens);
        }
        Tokens::of(&all)
    }

    fn of(tokens: &[TokenConfig]) -> Result<Tokens, AuthError> {
        let mut by_hash: HashMap<String, Holder> = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (index, t) in tokens.iter().enumerate() {
            let hash = t.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AuthError::BadHash {
                    index,
                    name: t.name.clone(),
                });
            }
            if !names.insert(t.name.clone()) {
                return Err(AuthError::DuplicateName {
                    index,
                    name: t.name.clone(),
                });
            }
            if let Some(other) = by_hash.get(&hash) {
                return Err(AuthError::DuplicateToken {
                    index,
                    name: t.name.clone(),
                    other: other.name.clone(),
                });
            }
            let scope = (!t.sites.is_empty()).then(|| SiteScope {
                token: t.name.clone(),
                sites: Arc::new(t.sites.iter().cloned().collect()),
            });
            by_hash.insert(
                hash,
                Holder {
                    name: t.name.clone(),
                    role: t.role,
                    scope,
                },
            );
        }
        Ok(Tokens { by_hash })
    }

    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// May a request with these headers call this method? The token's
    /// site scope, if it has one.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<SiteScope>, Status> {
        self.check_need(path, need_for(path), headers)
    }

    /// May a request with these headers do `path`, which needs `need`?
    /// (The HTTP port's pages need [`Need::Read`].)
    pub fn check_need(
        &self,
        path: &str,
        need: Need,
        headers: &http::HeaderMap,
    ) -> Result<Option<SiteScope>, Status> {
        if !self.enabled() || need == Need::Open {
            return Ok(None);
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(errors::error(
                Reason::Unauthenticated,
                format!("{path} needs a bearer token ({})", need.name()),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                errors::error(
                    Reason::Unauthenticated,
                    "authorization must be `Bearer <token>`",
                )
            })?;
        let Some(Holder { name, role, scope }) = self.by_hash.get(&token_sha256(token)) else {
            tracing::warn!(%path, "call with an unknown token refused");
            return Err(errors::error(Reason::Unauthenticated, "unknown token"));
        };
        if role.allows(need) {
            Ok(scope.clone())
        } else {
            tracing::warn!(%path, token = %name, role = role.name(), "call refused: role");
            Err(errors::error(
                Reason::PermissionDenied,
                format!(
                    "token {name} (role {}) may not call {path}: it needs {}",
                    role.name(),
                    need.name()
                ),
            ))
        }
    }
}

/// The token table in force: replaced whole when `auth.tokens_file`
/// changes, read by every call.
#[derive(Debug, Default)]
pub struct TokenTable(std::sync::RwLock<Arc<Tokens>>);

impl TokenTable {
    pub fn new(tokens: Tokens) -> TokenTable {
        TokenTable(std::sync::RwLock::new(Arc::new(tokens)))
    }

    pub fn get(&self) -> Arc<Tokens> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, tokens: Tokens) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }
}

/// Re-read `auth.tokens_file` when it changes (checked every
/// `every`): a table that checks replaces the one in force; one that does
/// not is refused, logged by name, and the one in force kept.
pub async fn reload_tokens(config: AuthConfig, table: Arc<TokenTable>, every: std::time::Duration) {
    let Some(path) = config.tokens_file.clone() else {
        return;
    };
    let stamp = |p: &Path| std::fs::read(p).ok().map(|b| Sha256::digest(&b));
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Tokens::new(&config) {
            Ok(tokens) => {
                tracing::info!(path = %path.display(), tokens = tokens.by_hash.len(), "auth: tokens reloaded");
                table.replace(tokens);
            }
            Err(e) => tracing::error!("auth: the new tokens are refused, the old ones stay: {e}"),
        }
    }
}

/// The tower layer that runs [`Tokens::check`] before every call.
#[derive(Clone)]
pub struct AuthLayer(pub Arc<TokenTable>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            tokens: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    tokens: Arc<TokenTable>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.tokens.get().check(req.uri().path(), req.headers()) {
            Ok(scope) => {
                if let Some(scope) = scope {
                    req.extensions_mut().insert(scope);
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The server's certificate and, for mutual TLS, the CA its clients'
/// certificates must chain to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA: set, and every client must present a certificate it signed.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// How to reach a TLS server (the service for the CLI, provisioners for
/// the dispatcher): the CA to trust and, for mutual TLS, our certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA the server's certificate must chain to (else the system's
    /// roots are not consulted: an edge fleet runs its own CA).
    pub ca: Option<PathBuf>,
    /// PEM certificate and key to present (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to check the server's certificate against, if not the URL's host.
    pub domain: Option<String>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl ServerTls {
    /// The same certificate, key and client CA for the HTTP port (rustls).
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &'static str, path: &Path, e: String| AuthError::File {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read("tls.cert", &self.cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| bad("tls.cert", &self.cert, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&read("tls.key", &self.key)?)
            .map_err(|e| bad("tls.key", &self.key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls.cert", &self.cert, e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read("tls.client_ca", ca)?) {
                    let c = c.map_err(|e| bad("tls.client_ca", ca, e.to_string()))?;
                    roots
                        .add(c)
                        .map_err(|e| bad("tls.client_ca", ca, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad("tls.client_ca", ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("tls.key", &self.key, e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    pub fn load(&self) -> Result<ServerTlsConfig, AuthError> {
        let identity =
            Identity::from_pem(read("tls.cert", &self.cert)?, read("tls.key", &self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("tls.client_ca", ca)?));
        }
        Ok(config)
    }
}

impl ClientTls {
    /// A rustls client configuration (the PostgreSQL store, NATS): the
    /// server's certificate must chain to `ca`, which is required; with
    /// `cert` and `key`, ours is presented. `what` names the setting in errors.
    pub fn rustls_client(&self, what: &'static str) -> Result<rustls::ClientConfig, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &Path, e: String| AuthError::File {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let Some(ca) = &self.ca else {
            return Err(AuthError::Tls(format!(
                "{what}.ca: required (the CA the server's certificate must chain to)"
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(what, ca)?) {
            let c = c.map_err(|e| bad(ca, e.to_string()))?;
            roots.add(c).map_err(|e| bad(ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad(ca, "no certificate in the file".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::Tls(format!("{what}: {e}")))?
            .with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&read(what, cert)?)
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(cert, e.to_string()))?;
                let key_der = PrivateKeyDer::from_pem_slice(&read(what, key)?)
                    .map_err(|e| bad(key, e.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| bad(key, e.to_string()))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(AuthError::Tls(format!("{what}: cert and key go together"))),
        }
    }
}

impl ClientTls {
    pub fn load(&self) -> Result<ClientTlsConfig, AuthError> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read("ca", ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read("client cert", cert)?,
                    read("client key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(AuthError::Tls(
                    "a client certificate needs both cert and key".into(),
                ))
            }
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_the_writer_only_ingests() {
        let all = [Need::Read, Need::Telemetry, Need::Plan, Need::Admin];
        let allowed = |r: Role| all.iter().filter(|n| r.allows(**n)).count();
        assert_eq!(allowed(Role::Admin), 4);
        assert_eq!(allowed(Role::Planner), 2);
        assert_eq!(allowed(Role::ReadOnly), 1);
        assert!(Role::TelemetryWriter.allows(Need::Telemetry));
        assert!(!Role::TelemetryWriter.allows(Need::Read));
        assert!(!Role::Planner.allows(Need::Admin));
        assert_eq!(need_for("/edgeplan.v1.Inventory/UpsertSites"), Need::Admin);
        assert_eq!(need_for("/edgeplan.v1.Placement/Solve"), Need::Plan);
        assert_eq!(need_for("/edgeplan.v1.Placement/NewThing"), Need::Admin);
        assert_eq!(need_for("/grpc.health.v1.Health/Check"), Need::Open);
    }

    #[test]
    fn tokens_are_checked_by_hash_and_bad_tables_refused() {
        let cfg = |hash: &str| AuthConfig {
            tokens: vec![TokenConfig {
                name: "gw".into(),
                role: Role::TelemetryWriter,
                sha256: hash.into(),
                sites: Vec::new(),
            }],
            tokens_file: None,
        };
        let tokens = Tokens::new(&cfg(&token_sha256("s3cret"))).unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(tokens.check("/edgeplan.v1.Telemetry/Ingest", &h).is_ok());
        let denied = tokens
            .check("/edgeplan.v1.Placement/Solve", &h)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(!denied.message().contains("s3cret"));
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        let unknown = tokens
            .check("/edgeplan.v1.Telemetry/Ingest", &h)
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let err = Tokens::new(&cfg("abc")).unwrap_err().to_string();
        assert!(err.contains("auth.tokens[0] (gw)"), "{err}");
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
    }
}
