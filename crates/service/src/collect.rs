//! `edgeplan collect`: telemetry straight from the servers' BMCs over
//! Redfish. Polls each configured BMC (tied to a site and a rack) every
//! interval, at most `concurrency` at a time, with a timeout and bounded
//! retries per request; reads each chassis' inlet, power and fans and each
//! GPU's power with [`edgeplan_telemetry::redfish`]; and sends the round's
//! readings to the service (`Ingest`) or to NATS JetStream.
//!
//! A rack's power is the sum of its servers' and a site's GPU power the sum
//! of its GPU servers': sent only when every BMC that adds to it answered
//! this round — a BMC that stops answering leaves its sums unsent, so its
//! sensors go stale in the service (never a silent last value), and the
//! round's summary names it. Sessions (`X-Auth-Token`, from the service
//! root's `Links.Sessions`) or basic auth; TLS to a BMC with a CA file or a
//! pinned certificate (SHA-256 of its DER).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

use edgeplan_api::pb;
use edgeplan_api::pb::telemetry_client::TelemetryClient;
use edgeplan_telemetry::redfish::{self, ChassisDocs};

use super::client::Connect;

/// `collect.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Seconds between rounds.
    #[serde(default = "default_interval_s")]
    pub interval_s: f64,
    /// BMCs polled at once, at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// One request's time limit, s.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Retries of a request that timed out, could not connect or got a 5xx.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Sensors of one chassis read, at most (a BMC may list hundreds).
    #[serde(default = "default_max_sensors")]
    pub max_sensors: usize,
    /// Also send each site's IT power as the sum of its BMCs' (when every
    /// BMC of the site answered): for sites without a meter of their own.
    #[serde(default)]
    pub site_power_from_bmcs: bool,
    pub endpoints: Vec<Endpoint>,
}

fn default_interval_s() -> f64 {
    30.0
}
fn default_concurrency() -> usize {
    64
}
fn default_timeout_s() -> f64 {
    5.0
}
fn default_retries() -> u32 {
    1
}
fn default_max_sensors() -> usize {
    256
}

/// One BMC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Unique; prefixes its sensors' ids (`<name>/<chassis>/inlet`).
    pub name: String,
    /// `https://bmc.example` (the service root is `<url>/redfish/v1`).
    pub url: String,
    pub site: String,
    pub rack: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, or the name of an environment variable holding it
    /// (`password_env`): a config file need not hold secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Log in for an `X-Auth-Token` session (the default with a username);
    /// false: basic auth on every request.
    #[serde(default = "yes")]
    pub session: bool,
    /// PEM file of the CA that signed the BMC's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Hex SHA-256 of the BMC's certificate (DER): trusted whoever signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_sha256: Option<String>,
}

fn yes() -> bool {
    true
}

impl CollectConfig {
    pub fn load(path: &Path) -> anyhow::Result<CollectConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: CollectConfig =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        c.check()?;
        Ok(c)
    }

    /// Every problem at once, each with the endpoint it is in.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut bad = Vec::new();
        if !(self.interval_s > 0.0 && self.interval_s.is_finite()) {
            bad.push(format!("interval_s: must be > 0, got {}", self.interval_s));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            bad.push(format!("timeout_s: must be > 0, got {}", self.timeout_s));
        }
        if self.concurrency == 0 {
            bad.push("concurrency: must be > 0".into());
        }
        if self.endpoints.is_empty() {
            bad.push("endpoints: none listed".into());
        }
        let mut names = BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let p = format!("endpoints[{i}] ({})", e.name);
            if !names.insert(e.name.as_str()) {
                bad.push(format!("{p}.name: used twice"));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                bad.push(format!(
                    "{p}.url: must start with http:// or https://, got {:?}",
                    e.url
                ));
            }
            if e.site.is_empty() || e.rack.is_empty() {
                bad.push(format!("{p}: site and rack are required"));
            }
            if let Some(pin) = &e.pinned_sha256 {
                if hex(pin).is_none() {
                    bad.push(format!("{p}.pinned_sha256: 64 hex digits, got {pin:?}"));
                }
            }
            if e.password.is_some() && e.password_env.is_some() {
                bad.push(format!("{p}: password or password_env, not both"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "collect config has {} problem(s):\n{}",
                bad.len(),
                bad.join("\n")
            ))
        }
    }
}

fn hex(s: &str) -> Option<[u8; 32]> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Trusts exactly one certificate, by the SHA-256 of its DER.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pinned SHA-256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn http_client(e: &Endpoint, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(1);
    let b = match (&e.pinned_sha256, &e.ca_cert) {
        (Some(pin), _) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let sha256 = hex(pin).ok_or_else(|| anyhow!("{}: bad pinned_sha256", e.name))?;
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
                .with_no_client_auth();
            b.use_preconfigured_tls(tls)
        }
        (None, Some(ca)) => {
            let pem = std::fs::read(ca)
                .with_context(|| format!("{}: reading ca_cert {}", e.name, ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: ca_cert {}", e.name, ca.display()))?;
            certs
                .into_iter()
                .fold(b.tls_built_in_root_certs(false), |b, c| {
                    b.add_root_certificate(c)
                })
        }
        (None, None) => b,
    };
    Ok(b.build()?)
}

/// A BMC's connection: its client, and its session token once logged in.
struct Bmc {
    endpoint: Endpoint,
    client: reqwest::Client,
    password: Option<String>,
    token: Mutex<Option<String>>,
    /// Where it logs in (the service root's `Links.Sessions`), once known.
    sessions: Mutex<Option<String>>,
    /// Whether this BMC reported GPU power in any round (its site's GPU
    /// sum then waits for it).
    had_gpus: std::sync::atomic::AtomicBool,
}

/// Why one GET failed.
#[derive(Debug)]
enum Fetch {
    /// The session ended (401 with a token in use): log in again.
    Expired(String),
    /// Not worth a retry (4xx, bad JSON).
    Final(String),
    /// Timeout, connection, 5xx.
    Transient(String),
}

impl Bmc {
    fn base(&self) -> &str {
        self.endpoint.url.trim_end_matches('/')
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base(), path)
        }
    }

    async fn login(&self, sessions: &str) -> Result<Option<String>, String> {
        let (Some(user), Some(pass)) = (&self.endpoint.username, &self.password) else {
            return Ok(None);
        };
        let r = self
            .client
            .post(self.url(sessions))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({"UserName": user, "Password": pass}).to_string())
            .send()
            .await
            .map_err(|e| format!("session login: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("session login: HTTP {}", r.status().as_u16()));
        }
        // A BMC that answers without a token has no sessions: basic auth.
        Ok(r.headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Log in (again) at the sessions URL the service root gave.
    async fn relogin(&self) -> Result<(), String> {
        let sessions = self
            .sessions
            .lock()
            .await
            .clone()
            .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions".to_string());
        let token = self.login(&sessions).await?;
        *self.token.lock().await = token;
        Ok(())
    }

    async fn get_once(&self, path: &str) -> Result<Value, Fetch> {
        let mut req = self.client.get(self.url(path));
        let token = self.token.lock().await.clone();
        match (&token, &self.endpoint.username) {
            (Some(t), _) => req = req.header("X-Auth-Token", t),
            (None, Some(user)) => req = req.basic_auth(user, self.password.as_ref()),
            (None, None) => {}
        }
        let r = req.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            Fetch::Transient(format!("{path}: {kind} ({e})"))
        })?;
        let status = r.status();
        if status.is_server_error() {
            return Err(Fetch::Transient(format!(
                "{path}: HTTP {}",
                status.as_u16()
            )));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED && token.is_some() {
            return Err(Fetch::Expired(format!("{path}: HTTP 401")));
        }
        if !status.is_success() {
            return Err(Fetch::Final(format!("{path}: HTTP {}", status.as_u16())));
        }
        // Some BMCs end a body by closing TLS without notice (and no
        // Content-Length): a read error after the last byte. JSON ends
        // itself, so what parses whole is whole; what was cut does not parse.
        let mut r = r;
        let mut body = Vec::new();
        let mut cut = None;
        loop {
            match r.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            }
        }
        serde_json::from_slice(&body).map_err(|e| match cut {
            Some(cut) => Fetch::Transient(format!("{path}: body cut short ({cut})")),
            None => Fetch::Final(format!("{path}: malformed JSON ({e})")),
        })
    }

    async fn get(&self, path: &str, retries: u32) -> Result<Value, String> {
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            match self.get_once(path).await {
                Ok(v) => return Ok(v),
                Err(Fetch::Expired(e)) if relogged => return Err(e),
                Err(Fetch::Expired(_)) => {
                    // Once per request: a BMC that refuses a fresh token
                    // is refusing, not expiring.
                    relogged = true;
                    self.relogin().await?;
                }
                Err(Fetch::Final(e)) => return Err(e),
                Err(Fetch::Transient(e)) if attempt >= retries => return Err(e),
                Err(Fetch::Transient(_)) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
    }
}

/// What one BMC said in a round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BmcRound {
    pub endpoint: String,
    pub site: String,
    pub rack: String,
    /// Set when the BMC could not be read at all (its sensors go stale).
    pub error: Option<String>,
    /// Per chassis: inlet (sensor, °C), power W, fans.
    pub chassis: BTreeMap<String, ChassisSummary>,
    /// The GPUs' power, W (None: no GPU reported power).
    pub gpu_power_w: Option<f64>,
    /// Sensors and resources skipped, with why.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChassisSummary {
    pub inlet_c: Option<f64>,
    pub inlet_sensor: Option<String>,
    pub power_w: Option<f64>,
    /// Fans in rpm, by name.
    pub fans_rpm: BTreeMap<String, f64>,
}

/// Strip what does not name a resource (`#/…`, a trailing slash).
fn clean(link: &str) -> String {
    let l = link.split('#').next().unwrap_or(link);
    l.trim_end_matches('/').to_string()
}

async fn poll(bmc: &Bmc, cfg: &CollectConfig) -> BmcRound {
    let e = &bmc.endpoint;
    let mut round = BmcRound {
        endpoint: e.name.clone(),
        site: e.site.clone(),
        rack: e.rack.clone(),
        ..BmcRound::default()
    };
    if let Err(err) = read_bmc(bmc, cfg, &mut round).await {
        round.error = Some(err);
        round.chassis.clear();
        round.gpu_power_w = None;
    }
    round
}

async fn read_bmc(bmc: &Bmc, cfg: &CollectConfig, round: &mut BmcRound) -> Result<(), String> {
    let r = cfg.retries;
    let root = bmc.get("/redfish/v1", r).await?;
    if bmc.endpoint.session && bmc.endpoint.username.is_some() && bmc.token.lock().await.is_none() {
        let sessions = root
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .unwrap_or("/redfish/v1/SessionService/Sessions")
            .to_string();
        *bmc.sessions.lock().await = Some(sessions);
        bmc.relogin().await?;
    }
    // A sub-resource that fails is skipped and said; the BMC still counts.
    let mut skipped = Vec::new();
    macro_rules! fetch {
        ($path:expr) => {
            match bmc.get(&clean(&$path), r).await {
                Ok(v) => Some(v),
                Err(err) => {
                    skipped.push(err);
                    None
                }
            }
        };
    }
    if let Some(chassis_link) = redfish::link(&root, "Chassis") {
        let collection = bmc.get(&clean(&chassis_link), r).await?;
        for member in redfish::members(&collection) {
            let Some(ch) = fetch!(member) else { continue };
            let id = ch
                .get("Id")
                .and_then(Value::as_str)
                .map_or_else(|| clean(&member), str::to_string);
            let thermal = match redfish::link(&ch, "Thermal") {
                Some(l) => fetch!(l),
                None => None,
            };
            let power = match redfish::link(&ch, "Power") {
                Some(l) => fetch!(l),
                None => None,
            };
            let environment = match redfish::link(&ch, "EnvironmentMetrics") {
                Some(l) => fetch!(l),
                None => None,
            };
            let thermal_metrics = match redfish::link(&ch, "ThermalSubsystem") {
                Some(l) => match fetch!(l) {
                    Some(sub) => match redfish::link(&sub, "ThermalMetrics") {
                        Some(m) => fetch!(m),
                        None => None,
                    },
                    None => None,
                },
                None => None,
            };
            let mut sensors = Vec::new();
            if let Some(l) = redfish::link(&ch, "Sensors") {
                if let Some(col) = fetch!(l) {
                    for s in redfish::members(&col).into_iter().take(cfg.max_sensors) {
                        if let Some(v) = fetch!(s) {
                            sensors.push(v);
                        }
                    }
                }
            }
            // The supplies only where nothing else gives the power.
            let mut supply_metrics = Vec::new();
            let without_supplies = redfish::chassis(&ChassisDocs {
                power: power.as_ref(),
                environment: environment.as_ref(),
                ..ChassisDocs::default()
            });
            if without_supplies.power_w.is_none() {
                if let Some(l) = redfish::link(&ch, "PowerSubsystem") {
                    if let Some(sub) = fetch!(l) {
                        if let Some(col) = redfish::link(&sub, "PowerSupplies") {
                            if let Some(col) = fetch!(col) {
                                for m in redfish::members(&col).into_iter().take(cfg.max_sensors) {
                                    let Some(psu) = fetch!(m) else { continue };
                                    if let Some(state) = redfish::unusable(&psu) {
                                        skipped.push(format!("{}: {state}", clean(&m)));
                                        continue;
                                    }
                                    if let Some(ml) = redfish::link(&psu, "Metrics") {
                                        if let Some(v) = fetch!(ml) {
                                            supply_metrics.push(v);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let docs = ChassisDocs {
                thermal: thermal.as_ref(),
                thermal_metrics: thermal_metrics.as_ref(),
                power: power.as_ref(),
                environment: environment.as_ref(),
                sensors: sensors.iter().collect(),
                supply_metrics: supply_metrics.iter().collect(),
            };
            let read = redfish::chassis(&docs);
            skipped.extend(read.skipped.iter().map(|s| format!("{id}: {s}")));
            if read.inlet.is_some() || read.power_w.is_some() || !read.fans_rpm.is_empty() {
                round.chassis.insert(
                    id,
                    ChassisSummary {
                        inlet_c: read.inlet.as_ref().map(|i| i.1),
                        inlet_sensor: read.inlet.map(|i| i.0),
                        power_w: read.power_w,
                        fans_rpm: read.fans_rpm.into_iter().collect(),
                    },
                );
            }
        }
    }
    if let Some(systems_link) = redfish::link(&root, "Systems") {
        if let Some(systems) = fetch!(systems_link) {
            for sys in redfish::members(&systems) {
                let Some(system) = fetch!(sys) else { continue };
                let Some(procs_link) = redfish::link(&system, "Processors") else {
                    continue;
                };
                let Some(procs) = fetch!(procs_link) else {
                    continue;
                };
                for p in redfish::members(&procs) {
                    let Some(processor) = fetch!(p) else { continue };
                    if processor.get("ProcessorType").and_then(Value::as_str) != Some("GPU") {
                        continue;
                    }
                    let env = match redfish::link(&processor, "EnvironmentMetrics") {
                        Some(l) => fetch!(l),
                        None => None,
                    };
                    let metrics = match redfish::link(&processor, "Metrics") {
                        Some(l) if env.is_none() => fetch!(l),
                        _ => None,
                    };
                    match redfish::gpu_power_w(&processor, env.as_ref(), metrics.as_ref()) {
                        Ok(Some(w)) => *round.gpu_power_w.get_or_insert(0.0) += w,
                        Ok(None) => {}
                        Err(why) => skipped.push(why),
                    }
                }
            }
        }
    }
    round.skipped = skipped;
    Ok(())
}

/// One round's readings for the service, with what was held back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    pub timestamp_s: f64,
    pub bmcs: Vec<BmcRound>,
    pub readings: usize,
    /// Sums not sent because a BMC that adds to them did not answer.
    pub held_back: Vec<String>,
    pub seconds: f64,
}

fn reading(
    device_id: String,
    e: &BmcRound,
    device: pb::DeviceType,
    placement: pb::DevicePlacement,
    unit: &str,
    value: f64,
    ts: f64,
) -> pb::Reading {
    pb::Reading {
        device_id,
        site: e.site.clone(),
        rack: if placement == pb::DevicePlacement::Rack {
            e.rack.clone()
        } else {
            String::new()
        },
        device_type: device as i32,
        placement: placement as i32,
        unit: unit.into(),
        value,
        timestamp_s: ts,
    }
}

/// The round's readings: each chassis' inlet and fans; each rack's power
/// and each site's GPU power as sums, only when complete. Pure.
pub fn readings_of(
    bmcs: &[BmcRound],
    gpu_bmcs: &BTreeSet<String>,
    site_power: bool,
    ts: f64,
) -> (Vec<pb::Reading>, Vec<String>) {
    let mut out = Vec::new();
    let mut held = Vec::new();
    let mut racks: BTreeMap<(&str, &str), (f64, Vec<&str>)> = BTreeMap::new();
    let mut sites_gpu: BTreeMap<&str, (f64, Vec<&str>)> = BTreeMap::new();
    for b in bmcs {
        let rack = racks.entry((&b.site, &b.rack)).or_default();
        let gpu = gpu_bmcs
            .contains(&b.endpoint)
            .then(|| sites_gpu.entry(&b.site).or_default());
        if b.error.is_some() {
            rack.1.push(&b.endpoint);
            if let Some(g) = gpu {
                g.1.push(&b.endpoint);
            }
            continue;
        }
        let mut power = None;
        for (id, c) in &b.chassis {
            if let Some(t) = c.inlet_c {
                out.push(reading(
                    format!("{}/{id}/inlet", b.endpoint),
                    b,
                    pb::DeviceType::Temperature,
                    pb::DevicePlacement::Rack,
                    "C",
                    t,
                    ts,
                ));
            }
            if let Some(w) = c.power_w {
                *power.get_or_insert(0.0) += w;
            }
            for (fan, rpm) in &c.fans_rpm {
                out.push(reading(
                    format!("{}/{id}/fan/{fan}", b.endpoint),
                    b,
                    pb::DeviceType::Fan,
                    pb::DevicePlacement::Rack,
                    "rpm",
                    *rpm,
                    ts,
                ));
            }
        }
        match power {
            Some(w) => rack.0 += w,
            None => rack.1.push(&b.endpoint),
        }
        if let Some(g) = gpu {
            match b.gpu_power_w {
                Some(w) => g.0 += w,
                None => g.1.push(&b.endpoint),
            }
        }
    }
    // Sites whose every rack is complete, and their sum.
    let mut sites: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for ((site, _), (watts, missing)) in &racks {
        let s = sites.entry(site).or_insert(Some(0.0));
        *s = match (*s, missing.is_empty()) {
            (Some(sum), true) => Some(sum + watts),
            _ => None,
        };
    }
    if site_power {
        for (site, sum) in sites {
            match sum {
                Some(watts) => out.push(pb::Reading {
                    device_id: format!("{site}/bmc-site-power"),
                    site: site.to_string(),
                    rack: String::new(),
                    device_type: pb::DeviceType::Power as i32,
                    placement: pb::DevicePlacement::Site as i32,
                    unit: "W".into(),
                    value: watts,
                    timestamp_s: ts,
                }),
                None => held.push(format!("{site} site power: a rack is incomplete")),
            }
        }
    }
    for ((site, rack), (watts, missing)) in racks {
        if missing.is_empty() {
            out.push(pb::Reading {
                device_id: format!("{site}/{rack}/bmc-power"),
                site: site.to_string(),
                rack: rack.to_string(),
                device_type: pb::DeviceType::Power as i32,
                placement: pb::DevicePlacement::Rack as i32,
                unit: "W".into(),
                value: watts,
                timestamp_s: ts,
            });
        } else {
            held.push(format!(
                "{site}/{rack} power: no reading from {}",
                missing.join(", ")
            ));
        }
    }
    for (site, (watts, missing)) in sites_gpu {
        if missing.is_empty() {
            out.push(pb::Reading {
                device_id: format!("{site}/bmc-gpu-power"),
                site: site.to_string(),
                rack: String::new(),
                device_type: pb::DeviceType::Power as i32,
                placement: pb::DevicePlacement::Accelerators as i32,
                unit: "W".into(),
                value: watts,
                timestamp_s: ts,
            });
        } else {
            held.push(format!(
                "{site} GPU power: no reading from {}",
                missing.join(", ")
            ));
        }
    }
    (out, held)
}

/// Where a round's readings go.
pub enum Sink {
    /// Print them (`--dry-run`).
    None,
    Server(Connect),
    Nats {
        url: String,
        subject_prefix: String,
    },
}

pub struct Collector {
    cfg: CollectConfig,
    bmcs: Vec<Arc<Bmc>>,
}

impl Collector {
    pub fn new(cfg: CollectConfig) -> anyhow::Result<Collector> {
        cfg.check()?;
        let timeout = Duration::from_secs_f64(cfg.timeout_s);
        let mut bmcs = Vec::new();
        for e in &cfg.endpoints {
            let password = match (&e.password, &e.password_env) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(var)) => Some(std::env::var(var).with_context(|| {
                    format!(
                        "{}: environment variable {var} (password_env) is not set",
                        e.name
                    )
                })?),
                (None, None) => None,
            };
            bmcs.push(Arc::new(Bmc {
                client: http_client(e, timeout)?,
                endpoint: e.clone(),
                password,
                token: Mutex::new(None),
                sessions: Mutex::new(None),
                had_gpus: std::sync::atomic::AtomicBool::new(false),
            }));
        }
        Ok(Collector { cfg, bmcs })
    }

    /// Poll every BMC once, at most `concurrency` at a time.
    pub async fn round(&self, ts: f64) -> (RoundReport, Vec<pb::Reading>) {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(self.cfg.concurrency));
        let cfg = Arc::new(self.cfg.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for (i, bmc) in self.bmcs.iter().enumerate() {
            let (gate, bmc, cfg) = (gate.clone(), bmc.clone(), cfg.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await;
                (i, poll(&bmc, &cfg).await)
            });
        }
        let mut bmcs: Vec<(usize, BmcRound)> = Vec::with_capacity(self.bmcs.len());
        while let Some(done) = tasks.join_next().await {
            if let Ok(r) = done {
                bmcs.push(r);
            }
        }
        bmcs.sort_by_key(|(i, _)| *i);
        let bmcs: Vec<BmcRound> = bmcs.into_iter().map(|(_, b)| b).collect();
        for (b, r) in self.bmcs.iter().zip(&bmcs) {
            if r.gpu_power_w.is_some() {
                b.had_gpus.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let gpu_bmcs: BTreeSet<String> = self
            .bmcs
            .iter()
            .filter(|b| b.had_gpus.load(std::sync::atomic::Ordering::Relaxed))
            .map(|b| b.endpoint.name.clone())
            .collect();
        let (readings, held_back) =
            readings_of(&bmcs, &gpu_bmcs, self.cfg.site_power_from_bmcs, ts);
        let report = RoundReport {
            timestamp_s: ts,
            readings: readings.len(),
            bmcs,
            held_back,
            seconds: started.elapsed().as_secs_f64(),
        };
        (report, readings)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.interval_s)
    }
}

/// What the service said of a round's readings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivered {
    pub accepted: u64,
    pub rejected: u64,
}

/// Send a round's readings: one batch per site. The service's count of
/// accepted and rejected readings (NATS: all counted as accepted once
/// JetStream confirms them; the service judges them later).
pub async fn send(sink: &Sink, readings: Vec<pb::Reading>) -> anyhow::Result<Delivered> {
    let total = readings.len() as u64;
    let mut by_site: BTreeMap<String, Vec<pb::Reading>> = BTreeMap::new();
    for r in readings {
        by_site.entry(r.site.clone()).or_default().push(r);
    }
    match sink {
        Sink::None => Ok(Delivered::default()),
        Sink::Server(connect) => {
            let mut client = TelemetryClient::new(connect.channel().await?);
            let batches: Vec<pb::ReadingBatch> = by_site
                .into_values()
                .map(|readings| pb::ReadingBatch {
                    readings,
                    ..Default::default()
                })
                .collect();
            let summary = client
                .ingest(tokio_stream::iter(batches))
                .await?
                .into_inner();
            if summary.rejected > 0 {
                tracing::warn!(
                    rejected = summary.rejected,
                    reasons = ?summary.rejected_by_reason,
                    "the service rejected readings"
                );
            }
            Ok(Delivered {
                accepted: summary.accepted,
                rejected: summary.rejected,
            })
        }
        Sink::Nats {
            url,
            subject_prefix,
        } => {
            let client = async_nats::connect(url)
                .await
                .map_err(|e| anyhow!("NATS {url}: {e}"))?;
            let js = async_nats::jetstream::new(client);
            for (site, readings) in by_site {
                let batch = pb::ReadingBatch {
                    readings,
                    site: site.clone(),
                    ..Default::default()
                };
                js.publish(
                    format!("{subject_prefix}.{site}"),
                    batch.encode_to_vec().into(),
                )
                .await
                .map_err(|e| anyhow!("NATS publish: {e}"))?
                .await
                .map_err(|e| anyhow!("NATS publish not confirmed: {e}"))?;
            }
            Ok(Delivered {
                accepted: total,
                rejected: 0,
            })
        }
    }
}
