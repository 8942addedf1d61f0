//! The result of a solve as users read it: the placement with its objective
//! terms, bound and gap, per-site KPIs, explanations; JSON for machines and a
//! short summary for people. Assembles values computed elsewhere.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::placement::Placement;
use edgeplan_plan::explain::{self, SiteBinding, UnplacedExplanation};
use edgeplan_problem::evaluate::SiteKpi;
use edgeplan_problem::problem::{ObjectiveTerms, Problem};
use edgeplan_solve::solver::{Method, SolveStatus, Solved};

/// What `edgeplan solve` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SolveReport {
    pub instance: String,
    pub status: SolveStatus,
    /// The method that produced the placement.
    pub method: Method,
    #[serde(flatten)]
    pub placement: Placement,
    pub objective: ObjectiveTerms,
    /// Proven lower bound on the whole objective (unplaced penalty included).
    pub bound: f64,
    /// The cost of what is placed: the objective less the unplaced penalty.
    pub placed_cost: f64,
    /// `bound` less this placement's unplaced penalty: a lower bound on the
    /// placed cost of every placement that leaves no more penalty unplaced
    /// than this one (not of placements that leave more unplaced).
    pub placed_cost_bound: f64,
    /// (placed_cost − placed_cost_bound) / placed_cost, i.e. (objective −
    /// bound) / placed_cost: the gap the target (`--gap`) applies to.
    pub gap: f64,
    pub moves: u64,
    pub unplaced_replicas: u64,
    /// Replicas no placement can place (`solver::proven_unplaced`): a proven
    /// lower bound on `unplaced_replicas`.
    pub unplaced_lower_bound: u64,
    pub sites: Vec<SiteKpi>,
    pub binding: Vec<SiteBinding>,
    pub unplaced: Vec<UnplacedExplanation>,
}

impl SolveReport {
    pub fn new(problem: &Problem, solved: &Solved) -> SolveReport {
        Self::explained(problem, solved, explain::Detail::WithinReach)
    }

    /// [`SolveReport::new`], with the unplaced explanations' detail chosen.
    pub fn explained(problem: &Problem, solved: &Solved, detail: explain::Detail) -> SolveReport {
        let eval = problem.evaluate(&solved.x);
        let o = &eval.objective;
        let bound = solved.bound.min(o.total);
        SolveReport {
            instance: problem.name.clone(),
            status: solved.status,
            method: solved.method,
            placement: problem.placement_of(&solved.x),
            bound,
            placed_cost: o.total - o.unplaced,
            placed_cost_bound: bound - o.unplaced,
            // With spot work, the on-demand solve's gap: over a placed cost
            // grown by spot replicas (placed by rule) it would look smaller.
            gap: match &solved.market {
                Some(_) => solved.gap,
                None => edgeplan_problem::gap::placed_gap(o.total, bound, o.unplaced),
            },
            moves: eval.moves,
            unplaced_replicas: eval.unplaced_replicas,
            unplaced_lower_bound: edgeplan_solve::solver::proven_unplaced(problem),
            objective: eval.objective,
            sites: eval.sites,
            binding: explain::binding(problem, &solved.x),
            unplaced: explain::unplaced_with(problem, &solved.x, detail),
        }
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let placed: u32 = self
            .placement
            .assignments
            .values()
            .flat_map(|m| m.values())
            .sum();
        let o = &self.objective;
        let mut s = format!(
            "{}: {:?} ({:?}), placed cost {:.4}/h (bound {:.4}, gap {:.3} %), objective {:.4}/h\n  energy {:.4} · carbon {:.4} · latency {:.4} · migration {:.4} · thermal {:.4} · unplaced {:.1}\n  {} replicas placed, {} unplaced ({} proven unplaceable), {} moves\n",
            if self.instance.is_empty() { "instance" } else { &self.instance },
            self.status,
            self.method,
            self.placed_cost,
            self.placed_cost_bound,
            self.gap * 100.0,
            o.total,
            o.energy,
            o.carbon,
            o.latency,
            o.migration,
            o.thermal,
            o.unplaced,
            placed,
            self.unplaced_replicas,
            self.unplaced_lower_bound,
            self.moves
        );
        let hot: Vec<String> = self
            .binding
            .iter()
            .filter(|b| !b.binding.is_empty())
            .take(8)
            .map(|b| format!("{} ({})", b.site, b.binding.join(", ")))
            .collect();
        if !hot.is_empty() {
            s.push_str(&format!("  binding: {}\n", hot.join("; ")));
        }
        for u in self.unplaced.iter().take(5) {
            s.push_str(&format!("  {}\n", u.text));
        }
        if self.unplaced.len() > 5 {
            s.push_str(&format!(
                "  … and {} more workloads with unplaced replicas\n",
                self.unplaced.len() - 5
            ));
        }
        s
    }
}
