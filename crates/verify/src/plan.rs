//! A plan checked against the instance: each wave's worst case, the
//! states the executor reaches mid-plan, and a step's start precondition.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_model::instance::Instance;
use edgeplan_model::placement::Placement;
use edgeplan_model::plan::{Plan, Step};

use crate::counts::*;
use crate::network::rtt_from;
use crate::site::*;
use crate::{Violation, TOL};

/// What `verify_plan` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanReport {
    /// No violation at any wave.
    pub valid: bool,
    /// The instance differs from the one the plan was made from.
    pub stale: bool,
    /// Replaying the plan ends at its target.
    pub reaches_target: bool,
    pub violations: Vec<Violation>,
    /// Sites over a limit before the plan's first step (not the plan's
    /// doing), and how the plan brings each back: `rule` and `item` as in a
    /// violation, the message tells the trajectory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overloads: Vec<Violation>,
}

/// Replay a plan from the instance's current placement and check, for each
/// wave, the worst case of any order its steps may run in (every step holds
/// its target, no source released yet) against every site limit and the
/// spread rules (a replica counts where it serves; any subset of the wave
/// may have cut over), plus the concurrency limits, dependencies, routes and
/// the end state. The executor starts a wave only once the previous one has
/// finished, so these worst cases bound every state it can reach. A site
/// already over a limit at the start is the start's state: only growth of
/// what it is over on is a violation; its trajectory is in `overloads`.
pub fn verify_plan(inst: &Instance, plan: &Plan) -> PlanReport {
    let mut v: Vec<Violation> = Vec::new();
    macro_rules! bad {
        ($rule:expr, $item:expr, $msg:expr) => {
            v.push(Violation {
                rule: $rule.to_string(),
                item: $item,
                message: $msg,
            })
        };
    }
    let checks = site_checks(inst);
    let site_ix = site_index(inst);
    let wl_ix = workload_index(inst);
    let limits = &inst.limits;
    let per_link = ((1.0 / limits.migration_bandwidth_share).floor() as u32).max(1);

    // Own graph for route checks.
    let mut node_ix: HashMap<&str, usize> = HashMap::new();
    for l in &inst.network.links {
        for id in [l.a.as_str(), l.b.as_str()] {
            let n = node_ix.len();
            node_ix.entry(id).or_insert(n);
        }
    }
    for s in &inst.sites {
        let n = node_ix.len();
        node_ix.entry(s.node_id()).or_insert(n);
    }
    let mut adj = vec![Vec::new(); node_ix.len()];
    for l in &inst.network.links {
        let (a, b) = (node_ix[l.a.as_str()], node_ix[l.b.as_str()]);
        adj[a].push((b, l.rtt_ms));
        adj[b].push((a, l.rtt_ms));
    }

    let (mut counts, unknown) = current_counts(inst, &site_ix);
    for (workload, sid) in unknown {
        bad!(
            "unknown_site",
            workload.to_string(),
            format!("current placement names unknown site {sid:?}")
        );
    }
    let mut wave_of_step: HashMap<usize, usize> = HashMap::new();
    for w in &plan.waves {
        for &s in &w.steps {
            if wave_of_step.insert(s, w.index).is_some() {
                bad!(
                    "plan",
                    format!("step {s}"),
                    format!("step {s} appears in more than one wave")
                );
            }
        }
    }
    if wave_of_step.len() != plan.steps.len() {
        bad!(
            "plan",
            "waves".into(),
            format!(
                "{} steps but {} placed in waves",
                plan.steps.len(),
                wave_of_step.len()
            )
        );
    }
    // The committed state's loads: at the start, then after each wave.
    let (mut base_used, mut base_kw) = site_loads(inst, &checks, entries(&counts));
    let mut overloads = Overloads::at_start(inst, &checks, &base_used, &base_kw);
    let mut makespan = 0.0;
    for (k, wave) in plan.waves.iter().enumerate() {
        let label = format!("wave {k}");
        makespan += wave.duration_s;
        let mut in_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut out_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut link_count: BTreeMap<usize, u32> = BTreeMap::new();
        let mut leaving: BTreeMap<(usize, usize), u32> = BTreeMap::new();
        let mut arriving: Vec<(usize, usize, u32)> = Vec::new();
        let mut receiving: Vec<usize> = Vec::new();
        let mut moving_in: Vec<(usize, Option<usize>, usize)> = Vec::new();
        if wave.steps.len() > limits.max_in_flight as usize {
            bad!(
                "max_in_flight",
                label.clone(),
                format!(
                    "{label}: {} steps, at most {} in flight",
                    wave.steps.len(),
                    limits.max_in_flight
                )
            );
        }
        for &sid in &wave.steps {
            let Some(step) = plan.steps.get(sid) else {
                bad!(
                    "plan",
                    label.clone(),
                    format!("{label}: unknown step {sid}")
                );
                continue;
            };
            let Some(&wi) = wl_ix.get(step.workload.as_str()) else {
                bad!(
                    "unknown_workload",
                    step.workload.clone(),
                    format!("step {sid}: unknown workload")
                );
                continue;
            };
            if step.duration_s > wave.duration_s + TOL {
                bad!(
                    "timing",
                    format!("step {sid}"),
                    format!(
                        "step {sid} lasts {} s, longer than its wave",
                        step.duration_s
                    )
                );
            }
            for d in &step.depends_on {
                if wave_of_step.get(d).is_none_or(|w| *w >= k) {
                    bad!(
                        "dependency",
                        format!("step {sid}"),
                        format!("step {sid} depends on step {d}, which is not in an earlier wave")
                    );
                }
            }
            let from = step.from.as_deref().map(|f| site_ix.get(f).copied());
            let to = step.to.as_deref().map(|t| site_ix.get(t).copied());
            if matches!(from, Some(None)) || matches!(to, Some(None)) {
                bad!(
                    "unknown_site",
                    format!("step {sid}"),
                    format!("step {sid} names an unknown site")
                );
                continue;
            }
            if let Some(Some(f)) = from {
                *out_count.entry(f).or_default() += 1;
                *leaving.entry((wi, f)).or_default() += 1;
            }
            if let Some(Some(t)) = to {
                *in_count.entry(t).or_default() += 1;
                arriving.push((wi, t, 1));
                receiving.push(t);
                moving_in.push((wi, from.flatten(), t));
            }
            if let (Some(Some(f)), Some(Some(t))) = (from, to) {
                // The declared links must form a shortest path between the two sites.
                let (a, b) = (
                    node_ix[inst.sites[f].node_id()],
                    node_ix[inst.sites[t].node_id()],
                );
                let mut at = a;
                let mut rtt = 0.0;
                let mut ok = true;
                for &l in &step.links {
                    let Some(link) = inst.network.links.get(l) else {
                        ok = false;
                        break;
                    };
                    let (x, y) = (node_ix[link.a.as_str()], node_ix[link.b.as_str()]);
                    at = if x == at {
                        y
                    } else if y == at {
                        x
                    } else {
                        ok = false;
                        break;
                    };
                    rtt += link.rtt_ms;
                    *link_count.entry(l).or_default() += 1;
                }
                let shortest = rtt_from(&adj, a)[b];
                if !ok || at != b || rtt > shortest + 1e-6 * shortest.max(1.0) {
                    bad!(
                        "route",
                        format!("step {sid}"),
                        format!(
                            "step {sid}: its links are not a shortest path from {} to {}",
                            inst.sites[f].id, inst.sites[t].id
                        )
                    );
                }
            }
        }
        for (rule, counts, most, verb) in [
            (
                "max_in_per_site",
                &in_count,
                limits.max_in_per_site,
                "arrive at",
            ),
            (
                "max_out_per_site",
                &out_count,
                limits.max_out_per_site,
                "leave",
            ),
        ] {
            for (&s, &n) in counts {
                if n > most {
                    let id = &inst.sites[s].id;
                    bad!(
                        rule,
                        id.clone(),
                        format!("{label}: {n} steps {verb} {id}, at most {most}")
                    );
                }
            }
        }
        for (&l, &n) in &link_count {
            if n > per_link {
                bad!(
                    "link",
                    format!("link {l}"),
                    format!("{label}: {n} migrations share link {l}, at most {per_link}")
                );
            }
        }
        for (&(wi, f), &n) in &leaving {
            let have = counts.get(&(wi, f)).copied().unwrap_or(0);
            if n > have {
                bad!(
                    "source",
                    inst.workloads[wi].id.clone(),
                    format!(
                        "{label}: {n} replicas of {} leave {}, which runs {have}",
                        inst.workloads[wi].id, inst.sites[f].id
                    )
                );
            }
        }
        // Worst case: everything arriving is held, nothing leaving is released yet.
        let (used, it_kw) = site_loads(
            inst,
            &checks,
            entries(&counts).chain(arriving.iter().copied()),
        );
        receiving.sort_unstable();
        receiving.dedup();
        for s in receiving {
            for mut x in caused_breaches(
                &inst.sites[s],
                checks[s].as_ref(),
                (&used[s], it_kw[s]),
                (&base_used[s], base_kw[s]),
            ) {
                x.message = format!("{label} (all steps in flight): {}", x.message);
                v.push(x);
            }
        }
        for mut x in spread_in_flight(inst, &counts, &moving_in) {
            x.message = format!(
                "{label} (arrivals cut over, departures not yet): {}",
                x.message
            );
            v.push(x);
        }
        for (&(wi, f), &n) in &leaving {
            let c = counts.entry((wi, f)).or_default();
            if *c < n {
                bad!(
                    "source",
                    inst.workloads[wi].id.clone(),
                    format!("{label}: replica missing at {}", inst.sites[f].id)
                );
            }
            *c = c.saturating_sub(n);
        }
        for &(wi, t, n) in &arriving {
            *counts.entry((wi, t)).or_default() += n;
        }
        (base_used, base_kw) = site_loads(inst, &checks, entries(&counts));
        overloads.after_wave(k, &base_used, &base_kw);
    }
    if (makespan - plan.makespan_s).abs() > 1e-6 * makespan.max(1.0) {
        bad!(
            "timing",
            "plan".into(),
            format!(
                "makespan {} s is not the sum of its waves, {makespan} s",
                plan.makespan_s
            )
        );
    }
    let mut end = Placement::default();
    for (&(wi, si), &n) in &counts {
        if n > 0 {
            end.assignments
                .entry(inst.workloads[wi].id.clone())
                .or_default()
                .insert(inst.sites[si].id.clone(), n);
        }
    }
    if end != plan.reached {
        bad!(
            "end_state",
            "plan".into(),
            "replaying the plan does not end where it says it does".into()
        );
    }
    let reaches_target = end == plan.target;
    if !reaches_target && plan.blocked.is_empty() {
        bad!(
            "end_state",
            "plan".into(),
            "the plan stops short of its target but reports nothing blocked".into()
        );
    }
    PlanReport {
        valid: v.is_empty(),
        stale: plan.state_hash != edgeplan_model::plan::state_hash(inst),
        reaches_target,
        violations: v,
        overloads: overloads.report(inst),
    }
}

/// Sites over a limit at the start of a plan, followed wave by wave.
struct Overloads<'a> {
    tracked: Vec<Tracked<'a>>,
}

/// One quantity of one site over its limit at the start.
struct Tracked<'a> {
    site: usize,
    rule: String,
    quantity: Quantity<'a>,
    start: f64,
    limit: f64,
    /// The first wave after which it is within its limit, and its value then.
    cleared_after: Option<(usize, f64)>,
    /// Its value after the last wave seen.
    last: f64,
}

impl<'a> Overloads<'a> {
    /// Every quantity over its limit under the loads at the start.
    fn at_start(
        inst: &Instance,
        checks: &[Option<SiteCheck>],
        used: &[BTreeMap<&'a str, f64>],
        it_kw: &[f64],
    ) -> Overloads<'a> {
        let mut tracked = Vec::new();
        for (si, site) in inst.sites.iter().enumerate() {
            for b in site_breaches(site, checks[si].as_ref(), &used[si], it_kw[si]) {
                if let Some((quantity, value, limit)) = b.measure {
                    tracked.push(Tracked {
                        site: si,
                        rule: b.violation.rule,
                        quantity,
                        start: value,
                        limit,
                        cleared_after: None,
                        last: value,
                    });
                }
            }
        }
        Overloads { tracked }
    }

    /// The committed loads after `wave`.
    fn after_wave(&mut self, wave: usize, used: &[BTreeMap<&str, f64>], it_kw: &[f64]) {
        for t in &mut self.tracked {
            t.last = measure(t.quantity, &used[t.site], it_kw[t.site]);
            if t.cleared_after.is_none() && t.last <= t.limit + TOL * t.limit.abs().max(1.0) {
                t.cleared_after = Some((wave, t.last));
            }
        }
    }

    fn report(self, inst: &Instance) -> Vec<Violation> {
        self.tracked
            .into_iter()
            .map(|t| {
                let site = &inst.sites[t.site].id;
                let what = match t.quantity {
                    Quantity::Resource(r) => format!("{r} used"),
                    Quantity::ItKw => "IT kW".to_string(),
                };
                let fate = match t.cleared_after {
                    Some((w, value)) => format!("{value:.3} after wave {w}, within its limit"),
                    None => format!("still over after the plan ({:.3})", t.last),
                };
                Violation {
                    rule: t.rule,
                    item: site.clone(),
                    message: format!(
                        "{site}: {what} {:.3} over {:.3} before the plan (not the plan's doing); {fate}",
                        t.start, t.limit
                    ),
                }
            })
            .collect()
    }
}

/// The spread rules in the worst state of a wave: `committed` replicas,
/// plus `arrivals` (workload, source, target) counted at their target while
/// their sources still count too (a move inside one failure domain counts
/// once there). Only what the arrivals touch is checked: a rule broken
/// before the plan and not made worse is not the plan's doing.
fn spread_in_flight(
    inst: &Instance,
    committed: &Counts,
    arrivals: &[(usize, Option<usize>, usize)],
) -> Vec<Violation> {
    let mut v = Vec::new();
    let domain = |s: usize| inst.sites[s].failure_domain.as_deref();
    let mut at_site: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    let mut in_domain: BTreeMap<(usize, &str), u32> = BTreeMap::new();
    let mut in_group: BTreeMap<(&str, usize), u32> = BTreeMap::new();
    for &(wi, from, to) in arrivals {
        *at_site.entry((wi, to)).or_default() += 1;
        if let Some(d) = domain(to) {
            if from.and_then(domain) != Some(d) {
                *in_domain.entry((wi, d)).or_default() += 1;
            }
        }
        if let Some(g) = inst.workloads[wi].anti_affinity_group.as_deref() {
            *in_group.entry((g, to)).or_default() += 1;
        }
    }
    for (&(wi, si), &n) in &at_site {
        let w = &inst.workloads[wi];
        let total = committed.get(&(wi, si)).copied().unwrap_or(0) + n;
        if let Some(k) = w.max_per_site {
            if total > k {
                v.push(Violation {
                    rule: "max_per_site".into(),
                    item: w.id.clone(),
                    message: format!(
                        "{:?} has {total} replicas on {}, at most {k} allowed",
                        w.id, inst.sites[si].id
                    ),
                });
            }
        }
    }
    for (&(wi, d), &n) in &in_domain {
        let w = &inst.workloads[wi];
        let Some(k) = w.max_per_failure_domain else {
            continue;
        };
        let before: u32 = committed
            .range((wi, 0)..(wi + 1, 0))
            .filter(|(&(_, s), _)| domain(s) == Some(d))
            .map(|(_, n)| *n)
            .sum();
        if before + n > k {
            v.push(Violation {
                rule: "failure_domain".into(),
                item: w.id.clone(),
                message: format!(
                    "{:?} has {} replicas in failure domain {d}, at most {k}",
                    w.id,
                    before + n
                ),
            });
        }
    }
    for (&(g, si), &n) in &in_group {
        let before: u32 = committed
            .iter()
            .filter(|(&(wi, s), _)| {
                s == si && inst.workloads[wi].anti_affinity_group.as_deref() == Some(g)
            })
            .map(|(_, n)| *n)
            .sum();
        if before + n > 1 {
            v.push(Violation {
                rule: "anti_affinity".into(),
                item: g.to_string(),
                message: format!(
                    "anti-affinity group {g:?} has {} replicas on {}",
                    before + n,
                    inst.sites[si].id
                ),
            });
        }
    }
    v
}

/// Check one state the executor reached on the way through `plan`: the
/// steps `succeeded` have moved their replica; the steps `running` hold
/// both ends. Every capacity, power-cap, cooling and inlet limit the state
/// breaks beyond the plan's start, and every spread rule its arrivals break
/// (counting a replica where it serves, any running step possibly cut over).
pub fn verify_in_flight(
    inst: &Instance,
    plan: &Plan,
    succeeded: &[usize],
    running: &[usize],
) -> Vec<Violation> {
    let checks = site_checks(inst);
    let site_ix = site_index(inst);
    let wl_ix = workload_index(inst);
    let (mut counts, _) = current_counts(inst, &site_ix);
    let (base_used, base_kw) = site_loads(inst, &checks, entries(&counts));
    let resolve = |k: usize| {
        let step = plan.steps.get(k)?;
        let wi = *wl_ix.get(step.workload.as_str())?;
        let from = step.from.as_deref().and_then(|f| site_ix.get(f).copied());
        let to = step.to.as_deref().and_then(|t| site_ix.get(t).copied());
        Some((wi, from, to))
    };
    for &k in succeeded {
        if let Some((wi, from, to)) = resolve(k) {
            if let Some(f) = from {
                let c = counts.entry((wi, f)).or_default();
                *c = c.saturating_sub(1);
            }
            if let Some(t) = to {
                *counts.entry((wi, t)).or_default() += 1;
            }
        }
    }
    let arrivals: Vec<(usize, Option<usize>, usize)> = running
        .iter()
        .filter_map(|&k| match resolve(k)? {
            (wi, from, Some(t)) => Some((wi, from, t)),
            _ => None,
        })
        .collect();
    let (used, it_kw) = site_loads(
        inst,
        &checks,
        entries(&counts).chain(arrivals.iter().map(|&(wi, _, t)| (wi, t, 1))),
    );
    let mut v = Vec::new();
    for (si, site) in inst.sites.iter().enumerate() {
        v.extend(caused_breaches(
            site,
            checks[si].as_ref(),
            (&used[si], it_kw[si]),
            (&base_used[si], base_kw[si]),
        ));
    }
    v.extend(spread_in_flight(inst, &counts, &arrivals));
    v
}

/// The start precondition of plan steps against one state of the fleet
/// (its `current` is where replicas run now): built once, asked per step,
/// so a dispatcher round computes the sites' limits and the indices once.
pub struct Preconditions<'a> {
    inst: &'a Instance,
    checks: Vec<Option<SiteCheck>>,
    site_ix: HashMap<&'a str, usize>,
    wl_ix: HashMap<&'a str, usize>,
}

impl<'a> Preconditions<'a> {
    pub fn new(inst: &'a Instance) -> Preconditions<'a> {
        Preconditions {
            inst,
            checks: site_checks(inst),
            site_ix: site_index(inst),
            wl_ix: workload_index(inst),
        }
    }

    /// May `step` start now, with `running` steps holding both ends? The
    /// replica it moves must be at its source (beyond those running steps'
    /// own), and its arrival must not push its target over a limit that it
    /// grows. `Err` says why not.
    pub fn check(&self, running: &[&Step], step: &Step) -> Result<(), String> {
        let inst = self.inst;
        let Some(&wi) = self.wl_ix.get(step.workload.as_str()) else {
            return Err(format!(
                "workload {} is no longer in the inventory",
                step.workload
            ));
        };
        if let Some(from) = step.from.as_deref() {
            let here = inst.workloads[wi].current.get(from).copied().unwrap_or(0);
            let leaving = running
                .iter()
                .filter(|r| r.workload == step.workload && r.from.as_deref() == Some(from))
                .count() as u32;
            if here <= leaving {
                return Err(format!(
                    "{} runs {here} replica(s) at {from}, {leaving} already leaving: none for this step to move",
                    step.workload
                ));
            }
        }
        let Some(to) = step.to.as_deref() else {
            return Ok(());
        };
        let Some(&ti) = self.site_ix.get(to) else {
            return Err(format!("site {to} is no longer in the inventory"));
        };
        // What the target holds: its replicas, and every running arrival.
        let mut held: Vec<(usize, usize, u32)> = inst
            .workloads
            .iter()
            .enumerate()
            .filter_map(|(oi, o)| o.current.get(to).map(|&n| (oi, ti, n)))
            .collect();
        held.extend(
            running
                .iter()
                .filter(|r| r.to.as_deref() == Some(to))
                .filter_map(|r| self.wl_ix.get(r.workload.as_str()))
                .map(|&oi| (oi, ti, 1)),
        );
        let (base_used, base_kw) = site_loads(inst, &self.checks, held.iter().copied());
        let (used, it_kw) = site_loads(
            inst,
            &self.checks,
            held.iter().copied().chain([(wi, ti, 1)]),
        );
        let broken = caused_breaches(
            &inst.sites[ti],
            self.checks[ti].as_ref(),
            (&used[ti], it_kw[ti]),
            (&base_used[ti], base_kw[ti]),
        );
        match broken.first() {
            Some(b) => Err(format!("no room at {to} any more: {}", b.message)),
            None => Ok(()),
        }
    }
}
