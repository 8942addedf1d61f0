//! A telemetry batch as the `Telemetry.Ingest` stream delivers it: protobuf
//! bytes decoded into a `ReadingBatch` and taken through the very intake the
//! service runs (`take_batch`: conversion, sanity checks, the telemetry
//! state), into a hub that knows three sites. The batch is then sent once
//! more (a client's retry), and the state goes through what a flush and a
//! restart do to it (JSON out, JSON in, reindex). Every reading must be
//! counted exactly once, accepted or rejected; a panic is a bug.
#![no_main]

extern crate edgeplan_fuzz;

use edgeplan::telemetry::{SanityLimits, SensorKind, TelemetryState};
use edgeplan_api::intake::{take_batch, Tally, TelemetryHub};
use edgeplan_api::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const SITES: [&str; 3] = ["fra", "par", "mil"];

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = pb::ReadingBatch::decode(data) else {
        return;
    };
    let n = batch.readings.len() as u64;
    let mut hub = TelemetryHub {
        state: TelemetryState::new(SanityLimits::default()),
        sites: SITES.iter().map(|s| s.to_string()).collect(),
        dirty: false,
    };
    let mut tally = Tally::default();
    // A fixed "now" (2024-01-01): the future-skew rule runs too.
    let now_s = 1_704_067_200.0;
    take_batch(&mut hub, 0, batch.clone(), &mut tally, now_s);
    assert_eq!(
        tally.accepted + tally.rejected,
        n,
        "batch 0: {n} readings, {} accepted, {} rejected",
        tally.accepted,
        tally.rejected
    );
    assert_eq!(
        hub.dirty,
        tally.accepted > 0,
        "dirty iff something was accepted"
    );
    assert_eq!(hub.state.accepted, tally.accepted);
    assert_eq!(tally.by_reason.values().sum::<u64>(), tally.rejected);

    // The same batch again, as a retrying client sends it.
    take_batch(&mut hub, 1, batch, &mut tally, now_s);
    assert_eq!(tally.accepted + tally.rejected, 2 * n);
    assert_eq!(hub.state.accepted, tally.accepted);

    // What the service reads back from the state.
    let now_s = hub
        .state
        .sensors
        .values()
        .map(|s| s.last_s)
        .fold(0.0, f64::max);
    for site in SITES {
        let _ = hub.state.site_summary(site, now_s);
        let _ = hub.state.stale_sensors(site, now_s);
        let _ = hub.state.latest(site, SensorKind::Utilization, None);
        let _ = hub.state.latest(site, SensorKind::Ambient, None);
    }

    // A flush and a restart: the stored state must load again.
    let bytes = serde_json::to_vec(&hub.state).expect("the telemetry state serializes");
    let mut back: TelemetryState = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("stored telemetry does not load back: {e}"));
    back.reindex();
    assert_eq!(back.sensors.len(), hub.state.sensors.len());
    for site in SITES {
        let _ = back.site_summary(site, now_s);
    }
});
