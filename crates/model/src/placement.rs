//! A placement: how many replicas of each workload run on each site. The
//! exchange format between `solve`, `verify`, the planner and reports.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Workload id → site id → replicas. Workloads or sites absent hold none.
/// Other fields in the same JSON object (a whole `solve` output) are ignored,
/// so `verify` reads `solve`'s output directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    pub assignments: BTreeMap<String, BTreeMap<String, u32>>,
}

impl Placement {
    /// The placement an instance runs today (its workloads' `current`).
    pub fn current(instance: &crate::instance::Instance) -> Placement {
        Placement {
            assignments: instance
                .workloads
                .iter()
                .filter(|w| !w.current.is_empty())
                .map(|w| (w.id.clone(), w.current.clone()))
                .collect(),
        }
    }

    /// Replicas of `workload` on `site`.
    pub fn count(&self, workload: &str, site: &str) -> u32 {
        self.assignments
            .get(workload)
            .and_then(|m| m.get(site))
            .copied()
            .unwrap_or(0)
    }

    pub fn replicas_of(&self, workload: &str) -> u32 {
        self.assignments
            .get(workload)
            .map_or(0, |m| m.values().sum())
    }
}
