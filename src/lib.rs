//! edgeplan: workload-aware placement across fleets of micro data centers.
//!
//! Pure core (values in, values out): [`instance`], [`validate`],
//! [`server_models`], [`topology`], [`physics`], [`problem`], [`milp`],
//! [`solver`], [`explain`], [`plan`], [`verify`], [`gen`], [`telemetry`],
//! [`forecast`], [`effective`], [`whatif`]. The shell: the binary's CLI,
//! [`archive`] and [`tables`] (Parquet / CSV / JSON files).

pub mod alarm;
pub mod api;
pub mod archive;
pub mod effective;
pub mod error;
pub mod execution;
pub mod explain;
pub mod fast;
pub mod forecast;
pub mod gap;
pub mod gen;
pub mod instance;
pub mod milp;
pub mod operator_report;
pub mod physics;
pub mod placement;
pub mod plan;
pub mod problem;
pub mod report;
pub mod server_models;
pub mod service;
pub mod settings;
pub mod solver;
pub mod tables;
pub mod telemetry;
pub mod topology;
pub mod validate;
pub mod verify;
pub mod whatif;

pub use error::{Error, Result};

/// The longest wait or time limit a user-set number of seconds turns into
/// (about 31 years): far enough to mean "no limit", near enough that
/// `Instant::now() + it` cannot overflow.
pub const MAX_DURATION_S: f64 = 1e9;

/// A user-set number of seconds as a `Duration`, clamped so that
/// `Duration::from_secs_f64` cannot panic: NaN and negatives are zero,
/// anything above [`MAX_DURATION_S`] (infinity too) is that.
pub fn duration_s(s: f64) -> std::time::Duration {
    let s = if s.is_nan() {
        0.0
    } else {
        s.clamp(0.0, MAX_DURATION_S)
    };
    std::time::Duration::from_secs_f64(s)
}
