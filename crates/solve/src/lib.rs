//! The solvers: the MILP (HiGHS), the fast path (priced greedy, ejection
//! chains, neighbourhood search) and its incremental re-planner, and the
//! front that picks a method by size. Pure: a deadline and a work budget
//! come in as values.

pub mod fast;
pub mod highs_run;
pub mod limit;
pub mod milp;
pub mod repair;
pub mod solver;
pub mod spot;
