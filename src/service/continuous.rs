//! Continuous mode: assess the fleet every `interval_s` (and when telemetry,
//! inventory or a plan's end wakes it); when an alarm rises (see
//! [`crate::alarm`]) or a plan failed, plan again from the actual state,
//! at most once per `min_interval_s`. Nothing happens while a plan is
//! approved or executing: its steps are still changing the placement.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::placement::{propose, View};
use super::{now_s, Shared};
use crate::alarm::{Alarms, Thresholds};
use crate::execution::PlanState;
use crate::solver::SolveOptions;

/// What continuous mode remembers between ticks.
struct Memory {
    alarms: Alarms,
    last_plan_s: f64,
    /// Why a re-plan is due but waiting for the rate limit.
    pending: Vec<String>,
    /// Failed plans already answered with a new plan.
    failures_seen: HashSet<u64>,
}

pub async fn run(shared: Arc<Shared>) {
    let cfg = shared.config.continuous.clone();
    if !cfg.enabled {
        return;
    }
    let failures_seen = shared
        .state()
        .plans
        .values()
        .filter(|e| e.state == PlanState::Failed)
        .map(|e| e.id)
        .collect();
    let mut memory = Some(Memory {
        alarms: Alarms::default(),
        last_plan_s: f64::NEG_INFINITY,
        pending: Vec::new(),
        failures_seen,
    });
    let interval = Duration::from_secs_f64(cfg.interval_s.max(0.1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.replan_wake.notified() => {}
        }
        let s = shared.clone();
        let Some(mut m) = memory.take() else { return };
        memory = tokio::task::spawn_blocking(move || {
            tick(&s, &mut m);
            m
        })
        .await
        .ok();
    }
}

fn tick(shared: &Shared, m: &mut Memory) {
    let cfg = &shared.config.continuous;
    let (busy, failed) = {
        let state = shared.state();
        let busy = state
            .plans
            .values()
            .any(|e| matches!(e.state, PlanState::Approved | PlanState::Executing));
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
    if m.pending.is_empty() {
        return;
    }
    let now = now_s();
    if now - m.last_plan_s < cfg.min_interval_s {
        return; // rate-limited; the reasons wait
    }
    let reason = format!("continuous: {}", m.pending.join("; "));
    let options = SolveOptions {
        time_limit_s: Some(shared.config.solve_time_limit_s),
        ..SolveOptions::default()
    };
    match propose(shared, &options, false, &reason, cfg.auto_approve) {
        Ok(p) => {
            tracing::info!(plan = ?p.plan_id, "{reason}");
            m.pending.clear();
            m.last_plan_s = now;
        }
        Err(e) => tracing::warn!("continuous re-plan failed: {}", e.message()),
    }
}
