//! From a target placement to what the provisioner does: the migration
//! planner (safe waves), the executor's state machine, and the words that
//! explain a placement and a plan. Pure.

pub mod execution;
pub mod explain;
pub mod plan;
