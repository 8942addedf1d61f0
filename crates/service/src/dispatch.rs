//! The dispatcher: drives approved plans, one at a time in id order, through
//! the configured provisioners. A step is stored as running before its call
//! is made, so after a crash it is sent again with the same idempotency key
//! and the provisioner answers with the first outcome instead of running it
//! twice. Calls have a deadline; timeouts and transport errors are retried
//! with doubling backoff up to `max_attempts`, then the step fails. A
//! failed step holds every step not yet started; the plan ends failed and
//! continuous mode (if on) plans again from the actual state.
//!
//! Fencing (cluster mode): every call carries the leader's fencing token,
//! each provisioner is told the token (`Fence`) before the first call a new
//! leader makes there, and before every attempt the lease is checked on
//! this replica's own clock: a leader past its renewal deadline stops
//! calling, and one that woke up deposed is refused by the provisioner.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::store::Op;
use super::Shared;
use edgeplan_api::convert;
use edgeplan_api::pb;
use edgeplan_api::pb::provisioner_client::ProvisionerClient;
use edgeplan_plan::execution::{apply_step, PlanState};
use edgeplan_plan::plan::{Step, StepKind};
use edgeplan_verify::Preconditions;

/// A call to make.
struct Launch {
    plan_id: u64,
    step: usize,
    request: pb::StepRequest,
    timeout: Duration,
    /// An eviction: when its notice ends (Unix seconds). Its success is
    /// held until then, whenever the provisioner answers.
    notice_ends_unix_s: Option<f64>,
}

/// A call's end.
struct Done {
    plan_id: u64,
    step: usize,
    succeeded: bool,
    message: String,
    /// Left to the leader: nothing is recorded, the step stays stored
    /// running and the leader asks again with the same key.
    abandoned: bool,
}

impl Done {
    fn abandoned(l: &Launch) -> Done {
        Done {
            plan_id: l.plan_id,
            step: l.step,
            succeeded: false,
            message: String::new(),
            abandoned: true,
        }
    }
}

/// The provisioners, and the fencing token each has acknowledged.
#[derive(Clone)]
struct Provisioners {
    clients: Vec<ProvisionerClient<Channel>>,
    fenced: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Provisioners {
    fn fenced(&self, at: usize) -> u64 {
        self.fenced
            .lock()
            .map_or(0, |f| f.get(at).copied().unwrap_or(0))
    }

    /// Tell provisioner `at` this token before calling it with it.
    async fn fence(&self, at: usize, token: u64, holder: &str) -> Result<(), tonic::Status> {
        if token == 0 || self.fenced(at) >= token {
            return Ok(());
        }
        let req = pb::FenceRequest {
            fencing_token: token,
            holder: holder.to_string(),
        };
        let mut client = self.clients[at].clone();
        match client.fence(req).await {
            Ok(_) => {}
            // A provisioner without fencing: its calls still carry the token.
            Err(s) if s.code() == Code::Unimplemented => {
                tracing::warn!(provisioner = at, "provisioner does not implement Fence");
            }
            Err(s) => return Err(s),
        }
        if let Ok(mut f) = self.fenced.lock() {
            if let Some(t) = f.get_mut(at) {
                *t = (*t).max(token);
            }
        }
        Ok(())
    }
}

/// A provisioner's endpoint, with TLS when configured (checked at start).
fn endpoint(url: &str, tls: Option<&super::auth::ClientTls>) -> anyhow::Result<Endpoint> {
    let e = Endpoint::from_shared(url.to_string())?;
    Ok(match tls {
        Some(tls) => e.tls_config(tls.load()?)?,
        None => e,
    })
}

pub async fn run(shared: Arc<Shared>) {
    let clients: Vec<ProvisionerClient<Channel>> = shared
        .config
        .provisioners
        .iter()
        .filter_map(
            |url| match endpoint(url, shared.config.provisioner_tls.as_ref()) {
                Ok(e) => Some(ProvisionerClient::new(
                    e.connect_timeout(Duration::from_secs(5)).connect_lazy(),
                )),
                Err(e) => {
                    tracing::error!(%url, "bad provisioner endpoint: {e}");
                    None
                }
            },
        )
        .collect();
    let provisioners = Provisioners {
        fenced: Arc::new(std::sync::Mutex::new(vec![0; clients.len()])),
        clients,
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut inflight: HashSet<(u64, usize)> = HashSet::new();
    let mut announced = 0;
    loop {
        let s = shared.clone();
        let busy = inflight.clone();
        // Only the leader dispatches (cluster mode); a follower's stored
        // running steps are the leader's calls, not orphans.
        let leader = shared.cluster.is_leader();
        if !leader {
            inflight.clear();
        }
        let token = shared.cluster.fence().map_or(0, |f| f.token);
        if token > announced {
            // A new leader tells every provisioner at once, so that a deposed
            // leader's late call is refused even where this one calls later.
            announced = token;
            for at in 0..provisioners.clients.len() {
                let (p, holder) = (provisioners.clone(), shared.cluster.replica_id.clone());
                tokio::spawn(async move {
                    if let Err(e) = p.fence(at, token, &holder).await {
                        tracing::warn!(provisioner = at, "cannot fence: {e}");
                    }
                });
            }
        }
        let clients = &provisioners.clients;
        let can_start = !clients.is_empty() && leader;
        let launches = tokio::task::spawn_blocking(move || launches(&s, &busy, can_start))
            .await
            .unwrap_or_default();
        for l in launches {
            inflight.insert((l.plan_id, l.step));
            let tx = done_tx.clone();
            let provisioners = provisioners.clone();
            let cfg = shared.config.dispatch.clone();
            let counted = shared.clone();
            tokio::spawn(async move {
                let notice_ends = l.notice_ends_unix_s;
                let done = call(&provisioners, &cfg, &counted, l).await;
                // The evicted replica holds its room until its notice ends.
                if let Some(ends) = notice_ends.filter(|_| done.succeeded && !done.abandoned) {
                    let left = ends - super::now_s();
                    if left > 0.0 {
                        tokio::time::sleep(edgeplan_model::duration_s(left)).await;
                    }
                }
                let _ = tx.send(done);
            });
        }
        tokio::select! {
            Some(done) = done_rx.recv() => {
                inflight.remove(&(done.plan_id, done.step));
                if done.abandoned {
                    continue;
                }
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || record(&s, done)).await;
            }
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Decide and store what starts now: running steps nobody is calling
/// (after a restart) are sent again; ready steps of the first active plan start.
fn launches(shared: &Shared, inflight: &HashSet<(u64, usize)>, can_start: bool) -> Vec<Launch> {
    let fencing_token = shared.cluster.fence().map_or(0, |f| f.token);
    let mut state = shared.state();
    let limits = state.instance.limits.clone();
    let mut updated = Vec::new();
    let mut out = Vec::new();
    let scale = shared.config.dispatch.time_scale.max(0.0);
    let cfg = &shared.config.dispatch;
    for exec in state.plans.values() {
        let active = matches!(exec.state, PlanState::Approved | PlanState::Executing);
        let orphans: Vec<usize> = exec
            .running()
            .into_iter()
            .filter(|&k| !inflight.contains(&(exec.id, k)))
            .collect();
        if orphans.is_empty() && !active {
            continue;
        }
        let mut e = exec.clone();
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        if can_start {
            for k in orphans {
                if e.retry(k).is_ok() {
                    // An eviction's notice runs from its first sending:
                    // sending it again does not move the notice's end (else
                    // a provisioner that answers at once would be asked for
                    // ever).
                    if e.plan.steps[k].kind != StepKind::Evict {
                        e.steps[k].started_unix_s = super::now_s();
                    }
                    changed.push(k);
                }
            }
            let ready = if active && updated.is_empty() {
                e.ready(&limits)
            } else {
                Vec::new()
            };
            if !ready.is_empty() {
                // Each step's precondition is checked against the fleet as
                // it is now (inventory and telemetry), built under the state
                // lock so that no step outcome lands in between, and only
                // when a step may start.
                let fleet = super::view::effective(shared, &state.instance, super::now_s());
                let preconditions = Preconditions::new(&fleet);
                for k in ready {
                    let running: Vec<&Step> =
                        e.running().into_iter().map(|r| &e.plan.steps[r]).collect();
                    match preconditions.check(&running, &e.plan.steps[k]) {
                        Ok(()) => {
                            if e.start(k).is_ok() {
                                e.steps[k].started_unix_s = super::now_s();
                                changed.push(k);
                            }
                        }
                        Err(why) => {
                            tracing::warn!(plan = e.id, step = k, "precondition failed: {why}");
                            if e.fail_precondition(k, why).is_ok() {
                                e.steps[k].ended_unix_s = super::now_s();
                                refused.push(k);
                            }
                            break; // a failure holds the rest of the plan
                        }
                    }
                }
            }
        }
        if changed.is_empty() && refused.is_empty() {
            if active {
                break; // plans run one at a time, in id order
            }
            continue;
        }
        for &k in &changed {
            let step = &e.plan.steps[k];
            let expected_s = step.duration_s * scale;
            out.push(Launch {
                plan_id: e.id,
                step: k,
                request: pb::StepRequest {
                    idempotency_key: e.idempotency_key(k),
                    plan_id: e.id,
                    step_id: k as u64,
                    workload: step.workload.clone(),
                    kind: convert::step_kind_to_pb(step.kind) as i32,
                    from_site: step.from.clone().unwrap_or_default(),
                    to_site: step.to.clone().unwrap_or_default(),
                    state_gib: step.state_gib,
                    expected_duration_s: expected_s,
                    fencing_token,
                    notice_s: step.notice_s * scale,
                },
                notice_ends_unix_s: e.notice_ends_unix_s(k, scale),
                // Clamped: a huge modelled duration must not panic here.
                timeout: edgeplan_model::duration_s(
                    (expected_s * cfg.timeout_factor + cfg.timeout_slack_s).max(0.1),
                ),
            });
        }
        changed.extend(refused);
        e.updated_unix_s = super::now_s();
        updated.push((e, changed));
        if active {
            break;
        }
    }
    if updated.is_empty() {
        return Vec::new();
    }
    let mut ops = Vec::new();
    for (e, changed) in &updated {
        ops.push(Op::PlanState(e));
        ops.extend(changed.iter().map(|&k| Op::Step(e.id, k, &e.steps[k])));
    }
    if let Err(e) = shared.commit(&mut state, &ops, true) {
        tracing::error!("cannot store step starts, not dispatching: {e}");
        return Vec::new();
    }
    drop(ops);
    let mut notes = Vec::new();
    let mut ended = false;
    for (e, changed) in updated {
        notes.extend(changed.iter().map(|&k| (e.id, k)));
        ended |= e.state.is_terminal();
        state.plans.insert(e.id, e);
    }
    drop(state);
    for (id, k) in notes {
        shared.notify_plan(id, Some(k));
    }
    if ended {
        // A failed precondition ended the plan: plan again from the actual state.
        shared.replan_wake.notify_one();
    }
    out
}

/// The endpoint a step's key belongs to (FNV-1a: the same on every
/// replica and after restarts).
fn home(key: &str, endpoints: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % endpoints.max(1) as u64) as usize
}

/// A call that never reached a provisioner: the connection failed, so no
/// answer came with headers (a provisioner's own UNAVAILABLE carries them).
fn unreachable(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().is_empty()
}

/// The connection was refused: this call never reached a provisioner.
fn connect_refused(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Call the provisioners for one step until an outcome; give up (failed)
/// only when no attempt can have reached a provisioner.
async fn call(
    provisioners: &Provisioners,
    cfg: &super::DispatchConfig,
    shared: &Shared,
    l: Launch,
) -> Done {
    let (clients, metrics) = (&provisioners.clients, &shared.metrics);
    let mut backoff = Duration::from_millis(cfg.backoff_initial_ms.max(1));
    let mut last = String::new();
    let mut maybe_ran = false;
    // Sticky: every attempt of a step goes to its key's home provisioner;
    // the next endpoint is tried only when the home could not be reached
    // at all (the call never left). A timeout or an error the provisioner
    // answered stays home, where the key's journal is: a step runs on one
    // provisioner at most, with no journal shared between them.
    let mut at = home(&l.request.idempotency_key, clients.len());
    for attempt in 0..cfg.max_attempts.max(1) {
        // Not leading now, or leading under a newer token: this call is not
        // ours to make. Its outcome is left to the leader (the step stays
        // stored running, and the leader asks again with the same key).
        let token = l.request.fencing_token;
        if shared.cluster.is_cluster() && shared.cluster.fence().map(|f| f.token) != Some(token) {
            tracing::warn!(key = %l.request.idempotency_key, "not sent: the lease of fencing token {token} is not held");
            return Done::abandoned(&l);
        }
        let fenced = tokio::time::timeout(
            l.timeout,
            provisioners.fence(at, token, &shared.cluster.replica_id),
        )
        .await;
        let mut client = clients[at].clone();
        let mut req = tonic::Request::new(l.request.clone());
        req.set_timeout(l.timeout);
        let answer = match fenced {
            Ok(Ok(())) => {
                let answer = tokio::time::timeout(l.timeout, client.execute(req)).await;
                // No answer: the request may have reached the provisioner
                // (and run there) even though nothing came back.
                maybe_ran |= match &answer {
                    Err(_) => true,
                    Ok(Err(status)) => status.metadata().is_empty() && !connect_refused(status),
                    Ok(Ok(_)) => false,
                };
                answer
            }
            Ok(Err(status)) => Ok(Err(status)),
            Err(_) => Ok(Err(tonic::Status::deadline_exceeded("no answer to Fence"))),
        };
        match answer {
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                let succeeded = r.outcome == pb::Outcome::Succeeded as i32;
                if r.idempotency_key != l.request.idempotency_key {
                    last = format!(
                        "provisioner answered for {} instead of {}",
                        r.idempotency_key, l.request.idempotency_key
                    );
                } else if succeeded || r.outcome == pb::Outcome::Failed as i32 {
                    return Done {
                        plan_id: l.plan_id,
                        step: l.step,
                        succeeded,
                        message: r.message,
                        abandoned: false,
                    };
                } else {
                    last = format!("provisioner gave no outcome ({})", r.outcome);
                }
            }
            // Reserved by the contract for the fencing refusal.
            Ok(Err(status)) if status.code() == Code::FailedPrecondition => {
                // A newer leader has reached this provisioner.
                tracing::warn!(key = %l.request.idempotency_key, "refused by the provisioner: {}", status.message());
                metrics.dispatch_fenced();
                return Done::abandoned(&l);
            }
            Ok(Err(status)) => {
                last = format!("{:?}: {}", status.code(), status.message());
                if unreachable(&status) {
                    at = (at + 1) % clients.len();
                }
                if !matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Cancelled
                        | Code::Unknown
                        | Code::Aborted
                        | Code::ResourceExhausted
                ) {
                    break; // the provisioner refused the request itself
                }
            }
            Err(_) => last = format!("no answer within {:.1} s", l.timeout.as_secs_f64()),
        }
        tracing::warn!(key = %l.request.idempotency_key, attempt, "step call failed: {last}");
        if attempt + 1 < cfg.max_attempts {
            metrics.dispatch_retry();
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    if maybe_ran {
        // Failing it could be a lie: the provisioner may have run it. It
        // stays running and is asked again, same key, until one answers.
        tracing::warn!(key = %l.request.idempotency_key, "outcome unknown after {} attempt(s), asking again: {last}", cfg.max_attempts.max(1));
        metrics.dispatch_unknown();
        return Done::abandoned(&l);
    }
    metrics.dispatch_failure();
    Done {
        plan_id: l.plan_id,
        step: l.step,
        succeeded: false,
        message: format!(
            "gave up after {} attempt(s): {last}",
            cfg.max_attempts.max(1)
        ),
        abandoned: false,
    }
}

/// Store a step's outcome and, if it succeeded, where the replica now runs.
fn record(shared: &Shared, done: Done) {
    let mut state = shared.state();
    let Some(mut exec) = state.plans.get(&done.plan_id).cloned() else {
        return;
    };
    // An eviction's success before its notice ends is refused (a wall
    // clock stepped back): the step stays running, is sent again with the
    // same key, and its success is held until the notice's end.
    let scale = shared.config.dispatch.time_scale.max(0.0);
    if let Err(e) = exec.finish_at(
        done.step,
        done.succeeded,
        done.message,
        super::now_s(),
        scale,
    ) {
        tracing::warn!("ignoring a step outcome: {e}");
        return;
    }
    let now = super::now_s();
    exec.steps[done.step].ended_unix_s = now;
    exec.updated_unix_s = now;
    let step = exec.plan.steps[done.step].clone();
    let mut workload = None;
    if done.succeeded {
        match state
            .instance
            .workloads
            .iter()
            .position(|w| w.id == step.workload)
        {
            Some(i) => {
                let mut w = state.instance.workloads[i].clone();
                if let Some(note) = apply_step(&mut w, &step) {
                    tracing::warn!("{note}");
                }
                workload = Some((i, w));
            }
            None => tracing::warn!("workload {} left the inventory mid-plan", step.workload),
        }
    }
    let version = state.version + u64::from(workload.is_some());
    let mut ops = vec![
        Op::PlanState(&exec),
        Op::Step(exec.id, done.step, &exec.steps[done.step]),
    ];
    if let Some((_, w)) = &workload {
        ops.push(Op::PutWorkload(w));
        ops.push(Op::Version(version));
    }
    if let Err(e) = shared.commit(&mut state, &ops, true) {
        // Not stored: the step stays running and is asked again (same key).
        tracing::error!("cannot store a step outcome: {e}");
        return;
    }
    drop(ops);
    if let Some((i, w)) = workload {
        state.instance.workloads[i] = w;
        state.version = version;
    }
    let (id, ended) = (exec.id, exec.state.is_terminal());
    if ended {
        tracing::info!(plan = id, state = %exec.state, "plan ended");
    }
    state.plans.insert(id, exec);
    drop(state);
    shared.notify_plan(id, Some(done.step));
    shared.dispatch_wake.notify_one();
    if ended {
        shared.replan_wake.notify_one();
    }
}
