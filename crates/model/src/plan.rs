//! A migration plan as data: its steps, waves and what it left out, and the
//! hash of the state it was made from. The planner (`edgeplan-plan`) makes
//! one; the executor, the verifier and the API read one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::instance::Instance;
use crate::kpi::Kpis;
use crate::placement::Placement;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Make-before-break move: the replica runs at both ends until cut-over.
    Migrate,
    /// First hop of a move through a staging site.
    Stage,
    /// Start a replica (a new one, or the second half of break-before-make).
    Start,
    /// Stop a replica (surplus, or the first half of break-before-make).
    Stop,
    /// Stop a spot replica with notice: the provisioner is given
    /// `notice_s` before it must be gone, and its room counts free only
    /// once the step has succeeded, never before the notice has passed.
    Evict,
}

/// One action for the provisioner: one replica of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub id: usize,
    pub workload: String,
    pub kind: StepKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub wave: usize,
    /// Steps that must have succeeded first (they free its space, or are its first half).
    pub depends_on: Vec<usize>,
    pub state_gib: f64,
    /// Network links crossed (indices into `network.links`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<usize>,
    pub duration_s: f64,
    pub start_s: f64,
    /// An eviction's notice, seconds (0 for every other step).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notice_s: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Wave {
    pub index: usize,
    pub steps: Vec<usize>,
    pub start_s: f64,
    pub duration_s: f64,
}

/// A move of the target that the plan could not make safely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Blocked {
    pub workload: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub reason: String,
}

/// A migration plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// Hash of the instance the plan was made from (see [`state_hash`]).
    pub state_hash: String,
    pub target: Placement,
    pub steps: Vec<Step>,
    pub waves: Vec<Wave>,
    pub makespan_s: f64,
    /// Moves of the target left out, and why.
    pub blocked: Vec<Blocked>,
    /// Where the plan ends (the target, unless something is blocked).
    pub reached: Placement,
    pub kpis_before: Kpis,
    pub kpis_after: Kpis,
}

impl Plan {
    pub fn reaches_target(&self) -> bool {
        self.blocked.is_empty()
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let b = &self.kpis_before;
        let a = &self.kpis_after;
        let mut s = format!(
            "plan: {} steps in {} waves, makespan {:.0} s{}\n",
            self.steps.len(),
            self.waves.len(),
            self.makespan_s,
            if self.blocked.is_empty() {
                String::new()
            } else {
                format!(", {} move(s) blocked", self.blocked.len())
            }
        );
        s.push_str(&format!(
            "  energy {:.3} → {:.3} /h · carbon {:.2} → {:.2} kg/h · latency {:.1} → {:.1} ms · SLO violations {} → {}\n",
            b.energy_cost_per_h,
            a.energy_cost_per_h,
            b.carbon_kg_per_h,
            a.carbon_kg_per_h,
            b.mean_latency_ms,
            a.mean_latency_ms,
            b.slo_violations,
            a.slo_violations
        ));
        s.push_str(&format!(
            "  min inlet headroom {:.1} → {:.1} °C · max power use {:.0} % → {:.0} % · unplaced {} → {}\n",
            b.min_inlet_headroom_c,
            a.min_inlet_headroom_c,
            b.max_power_use * 100.0,
            a.max_power_use * 100.0,
            b.unplaced_replicas,
            a.unplaced_replicas
        ));
        for w in self.waves.iter().take(6) {
            s.push_str(&format!(
                "  wave {}: {} steps, {:.0} s from t = {:.0} s\n",
                w.index,
                w.steps.len(),
                w.duration_s,
                w.start_s
            ));
        }
        if self.waves.len() > 6 {
            s.push_str(&format!("  … {} more waves\n", self.waves.len() - 6));
        }
        for b in self.blocked.iter().take(5) {
            s.push_str(&format!("  blocked: {} — {}\n", b.workload, b.reason));
        }
        s
    }
}

/// A stable hash (FNV-1a, 64 bit) of the instance's canonical JSON: plans
/// record it so a changed state is noticed.
pub fn state_hash(instance: &Instance) -> String {
    let text = serde_json::to_string(instance).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
