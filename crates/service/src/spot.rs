//! Spot prices over gRPC: `GetSpotPrices` (now) and `WatchSpotPrices`
//! (every interval, smoothed). The market is the solve crate's
//! (`edgeplan_solve::spot::on` today's placement) on the view every solve uses; this
//! module only converts and paces.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::Status;

use super::errors;
use super::view::View;
use super::Shared;
use edgeplan_api::pb;
use edgeplan_solve::spot::{self, Market, SitePrices};

pub type SpotStream = Pin<Box<dyn Stream<Item = Result<pb::SpotPrices, Status>> + Send>>;

/// The least interval between two messages of a watch: each is a run of
/// the fast path's multipliers.
pub const MIN_INTERVAL_MS: u32 = 1_000;
/// Share of the previous price a watch keeps when the request names none.
pub const DEFAULT_SMOOTHING: f64 = 0.5;

/// The market now, smoothed against `previous` (keeping `keep` of it).
pub fn prices(
    shared: &Shared,
    previous: Option<&[SitePrices]>,
    keep: f64,
) -> Result<(pb::SpotPrices, Vec<SitePrices>), Status> {
    let view = View::now(shared)?;
    let market = spot::on(
        &view.problem,
        &view.problem.current_placement(),
        previous,
        keep,
    );
    let sites = market.sites.clone();
    Ok((to_pb(&market, view.version), sites))
}

pub fn to_pb(m: &Market, version: u64) -> pb::SpotPrices {
    pb::SpotPrices {
        inventory_version: version,
        sites: m
            .sites
            .iter()
            .map(|s| pb::SiteSpotPrices {
                site: s.site.clone(),
                name: s.name.clone(),
                units: s
                    .units
                    .iter()
                    .map(|u| pb::SpotUnitPrice {
                        row: u.row.clone(),
                        price_per_unit_hour: u.price_per_unit_hour,
                        used: u.used,
                        // JSON has no infinity: an undeclared limit is 0.
                        limit: if u.limit.is_finite() { u.limit } else { 0.0 },
                    })
                    .collect(),
                text: s.text.clone(),
            })
            .collect(),
        shapes: m
            .shapes
            .iter()
            .map(|s| pb::SpotShapePrice {
                workload: s.workload.clone(),
                site: s.site.clone(),
                floor_per_replica_hour: s.floor_per_replica_hour,
                capacity_per_replica_hour: s.capacity_per_replica_hour,
                price_per_replica_hour: s.price_per_replica_hour,
            })
            .collect(),
        admitted: m
            .admitted
            .iter()
            .map(|a| pb::SpotAdmission {
                workload: a.workload.clone(),
                site: a.site.clone(),
                replicas: a.replicas,
                price_per_replica_hour: a.price_per_replica_hour,
            })
            .collect(),
        left_out: m
            .left_out
            .iter()
            .map(|l| pb::SpotLeftOut {
                workload: l.workload.clone(),
                replicas: l.replicas,
                text: l.text.clone(),
            })
            .collect(),
        revenue_per_hour: m.revenue_per_hour,
    }
}

/// The smoothing a watch asked for, checked.
pub fn smoothing(asked: Option<f64>) -> Result<f64, Status> {
    match asked {
        None => Ok(DEFAULT_SMOOTHING),
        Some(k) if k.is_finite() && (0.0..=1.0).contains(&k) => Ok(k),
        Some(k) => Err(errors::field(
            "smoothing",
            format!("must be within 0..=1, got {k}"),
        )),
    }
}

/// A watch: the prices every `interval_ms`, smoothed, until the client goes.
pub fn watch(shared: Arc<Shared>, interval_ms: u32, keep: f64) -> SpotStream {
    let interval = Duration::from_millis(u64::from(interval_ms.max(MIN_INTERVAL_MS)));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut previous: Option<Vec<SitePrices>> = None;
        loop {
            let s = shared.clone();
            let before = previous.clone();
            let next = tokio::task::spawn_blocking(move || prices(&s, before.as_deref(), keep))
                .await
                .unwrap_or_else(|e| Err(errors::internal(e)));
            let message = match next {
                Ok((message, sites)) => {
                    previous = Some(sites);
                    Ok(message)
                }
                Err(e) => Err(e),
            };
            if tx.send(message).await.is_err() {
                return; // the client went away
            }
            tokio::time::sleep(interval).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
