//! Continuous mode: assess the fleet every `interval_s` (and when telemetry,
//! inventory or a plan's end wakes it); when an alarm rises (see
//! [`edgeplan_telemetry::alarm`]) or a plan failed, plan again from the actual state,
//! at most once per `min_interval_s`. Nothing happens while a plan is
//! approved or executing: its steps are still changing the placement.

use edgeplan_model::clock::Deadline;
use std::collections::HashSet;
use std::sync::Arc;

use super::errors::{self, Reason};
use super::placement::{propose_from, solve_view, Intent};
use super::view::View;
use super::{now_s, Shared};
use edgeplan_model::instance::Instance;
use edgeplan_plan::execution::PlanState;
use edgeplan_solve::fast::{diff, Replanner, DEFAULT_REPLAN_TIME_LIMIT};
use edgeplan_solve::solver::{SolveOptions, SolveStatus, Solved};
use edgeplan_solve::spot;
use edgeplan_telemetry::alarm::{Alarms, Thresholds};
use tonic::Status;

/// What continuous mode remembers between ticks.
struct Memory {
    alarms: Alarms,
    last_plan_s: f64,
    /// Why a re-plan is due but waiting for the rate limit.
    pending: Vec<String>,
    /// Failed plans already answered with a new plan.
    failures_seen: HashSet<u64>,
    /// Inventory version last checked for a cheaper placement.
    version_seen: u64,
    /// The last answer, kept for incremental re-plans, with the effective
    /// instance it answers (without spot workloads) and, with spot work,
    /// the multipliers its prices came from.
    kept: Option<(Instance, Replanner, Vec<f64>)>,
}

pub async fn run(shared: Arc<Shared>) {
    let cfg = shared.config.continuous.clone();
    if !cfg.enabled {
        return;
    }
    let fresh = |shared: &Shared| {
        let state = shared.state();
        Memory {
            alarms: Alarms::default(),
            last_plan_s: f64::NEG_INFINITY,
            pending: Vec::new(),
            failures_seen: state
                .plans
                .values()
                .filter(|e| e.state == PlanState::Failed)
                .map(|e| e.id)
                .collect(),
            version_seen: state.version,
            kept: None,
        }
    };
    let mut memory = Some(fresh(&shared));
    let interval = edgeplan_model::duration_s(cfg.interval_s.max(0.1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.replan_wake.notified() => {}
        }
        let s = shared.clone();
        let mut m = memory.take().unwrap_or_else(|| fresh(&shared));
        memory = match tokio::task::spawn_blocking(move || {
            tick(&s, &mut m);
            m
        })
        .await
        {
            Ok(m) => Some(m),
            Err(e) => {
                // Keep watching; the alarms start afresh.
                tracing::error!("continuous mode: assessment failed: {e}");
                None
            }
        };
    }
}

fn tick(shared: &Shared, m: &mut Memory) {
    let cfg = &shared.config.continuous;
    if !shared.cluster.is_leader() {
        return; // the leader re-plans (cluster mode)
    }
    let (busy, failed) = {
        let state = shared.state();
        let busy = state.plans.values().any(|e| {
            matches!(
                e.state,
                PlanState::Approved | PlanState::Executing | PlanState::Cancelling
            )
        });
        let failed: Vec<(u64, String)> = state
            .plans
            .values()
            .filter(|e| e.state == PlanState::Failed && !m.failures_seen.contains(&e.id))
            .map(|e| (e.id, e.error.clone()))
            .collect();
        (busy, failed)
    };
    if busy {
        return;
    }
    for (id, error) in failed {
        m.failures_seen.insert(id);
        if cfg.replan_on_failure {
            m.pending.push(format!("plan {id} failed ({error})"));
        }
    }
    let view = match View::now(shared) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("continuous mode: nothing to assess: {}", e.message());
            return;
        }
    };
    for k in &view.eval.sites {
        tracing::trace!(
            site = %k.site,
            it_kw = k.it_kw,
            it_limit_kw = k.it_limit_kw,
            inlet_headroom_c = k.inlet_limit_c - k.inlet_c,
            ambient_c = k.ambient_c,
            "continuous: site"
        );
    }
    let thresholds = Thresholds {
        min_inlet_headroom_c: cfg.min_inlet_headroom_c,
        inlet_hysteresis_c: cfg.inlet_hysteresis_c,
        max_power_use: cfg.max_power_use,
        power_hysteresis: cfg.power_hysteresis,
        slo: cfg.slo,
    };
    for alarm in m
        .alarms
        .update(&view.eval.sites, view.kpis.slo_violations, &thresholds)
    {
        tracing::info!("alarm: {}", alarm.text);
        m.pending.push(alarm.text);
    }
    let options = SolveOptions {
        deadline: Deadline::after_s(shared.config.solve_time_limit_s),
        ..SolveOptions::default()
    };
    // One solve per tick at most: the gain check's answer is also the plan's.
    let mut solved = None;
    if cfg.min_gain > 0.0 && view.version != m.version_seen {
        m.version_seen = view.version;
        match solve_view(&shared.metrics, &view, &options) {
            Ok(s) => {
                m.keep(&view, &s, cfg.incremental);
                if let Some(why) = cheaper(cfg.min_gain, &view, &s) {
                    tracing::info!("{why}");
                    m.pending.push(why);
                }
                solved = Some(s);
            }
            Err(e) => tracing::warn!("continuous: {}", e.message()),
        }
    }
    if m.pending.is_empty() {
        return;
    }
    let now = now_s();
    if now - m.last_plan_s < cfg.min_interval_s {
        return; // rate-limited; the reasons wait
    }
    let reason = format!("continuous: {}", m.pending.join("; "));
    let mut view = view;
    let mut solved = match solved.map_or_else(
        || m.solve(&shared.metrics, &view, &options, cfg.incremental),
        Ok,
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("continuous re-plan failed: {}", e.message());
            return;
        }
    };
    for rebase in 0..=REBASES {
        let reason = if solved.status == SolveStatus::Replanned {
            format!("{reason} (re-planned incrementally)")
        } else {
            reason.clone()
        };
        match propose_from(
            shared,
            &view,
            &solved,
            Intent {
                dry_run: false,
                reason: &reason,
                auto_approve: cfg.auto_approve,
                skip_empty: true,
                request: None,
            },
        ) {
            Ok(p) => {
                match p.plan_id {
                    Some(id) => tracing::info!(plan = id, "{reason}"),
                    None => tracing::info!("nothing to move for: {reason}"),
                }
                m.pending.clear();
                m.last_plan_s = now;
                return;
            }
            // The inventory moved while solving. Solving afresh would race
            // the next move again (a livelock when moves come faster than
            // a solve); the answer is carried onto the new inventory by the
            // incremental re-planner instead, in milliseconds.
            Err(e) if rebase < REBASES && errors::has_reason(&e, Reason::VersionMismatch) => {
                let next = match View::now(shared) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!("continuous re-plan failed: {}", e.message());
                        return;
                    }
                };
                m.version_seen = next.version;
                view = next;
                solved = match m.solve(&shared.metrics, &view, &options, cfg.incremental) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("continuous re-plan failed: {}", e.message());
                        return;
                    }
                };
                tracing::debug!(
                    version = view.version,
                    "continuous: answer carried onto a newer inventory"
                );
            }
            Err(e) => {
                tracing::warn!("continuous re-plan failed: {}", e.message());
                return;
            }
        }
    }
}

/// How often a tick carries its answer onto a newer inventory before it
/// leaves the re-plan to the next tick.
const REBASES: usize = 3;

impl Memory {
    /// Keep `solved` (of `view`) for incremental re-plans.
    /// With spot workloads the replanner keeps the on-demand part (spot
    /// replicas are admitted afresh after each re-plan: `Solved::with_spot`).
    fn keep(&mut self, view: &View, solved: &Solved, incremental: bool) {
        self.kept = incremental.then(|| {
            let replanner = if view.problem.has_spot() {
                let (on_demand, kept) = spot::on_demand(&view.problem);
                let x = spot::project(&kept, &solved.x);
                Replanner::new(on_demand, &x, solved.price.clone())
            } else {
                Replanner::new(view.problem.clone(), &solved.x, solved.price.clone())
            };
            let duals = solved
                .market
                .as_ref()
                .map(|m| m.duals.clone())
                .unwrap_or_default();
            (spot::on_demand_instance(&view.effective), replanner, duals)
        });
    }

    /// Re-plan incrementally from the kept answer when what changed allows
    /// it; else solve afresh (and keep that answer).
    fn solve(
        &mut self,
        metrics: &super::metrics::Metrics,
        view: &View,
        options: &SolveOptions,
        incremental: bool,
    ) -> Result<Solved, Status> {
        if let Some((before, replanner, duals)) = self.kept.as_mut().filter(|_| incremental) {
            let now = spot::on_demand_instance(&view.effective);
            if let Some(changes) = diff(replanner.problem(), before, &now) {
                let started = std::time::Instant::now();
                match replanner.apply(&now, &changes, Deadline::after(DEFAULT_REPLAN_TIME_LIMIT)) {
                    Ok(r) => {
                        tracing::info!(
                            changes = changes.len(),
                            moved = r.moved.len(),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "continuous: incremental re-plan"
                        );
                        *before = now;
                        let mut solved = Solved::replanned(replanner.placement(), &r);
                        if view.problem.has_spot() {
                            // The last full solve's multipliers: a re-plan
                            // stays milliseconds (a fresh search for them
                            // takes seconds on a large fleet).
                            let kept = spot::on_demand_workloads(&view.problem);
                            solved = solved.with_spot_at(&view.problem, &kept, duals);
                        }
                        metrics.solved(view, &solved, started.elapsed().as_secs_f64());
                        return Ok(solved);
                    }
                    Err(e) => tracing::warn!("continuous: incremental re-plan refused: {e}"),
                }
            }
        }
        let solved = solve_view(metrics, view, options)?;
        self.keep(view, &solved, incremental);
        Ok(solved)
    }
}

/// After an inventory change: does the solved placement beat today's by
/// `min_gain` of its placed cost? Says by how much and which term moved
/// most. The placed cost, not the total: the unplaced penalty (10,000/h
/// for a few replicas no site can hold) would otherwise dwarf a saving
/// of a quarter of the energy bill. With spot workloads the costs are the
/// on-demand work's (admitted spot replicas cost energy but earn more at
/// their price); spot replicas that lose their place (past their bid, or
/// their room taken) are a reason on their own, and so is spot revenue
/// that would grow by `min_gain` of the placed cost.
fn cheaper(min_gain: f64, view: &View, solved: &Solved) -> Option<String> {
    let p = &view.problem;
    let current = p.current_placement();
    let on_demand_only = |x: &edgeplan_problem::replicas::Replicas| {
        let mut x = x.clone();
        for wi in p.workloads.indices().filter(|&wi| p.spot(wi).is_some()) {
            x[wi].clear();
        }
        p.evaluate(&x).objective
    };
    let (now, best) = if p.has_spot() {
        (on_demand_only(&current), on_demand_only(&solved.x))
    } else {
        (view.eval.objective.clone(), p.evaluate(&solved.x).objective)
    };
    let gain = now.total - best.total;
    let placed_cost = (now.total - now.unplaced).abs().max(1e-9);
    let mut reasons = Vec::new();
    if gain > 0.0 && gain >= min_gain * placed_cost {
        let terms = [
            ("energy", now.energy - best.energy),
            ("carbon", now.carbon - best.carbon),
            ("latency", now.latency - best.latency),
            ("thermal risk", now.thermal - best.thermal),
            ("unplaced", now.unplaced - best.unplaced),
        ];
        let (term, by) = terms
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .copied()
            .unwrap_or(("total", gain));
        reasons.push(format!(
            "a new placement costs {:.3}/h less ({:.1} % of the placed cost), mostly {term} ({by:.3}/h)",
            gain,
            100.0 * gain / placed_cost
        ));
    }
    if let Some(market) = solved.market.as_deref() {
        let (mut evicted, mut revenue_now) = (0, 0.0);
        for wi in p.workloads.indices().filter(|&wi| p.spot(wi).is_some()) {
            for &(si, n) in &current[wi] {
                let kept = solved.x[wi]
                    .iter()
                    .find(|(s, _)| *s == si)
                    .map_or(0, |e| e.1);
                evicted += n.saturating_sub(kept);
                let price = spot::shape_price(p, &market.sites, wi, si)
                    .map_or(0.0, |s| s.price_per_replica_hour);
                revenue_now += f64::from(n.min(kept)) * price;
            }
        }
        if evicted > 0 {
            reasons.push(format!(
                "{evicted} spot replica(s) lose their place (past their bid, or their room taken): evicted with notice"
            ));
        }
        let more = market.revenue_per_hour - revenue_now;
        if more > 0.0 && more >= min_gain * placed_cost {
            reasons.push(format!(
                "spot revenue would grow by {more:.3}/h ({} replica(s) admitted)",
                market.admitted.iter().map(|a| a.replicas).sum::<u32>()
            ));
        }
    }
    if reasons.is_empty() {
        return None;
    }
    Some(format!(
        "the inventory changed (version {}): {}",
        view.version,
        reasons.join("; ")
    ))
}
