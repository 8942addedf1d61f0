//! The indexed problem built from an instance: sites and workloads with
//! their eligible candidates, per-site limits, the room test, evaluation of
//! a placement; the validation that needs it; and the gap between an
//! objective and a bound. Pure.

pub mod build;
pub mod evaluate;
pub mod gap;
pub mod ix;
pub mod load;
pub mod problem;
pub mod replicas;
pub mod rows;
pub mod rules;
pub mod validate;
