//! The one clock the pure core may read: a monotonic deadline that stops a
//! search, and a stopwatch that says how long one took. The shell makes a
//! deadline ([`Deadline::after_s`]) and hands it in as a value; the core
//! only asks whether it has passed and splits what is left between its
//! stages ([`Deadline::share`], [`Deadline::cap_s`]) — it never starts a
//! deadline of its own. Everything else in the core is values in, values
//! out — no wall clock, no time of day (the telemetry's "now" is a value
//! passed in), so a search bounded by a work budget alone never reads this
//! module to decide anything and is reproducible. `crates/clippy.toml`
//! forbids `Instant::now` and `SystemTime::now` in the core, and
//! `Deadline::after` / `after_s` there; this module is the allowed
//! exception.

use std::time::{Duration, Instant};

/// When a search must stop; `Deadline::NONE` for never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub const NONE: Deadline = Deadline(None);

    /// `seconds` from now (a user's number: clamped by [`crate::duration_s`]).
    /// For the shell: the core takes deadlines, it does not make them.
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn after_s(seconds: f64) -> Deadline {
        Deadline::after(crate::duration_s(seconds))
    }

    /// `d` from now. For the shell, like [`after_s`](Self::after_s).
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn after(d: Duration) -> Deadline {
        Deadline(Some(Instant::now() + d))
    }

    /// Already passed: a search given it returns its first answer.
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn passed() -> Deadline {
        Deadline(Some(Instant::now()))
    }

    /// The first `fraction` of the time left from now, for a stage that
    /// leaves the rest to the next (`NONE` stays `NONE`).
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn share(self, fraction: f64) -> Deadline {
        match self.0 {
            None => Deadline::NONE,
            Some(d) => {
                let now = Instant::now();
                let left = d.saturating_duration_since(now).as_secs_f64();
                Deadline(Some(
                    now + crate::duration_s(left * fraction.clamp(0.0, 1.0)),
                ))
            }
        }
    }

    /// No later than `seconds` from now (`NONE` stays `NONE`: a stage
    /// under no deadline is not given one).
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn cap_s(self, seconds: f64) -> Deadline {
        match self.0 {
            None => Deadline::NONE,
            Some(d) => Deadline(Some(d.min(Instant::now() + crate::duration_s(seconds)))),
        }
    }

    /// No sooner than `seconds` from now (`NONE` stays `NONE`): a last
    /// stage that must run at all gets that much.
    #[allow(clippy::disallowed_methods)] // the core's one clock
    pub fn at_least_s(self, seconds: f64) -> Deadline {
        match self.0 {
            None => Deadline::NONE,
            Some(d) => Deadline(Some(d.max(Instant::now() + crate::duration_s(seconds)))),
        }
    }

    /// Seconds left (`None` for no deadline).
    pub fn remaining_s(&self) -> Option<f64> {
        self.remaining().map(|d| d.as_secs_f64())
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
}
