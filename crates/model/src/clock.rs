//! The one clock the pure core may read: a monotonic deadline that stops a
//! search, and a stopwatch that says how long one took. Everything else in
//! the core is values in, values out — no wall clock, no time of day (the
//! telemetry's "now" is a value passed in), so a search bounded by a work
//! budget alone never reads this module to decide anything and is
//! reproducible. `crates/clippy.toml` forbids `Instant::now` and
//! `SystemTime::now` in the core; this module is the allowed exception.

use std::time::{Duration, Instant};

/// When a search must stop; `Deadline::NONE` for never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub const NONE: Deadline = Deadline(None);

    /// `seconds` from now (a user's number: clamped by [`crate::duration_s`]).
    pub fn after_s(seconds: f64) -> Deadline {
        Deadline::after(crate::duration_s(seconds))
    }

    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn after(d: Duration) -> Deadline {
        Deadline(Some(Instant::now() + d))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether it has passed (never, for `NONE`).
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn reached(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() > d)
    }

    /// Whether something taking `took`, started now, ends before it.
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn has_room_for(&self, took: Duration) -> bool {
        self.0.is_none_or(|d| Instant::now() + took < d)
    }

    /// Time left (`None` for no deadline).
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// How long something took, from when it started.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    pub fn elapsed_s(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    /// The deadline `seconds` after the start (clamped like `after_s`).
    pub fn deadline_at_s(&self, seconds: f64) -> Deadline {
        Deadline(Some(self.0 + crate::duration_s(seconds)))
    }
}
