//! A telemetry batch from the wire into the telemetry state: every reading
//! through the core's sanity checks, each rejection counted with its
//! reason. The service's `Ingest` (and its cluster log's replay) take
//! batches here; so does the fuzz target, without the service around it.

use std::collections::BTreeMap;

use edgeplan_telemetry::telemetry::TelemetryState;

use crate::convert;
use crate::pb;

/// Rejected readings reported by example, at most this many per call.
pub const EXAMPLES: usize = 100;

/// Telemetry and the site ids it accepts readings for.
pub struct TelemetryHub {
    pub state: TelemetryState,
    pub sites: rustc_hash::FxHashSet<String>,
    /// Accepted readings not yet on disk.
    pub dirty: bool,
}

/// What one `Ingest` call accepted and rejected, and why.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub examples: Vec<pb::RejectedReading>,
    pub batches: u64,
}

impl Tally {
    /// Count a rejected reading (an example of it while there is room).
    pub fn reject(&mut self, batch: u64, index: usize, device_id: &str, reason: String) {
        self.rejected += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(pb::RejectedReading {
                batch,
                index: index as u32,
                device_id: device_id.to_string(),
                reason: reason.clone(),
            });
        }
        *self.by_reason.entry(reason).or_default() += 1;
    }
}

impl Tally {
    /// Add another batch's tally, as batch `batch_no` of this call.
    pub fn absorb(&mut self, other: Tally, batch_no: u64) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (reason, n) in other.by_reason {
            *self.by_reason.entry(reason).or_default() += n;
        }
        for mut ex in other.examples {
            if self.examples.len() >= EXAMPLES {
                break;
            }
            ex.batch = batch_no;
            self.examples.push(ex);
        }
    }
}

/// Take one batch under the telemetry lock: every reading through the
/// core's sanity checks, each rejection counted with its reason. `now_s`
/// is the server's clock when the batch came in (the log's time in cluster
/// mode, so every replica judges a batch alike): readings dated more than
/// `telemetry.max_future_skew_s` past it are refused.
pub fn take_batch(
    hub: &mut TelemetryHub,
    batch_no: u64,
    batch: pb::ReadingBatch,
    tally: &mut Tally,
    now_s: f64,
) {
    let TelemetryHub {
        state,
        sites,
        dirty,
    } = hub;
    let (site, timestamp_s) = (batch.site, batch.timestamp_s);
    for (i, r) in batch.readings.iter().enumerate() {
        let kind = match convert::sensor_kind(r.device_type, r.placement) {
            Ok(k) => k,
            Err(why) => {
                tally.reject(batch_no, i, &r.device_id, why.to_string());
                continue;
            }
        };
        if r.device_id.is_empty() {
            tally.reject(batch_no, i, "", "device_id is required".into());
            continue;
        }
        let reading = convert::reading_ref(r, kind, &site, timestamp_s);
        match state.ingest_ref_at(&reading, |s| sites.contains(s), Some(now_s)) {
            Ok(()) => {
                tally.accepted += 1;
                *dirty = true;
            }
            Err(why) => tally.reject(batch_no, i, reading.sensor, why.to_string()),
        }
    }
}
