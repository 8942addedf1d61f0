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
    /// The resource that is full or too small (`Resource`, `TooBig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub text: String,
}

impl Cause {
    /// Whether the site is ruled out by the network alone: such sites are
    /// only counted in the summary unless [`Detail::All`] is asked.
    pub fn out_of_reach(&self) -> bool {
        matches!(self.kind, CauseKind::Latency | CauseKind::Unreachable)
    }

    /// A few words for the one-line count ("out of GPUs", "at its power cap").
    fn label(&self) -> String {
        match self.kind {
            CauseKind::Latency => "out of latency reach".into(),
            CauseKind::Unreachable => "with no network path to its users".into(),
            CauseKind::Hardware => "without the hardware it needs".into(),
            CauseKind::Pinned => "not among its pinned sites".into(),
            CauseKind::Forbidden => "forbidden to it".into(),
            CauseKind::TooBig => format!(
                "too small in {} for one replica",
                resource_words(self.resource.as_deref())
            ),
            CauseKind::Resource => format!("out of {}", resource_words(self.resource.as_deref())),
            CauseKind::PowerCap => "at its power cap".into(),
            CauseKind::Cooling => "at its cooling capacity".into(),
            CauseKind::Inlet => "at its inlet temperature limit".into(),
            CauseKind::Spread => "at its per-site limit".into(),
            CauseKind::FailureDomain => "in a full failure domain".into(),
            CauseKind::AntiAffinity => "held by its anti-affinity group".into(),
            CauseKind::Affinity => "unable to host its affinity group".into(),
            CauseKind::MoveLimit => "past the move limit".into(),
            CauseKind::Cost => "with room, but dearer than leaving it unplaced".into(),
        }
    }
}

/// How much an unplaced explanation's text lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Detail {
    /// The count, then every site within latency reach and what stops it
    /// (Kubernetes' `FailedScheduling` habit).
    #[default]
    WithinReach,
    /// Also each site out of reach, with its latency figures.
    All,
}

/// Resource names as operators say them.
fn resource_words(resource: Option<&str>) -> String {
    match resource {
        Some("gpus") => "GPUs".into(),
        Some("cpu_cores") => "cores".into(),
        Some("memory_gib") => "memory".into(),
        Some(edgeplan_problem::rows::UPLINK) => "uplink bandwidth".into(),
        Some(r) => r.to_string(),
        None => "capacity".into(),
    }
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

/// Explain every unplaced replica of an indexed placement, listing the
/// sites within reach ([`Detail::WithinReach`]).
pub fn unplaced(p: &Problem, x: &Replicas) -> Vec<UnplacedExplanation> {
    unplaced_with(p, x, Detail::WithinReach)
}

/// [`unplaced`], with the text's detail chosen.
pub fn unplaced_with(p: &Problem, x: &Replicas, detail: Detail) -> Vec<UnplacedExplanation> {
    let load = Load::of(p, x);
    let mut out = Vec::new();
    for (wi, w) in p.workloads.iter_enumerated() {
        let placed = x.placed(wi);
        // A spot replica left out is not unplaced: the market says why.
        if placed >= w.replicas || p.spot(wi).is_some() {
            continue;
        }
        let causes: Vec<Cause> = p
            .sites
            .indices()
            .map(|si| cause(p, &load, x, wi, si))
            .collect();
        let text = summarize(p, wi, w.replicas - placed, &causes, detail);
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
        resource: None,
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
        let resource = match &reason {
            Ineligible::TooBig { resource, .. } => Some(resource.clone()),
            _ => None,
        };
        return Cause {
            resource,
            ..make(kind, reason.describe(&site.name))
        };
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
        let (kind, resource) = match short.row {
            Row::Resource(r) => (CauseKind::Resource, Some(p.resources[r].clone())),
            Row::Power => (site.physics.binding.into(), None),
        };
        return Cause {
            resource,
            ..make(kind, short.describe(p, si))
        };
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

/// Sites within reach listed by name before "and N more" ([`Detail::WithinReach`]).
const LISTED_SITES: usize = 8;

/// The paragraph: first a one-line count of what stops the sites
/// ("0/20 sites can take another replica: 17 out of latency reach, 2 out of
/// GPUs"), then the sites within reach and what stops each (out-of-reach
/// ones too when `detail` is [`Detail::All`]).
fn summarize(
    p: &Problem,
    wi: WorkloadIx,
    unplaced: u32,
    causes: &[Cause],
    detail: Detail,
) -> String {
    let w = &p.workloads[wi];
    let mut counts: BTreeMap<String, (usize, CauseKind)> = BTreeMap::new();
    for c in causes {
        let e = counts.entry(c.label()).or_insert((0, c.kind));
        e.0 += 1;
    }
    let mut counts: Vec<(String, usize, CauseKind)> =
        counts.into_iter().map(|(l, (n, k))| (l, n, k)).collect();
    // Most sites first; ties in the order of the kinds (network first).
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let able = causes.iter().filter(|c| c.kind == CauseKind::Cost).count();
    let count_line = counts
        .iter()
        .map(|(label, n, _)| format!("{n} {label}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "{} of {} replicas of {} unplaced (priority {}). {able}/{} sites can take another replica: {count_line}.",
        unplaced,
        w.replicas,
        w.id,
        w.priority,
        causes.len()
    );
    let cap = match detail {
        Detail::WithinReach => LISTED_SITES,
        Detail::All => usize::MAX,
    };
    let list = |title: &str, shown: Vec<&Cause>, text: &mut String| {
        if shown.is_empty() {
            return;
        }
        let more = shown.len().saturating_sub(cap);
        let named: Vec<&str> = shown.iter().take(cap).map(|c| c.text.as_str()).collect();
        text.push_str(&format!(" {title}: {}", named.join("; ")));
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text.push('.');
    };
    // The tightest causes first: a full resource before a rule before cost.
    let mut within: Vec<&Cause> = causes.iter().filter(|c| !c.out_of_reach()).collect();
    within.sort_by_key(|c| c.kind);
    list("Within reach", within, &mut text);
    if detail == Detail::All {
        list(
            "Out of reach",
            causes.iter().filter(|c| c.out_of_reach()).collect(),
            &mut text,
        );
    }
    text
}

/// Why one step of a migration plan happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MoveExplanation {
    pub step: usize,
    pub workload: String,
    pub text: String,
    /// What one replica saves per hour at its destination (a move between
    /// two sites it may run at); none for starts, stops and staging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saving_per_h: Option<f64>,
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
        let saving_per_h = match (step.kind, from, to) {
            (StepKind::Migrate, Some(f), Some(t)) => {
                cand(f).zip(cand(t)).map(|(a, b)| a.cost() - b.cost())
            }
            _ => None,
        };
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
            (StepKind::Evict, Some(f), None) => evict_text(p, wi, f, step.notice_s, steps),
            _ => format!("{} step on unknown sites", w.id),
        };
        out.push(MoveExplanation {
            step: step.id,
            workload: w.id.clone(),
            text,
            saving_per_h,
        });
    }
    out
}

/// Why a spot replica of `wi` is evicted at `f`: its floor there (energy
/// and carbon alone) passed its bid; or on-demand work this plan starts
/// there takes the room back (named); or the room's price did.
fn evict_text(
    p: &Problem,
    wi: WorkloadIx,
    f: SiteIx,
    notice_s: f64,
    steps: &[crate::plan::Step],
) -> String {
    let w = &p.workloads[wi];
    let site = &p.sites[f];
    let name = &site.name;
    let physics = &site.physics;
    let bid = p.spot(wi).map_or(0.0, |s| s.max_price_per_replica_hour);
    let head = format!(
        "evicts a spot replica of {} at {name} with {notice_s:.0} s notice",
        w.id
    );
    let floor = w.candidate_at(f).map(|c| c.energy_cost + c.carbon_cost);
    if let Some(floor) = floor.filter(|&floor| floor > bid) {
        return format!(
            "{head}: its spot price there passed its bid — energy and carbon alone cost {floor:.4}/h a replica ({:.3}/kWh at a PUE of {:.2}, {:.1} °C outside), over its bid of {bid:.4}/h",
            physics.price_per_kwh, physics.pue, physics.ambient_c
        );
    }
    let mut takers: Vec<&str> = steps
        .iter()
        .filter(|s| s.to.as_deref() == Some(site.id.as_str()) && s.workload != w.id)
        .filter(|s| {
            p.workloads
                .iter_enumerated()
                .find(|(_, x)| x.id == s.workload)
                .is_some_and(|(wj, _)| p.spot(wj).is_none())
        })
        .map(|s| s.workload.as_str())
        .collect();
    takers.dedup();
    let limit = format!(
        "{name}'s IT limit is {:.1} kW, set by its {} at {:.1} °C outside",
        physics.it_limit_kw,
        physics.binding.describe(),
        physics.ambient_c
    );
    if takers.is_empty() {
        return format!(
            "{head}: its spot price there passed its bid of {bid:.4}/h — the room is scarce ({limit})"
        );
    }
    let named = if takers.len() > 3 {
        format!("{} and {} more", takers[..3].join(", "), takers.len() - 3)
    } else {
        takers.join(", ")
    };
    format!("{head}: on-demand work takes the room back — {named} start(s) there in this plan ({limit})")
}
