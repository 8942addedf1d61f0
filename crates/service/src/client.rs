//! Client helpers: how the CLI reaches a running service (URL, bearer
//! token, TLS), and registering an instance file's fleet with it
//! (`edgeplan push`), the way any orchestrator would through the API.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use super::auth::ClientTls;
use edgeplan_api::convert;
use edgeplan_api::pb;
use edgeplan_api::pb::inventory_client::InventoryClient;
use edgeplan_model::instance::Instance;

/// Where a service is and how to authenticate to it.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `http://host:port`, or `https://…` with `tls`.
    pub url: String,
    /// Sent as `authorization: Bearer …` on every call.
    pub token: Option<String>,
    pub tls: Option<ClientTls>,
}

/// A channel that adds the bearer token to every call.
pub type AuthChannel = InterceptedService<tonic::transport::Channel, Bearer>;

/// The interceptor behind [`AuthChannel`].
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Connect {
    /// A plaintext connection without a token.
    pub fn plain(url: &str) -> Connect {
        Connect {
            url: url.to_string(),
            ..Connect::default()
        }
    }

    pub async fn channel(&self) -> anyhow::Result<AuthChannel> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| anyhow::anyhow!("server URL {:?}: {e}", self.url))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.load()?)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connect to {}: {e}", self.url))?;
        let bearer =
            match &self.token {
                // Not echoed: the error must not carry the secret.
                Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                    anyhow::anyhow!("the token has characters a header cannot carry")
                })?),
                None => None,
            };
        Ok(InterceptedService::new(channel, Bearer(bearer)))
    }
}

/// Upsert the instance's server and accelerator models, sites, links, regions, workloads
/// and policy; returns
/// the state version after the last change.
pub async fn push_instance(server: &Connect, inst: &Instance) -> anyhow::Result<u64> {
    let mut c = InventoryClient::new(server.channel().await?);
    // Models first: the sites name them.
    if !inst.server_models.is_empty() {
        c.upsert_server_models(pb::UpsertServerModelsRequest {
            server_models: inst
                .server_models
                .iter()
                .map(convert::server_model_to_pb)
                .collect(),
            expected_version: None,
        })
        .await?;
    }
    if !inst.accelerator_models.is_empty() {
        c.upsert_accelerator_models(pb::UpsertAcceleratorModelsRequest {
            accelerator_models: inst
                .accelerator_models
                .iter()
                .map(convert::accelerator_model_to_pb)
                .collect(),
            expected_version: None,
        })
        .await?;
    }
    if !inst.sites.is_empty() {
        c.upsert_sites(pb::UpsertSitesRequest {
            sites: inst.sites.iter().map(convert::site_to_pb).collect(),
            expected_version: None,
        })
        .await?;
    }
    if !inst.network.links.is_empty() {
        c.upsert_links(pb::UpsertLinksRequest {
            links: inst.network.links.iter().map(convert::link_to_pb).collect(),
            expected_version: None,
        })
        .await?;
    }
    if !inst.regions.is_empty() {
        c.upsert_regions(pb::UpsertRegionsRequest {
            regions: inst.regions.iter().map(convert::region_to_pb).collect(),
            expected_version: None,
        })
        .await?;
    }
    let policy = edgeplan_model::instance::Policy {
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
                expected_version: None,
            })
            .await?
            .into_inner()
            .version;
    }
    Ok(version)
}

/// Report where the instance's workloads run (`current`) as observed state,
/// against the inventory at `read_at` when given; returns the new version.
pub async fn report_observed(
    server: &Connect,
    inst: &Instance,
    read_at: Option<u64>,
) -> anyhow::Result<u64> {
    let mut c = InventoryClient::new(server.channel().await?);
    let workloads = inst
        .workloads
        .iter()
        .map(|w| pb::ObservedWorkload {
            workload: w.id.clone(),
            current: w.current.iter().map(|(s, n)| (s.clone(), *n)).collect(),
        })
        .collect();
    Ok(c.report_observed(pb::ReportObservedRequest {
        read_at_version: read_at,
        workloads,
    })
    .await?
    .into_inner()
    .version)
}

/// A stored plan as its view says (`GetPlan` at its current revision) and
/// the plan itself, parsed from the view's JSON.
pub async fn plan_of(
    placement: &mut pb::placement_client::PlacementClient<AuthChannel>,
    plan_id: u64,
) -> anyhow::Result<(pb::PlanView, edgeplan_plan::plan::Plan)> {
    let view = placement
        .get_plan(pb::PlanRef {
            plan_id,
            after_revision: None,
        })
        .await?
        .into_inner();
    let plan = serde_json::from_str(&view.plan_json)
        .map_err(|e| anyhow::anyhow!("plan {plan_id}'s JSON: {e}"))?;
    Ok((view, plan))
}
