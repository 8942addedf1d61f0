//! When a search stops: the one budget every solver stage checks.

use std::cell::Cell;
use std::time::Duration;

use edgeplan_model::clock::Deadline;

/// When a search stops: a wall-clock deadline, a work budget, or both,
/// whichever runs out first. Work is counted in units that do not depend
/// on the machine (about one candidate slot looked at: a Lagrangian
/// iteration or a greedy construction costs the number of candidate pairs,
/// a local-search visit of a workload its candidates, one ejection trial
/// one unit), so a search stopped by its budget alone is deterministic.
#[derive(Debug)]
pub struct Limit {
    deadline: Deadline,
    budget: u64,
    spent: Cell<u64>,
}

impl Limit {
    /// `Deadline::NONE` and `None`: no such limit.
    pub fn new(deadline: Deadline, work: Option<u64>) -> Limit {
        Limit {
            deadline,
            budget: work.unwrap_or(u64::MAX),
            spent: Cell::new(0),
        }
    }

    /// No limit at all (loading a placement, which always ends).
    pub fn none() -> Limit {
        Limit::new(Deadline::NONE, None)
    }

    pub fn spend(&self, units: u64) {
        self.spent.set(self.spent.get().saturating_add(units));
    }

    /// Work spent so far.
    pub fn spent(&self) -> u64 {
        self.spent.get()
    }

    /// Whether the budget is spent or the deadline passed.
    pub fn out(&self) -> bool {
        self.spent.get() >= self.budget || self.deadline.reached()
    }

    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Work left, when there is a budget.
    pub fn left(&self) -> Option<u64> {
        (self.budget != u64::MAX).then(|| self.budget.saturating_sub(self.spent.get()))
    }

    /// Whether `units` more work taking `took` still fit.
    pub fn affords(&self, units: u64, took: Duration) -> bool {
        self.spent.get().saturating_add(units) < self.budget && self.deadline.has_room_for(took)
    }
}
