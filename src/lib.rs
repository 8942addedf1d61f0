//! edgeplan: workload-aware placement across fleets of micro data centers.
//!
//! Pure core (values in, values out): [`instance`], [`validate`],
//! [`server_models`], [`topology`], [`physics`], [`problem`], [`milp`],
//! [`solver`], [`explain`], [`plan`], [`verify`], [`gen`], [`telemetry`],
//! [`forecast`], [`effective`]. The binary's CLI is the shell.

pub mod effective;
pub mod error;
pub mod explain;
pub mod forecast;
pub mod gen;
pub mod instance;
pub mod milp;
pub mod physics;
pub mod placement;
pub mod plan;
pub mod problem;
pub mod report;
pub mod server_models;
pub mod solver;
pub mod telemetry;
pub mod topology;
pub mod validate;
pub mod verify;

pub use error::{Error, Result};
