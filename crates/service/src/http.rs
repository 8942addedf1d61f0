//! The HTTP port (`http.listen`): what a browser and a Prometheus server
//! read, beside the gRPC port.
//!
//! - `GET /metrics`: the Prometheus text format ([`super::metrics`]);
//! - `GET /status`: a small JSON status (inventory version, the latest
//!   plan, KPIs, per-site headroom) with a `revision` that changes when the
//!   inventory or a plan does;
//! - `GET /`: the operator report, live — the same effective state the
//!   solver plans with (inventory made effective by telemetry), reloaded by
//!   the page itself when `/status` changes. No external fetch: the page
//!   is one self-contained document.
//!
//! On loopback it is open. Anywhere else it is served only with TLS (the
//! gRPC port's certificate) and bearer tokens (a read-only role or above),
//! as the gRPC port's settings say; the service refuses to start otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use edgeplan_files::operator_report::{self, ReportInput};
use edgeplan_plan::execution::{Execution, PlanState, StepState};

use super::auth::{Need, TokenTable, Tokens};
use super::view::View;
use super::Shared;

/// The HTTP port's settings (`http:` in the service's YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. 127.0.0.1:9464 (Prometheus exporters'
    /// customary port range).
    pub listen: SocketAddr,
}

/// Why the HTTP port may not start as configured.
pub fn check(addr: SocketAddr, tls: bool, tokens: &Tokens) -> Result<(), String> {
    if addr.ip().is_loopback() || (tls && tokens.enabled()) {
        Ok(())
    } else {
        Err(format!(
            "http.listen {addr} is not loopback: serving metrics and the live report there needs `tls` and `auth.tokens` set (as for the gRPC port)"
        ))
    }
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    tokens: Arc<TokenTable>,
}

fn router(shared: Arc<Shared>, tokens: Arc<TokenTable>) -> Router {
    Router::new()
        .route("/", get(live_report))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Ctx { shared, tokens })
}

/// The refusal of a request without a token that may read (when tokens
/// are on); `None`: go ahead.
fn refused(ctx: &Ctx, what: &str, headers: &HeaderMap) -> Option<Response> {
    ctx.tokens
        .get()
        .check_need(what, Need::Read, headers)
        .err()
        .map(|s| {
            let code = match s.code() {
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            (
                code,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("{}\n", s.message()),
            )
                .into_response()
        })
}

/// Work that reads the state (and may build a problem) off the async threads.
async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Shared) -> T + Send + 'static,
) -> Result<T, Response> {
    let shared = ctx.shared.clone();
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&ctx, "/metrics", &headers) {
        return r;
    }
    match blocking(&ctx, super::metrics::render).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `/status`: enough for a dashboard tile or a page deciding to reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Changes when the inventory or any plan changes.
    pub revision: String,
    pub inventory_version: u64,
    pub leader: bool,
    pub readings_accepted: u64,
    pub latest_plan: Option<PlanStatus>,
    /// The current placement under the effective state; absent while the
    /// inventory cannot be planned.
    pub kpis: Option<edgeplan_model::kpi::Kpis>,
    pub sites: Vec<SiteStatus>,
    /// Why `kpis` is absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanStatus {
    pub plan_id: u64,
    pub state: String,
    pub reason: String,
    pub steps: usize,
    pub steps_succeeded: usize,
    pub revision: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteStatus {
    pub site: String,
    pub ambient_c: f64,
    pub it_kw: f64,
    pub power_headroom_kw: f64,
    pub cooling_headroom_kw: f64,
    pub inlet_headroom_c: f64,
    pub binding: String,
}

/// The newest plan that was not superseded (the one an operator follows).
fn latest(plans: &std::collections::BTreeMap<u64, Execution>) -> Option<&Execution> {
    plans
        .values()
        .rev()
        .find(|e| e.state != PlanState::Superseded)
}

fn plan_status(e: &Execution) -> PlanStatus {
    PlanStatus {
        plan_id: e.id,
        state: e.state.to_string(),
        reason: e.reason.clone(),
        steps: e.steps.len(),
        steps_succeeded: e
            .steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded)
            .count(),
        revision: e.revision,
    }
}

/// The status now (shell: reads the state and the clock).
pub fn status_now(shared: &Shared) -> Status {
    status_of(shared, View::now(shared).as_ref())
}

/// The status with the fleet's view already built (the live page builds
/// one view for both).
fn status_of(shared: &Shared, view: Result<&View, &tonic::Status>) -> Status {
    let (version, revision, latest_plan) = {
        let s = shared.state();
        // The newest plan's id too: pruning an ended plan while storing a
        // new one must not leave the sum of revisions where it was.
        let plan_revisions: u64 = s.plans.values().map(|e| e.revision + 1).sum();
        let newest = s.plans.keys().next_back().copied().unwrap_or(0);
        (
            s.version,
            format!("{}-{newest}-{}-{plan_revisions}", s.version, s.plans.len()),
            latest(&s.plans).map(plan_status),
        )
    };
    let readings_accepted = shared.telemetry().state.accepted;
    let (kpis, sites, note) = match view {
        Ok(view) => (
            Some(view.kpis.clone()),
            view.eval
                .sites
                .iter()
                .map(|k| SiteStatus {
                    site: k.site.clone(),
                    ambient_c: k.ambient_c,
                    it_kw: k.it_kw,
                    power_headroom_kw: k.it_limit_kw - k.it_kw,
                    cooling_headroom_kw: k.cooling_headroom_kw,
                    inlet_headroom_c: k.inlet_limit_c - k.inlet_c,
                    binding: k.binding.describe().to_string(),
                })
                .collect(),
            String::new(),
        ),
        Err(e) => (None, Vec::new(), e.message().to_string()),
    };
    Status {
        revision,
        inventory_version: version,
        leader: shared.cluster.is_leader(),
        readings_accepted,
        latest_plan,
        kpis,
        sites,
        note,
    }
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&ctx, "/status", &headers) {
        return r;
    }
    match blocking(&ctx, status_now).await {
        Ok(s) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&s).unwrap_or_default(),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Seconds between the page's looks at `/status`; and how stale its
/// telemetry figures may get before it reloads anyway.
const POLL_MS: u64 = 2000;
const TELEMETRY_RELOAD_MS: u64 = 15000;

/// The operator report of the state now, plus the few lines that reload it
/// when the state changes.
pub fn live_page(shared: &Shared) -> Result<String, String> {
    let view = View::now(shared).map_err(|e| e.message().to_string())?;
    let status = status_of(shared, Ok(&view));
    let plan = {
        let s = shared.state();
        latest(&s.plans).map(|e| e.plan.clone())
    };
    let x = view.problem.current_placement();
    let title = if view.effective.name.is_empty() {
        "edgeplan live".to_string()
    } else {
        format!("edgeplan live: {}", view.effective.name)
    };
    let mut page = operator_report::html(&ReportInput {
        title: &title,
        instance: &view.effective,
        problem: &view.problem,
        x: &x,
        plan: plan.as_ref(),
        whatif: None,
    });
    let banner = format!(
        "<p class=\"live\">Live: inventory version {}, {}; readings accepted {}. This page reloads itself when the state changes.</p>",
        status.inventory_version,
        status.latest_plan.as_ref().map_or("no plan yet".to_string(), |p| format!(
            "plan {} {} ({}/{} steps)",
            p.plan_id, p.state, p.steps_succeeded, p.steps
        )),
        status.readings_accepted
    );
    let script = format!(
        "<script>(function(){{var rev={rev};var readings={readings};var t0=Date.now();\
setInterval(function(){{fetch('status',{{cache:'no-store'}}).then(function(r){{return r.ok?r.json():null;}}).then(function(s){{\
if(!s)return;if(s.revision!==rev||(s.readings_accepted!==readings&&Date.now()-t0>{stale})){{location.reload();}}}}).catch(function(){{}});}},{poll});}})();</script>",
        rev = serde_json::to_string(&status.revision).unwrap_or_default(),
        readings = status.readings_accepted,
        stale = TELEMETRY_RELOAD_MS,
        poll = POLL_MS,
    );
    // After the title, and the script before the end of the body.
    if let Some(at) = page.find("</h1>") {
        page.insert_str(at + "</h1>".len(), &banner);
    }
    match page.rfind("</body>") {
        Some(at) => page.insert_str(at, &script),
        None => page.push_str(&script),
    }
    Ok(page)
}

async fn live_report(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&ctx, "/", &headers) {
        return r;
    }
    match blocking(&ctx, live_page).await {
        Ok(Ok(page)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page,
        )
            .into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("nothing to show yet: {why}\n"),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// A TLS listener for axum: TCP accepted, then the handshake (bounded, so
/// a silent client does not hold the port).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(%addr, "http: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "http: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve the HTTP port until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    tokens: Arc<TokenTable>,
    listener: tokio::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(shared, tokens);
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            let listener = TlsListener {
                tcp: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
