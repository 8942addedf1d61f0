//! A plan's life: the state machine of a plan and its steps, which steps may
//! start now (dependencies met, within the plan's concurrency limits), and
//! what a succeeded step does to the fleet's current placement. The service's
//! dispatcher drives it and stores it; nothing here does I/O. Pure.
//!
//! Plan: recommended → approved → executing → succeeded | failed, and
//! cancelled (through cancelling while steps still run) or superseded on the
//! way. Step: pending → running → succeeded | failed, pending → skipped, or
//! pending → failed when its precondition no longer holds. A plan is never
//! succeeded with a failed step: one failure holds every step not yet
//! started, and once the running ones have finished the plan is failed.
//!
//! The start rule is the planner's invariant: a step of wave k starts only
//! once every step of the waves before k has succeeded or been skipped (a
//! wave barrier). The planner proved each wave safe with every step of it
//! holding both ends and every earlier wave done, so any timing the
//! provisioner produces stays inside a state it checked. A skipped step
//! never releases its source, so the arrivals of later waves at that source
//! (which may have counted on the room), and the later arrivals of the same
//! workload (which may have counted on it leaving a failure domain), are
//! skipped with it.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Step, StepKind};
use edgeplan_model::instance::{Limits, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    Recommended,
    Approved,
    Executing,
    Succeeded,
    Failed,
    Cancelled,
    Superseded,
    /// Cancelled while steps run: nothing new starts; `cancelled` once the
    /// running steps have reported, so watchers see every outcome.
    Cancelling,
}

impl PlanState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PlanState::Succeeded | PlanState::Failed | PlanState::Cancelled | PlanState::Superseded
        )
    }
}

impl fmt::Display for PlanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

/// A step's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    pub state: StepState,
    /// Calls made to the provisioner for this step.
    pub attempts: u32,
    /// The provisioner's last word, or why the step was skipped or failed.
    #[serde(default)]
    pub message: String,
    /// Unix seconds it was last sent to the provisioner, and its outcome
    /// stored; 0 until then (the shell's clock: set by the dispatcher).
    #[serde(default)]
    pub started_unix_s: f64,
    #[serde(default)]
    pub ended_unix_s: f64,
}

/// A stored plan and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: u64,
    pub state: PlanState,
    pub plan: Plan,
    pub steps: Vec<StepStatus>,
    /// Why the plan was made.
    pub reason: String,
    /// Inventory version the plan was made from.
    pub inventory_version: u64,
    /// Why the plan failed, when it did.
    #[serde(default)]
    pub error: String,
    /// The caller's request id and a digest of its request, when the plan
    /// was made for one: a retried request finds its plan instead of
    /// making another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestKey>,
    /// Changes made to the plan so far: every transition raises it by one,
    /// so watchers order events and resume from the last one they saw.
    #[serde(default)]
    pub revision: u64,
    /// Unix seconds the plan was stored, and its last change stored (the
    /// shell's clock; 0 in plans from before they were kept).
    #[serde(default)]
    pub created_unix_s: f64,
    #[serde(default)]
    pub updated_unix_s: f64,
}

/// A client's idempotency key for a request, with a digest of what it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestKey {
    pub id: String,
    pub digest: String,
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransitionError {
    #[error("plan {plan} is {state}; cannot {action}")]
    Plan {
        plan: u64,
        state: PlanState,
        action: &'static str,
    },
    #[error(
        "plan {plan} was made from inventory version {made_at}; the inventory is at version \
         {now} and the plan does not hold there: {why}"
    )]
    Stale {
        plan: u64,
        made_at: u64,
        now: u64,
        why: String,
    },
    #[error("plan {plan} has no step {step}")]
    UnknownStep { plan: u64, step: usize },
    #[error("step {step} of plan {plan} is {state:?}; cannot {action}")]
    Step {
        plan: u64,
        step: usize,
        state: StepState,
        action: &'static str,
    },
    #[error(
        "step {step} of plan {plan} evicts with {notice_s} s notice: it cannot succeed {left_s:.1} s before its notice has passed"
    )]
    NoticeNotPassed {
        plan: u64,
        step: usize,
        notice_s: f64,
        left_s: f64,
    },
}

impl Execution {
    pub fn new(id: u64, plan: Plan, reason: String, inventory_version: u64) -> Execution {
        let steps = plan
            .steps
            .iter()
            .map(|_| StepStatus {
                state: StepState::Pending,
                attempts: 0,
                message: String::new(),
                started_unix_s: 0.0,
                ended_unix_s: 0.0,
            })
            .collect();
        Execution {
            id,
            state: PlanState::Recommended,
            plan,
            steps,
            reason,
            inventory_version,
            error: String::new(),
            request: None,
            revision: 0,
            created_unix_s: 0.0,
            updated_unix_s: 0.0,
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError::Plan {
            plan: self.id,
            state: self.state,
            action,
        }
    }

    /// The step exists and is in `state`, or the refusal of `action`.
    fn expect(
        &self,
        step: usize,
        state: StepState,
        action: &'static str,
    ) -> Result<(), TransitionError> {
        let status = self.status(step)?;
        if status.state != state {
            return Err(TransitionError::Step {
                plan: self.id,
                step,
                state: status.state,
                action,
            });
        }
        Ok(())
    }

    fn status(&self, step: usize) -> Result<&StepStatus, TransitionError> {
        self.steps.get(step).ok_or(TransitionError::UnknownStep {
            plan: self.id,
            step,
        })
    }

    pub fn approve(&mut self) -> Result<(), TransitionError> {
        if self.state != PlanState::Recommended {
            return Err(self.refuse("approve"));
        }
        self.state = PlanState::Approved;
        self.settle();
        self.revision += 1;
        Ok(())
    }

    /// Approve a plan while the inventory is at `now`: a plan made from an
    /// older version is refused unless `reverify` — the plan checked against
    /// the current state — says it still holds.
    pub fn approve_at(
        &mut self,
        now: u64,
        reverify: impl FnOnce(&Plan) -> Result<(), String>,
    ) -> Result<(), TransitionError> {
        if self.state != PlanState::Recommended {
            return Err(self.refuse("approve"));
        }
        if self.inventory_version != now {
            reverify(&self.plan).map_err(|why| TransitionError::Stale {
                plan: self.id,
                made_at: self.inventory_version,
                now,
                why,
            })?;
        }
        self.approve()
    }

    /// A newer plan replaces this one before it started.
    pub fn supersede(&mut self) -> Result<(), TransitionError> {
        if !matches!(self.state, PlanState::Recommended | PlanState::Approved) {
            return Err(self.refuse("supersede"));
        }
        self.state = PlanState::Superseded;
        self.revision += 1;
        Ok(())
    }

    /// Nothing new starts; running steps still report their outcome, and
    /// the plan is `cancelling` until they have.
    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        if self.state.is_terminal() || self.state == PlanState::Cancelling {
            return Err(self.refuse("cancel"));
        }
        self.state = if self.steps.iter().any(|s| s.state == StepState::Running) {
            PlanState::Cancelling
        } else {
            PlanState::Cancelled
        };
        self.revision += 1;
        Ok(())
    }

    /// Skip a pending step and, since they rely on it, every pending step
    /// that depends on it (transitively): its declared dependents, every
    /// arrival of a later wave at the site it would have left (the planner
    /// may have counted on that room), and every later arrival of the same
    /// workload (it may have counted on that replica leaving its failure
    /// domain). Returns the steps skipped.
    pub fn skip(&mut self, step: usize) -> Result<Vec<usize>, TransitionError> {
        if self.state.is_terminal() || self.state == PlanState::Cancelling {
            return Err(self.refuse("skip a step"));
        }
        self.expect(step, StepState::Pending, "skip")?;
        // Who may rely on a step: those naming it, and the arrivals (by
        // site, and by workload) that a later wave's check counted on it for.
        let plan = &self.plan.steps;
        let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut into_site: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut of_workload: HashMap<&str, Vec<usize>> = HashMap::new();
        for s in plan {
            for &d in &s.depends_on {
                dependents.entry(d).or_default().push(s.id);
            }
            if let Some(to) = s.to.as_deref() {
                into_site.entry(to).or_default().push(s.id);
                of_workload
                    .entry(s.workload.as_str())
                    .or_default()
                    .push(s.id);
            }
        }
        let none: &[usize] = &[];
        let mut skipped = Vec::new();
        let mut stack = vec![(step, String::from("skipped by the operator"))];
        while let Some((k, why)) = stack.pop() {
            let Some(st) = self.steps.get_mut(k) else {
                continue;
            };
            if st.state != StepState::Pending {
                continue;
            }
            st.state = StepState::Skipped;
            st.message = why;
            skipped.push(k);
            let Some(s) = plan.get(k) else {
                continue;
            };
            let named = dependents.get(&k).map_or(none, Vec::as_slice);
            // The replica stays at `from`: later arrivals there may have
            // counted on its room, later arrivals of its workload on its
            // leaving (spread across failure domains).
            let (at_site, same_workload) = match s.from.as_deref() {
                Some(from) => (
                    into_site.get(from).map_or(none, Vec::as_slice),
                    of_workload
                        .get(s.workload.as_str())
                        .map_or(none, Vec::as_slice),
                ),
                None => (none, none),
            };
            let later = at_site
                .iter()
                .chain(same_workload)
                .filter(|&&j| plan.get(j).is_some_and(|o| o.wave > s.wave));
            for &d in named.iter().chain(later) {
                stack.push((d, format!("depends on skipped step {k}")));
            }
        }
        skipped.sort_unstable();
        self.settle();
        self.revision += 1;
        Ok(skipped)
    }

    /// The wave in progress: the lowest wave with a step pending or running.
    pub fn open_wave(&self) -> Option<usize> {
        self.plan
            .steps
            .iter()
            .zip(&self.steps)
            .filter(|(_, s)| matches!(s.state, StepState::Pending | StepState::Running))
            .map(|(step, _)| step.wave)
            .min()
    }

    /// Steps that may start now, in id order: pending, in the open wave
    /// (every earlier wave done: the barrier), every dependency succeeded,
    /// no step of the plan failed, and within the fleet-wide and per-site
    /// concurrency limits counting the running ones.
    pub fn ready(&self, limits: &Limits) -> Vec<usize> {
        if !matches!(self.state, PlanState::Approved | PlanState::Executing)
            || self.steps.iter().any(|s| s.state == StepState::Failed)
        {
            return Vec::new();
        }
        let Some(open) = self.open_wave() else {
            return Vec::new();
        };
        let mut in_flight = 0u32;
        let mut arriving: HashMap<&str, u32> = HashMap::new();
        let mut leaving: HashMap<&str, u32> = HashMap::new();
        fn count<'a>(
            step: &'a Step,
            arriving: &mut HashMap<&'a str, u32>,
            leaving: &mut HashMap<&'a str, u32>,
        ) {
            if let Some(to) = step.to.as_deref() {
                *arriving.entry(to).or_insert(0) += 1;
            }
            if let Some(from) = step.from.as_deref() {
                *leaving.entry(from).or_insert(0) += 1;
            }
        }
        for (step, status) in self.plan.steps.iter().zip(&self.steps) {
            if status.state == StepState::Running {
                in_flight += 1;
                count(step, &mut arriving, &mut leaving);
            }
        }
        let order: Vec<usize> = (0..self.steps.len())
            .filter(|&k| {
                self.steps[k].state == StepState::Pending && self.plan.steps[k].wave == open
            })
            .collect();
        let mut ready = Vec::new();
        for k in order {
            if in_flight >= limits.max_in_flight.max(1) {
                break;
            }
            let step = &self.plan.steps[k];
            let deps_met = step.depends_on.iter().all(|&d| {
                self.steps
                    .get(d)
                    .is_some_and(|s| s.state == StepState::Succeeded)
            });
            let site_room = step.to.as_deref().is_none_or(|to| {
                arriving.get(to).copied().unwrap_or(0) < limits.max_in_per_site.max(1)
            }) && step.from.as_deref().is_none_or(|from| {
                leaving.get(from).copied().unwrap_or(0) < limits.max_out_per_site.max(1)
            });
            if deps_met && site_room {
                in_flight += 1;
                count(step, &mut arriving, &mut leaving);
                ready.push(k);
            }
        }
        ready
    }

    /// The dispatcher is about to call the provisioner for `step`.
    pub fn start(&mut self, step: usize) -> Result<(), TransitionError> {
        if !matches!(self.state, PlanState::Approved | PlanState::Executing) {
            return Err(self.refuse("start a step"));
        }
        self.expect(step, StepState::Pending, "start")?;
        self.state = PlanState::Executing;
        let st = &mut self.steps[step];
        st.state = StepState::Running;
        st.attempts += 1;
        self.revision += 1;
        Ok(())
    }

    /// A pending step whose precondition no longer holds (the replica is not
    /// where the step says, or its target has no room left): it fails
    /// without a call, which holds the rest of the plan as any failure does.
    pub fn fail_precondition(
        &mut self,
        step: usize,
        reason: String,
    ) -> Result<(), TransitionError> {
        if !matches!(self.state, PlanState::Approved | PlanState::Executing) {
            return Err(self.refuse("start a step"));
        }
        self.expect(step, StepState::Pending, "start")?;
        self.state = PlanState::Executing;
        let st = &mut self.steps[step];
        st.state = StepState::Failed;
        st.message = format!("precondition failed: {reason}");
        if self.error.is_empty() {
            self.error = format!(
                "step {step} ({}) was not started: {reason}",
                describe(&self.plan.steps[step])
            );
        }
        self.settle();
        self.revision += 1;
        Ok(())
    }

    /// One more call for a running step (a retry, or a resend after a restart).
    pub fn retry(&mut self, step: usize) -> Result<(), TransitionError> {
        self.expect(step, StepState::Running, "retry")?;
        self.steps[step].attempts += 1;
        self.revision += 1;
        Ok(())
    }

    /// When a running eviction's notice ends (Unix seconds, notice scaled
    /// by `time_scale` as step durations are): its success is not recorded
    /// before. `None` for every other step.
    pub fn notice_ends_unix_s(&self, step: usize, time_scale: f64) -> Option<f64> {
        let s = self.plan.steps.get(step)?;
        (s.kind == StepKind::Evict)
            .then(|| self.steps[step].started_unix_s + s.notice_s * time_scale.max(0.0))
    }

    /// [`finish`](Self::finish) at `now_unix_s`: an eviction's success
    /// before its notice has passed is refused (its replica still holds its
    /// room until then, whatever the provisioner says).
    pub fn finish_at(
        &mut self,
        step: usize,
        succeeded: bool,
        message: String,
        now_unix_s: f64,
        time_scale: f64,
    ) -> Result<(), TransitionError> {
        if succeeded {
            if let Some(ends) = self.notice_ends_unix_s(step, time_scale) {
                if now_unix_s < ends {
                    return Err(TransitionError::NoticeNotPassed {
                        plan: self.id,
                        step,
                        notice_s: self.plan.steps[step].notice_s,
                        left_s: ends - now_unix_s,
                    });
                }
            }
        }
        self.finish(step, succeeded, message)
    }

    /// The provisioner's outcome for a running step.
    pub fn finish(
        &mut self,
        step: usize,
        succeeded: bool,
        message: String,
    ) -> Result<(), TransitionError> {
        self.expect(step, StepState::Running, "finish")?;
        let st = &mut self.steps[step];
        st.state = if succeeded {
            StepState::Succeeded
        } else {
            StepState::Failed
        };
        st.message = message;
        if !succeeded && self.error.is_empty() {
            self.error = format!(
                "step {step} ({}) failed: {}",
                describe(&self.plan.steps[step]),
                st.message
            );
        }
        self.settle();
        self.revision += 1;
        Ok(())
    }

    /// Derive the plan's state from its steps once nothing is running.
    fn settle(&mut self) {
        if self.steps.iter().any(|s| s.state == StepState::Running) {
            return;
        }
        if self.state == PlanState::Cancelling {
            self.state = PlanState::Cancelled;
            return;
        }
        if !matches!(self.state, PlanState::Approved | PlanState::Executing) {
            return;
        }
        if self.steps.iter().any(|s| s.state == StepState::Failed) {
            self.state = PlanState::Failed;
        } else if self
            .steps
            .iter()
            .all(|s| matches!(s.state, StepState::Succeeded | StepState::Skipped))
        {
            self.state = PlanState::Succeeded;
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&k| self.steps[k].state == StepState::Running)
            .collect()
    }

    pub fn count(&self, state: StepState) -> usize {
        self.steps.iter().filter(|s| s.state == state).count()
    }

    /// The key a provisioner dedupes on: stable across retries and restarts,
    /// distinct across plans and fleets.
    pub fn idempotency_key(&self, step: usize) -> String {
        format!("{}/{}/{}", self.id, step, self.plan.state_hash)
    }
}

/// One step in words.
pub fn describe(step: &Step) -> String {
    let from = step.from.as_deref().unwrap_or("-");
    let to = step.to.as_deref().unwrap_or("-");
    let kind = match step.kind {
        StepKind::Migrate => "migrate",
        StepKind::Stage => "stage",
        StepKind::Start => "start",
        StepKind::Stop => "stop",
        StepKind::Evict => "evict",
    };
    format!("{kind} {} {from} → {to}", step.workload)
}

/// What a succeeded step did to where the workload's replicas run: one
/// replica leaves `from` and arrives at `to`. Returns a note when the
/// workload did not have the replica the step moved (the fleet drifted from
/// the plan); the count then stays at zero rather than going negative.
pub fn apply_step(w: &mut Workload, step: &Step) -> Option<String> {
    let mut note = None;
    if let Some(from) = step.from.as_deref() {
        match w.current.get_mut(from) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    w.current.remove(from);
                }
            }
            _ => {
                note = Some(format!(
                    "{} had no replica at {from} to move; the fleet drifted from the plan",
                    step.workload
                ))
            }
        }
    }
    if let Some(to) = step.to.as_deref() {
        *w.current.entry(to.to_string()).or_insert(0) += 1;
    }
    note
}
