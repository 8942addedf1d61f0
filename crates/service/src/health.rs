//! `grpc.health.v1`: SERVING while the store answers, NOT_SERVING from the
//! first probe that fails (or takes longer than [`PROBE_TIMEOUT`]) until one
//! succeeds again. A load balancer or orchestrator then routes around a
//! replica that cannot store anything, rather than learning it from
//! failed writes.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::Shared;

/// How often the store is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe slower than this counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probe the store forever, reporting every change of its health for
/// `services` (and the server as a whole, "").
pub async fn watch(shared: Arc<Shared>, reporter: HealthReporter, services: Vec<&'static str>) {
    let mut serving = true;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let s = shared.clone();
        let probe = tokio::task::spawn_blocking(move || s.store.generation());
        let ok = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Ok(Ok(_)))
        );
        if ok == serving {
            continue;
        }
        serving = ok;
        let status = if ok {
            tracing::info!("the store answers again: serving");
            ServingStatus::Serving
        } else {
            tracing::warn!("the store does not answer: health is NOT_SERVING");
            ServingStatus::NotServing
        };
        for name in services.iter().copied().chain([""]) {
            reporter.set_service_status(name, status).await;
        }
    }
}
