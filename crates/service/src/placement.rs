//! The Placement service: solve on the inventory as telemetry says it is,
//! store the plan, and the operator's verbs on plans (approve, skip a step,
//! cancel, watch). The solve path is the CLI's: effective instance →
//! problem → solver → planner; continuous mode calls the same [`propose`].

use edgeplan_model::clock::Deadline;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::errors::{self, Reason};
use super::store::Op;
use super::view::{self, View};
use super::{now_s, Shared, State};
use edgeplan_analysis::report::SolveReport;
use edgeplan_api::convert;
use edgeplan_api::pb;
use edgeplan_plan::execution::{Execution, PlanState, RequestKey, TransitionError};
use edgeplan_solve::solver::{self, SolveOptions, Solved};
use sha2::Digest;

pub struct PlacementApi(pub Arc<Shared>);

/// What a solve produced.
pub struct Proposal {
    pub response: pb::SolveResponse,
    pub plan_id: Option<u64>,
}

/// What a proposal is for, besides the solve.
pub struct Intent<'a> {
    /// Plan, but store nothing.
    pub dry_run: bool,
    /// Why the plan is made (the plan's `reason`).
    pub reason: &'a str,
    /// Store the plan approved.
    pub auto_approve: bool,
    /// Store nothing when the plan has no step.
    pub skip_empty: bool,
    /// The caller's idempotency key: a plan already made for it is
    /// returned instead of a new one.
    pub request: Option<RequestKey>,
}

/// Solve, plan, and (unless `dry_run`) store the plan, superseding plans
/// that have not started. Refused while a plan is executing: its steps are
/// still changing the placement a new plan would start from.
pub fn propose(
    shared: &Shared,
    options: &SolveOptions,
    intent: Intent<'_>,
) -> Result<Proposal, Status> {
    if !intent.dry_run {
        refuse_while_executing(shared)?; // before spending a solve on it
    }
    let view = View::now(shared)?;
    let solved = solve_view(&shared.metrics, &view, options)?;
    propose_from(shared, &view, &solved, intent)
}

/// The answer already given to a stored solve with this request id, if
/// any: the first response when this replica still holds it, else one
/// made from the stored plan (status `replayed`, solver figures zero).
/// REQUEST_ID_REUSED when the id came with a different request.
fn replayed(
    shared: &Shared,
    state: &State,
    key: &RequestKey,
) -> Result<Option<pb::SolveResponse>, Status> {
    let Some(exec) = state
        .plans
        .values()
        .find(|e| e.request.as_ref().is_some_and(|r| r.id == key.id))
    else {
        return Ok(None);
    };
    if exec
        .request
        .as_ref()
        .is_some_and(|r| r.digest != key.digest)
    {
        return Err(errors::error_with(
            Reason::RequestIdReused,
            format!(
                "request_id {:?} was used for another request (plan {}); use a new id",
                key.id, exec.id
            ),
            &[("plan_id", exec.id.to_string())],
        ));
    }
    if let Some(first) = shared.solve_reply(&key.id) {
        return Ok(Some(first));
    }
    let view = convert::plan_to_pb(exec);
    Ok(Some(pb::SolveResponse {
        plan_id: exec.id,
        status: "replayed".into(),
        solve_status: pb::SolveStatus::Replayed as i32,
        kpis_before: view.kpis_before,
        kpis_after: view.kpis_after,
        explanations: vec![format!(
            "replayed: plan {} was made for request_id {:?}",
            exec.id, key.id
        )],
        inventory_version: exec.inventory_version,
        plan: Some(view),
        ..Default::default()
    }))
}

/// A unit enum's name as serde writes it (`gap_limit`, `fast`).
fn wire_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The method a request names, as a string or an enum (auto when it
/// names none; both named and different is refused).
fn parse_method(name: Option<&str>, code: i32) -> Result<solver::Method, Status> {
    let by_name = match name {
        None | Some("") => None,
        Some(m) => Some(m.parse().map_err(|e: String| errors::field("method", e))?),
    };
    let by_code = match pb::SolveMethod::try_from(code) {
        Ok(pb::SolveMethod::Unspecified) => None,
        Ok(pb::SolveMethod::Auto) => Some(solver::Method::Auto),
        Ok(pb::SolveMethod::Exact) => Some(solver::Method::Exact),
        Ok(pb::SolveMethod::Fast) => Some(solver::Method::Fast),
        Err(_) => {
            return Err(errors::field(
                "solve_method",
                format!("{code} is not a method"),
            ))
        }
    };
    match (by_name, by_code) {
        (Some(a), Some(b)) if a != b => Err(errors::field(
            "solve_method",
            format!("says {b:?} where method says {a:?}; set one"),
        )),
        (a, b) => Ok(a.or(b).unwrap_or(solver::Method::Auto)),
    }
}

fn method_to_pb(m: solver::Method) -> pb::SolveMethod {
    match m {
        solver::Method::Auto => pb::SolveMethod::Auto,
        solver::Method::Exact => pb::SolveMethod::Exact,
        solver::Method::Fast => pb::SolveMethod::Fast,
    }
}

/// Solve a view's problem; its time and gap go to the metrics.
pub fn solve_view(
    metrics: &super::metrics::Metrics,
    view: &View,
    options: &SolveOptions,
) -> Result<Solved, Status> {
    let started = std::time::Instant::now();
    let solved = solver::solve(&view.problem, options)
        .map_err(|e| errors::internal(format!("solver: {e}")))?;
    metrics.solved(view, &solved, started.elapsed().as_secs_f64());
    Ok(solved)
}

/// [`propose`] for a view already solved (continuous mode assessed and
/// solved it once; it is not solved again).
pub fn propose_from(
    shared: &Shared,
    view: &View,
    solved: &Solved,
    intent: Intent<'_>,
) -> Result<Proposal, Status> {
    let Intent {
        dry_run,
        reason,
        auto_approve,
        skip_empty,
        request,
    } = intent;
    if !dry_run {
        refuse_while_executing(shared)?;
    }
    let report = SolveReport::new(&view.problem, solved);
    let plan = edgeplan_plan::plan::plan(&view.effective, &view.problem, &report.placement)
        .map_err(|e| errors::internal(format!("planner: {e}")))?;
    let mut explanations: Vec<String> = report.unplaced.iter().map(|u| u.text.clone()).collect();
    explanations.extend(
        report
            .binding
            .iter()
            .filter(|b| !b.binding.is_empty())
            .map(|b| format!("{}: bound by {}", b.site, b.binding.join(", "))),
    );
    let mut response = pb::SolveResponse {
        plan_id: 0,
        status: wire_name(&report.status),
        method: wire_name(&report.method),
        solve_status: convert::solve_status_to_pb(&wire_name(&report.status)) as i32,
        solve_method: method_to_pb(report.method) as i32,
        objective: report.objective.total,
        bound: report.bound,
        gap: report.gap,
        placed_cost: report.placed_cost,
        placed_cost_bound: report.placed_cost_bound,
        placed_gap: report.gap,
        unplaced_replicas: report.unplaced_replicas,
        unplaced_lower_bound: report.unplaced_lower_bound,
        kpis_before: Some(convert::kpis_to_pb(&plan.kpis_before)),
        kpis_after: Some(convert::kpis_to_pb(&plan.kpis_after)),
        placement: report
            .placement
            .assignments
            .iter()
            .flat_map(|(w, sites)| {
                sites.iter().map(move |(s, n)| pb::Assignment {
                    workload: w.clone(),
                    site: s.clone(),
                    replicas: *n,
                })
            })
            .collect(),
        explanations,
        plan: None,
        inventory_version: view.version,
    };
    if dry_run || (skip_empty && plan.steps.is_empty()) {
        response.plan = Some(convert::plan_to_pb(&Execution::new(
            0,
            plan,
            reason.into(),
            view.version,
        )));
        return Ok(Proposal {
            response,
            plan_id: None,
        });
    }
    let mut state = shared.state();
    // A retry that raced its first call here finds the first call's plan.
    if let Some(key) = &request {
        if let Some(first) = replayed(shared, &state, key)? {
            let plan_id = Some(first.plan_id);
            return Ok(Proposal {
                response: first,
                plan_id,
            });
        }
    }
    if state.version != view.version {
        return Err(errors::error_with(
            Reason::VersionMismatch,
            "the inventory changed while solving; solve again",
            &[("version", state.version.to_string())],
        ));
    }
    let id = state.next_plan_id();
    let mut exec = Execution::new(id, plan, reason.into(), view.version);
    exec.request = request.clone();
    exec.created_unix_s = now_s();
    exec.updated_unix_s = exec.created_unix_s;
    if auto_approve {
        exec.approve().map_err(errors::internal)?;
    }
    let mut superseded = Vec::new();
    for old in state.plans.values() {
        if matches!(old.state, PlanState::Recommended | PlanState::Approved) {
            let mut o = old.clone();
            o.supersede().map_err(errors::internal)?;
            o.updated_unix_s = now_s();
            superseded.push(o);
        }
    }
    // Retention: the newest ended plans stay, older ones go with this write.
    let expired: Vec<Execution> =
        {
            let mut ended: Vec<&Execution> =
                superseded
                    .iter()
                    .chain(state.plans.values().filter(|e| {
                        e.state.is_terminal() && !superseded.iter().any(|o| o.id == e.id)
                    }))
                    .collect();
            ended.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
            ended
                .into_iter()
                .skip(shared.config.keep_ended_plans)
                .cloned()
                .collect()
        };
    let mut ops = vec![Op::NewPlan(&exec)];
    ops.extend(superseded.iter().map(Op::PlanState));
    ops.extend(expired.iter().map(Op::DeletePlan));
    shared
        .commit(&mut state, &ops, false)
        .map_err(|e| super::store_status("cannot store the plan", e))?;
    for e in &expired {
        state.plans.remove(&e.id);
    }
    response.plan_id = id;
    response.plan = Some(convert::plan_to_pb(&exec));
    for o in superseded {
        let oid = o.id;
        if !expired.iter().any(|e| e.id == oid) {
            state.plans.insert(oid, o);
        }
        shared.notify_plan(oid, None);
    }
    state.plans.insert(id, exec);
    drop(state);
    if let Some(key) = request {
        shared.remember_solve_reply(key.id, response.clone());
    }
    shared.notify_plan(id, None);
    shared.dispatch_wake.notify_one();
    Ok(Proposal {
        response,
        plan_id: Some(id),
    })
}

fn refuse_while_executing(shared: &Shared) -> Result<(), Status> {
    match executing(shared) {
        Some(e) => Err(errors::error_with(
            Reason::PlanExecuting,
            format!("plan {e} is executing; wait for it or cancel it first"),
            &[("plan_id", e.to_string())],
        )),
        None => Ok(()),
    }
}

/// The plan executing now (or cancelling, its running steps not yet
/// reported), if any.
pub fn executing(shared: &Shared) -> Option<u64> {
    shared
        .state()
        .plans
        .values()
        .find(|e| matches!(e.state, PlanState::Executing | PlanState::Cancelling))
        .map(|e| e.id)
}

fn refused(e: TransitionError) -> Status {
    match e {
        TransitionError::UnknownStep { step, .. } => errors::not_found("step", step, e.to_string()),
        _ => errors::error(Reason::PlanState, e.to_string()),
    }
}

/// Apply an operator's verb to a stored plan: on a copy, stored, then
/// current. When `done` says the verb's effect is already there (a retry
/// after a lost reply), the plan's view is returned and nothing written.
fn with_plan(
    shared: &Shared,
    id: u64,
    done: impl FnOnce(&Execution) -> bool,
    verb: impl FnOnce(&mut Execution, &State) -> Result<Vec<usize>, TransitionError>,
) -> Result<pb::PlanView, Status> {
    let mut state = shared.state();
    let mut exec = state
        .plans
        .get(&id)
        .cloned()
        .ok_or_else(|| errors::not_found("plan", id, format!("plan {id} does not exist")))?;
    if done(&exec) {
        return Ok(convert::plan_to_pb(&exec));
    }
    let steps = verb(&mut exec, &state).map_err(refused)?;
    exec.updated_unix_s = now_s();
    let mut ops = vec![Op::PlanState(&exec)];
    ops.extend(steps.iter().map(|&k| Op::Step(id, k, &exec.steps[k])));
    shared
        .commit(&mut state, &ops, false)
        .map_err(|e| super::store_status("cannot store the plan", e))?;
    let view = convert::plan_to_pb(&exec);
    state.plans.insert(id, exec);
    drop(state);
    shared.notify_plan(id, None);
    shared.dispatch_wake.notify_one();
    Ok(view)
}

/// The call's deadline (`grpc-timeout`), in seconds.
fn deadline_s<T>(req: &Request<T>) -> Option<f64> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "H" => n * 3600.0,
        "M" => n * 60.0,
        "S" => n,
        "m" => n / 1e3,
        "u" => n / 1e6,
        "n" => n / 1e9,
        _ => return None,
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PlanEvent, Status>> + Send>>;
type WhatIfStream = Pin<Box<dyn Stream<Item = Result<pb::WhatIfResult, Status>> + Send>>;

#[tonic::async_trait]
impl pb::placement_server::Placement for PlacementApi {
    async fn solve(
        &self,
        req: Request<pb::SolveRequest>,
    ) -> Result<Response<pb::SolveResponse>, Status> {
        let deadline = deadline_s(&req);
        let r = req.into_inner();
        let mut time_limit = r.time_limit_s.unwrap_or(self.0.config.solve_time_limit_s);
        if !(time_limit.is_finite() && time_limit > 0.0) {
            return Err(errors::field(
                "time_limit_s",
                format!("must be > 0, got {time_limit}"),
            ));
        }
        if let Some(gap) = r.relative_gap {
            if !(0.0..1.0).contains(&gap) {
                return Err(errors::field(
                    "relative_gap",
                    format!("must be in [0, 1), got {gap}"),
                ));
            }
        }
        if let Some(d) = deadline {
            // Leave room to plan and answer before the caller gives up.
            time_limit = time_limit.min((d * 0.7).max(0.05));
        }
        let options = SolveOptions {
            deadline: Deadline::after_s(time_limit),
            relative_gap: r.relative_gap,
            threads: None,
            seed: r.seed,
            method: parse_method(r.method.as_deref(), r.solve_method)?,
            work: r.work,
            deterministic: r.deterministic,
        };
        let request = match r.request_id.as_deref() {
            Some(id) if !r.dry_run => {
                if id.is_empty() || id.chars().count() > 128 {
                    return Err(errors::field(
                        "request_id",
                        format!("must be 1 to 128 characters, got {}", id.chars().count()),
                    ));
                }
                // The digest covers everything asked, so a reused id with
                // another request is told apart from a retry.
                let bare = pb::SolveRequest {
                    request_id: None,
                    ..r.clone()
                };
                let digest = sha2::Sha256::digest(prost::Message::encode_to_vec(&bare));
                Some(RequestKey {
                    id: id.to_string(),
                    digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
                })
            }
            _ => None,
        };
        let shared = self.0.clone();
        if let Some(key) = &request {
            let first = replayed(&shared, &shared.state(), key)?;
            if let Some(first) = first {
                return Ok(Response::new(first));
            }
        }
        let proposal = tokio::task::spawn_blocking(move || {
            propose(
                &shared,
                &options,
                Intent {
                    dry_run: r.dry_run,
                    reason: "requested by Solve",
                    auto_approve: false,
                    skip_empty: false,
                    request,
                },
            )
        })
        .await
        .map_err(errors::internal)??;
        Ok(Response::new(proposal.response))
    }

    async fn get_plan(&self, req: Request<pb::PlanRef>) -> Result<Response<pb::PlanView>, Status> {
        let id = req.into_inner().plan_id;
        let state = self.0.state();
        let exec = state
            .plans
            .get(&id)
            .ok_or_else(|| errors::not_found("plan", id, format!("plan {id} does not exist")))?;
        Ok(Response::new(convert::plan_to_pb(exec)))
    }

    async fn list_plans(
        &self,
        req: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        use std::ops::Bound;
        let r = req.into_inner();
        let size = super::paging::size(r.page_size, 100, 1000);
        let after = super::paging::plans_after(&r.page_token)?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let state = self.0.state();
        let mut plans: Vec<pb::PlanSummary> = state
            .plans
            .range((from, Bound::Unbounded))
            .map(|(_, e)| convert::summary_to_pb(e))
            .filter(|p| r.states.is_empty() || r.states.contains(&p.state))
            .take(size + 1)
            .collect();
        let more = plans.len() > size;
        plans.truncate(size);
        let next_page_token = match plans.last() {
            Some(last) if more => super::paging::plans_token(last.plan_id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListPlansResponse {
            plans,
            next_page_token,
        }))
    }

    async fn approve_plan(
        &self,
        req: Request<pb::PlanRef>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let id = req.into_inner().plan_id;
        let shared = self.0.clone();
        tokio::task::spawn_blocking(move || {
            // The version is read under the lock the approval is stored
            // under; the current fleet is built only for a plan made from
            // an older inventory (lock order: state, then telemetry).
            let approved = |e: &Execution| {
                matches!(
                    e.state,
                    PlanState::Approved
                        | PlanState::Executing
                        | PlanState::Succeeded
                        | PlanState::Failed
                )
            };
            with_plan(&shared, id, approved, |e, state| {
                e.approve_at(state.version, |plan| {
                    let effective = view::effective(&shared, &state.instance, now_s());
                    let report = edgeplan_verify::verify_plan(&effective, plan);
                    match report.violations.first() {
                        None => Ok(()),
                        Some(v) => Err(format!(
                            "{} ({} in all)",
                            v.message,
                            report.violations.len()
                        )),
                    }
                })
                .map(|_| vec![])
            })
        })
        .await
        .map_err(errors::internal)?
        .map(Response::new)
    }

    async fn skip_step(&self, req: Request<pb::StepRef>) -> Result<Response<pb::PlanView>, Status> {
        let r = req.into_inner();
        let shared = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let step = r
                .step_id
                .ok_or_else(|| errors::field("step_id", "required (step ids start at 0)"))?
                as usize;
            let skipped = |e: &Execution| {
                e.steps
                    .get(step)
                    .is_some_and(|s| s.state == edgeplan_plan::execution::StepState::Skipped)
            };
            with_plan(&shared, r.plan_id, skipped, |e, _| e.skip(step))
        })
        .await
        .map_err(errors::internal)?
        .map(Response::new)
    }

    async fn cancel_plan(
        &self,
        req: Request<pb::PlanRef>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let id = req.into_inner().plan_id;
        let shared = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let cancelled =
                |e: &Execution| matches!(e.state, PlanState::Cancelling | PlanState::Cancelled);
            with_plan(&shared, id, cancelled, |e, _| e.cancel().map(|_| vec![]))
        })
        .await
        .map_err(errors::internal)?
        .map(Response::new)
    }

    async fn replica(
        &self,
        _req: Request<pb::ReplicaRequest>,
    ) -> Result<Response<pb::ReplicaStatus>, Status> {
        let node = &self.0.cluster;
        Ok(Response::new(pb::ReplicaStatus {
            replica_id: node.replica_id.clone(),
            leader: node.is_leader(),
            fence: node.fence().map_or(0, |f| f.token),
            // Not the state's lock: "who leads" must answer while a store
            // call cut off mid-way holds it.
            generation: node.generation.load(std::sync::atomic::Ordering::Acquire),
            store: if node.is_cluster() {
                "postgres"
            } else {
                "embedded"
            }
            .into(),
        }))
    }

    async fn get_spot_prices(
        &self,
        _req: Request<pb::GetSpotPricesRequest>,
    ) -> Result<Response<pb::SpotPrices>, Status> {
        let shared = self.0.clone();
        tokio::task::spawn_blocking(move || super::spot::prices(&shared, None, 0.0))
            .await
            .map_err(errors::internal)?
            .map(|(prices, _)| Response::new(prices))
    }

    type WatchSpotPricesStream = super::spot::SpotStream;

    async fn watch_spot_prices(
        &self,
        req: Request<pb::WatchSpotPricesRequest>,
    ) -> Result<Response<Self::WatchSpotPricesStream>, Status> {
        let req = req.into_inner();
        let keep = super::spot::smoothing(req.smoothing)?;
        Ok(Response::new(super::spot::watch(
            self.0.clone(),
            req.interval_ms,
            keep,
        )))
    }

    type WhatIfStream = WhatIfStream;

    async fn what_if(
        &self,
        req: Request<pb::WhatIfRequest>,
    ) -> Result<Response<Self::WhatIfStream>, Status> {
        let text = req.into_inner().scenarios;
        let shared = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let job = tokio::task::spawn_blocking(move || super::whatif::start(&shared, &text, tx))
            .await
            .map_err(errors::internal)??;
        tokio::task::spawn_blocking(job);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchPlanStream = EventStream;

    async fn watch_plan(
        &self,
        req: Request<pb::PlanRef>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let r = req.into_inner();
        let id = r.plan_id;
        // Subscribe before the snapshot so no change falls between them.
        let mut changes = self.0.plan_changes.subscribe();
        let first = {
            let state = self.0.state();
            let exec = state.plans.get(&id).ok_or_else(|| {
                errors::not_found("plan", id, format!("plan {id} does not exist"))
            })?;
            // A resume from the revision the plan is at (or from a later
            // one, seen on a replica ahead of this one): nothing was
            // missed, the stream goes on with the next change after it.
            let up_to_date = r.after_revision.is_some_and(|seen| seen >= exec.revision);
            if up_to_date && exec.state.is_terminal() {
                // Ended, and the caller saw its last change: nothing follows.
                return Ok(Response::new(Box::pin(tokio_stream::empty())));
            }
            (!up_to_date).then(|| pb::PlanEvent {
                summary: Some(convert::summary_to_pb(exec)),
                step: None,
                view: Some(convert::plan_to_pb(exec)),
            })
        };
        let shared = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let done = |s: &pb::PlanEvent| {
                s.summary.as_ref().is_some_and(|s| {
                    pb::PlanState::try_from(s.state).is_ok_and(|st| {
                        matches!(
                            st,
                            pb::PlanState::Succeeded
                                | pb::PlanState::Failed
                                | pb::PlanState::Cancelled
                                | pb::PlanState::Superseded
                        )
                    })
                })
            };
            if let Some(first) = first {
                let finished = done(&first);
                if tx.send(Ok(first)).await.is_err() || finished {
                    return;
                }
            }
            loop {
                let step = match changes.recv().await {
                    Ok(c) if c.plan_id == id => c.step,
                    Ok(_) => continue,
                    // Missed some: the snapshot below catches up.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let event = {
                    let state = shared.state();
                    let Some(exec) = state.plans.get(&id) else {
                        return;
                    };
                    pb::PlanEvent {
                        summary: Some(convert::summary_to_pb(exec)),
                        step: step.and_then(|k| {
                            Some(convert::step_to_pb(
                                exec,
                                exec.plan.steps.get(k)?,
                                exec.steps.get(k)?,
                            ))
                        }),
                        view: None,
                    }
                };
                let finished = done(&event);
                let old = r
                    .after_revision
                    .zip(event.summary.as_ref())
                    .is_some_and(|(seen, s)| s.revision <= seen);
                if old {
                    // This replica is still catching up to what the client saw.
                    if finished {
                        return;
                    }
                    continue;
                }
                if tx.send(Ok(event)).await.is_err() || finished {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
