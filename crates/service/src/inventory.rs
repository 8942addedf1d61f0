//! The Inventory service: sites, links, regions, workloads and the policy.
//! A change is applied to a copy of the inventory, checked whole by
//! `validate` (the same rules as instance files), committed to the store,
//! and only then made current, with the state version bumped. A change
//! supersedes every plan still recommended: it was made from a state that
//! is no longer the fleet's.
//!
//! Desired and observed state have one owner each: a workload's spec is
//! the client's (upserts), where its replicas run (`current`) is observed —
//! taken when the workload is first registered, then set only by succeeded
//! plan steps (the dispatcher) and by `ReportObserved`.

use std::collections::HashSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::errors::{self, Reason};
use super::paging;
use super::store::{link_key, Op};
use super::{invalid, Shared};
use edgeplan_api::convert;
use edgeplan_api::pb;
use edgeplan_model::instance::Instance;
use edgeplan_model::instance::Policy;
use edgeplan_plan::execution::PlanState;
use edgeplan_problem::validate::{validate, validate_structure};

pub struct InventoryApi(pub Arc<Shared>);

/// What a change touched, to be written.
enum Touched {
    Site(String),
    Link(String),
    Region(String),
    Workload(String),
    /// The fleet's server models (stored as one list).
    ServerModels,
    /// The fleet's accelerator models (stored as one list).
    AcceleratorModels,
    DeletedSite(String),
    DeletedLink(String),
    DeletedRegion(String),
    DeletedWorkload(String),
    Policy,
}

/// Apply `edit` to a copy of the inventory, validate, store, make current;
/// refused (VERSION_MISMATCH) unless the inventory is still at `read_at`
/// when it is set (a mutation's `expected_version`, a report's
/// `read_at_version`).
fn change(
    shared: &Shared,
    read_at: Option<u64>,
    edit: impl FnOnce(&mut Instance, &mut Policy) -> Result<Vec<Touched>, Status>,
) -> Result<pb::Change, Status> {
    let mut state = shared.state();
    if let Some(v) = read_at {
        if v != state.version {
            return Err(errors::error_with(
                Reason::VersionMismatch,
                format!(
                    "expected version {v} is not the inventory's version {}: it changed since \
                     (a step's outcome, another client); read it again and retry",
                    state.version
                ),
                &[("version", state.version.to_string())],
            ));
        }
    }
    let mut next = state.instance.clone();
    let mut policy = state.policy.clone();
    let touched = edit(&mut next, &mut policy)?;
    if touched.is_empty() {
        // Nothing changed (a `SetPolicy` naming no field, or only the
        // values in force): no new version, no plan superseded.
        return Ok(pb::Change {
            version: state.version,
            changed: 0,
        });
    }
    next.name = policy.name.clone();
    next.objective = policy.objective.clone();
    next.limits = policy.limits.clone();
    next.network.nodes =
        edgeplan_model::instance::nodes_of(&next.sites, &next.regions, &next.network.links);
    // An inventory being filled in may have no sites yet; a solve needs
    // them. With sites, the very checks `edgeplan validate` runs on a file
    // (a workload no site could ever host included): what the API accepts,
    // the files path accepts.
    let issues: Vec<_> = if next.sites.is_empty() {
        validate_structure(&next)
            .into_iter()
            .filter(|i| i.path != "sites")
            .collect()
    } else {
        validate(&next)
    };
    if !issues.is_empty() {
        return Err(invalid(&issues, &next));
    }
    let version = state.version + 1;
    let mut superseded = Vec::new();
    for old in state.plans.values() {
        if old.state == PlanState::Recommended {
            let mut o = old.clone();
            o.supersede().map_err(errors::internal)?;
            o.updated_unix_s = super::now_s();
            o.error = format!("superseded: the inventory changed (version {version})");
            superseded.push(o);
        }
    }
    let mut ops = vec![Op::Version(version)];
    ops.extend(superseded.iter().map(Op::PlanState));
    for t in &touched {
        ops.push(match t {
            Touched::Site(id) => Op::PutSite(find(&next.sites, |s| &s.id == id)?),
            Touched::Link(k) => Op::PutLink(find(&next.network.links, |l| &link_key(l) == k)?),
            Touched::Region(id) => Op::PutRegion(find(&next.regions, |r| &r.id == id)?),
            Touched::Workload(id) => Op::PutWorkload(find(&next.workloads, |w| &w.id == id)?),
            Touched::DeletedSite(id) => Op::DeleteSite(id),
            Touched::DeletedLink(k) => Op::DeleteLink(k),
            Touched::DeletedRegion(id) => Op::DeleteRegion(id),
            Touched::DeletedWorkload(id) => Op::DeleteWorkload(id),
            Touched::Policy => Op::Policy(&policy),
            Touched::ServerModels => Op::ServerModels(&next.server_models),
            Touched::AcceleratorModels => Op::AcceleratorModels(&next.accelerator_models),
        });
    }
    shared
        .commit(&mut state, &ops, false)
        .map_err(|e| super::store_status("cannot store the change", e))?;
    let changed = touched.len() as u32;
    let sites: rustc_hash::FxHashSet<String> = next.sites.iter().map(|s| s.id.clone()).collect();
    state.instance = next;
    state.policy = policy;
    state.version = version;
    let superseded: Vec<u64> = superseded
        .into_iter()
        .map(|o| {
            let id = o.id;
            state.plans.insert(id, o);
            id
        })
        .collect();
    drop(state);
    for id in superseded {
        shared.notify_plan(id, None);
    }
    shared.telemetry().sites = sites;
    shared.replan_wake.notify_one();
    Ok(pb::Change { version, changed })
}

fn find<T>(items: &[T], pred: impl Fn(&T) -> bool) -> Result<&T, Status> {
    items
        .iter()
        .find(|t| pred(t))
        .ok_or_else(|| errors::internal("changed entity vanished"))
}

/// Insert or replace by key; returns the keys, refusing duplicates in one request.
fn upsert<T>(
    list: &mut Vec<T>,
    items: Vec<T>,
    what: &str,
    key: impl Fn(&T) -> String,
) -> Result<Vec<String>, Status> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let k = key(&item);
        if k.trim().is_empty() || k == "|" {
            return Err(errors::field(
                format!("{what}[{i}].id"),
                "must not be empty",
            ));
        }
        if !seen.insert(k.clone()) {
            return Err(errors::field(
                format!("{what}[{i}].id"),
                format!("{k} appears twice in this request"),
            ));
        }
        match list.iter_mut().find(|t| key(t) == k) {
            Some(slot) => *slot = item,
            None => list.push(item),
        }
        keys.push(k);
    }
    if keys.is_empty() {
        return Err(errors::field(what, "nothing to upsert"));
    }
    Ok(keys)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<Response<T>, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(errors::internal)?
        .map(Response::new)
}

/// The whole inventory in one snapshot.
fn snapshot(inst: &Instance, policy: &Policy, version: u64) -> pb::InventorySnapshot {
    pb::InventorySnapshot {
        version,
        sites: inst.sites.iter().map(convert::site_to_pb).collect(),
        links: inst.network.links.iter().map(convert::link_to_pb).collect(),
        regions: inst.regions.iter().map(convert::region_to_pb).collect(),
        workloads: inst.workloads.iter().map(convert::workload_to_pb).collect(),
        policy: Some(convert::policy_to_pb(policy)),
        instance_json: serde_json::to_string(inst).unwrap_or_default(),
        server_models: inst
            .server_models
            .iter()
            .map(convert::server_model_to_pb)
            .collect(),
        accelerator_models: inst
            .accelerator_models
            .iter()
            .map(convert::accelerator_model_to_pb)
            .collect(),
        next_page_token: String::new(),
    }
}

impl InventoryApi {
    /// The inventory as the solver sees it now (`GetInventory` with
    /// `effective`): the same [`super::view::effective`] that `Solve` uses.
    fn effective_snapshot(&self) -> pb::InventorySnapshot {
        let (inst, policy, version) = {
            let s = self.0.state();
            (s.instance.clone(), s.policy.clone(), s.version)
        };
        let effective = super::view::effective(&self.0, &inst, super::now_s());
        snapshot(&effective, &policy, version)
    }
}

#[tonic::async_trait]
impl pb::inventory_server::Inventory for InventoryApi {
    async fn upsert_sites(
        &self,
        req: Request<pb::UpsertSitesRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let mut sites = Vec::new();
        for (i, s) in req.sites.into_iter().enumerate() {
            let path = format!("sites[{i}]");
            sites.push(
                convert::site_from_pb(s, &path).map_err(|e| errors::field(e.path, e.message))?,
            );
        }
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                let keys = upsert(&mut inst.sites, sites, "sites", |s| s.id.clone())?;
                Ok(keys.into_iter().map(Touched::Site).collect())
            })
        })
        .await
    }

    async fn upsert_links(
        &self,
        req: Request<pb::UpsertLinksRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let links: Vec<_> = req.links.into_iter().map(convert::link_from_pb).collect();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                let keys = upsert(&mut inst.network.links, links, "links", link_key)?;
                Ok(keys.into_iter().map(Touched::Link).collect())
            })
        })
        .await
    }

    async fn upsert_regions(
        &self,
        req: Request<pb::UpsertRegionsRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let regions: Vec<_> = req
            .regions
            .into_iter()
            .map(convert::region_from_pb)
            .collect();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                let keys = upsert(&mut inst.regions, regions, "regions", |r| r.id.clone())?;
                Ok(keys.into_iter().map(Touched::Region).collect())
            })
        })
        .await
    }

    async fn upsert_workloads(
        &self,
        req: Request<pb::UpsertWorkloadsRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let workloads: Vec<_> = req
            .workloads
            .into_iter()
            .map(convert::workload_from_pb)
            .collect();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                // Where replicas run is observed state: a known workload keeps it.
                let mut workloads = workloads;
                for w in &mut workloads {
                    if let Some(known) = inst.workloads.iter().find(|k| k.id == w.id) {
                        w.current = known.current.clone();
                    }
                }
                let keys = upsert(&mut inst.workloads, workloads, "workloads", |w| {
                    w.id.clone()
                })?;
                Ok(keys.into_iter().map(Touched::Workload).collect())
            })
        })
        .await
    }

    async fn upsert_server_models(
        &self,
        req: Request<pb::UpsertServerModelsRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let models: Vec<_> = req
            .server_models
            .into_iter()
            .map(convert::server_model_from_pb)
            .collect();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                let before = inst.server_models.clone();
                upsert(&mut inst.server_models, models, "server_models", |m| {
                    m.name.clone()
                })?;
                // One list, one write; a repeat of what is stored is no change.
                Ok(if inst.server_models == before {
                    Vec::new()
                } else {
                    vec![Touched::ServerModels]
                })
            })
        })
        .await
    }

    async fn upsert_accelerator_models(
        &self,
        req: Request<pb::UpsertAcceleratorModelsRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let expected = req.expected_version;
        let models: Vec<_> = req
            .accelerator_models
            .into_iter()
            .map(convert::accelerator_model_from_pb)
            .collect();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, expected, |inst, _| {
                let before = inst.accelerator_models.clone();
                upsert(
                    &mut inst.accelerator_models,
                    models,
                    "accelerator_models",
                    |m| m.name.clone(),
                )?;
                Ok(if inst.accelerator_models == before {
                    Vec::new()
                } else {
                    vec![Touched::AcceleratorModels]
                })
            })
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        let kind = pb::EntityKind::try_from(req.kind)
            .ok()
            .filter(|k| *k != pb::EntityKind::Unspecified)
            .ok_or_else(|| {
                errors::field(
                    "kind",
                    "required (site, link, region, workload, server model)",
                )
            })?;
        if req.ids.is_empty() {
            return Err(errors::field("ids", "nothing to delete"));
        }
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, req.expected_version, |inst, _| {
                let mut touched = Vec::new();
                for id in req.ids {
                    touched.push(delete_one(inst, kind, id)?);
                }
                Ok(touched)
            })
        })
        .await
    }

    async fn set_policy(&self, req: Request<pb::Policy>) -> Result<Response<pb::Change>, Status> {
        let p = req.into_inner();
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, p.expected_version, |_, policy| {
                let before = policy.clone();
                convert::policy_apply(&p, policy);
                Ok(if *policy == before {
                    Vec::new()
                } else {
                    vec![Touched::Policy]
                })
            })
        })
        .await
    }

    async fn report_observed(
        &self,
        req: Request<pb::ReportObservedRequest>,
    ) -> Result<Response<pb::Change>, Status> {
        let req = req.into_inner();
        if req.workloads.is_empty() {
            return Err(errors::field("workloads", "nothing reported"));
        }
        let shared = self.0.clone();
        blocking(move || {
            change(&shared, req.read_at_version, |inst, _| {
                let mut seen = HashSet::new();
                let mut touched = Vec::new();
                for (i, o) in req.workloads.into_iter().enumerate() {
                    if !seen.insert(o.workload.clone()) {
                        return Err(errors::field(
                            format!("workloads[{i}].workload"),
                            format!("{} appears twice in this request", o.workload),
                        ));
                    }
                    let w = inst
                        .workloads
                        .iter_mut()
                        .find(|w| w.id == o.workload)
                        .ok_or_else(|| {
                            errors::not_found(
                                "workload",
                                &o.workload,
                                format!(
                                    "workloads[{i}].workload: {:?} is not in the inventory",
                                    o.workload
                                ),
                            )
                        })?;
                    w.current = o.current.into_iter().filter(|(_, n)| *n > 0).collect();
                    touched.push(Touched::Workload(w.id.clone()));
                }
                Ok(touched)
            })
        })
        .await
    }

    async fn get_inventory(
        &self,
        req: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::InventorySnapshot>, Status> {
        let req = req.into_inner();
        if req.effective {
            if req.page_size != 0 || !req.page_token.is_empty() {
                return Err(errors::field(
                    "effective",
                    "the effective inventory is read unpaged (no page_size, no page_token)",
                ));
            }
            return Ok(Response::new(self.effective_snapshot()));
        }
        let state = self.0.state();
        let inst = &state.instance;
        if req.page_size == 0 && req.page_token.is_empty() {
            return Ok(Response::new(snapshot(inst, &state.policy, state.version)));
        }
        let page = paging::InventoryPage::read(&req, state.version)?;
        let mut snap = pb::InventorySnapshot {
            version: state.version,
            policy: (page.offset == 0).then(|| convert::policy_to_pb(&state.policy)),
            ..Default::default()
        };
        // The entities in their fixed order, each kind only when asked for.
        let lens = [
            (pb::EntityKind::ServerModel, inst.server_models.len()),
            (
                pb::EntityKind::AcceleratorModel,
                inst.accelerator_models.len(),
            ),
            (pb::EntityKind::Site, inst.sites.len()),
            (pb::EntityKind::Link, inst.network.links.len()),
            (pb::EntityKind::Region, inst.regions.len()),
            (pb::EntityKind::Workload, inst.workloads.len()),
        ];
        let (mut skip, mut room) = (page.offset, page.size);
        let mut total = 0;
        for (kind, len) in lens {
            if !page.wants(kind) {
                continue;
            }
            total += len;
            let from = skip.min(len);
            skip -= from;
            let to = (from + room).min(len);
            room -= to - from;
            let range = from..to;
            match kind {
                pb::EntityKind::ServerModel => {
                    snap.server_models = inst.server_models[range]
                        .iter()
                        .map(convert::server_model_to_pb)
                        .collect()
                }
                pb::EntityKind::AcceleratorModel => {
                    snap.accelerator_models = inst.accelerator_models[range]
                        .iter()
                        .map(convert::accelerator_model_to_pb)
                        .collect()
                }
                pb::EntityKind::Site => {
                    snap.sites = inst.sites[range].iter().map(convert::site_to_pb).collect()
                }
                pb::EntityKind::Link => {
                    snap.links = inst.network.links[range]
                        .iter()
                        .map(convert::link_to_pb)
                        .collect()
                }
                pb::EntityKind::Region => {
                    snap.regions = inst.regions[range]
                        .iter()
                        .map(convert::region_to_pb)
                        .collect()
                }
                pb::EntityKind::Workload => {
                    snap.workloads = inst.workloads[range]
                        .iter()
                        .map(convert::workload_to_pb)
                        .collect()
                }
                pb::EntityKind::Unspecified => {}
            }
        }
        let next = page.offset + page.size;
        if next < total {
            snap.next_page_token = page.token_at(next);
        }
        Ok(Response::new(snap))
    }
}

/// Remove one entity, refusing (FAILED_PRECONDITION) while others refer to it.
fn delete_one(inst: &mut Instance, kind: pb::EntityKind, id: String) -> Result<Touched, Status> {
    let not_found =
        |what: &str| errors::not_found(what, &id, format!("{what} {id} is not in the inventory"));
    match kind {
        pb::EntityKind::Site => {
            let i = inst
                .sites
                .iter()
                .position(|s| s.id == id)
                .ok_or_else(|| not_found("site"))?;
            for w in &inst.workloads {
                if w.current.get(&id).is_some_and(|&n| n > 0) {
                    return Err(errors::error(
                        Reason::InUse,
                        format!(
                            "site {id} still runs {} replica(s) of workload {}; move them first",
                            w.current[&id], w.id
                        ),
                    ));
                }
                if w.pinned_sites.contains(&id) {
                    return Err(errors::error(
                        Reason::InUse,
                        format!("workload {} is pinned to site {id}", w.id),
                    ));
                }
            }
            inst.sites.remove(i);
            for w in &mut inst.workloads {
                w.forbidden_sites.retain(|s| s != &id);
            }
            Ok(Touched::DeletedSite(id))
        }
        pb::EntityKind::Link => {
            let i = inst
                .network
                .links
                .iter()
                .position(|l| link_key(l) == id || format!("{}|{}", l.a, l.b) == id)
                .ok_or_else(|| not_found("link"))?;
            let key = link_key(&inst.network.links.remove(i));
            Ok(Touched::DeletedLink(key))
        }
        pb::EntityKind::Region => {
            let i = inst
                .regions
                .iter()
                .position(|r| r.id == id)
                .ok_or_else(|| not_found("region"))?;
            if let Some(w) = inst
                .workloads
                .iter()
                .find(|w| w.traffic.iter().any(|t| t.region == id))
            {
                return Err(errors::error(
                    Reason::InUse,
                    format!("workload {} has traffic from region {id}", w.id),
                ));
            }
            inst.regions.remove(i);
            Ok(Touched::DeletedRegion(id))
        }
        pb::EntityKind::Workload => {
            let i = inst
                .workloads
                .iter()
                .position(|w| w.id == id)
                .ok_or_else(|| not_found("workload"))?;
            inst.workloads.remove(i);
            Ok(Touched::DeletedWorkload(id))
        }
        pb::EntityKind::ServerModel => {
            let i = inst
                .server_models
                .iter()
                .position(|m| m.name == id)
                .ok_or_else(|| not_found("server_model"))?;
            if let Some(s) = inst.sites.iter().find(|s| s.servers.model == id) {
                return Err(errors::error(
                    Reason::InUse,
                    format!("site {} runs servers of model {id}", s.id),
                ));
            }
            inst.server_models.remove(i);
            Ok(Touched::ServerModels)
        }
        pb::EntityKind::AcceleratorModel => {
            let i = inst
                .accelerator_models
                .iter()
                .position(|m| m.name == id)
                .ok_or_else(|| not_found("accelerator_model"))?;
            let user = inst
                .sites
                .iter()
                .find(|s| s.accelerators.as_ref().is_some_and(|a| a.model == id));
            if let Some(s) = user {
                return Err(errors::error(
                    Reason::InUse,
                    format!("site {} has accelerators of model {id}", s.id),
                ));
            }
            inst.accelerator_models.remove(i);
            Ok(Touched::AcceleratorModels)
        }
        pb::EntityKind::Unspecified => Err(errors::field("kind", "required")),
    }
}
