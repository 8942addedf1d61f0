//! The model: what a fleet and its workloads are (the instance file and its
//! types), the server power curves, a placement, a plan as data, the
//! figures reported about a placement, and the errors every crate shares.
//! Values only: no solver, no I/O beyond parsing text handed in.

pub mod accelerator_models;
pub mod clock;
pub mod error;
pub mod instance;
pub mod kpi;
pub mod placement;
pub mod plan;
pub mod server_models;
pub mod settings;

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
