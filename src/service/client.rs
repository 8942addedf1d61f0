//! Client helpers: register an instance file's fleet with a running service
//! (`edgeplan push`), the way any orchestrator would through the API.

use crate::api::convert;
use crate::api::pb;
use crate::api::pb::inventory_client::InventoryClient;
use crate::instance::Instance;

/// Upsert the instance's sites, links, regions, workloads and policy; returns
/// the state version after the last change.
pub async fn push_instance(server: &str, inst: &Instance) -> anyhow::Result<u64> {
    let mut c = InventoryClient::connect(server.to_string()).await?;
    if !inst.sites.is_empty() {
        c.upsert_sites(pb::UpsertSitesRequest {
            sites: inst.sites.iter().map(convert::site_to_pb).collect(),
        })
        .await?;
    }
    if !inst.network.links.is_empty() {
        c.upsert_links(pb::UpsertLinksRequest {
            links: inst.network.links.iter().map(convert::link_to_pb).collect(),
        })
        .await?;
    }
    if !inst.regions.is_empty() {
        c.upsert_regions(pb::UpsertRegionsRequest {
            regions: inst.regions.iter().map(convert::region_to_pb).collect(),
        })
        .await?;
    }
    let policy = crate::service::store::Policy {
        name: inst.name.clone(),
        objective: inst.objective.clone(),
        limits: inst.limits.clone(),
    };
    let mut version = c
        .set_policy(convert::policy_to_pb(&policy))
        .await?
        .into_inner()
        .version;
    if !inst.workloads.is_empty() {
        version = c
            .upsert_workloads(pb::UpsertWorkloadsRequest {
                workloads: inst.workloads.iter().map(convert::workload_to_pb).collect(),
            })
            .await?
            .into_inner()
            .version;
    }
    Ok(version)
}
