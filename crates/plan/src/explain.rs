//! Explanations: for each workload left (partly) unplaced, what stopped each
//! site from taking one more replica, in words an operator understands; and
//! per site, which constraints bind. Reads the [`Problem`]'s rules; computes
//! nothing the problem builder does not already define. Pure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_physics::physics::PowerLimit;
use edgeplan_problem::ix::{SiteIx, WorkloadIx};
use edgeplan_problem::load::Load;
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rows::{Row, EPS};
use edgeplan_problem::rules::Ineligible;

/// Kinds of reasons a site could not take a replica.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    Latency,
    Unreachable,
    Hardware,
    Pinned,
    Forbidden,
    /// One replica is larger than the site's whole capacity of a resource.
    TooBig,
    /// The resource is used up by what is placed there.
    Resource,
    PowerCap,
    Cooling,
    Inlet,
    Spread,
    FailureDomain,
    AntiAffinity,
    Affinity,
    MoveLimit,
    /// Room exists, but placing it costs more than leaving it unplaced.
    Cost,
}

impl From<PowerLimit> for CauseKind {
    fn from(p: PowerLimit) -> Self {
        match p {
            PowerLimit::PowerCap => CauseKind::PowerCap,
            PowerLimit::Cooling => CauseKind::Cooling,
            PowerLimit::Inlet => CauseKind::Inlet,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Cause {
    pub site: String,
    pub kind: CauseKind,
    pub text: String,
}

/// Why a workload is not (fully) placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnplacedExplanation {
    pub workload: String,
    pub unplaced: u32,
    pub replicas: u32,
    pub priority: u32,
    pub causes: Vec<Cause>,
    /// The causes in one paragraph.
    pub text: String,
}

impl UnplacedExplanation {
    pub fn kinds(&self) -> Vec<CauseKind> {
        let mut k: Vec<CauseKind> = self.causes.iter().map(|c| c.kind).collect();
        k.sort();
        k.dedup();
        k
    }
}

/// What binds at a site under a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiteBinding {
    pub site: String,
    /// e.g. `cpu_cores`, `power cap`, `cooling capacity`, `inlet temperature limit`.
    pub binding: Vec<String>,
}

/// Share of a limit at which it counts as binding.
const BINDING_SHARE: f64 = 0.995;

/// Explain every unplaced replica of an indexed placement.
pub fn unplaced(p: &Problem, x: &Replicas) -> Vec<UnplacedExplanation> {
    let load = Load::of(p, x);
    let mut out = Vec::new();
    for (wi, w) in p.workloads.iter_enumerated() {
        let placed = x.placed(wi);
        if placed >= w.replicas {
            continue;
        }
        let causes: Vec<Cause> = p
            .sites
            .indices()
            .map(|si| cause(p, &load, x, wi, si))
            .collect();
        let text = summarize(p, wi, w.replicas - placed, &causes);
        out.push(UnplacedExplanation {
            workload: w.id.clone(),
            unplaced: w.replicas - placed,
            replicas: w.replicas,
            priority: w.priority,
            causes,
            text,
        });
    }
    out
}

/// The binding constraints of every site under a placement.
pub fn binding(p: &Problem, x: &Replicas) -> Vec<SiteBinding> {
    let load = Load::of(p, x);
    p.sites
        .iter_enumerated()
        .map(|(si, s)| {
            let binding: Vec<String> = p
                .rows()
                .filter_map(|row| {
                    let (limit, used) = (p.limit(si, row), load.use_of(p, si, row));
                    match row {
                        Row::Resource(r) => (limit > 0.0 && used >= BINDING_SHARE * limit)
                            .then(|| p.resources[r].clone()),
                        // A site with no power to spare at all binds too.
                        Row::Power => (limit <= EPS || used >= BINDING_SHARE * limit)
                            .then(|| s.physics.binding.describe().to_string()),
                    }
                })
                .collect();
            SiteBinding {
                site: s.id.clone(),
                binding,
            }
        })
        .collect()
}

/// The first reason site `si` could not take one more replica of `wi`.
fn cause(p: &Problem, load: &Load, x: &Replicas, wi: WorkloadIx, si: SiteIx) -> Cause {
    let site = &p.sites[si];
    let w = &p.workloads[wi];
    let make = |kind: CauseKind, text: String| Cause {
        site: site.id.clone(),
        kind,
        text,
    };
    if let Some(reason) = p.ineligible(wi, si) {
        let kind = match &reason {
            Ineligible::Latency { .. } => CauseKind::Latency,
            Ineligible::Unreachable { .. } => CauseKind::Unreachable,
            Ineligible::Hardware { .. } => CauseKind::Hardware,
            Ineligible::NotPinned => CauseKind::Pinned,
            Ineligible::Forbidden => CauseKind::Forbidden,
            Ineligible::TooBig { .. } => CauseKind::TooBig,
            Ineligible::TooHot { binding, .. } => (*binding).into(),
        };
        return make(kind, reason.describe(&site.name));
    }
    let here = x.count(wi, si);
    let max_count = w.candidate_at(si).map_or(0, |c| c.max_count);
    if let Some(g) = p.anti_affinity_groups.iter().find(|(_, m)| m.contains(&wi)) {
        let taken = g.1.iter().map(|&o| x.count(o, si)).sum::<u32>();
        if taken >= 1 {
            return make(
                CauseKind::AntiAffinity,
                format!(
                    "{} already runs a replica of anti-affinity group {:?}",
                    site.name, g.0
                ),
            );
        }
    }
    if let Err(short) = p.room_for(wi, si, &load.used[si]) {
        let kind = match short.row {
            Row::Resource(_) => CauseKind::Resource,
            Row::Power => site.physics.binding.into(),
        };
        return make(kind, short.describe(p, si));
    }
    if here >= max_count {
        return make(
            CauseKind::Spread,
            format!(
                "{} already holds the most replicas allowed on one site ({max_count})",
                site.name
            ),
        );
    }
    if let (Some(k), Some(d)) = (w.max_per_failure_domain, site.failure_domain) {
        let in_domain: u32 = x[wi]
            .iter()
            .filter(|(s, _)| p.sites[*s].failure_domain == Some(d))
            .map(|(_, n)| n)
            .sum();
        if in_domain >= k {
            return make(
                CauseKind::FailureDomain,
                format!(
                    "failure domain {} of {} already holds {k} replica(s)",
                    p.failure_domains[d], site.name
                ),
            );
        }
    }
    if let Some((g, _)) = p.affinity_groups.iter().find(|(_, m)| m.contains(&wi)) {
        return make(
            CauseKind::Affinity,
            format!(
                "{} cannot host the whole affinity group {g:?} together",
                site.name
            ),
        );
    }
    let is_move = here >= w.current_at(si);
    if is_move && p.max_moves.is_some_and(|k| load.moves >= k as u64) {
        return make(
            CauseKind::MoveLimit,
            format!(
                "moving a replica to {} would exceed the limit of {} moves",
                site.name,
                p.max_moves.unwrap_or(0)
            ),
        );
    }
    make(
        CauseKind::Cost,
        format!(
            "{} has room, but a replica there costs more than leaving it unplaced",
            site.name
        ),
    )
}

fn summarize(p: &Problem, wi: WorkloadIx, unplaced: u32, causes: &[Cause]) -> String {
    let w = &p.workloads[wi];
    let mut groups: BTreeMap<CauseKind, Vec<&Cause>> = BTreeMap::new();
    for c in causes {
        groups.entry(c.kind).or_default().push(c);
    }
    let mut parts = Vec::new();
    for (kind, list) in groups {
        let head = match kind {
            CauseKind::Latency | CauseKind::Unreachable => "out of latency reach",
            CauseKind::Hardware | CauseKind::Pinned | CauseKind::Forbidden | CauseKind::TooBig => {
                "not allowed or too small"
            }
            CauseKind::Resource => "within reach but full",
            CauseKind::PowerCap => "within reach but at their power cap",
            CauseKind::Cooling => "within reach but at their cooling capacity",
            CauseKind::Inlet => "within reach but at their inlet temperature limit",
            CauseKind::Spread
            | CauseKind::FailureDomain
            | CauseKind::AntiAffinity
            | CauseKind::Affinity => "ruled out by placement rules",
            CauseKind::MoveLimit => "ruled out by the move limit",
            CauseKind::Cost => "not worth it",
        };
        let shown: Vec<&str> = list.iter().take(3).map(|c| c.text.as_str()).collect();
        let more = if list.len() > 3 {
            format!(" and {} more", list.len() - 3)
        } else {
            String::new()
        };
        parts.push(format!("{head}: {}{more}", shown.join("; ")));
    }
    format!(
        "{} of {} replicas of {} unplaced (priority {}). {}.",
        unplaced,
        w.replicas,
        w.id,
        w.priority,
        parts.join(". ")
    )
}

/// Why one step of a migration plan happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MoveExplanation {
    pub step: usize,
    pub workload: String,
    pub text: String,
}

/// Why each step of a plan happens, in words: what a replica saves per hour
/// at its destination, term by term; or that its source can no longer host
/// it; or which limit binds at the source it leaves. `before` is the
/// placement the plan starts from.
pub fn moves(p: &Problem, before: &Replicas, steps: &[crate::plan::Step]) -> Vec<MoveExplanation> {
    use crate::plan::StepKind;
    let binds = binding(p, before);
    let wi_of: BTreeMap<&str, WorkloadIx> = p
        .workloads
        .iter_enumerated()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect();
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let Some(&wi) = wi_of.get(step.workload.as_str()) else {
            continue;
        };
        let w = &p.workloads[wi];
        let from = step.from.as_deref().and_then(|s| p.site_index(s));
        let to = step.to.as_deref().and_then(|s| p.site_index(s));
        let cand = |si: SiteIx| w.candidate_at(si);
        let name = |si: SiteIx| p.sites[si].id.as_str();
        let text = match (step.kind, from, to) {
            (StepKind::Stage, Some(f), Some(t)) => format!(
                "moves one replica of {} off {} through {} (staging): the sites it is going to and coming from are waiting on each other for room",
                w.id, name(f), name(t)
            ),
            (_, Some(f), Some(t)) => match (cand(f), cand(t)) {
                (None, _) => format!(
                    "{} can no longer run at {}: {}",
                    w.id,
                    name(f),
                    p.ineligible(wi, f)
                        .map_or_else(|| "not a candidate".to_string(), |i| i.describe(name(f)))
                ),
                (Some(a), Some(b)) => {
                    let terms = [
                        (
                            "energy",
                            a.energy_cost - b.energy_cost,
                            format!(
                                "price {:.3} → {:.3} /kWh",
                                p.sites[f].physics.price_per_kwh, p.sites[t].physics.price_per_kwh
                            ),
                        ),
                        (
                            "carbon",
                            a.carbon_cost - b.carbon_cost,
                            format!(
                                "{:.0} → {:.0} gCO2/kWh",
                                p.sites[f].carbon_g_per_kwh, p.sites[t].carbon_g_per_kwh
                            ),
                        ),
                        (
                            "latency",
                            a.latency_cost - b.latency_cost,
                            format!("mean RTT {:.1} → {:.1} ms", a.mean_rtt_ms, b.mean_rtt_ms),
                        ),
                        ("thermal risk", a.thermal_cost - b.thermal_cost, String::new()),
                    ];
                    let saving = a.cost() - b.cost();
                    let src_binds = binds
                        .get(f.ix())
                        .filter(|b| !b.binding.is_empty())
                        .map(|b| b.binding.join(", "));
                    if saving > EPS {
                        // Terms too small to show at four decimals are left out.
                        let mut parts: Vec<_> = terms.iter().filter(|t| t.1.abs() >= 5e-5).collect();
                        parts.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
                        let detail: Vec<String> = parts
                            .iter()
                            .map(|(n, d, why)| {
                                if why.is_empty() {
                                    format!("{n} {d:+.4}")
                                } else {
                                    format!("{n} {d:+.4} ({why})")
                                }
                            })
                            .collect();
                        format!(
                            "{} {} → {}: saves {:.4}/h per replica — {}",
                            w.id,
                            name(f),
                            name(t),
                            saving,
                            detail.join(", ")
                        )
                    } else if let Some(b) = src_binds {
                        format!(
                            "{} {} → {}: costs {:.4}/h more per replica there, but {} is at its limit ({b}) and the room goes to where it is worth more",
                            w.id,
                            name(f),
                            name(t),
                            -saving,
                            name(f)
                        )
                    } else {
                        format!(
                            "{} {} → {}: makes room at {} for replicas that gain more there",
                            w.id,
                            name(f),
                            name(t),
                            name(f)
                        )
                    }
                }
                (Some(_), None) => format!(
                    "{} {} → {}: the destination is not a candidate (plan made on another instance?)",
                    w.id,
                    name(f),
                    step.to.as_deref().unwrap_or("-")
                ),
            },
            (StepKind::Start, None, Some(t)) => {
                let placed = before.placed(wi);
                if placed < w.replicas {
                    format!(
                        "starts a replica of {} at {}: it had {} of {} replicas placed",
                        w.id,
                        name(t),
                        placed,
                        w.replicas
                    )
                } else {
                    format!(
                        "starts {} at {}: the second half of a move that stops the replica first (disruption allowed)",
                        w.id,
                        name(t)
                    )
                }
            }
            (StepKind::Stop, Some(f), None) => format!(
                "stops a replica of {} at {}: the target runs fewer there (or the first half of a stop-then-start move)",
                w.id,
                name(f)
            ),
            _ => format!("{} step on unknown sites", w.id),
        };
        out.push(MoveExplanation {
            step: step.id,
            workload: w.id.clone(),
            text,
        });
    }
    out
}
