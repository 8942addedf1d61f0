//! The placement rules, each one named thing (the Kubernetes scheduler
//! framework's plugins): a [`Rule`] has a *filter* role (why a site can
//! never host a workload, in words: [`Ineligible`]), a *cap* role (the
//! most replicas of a workload a site may take, whatever else runs there)
//! and a *fits* role (may one more replica go there, given the shared
//! [`Load`]). The per-site rows (resources, uplink, IT power) are one rule,
//! [`Rule::Limits`], over every row. Candidates are the filter and cap
//! roles; the greedy's `Load::fits` is every fits role; explanations give
//! the filter's `Ineligible` reason in words (and, for a site with no room
//! left, their own account of which rule is full). The *rows* role
//! ([`Rule::rows`]) is the rule as linear rows for the exact model, which
//! `edgeplan-solve`'s `milp.rs` turns into columns' coefficients and
//! nothing more. The fast path's `fits` checks the same roles on its flat
//! per-slot state; the verifier checks every rule on its own.
//! Affinity groups (the same set of sites for every member) are not a
//! per-replica rule: the MILP models them with a binary per (group, site),
//! the greedy leaves their members to it, and the verifier checks them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeplan_physics::physics::PowerLimit;

use crate::ix::{IndexVec, SiteIx, WorkloadIx};
use crate::load::Load;
use crate::problem::{region_name, Candidate, Problem};
use crate::rows::{most_within, round2, within, Row, UPLINK};

/// A placement rule, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `forbidden_sites`: never there.
    Forbidden,
    /// `pinned_sites`: only there.
    Pinned,
    /// `hardware`: a site must offer every feature asked for.
    Hardware,
    /// Every traffic region reachable, and the SLO's share of traffic
    /// within its RTT.
    Latency,
    /// The per-site rows: every resource, the uplink and IT power (under
    /// the power cap, cooling and inlet) — one replica within an empty
    /// site's limits to be a candidate, the load within them to fit.
    Limits,
    /// `max_per_site`.
    PerSite,
    /// `anti_affinity_group`: one replica of the group per site.
    AntiAffinity,
    /// `max_per_failure_domain`.
    FailureDomainSpread,
    /// `limits.max_moves`: replicas started where they did not run.
    MoveBudget,
}

impl Rule {
    /// Every rule. The first whose filter rules a site out is the reason
    /// given for it (forbidden, pinned, hardware, latency, then limits);
    /// the cheap fits roles come before the limits' row sums.
    pub const ALL: [Rule; 9] = [
        Rule::Forbidden,
        Rule::Pinned,
        Rule::Hardware,
        Rule::Latency,
        Rule::PerSite,
        Rule::MoveBudget,
        Rule::AntiAffinity,
        Rule::FailureDomainSpread,
        Rule::Limits,
    ];

    /// Filter role: why site `si` can never host workload `wi` under this
    /// rule (`demand` and `dynamic_kw` are one replica's), or `None`.
    pub fn filter(
        self,
        p: &Problem,
        wi: WorkloadIx,
        si: SiteIx,
        demand: &[f64],
        dynamic_kw: f64,
    ) -> Option<Ineligible> {
        let wl = &p.instance_workloads[wi];
        let site = &p.sites[si];
        match self {
            Rule::Forbidden => wl
                .forbidden_sites
                .contains(&site.id)
                .then_some(Ineligible::Forbidden),
            Rule::Pinned => (!wl.pinned_sites.is_empty() && !wl.pinned_sites.contains(&site.id))
                .then_some(Ineligible::NotPinned),
            Rule::Hardware => wl
                .hardware
                .iter()
                .find(|h| !p.hardware[si].contains(h))
                .map(|missing| Ineligible::Hardware {
                    missing: missing.clone(),
                }),
            Rule::Latency => p.latency_reason(wi, si),
            Rule::Limits => p.size_reason(si, demand, dynamic_kw),
            Rule::PerSite | Rule::AntiAffinity | Rule::FailureDomainSpread | Rule::MoveBudget => {
                None
            }
        }
    }

    /// Cap role: the most replicas of `wi` site `si` may take under this
    /// rule whatever else runs there (`u32::MAX`: no cap).
    pub fn cap(
        self,
        p: &Problem,
        wi: WorkloadIx,
        si: SiteIx,
        demand: &[f64],
        dynamic_kw: f64,
    ) -> u32 {
        let wl = &p.instance_workloads[wi];
        match self {
            Rule::PerSite => wl.replicas.min(wl.max_per_site.unwrap_or(u32::MAX)),
            Rule::AntiAffinity if wl.anti_affinity_group.is_some() => 1,
            Rule::Limits => p
                .rows()
                .map(|row| most_within(row.need_of(demand, dynamic_kw), p.limit(si, row)))
                .min()
                .unwrap_or(u32::MAX),
            _ => u32::MAX,
        }
    }

    /// Fits role: may one more replica of `wi` go to candidate site `si`
    /// (a move when `is_move`) given what `load` already holds?
    pub fn fits(self, p: &Problem, load: &Load, wi: WorkloadIx, si: SiteIx, is_move: bool) -> bool {
        let w = &p.workloads[wi];
        match self {
            Rule::Limits => load.room(p, wi, si).is_ok(),
            Rule::PerSite => w
                .candidate_at(si)
                .is_some_and(|c| load.count(wi, si) < c.max_count),
            Rule::AntiAffinity => load
                .anti_group_of(wi)
                .is_none_or(|g| load.in_group(g, si) == 0),
            Rule::FailureDomainSpread => {
                match (w.max_per_failure_domain, p.sites[si].failure_domain) {
                    (Some(k), Some(d)) => load.in_domain(wi, d) < k,
                    _ => true,
                }
            }
            Rule::MoveBudget => !is_move || p.max_moves.is_none_or(|k| load.moves < u64::from(k)),
            Rule::Forbidden | Rule::Pinned | Rule::Hardware | Rule::Latency => true,
        }
    }
}

/// A decision a rule's linear row speaks of, for the exact model: the
/// replicas of a workload on a site (`x`), or those of them started there
/// where they did not run (`m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Term {
    Placed(WorkloadIx, SiteIx),
    MovedIn(WorkloadIx, SiteIx),
}

/// One linear constraint of a rule: `Σ coef · term ≤ upper`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearRow {
    /// Its name in the exported model (`cap_s3_cpu_cores`, `power_s3`, …).
    pub name: String,
    pub terms: Vec<(Term, f64)>,
    pub upper: f64,
}

impl Rule {
    /// The rules with a rows role, in the order the exact model adds them.
    pub const WITH_ROWS: [Rule; 4] = [
        Rule::FailureDomainSpread,
        Rule::Limits,
        Rule::AntiAffinity,
        Rule::MoveBudget,
    ];

    /// Rows role: this rule as linear rows over the replicas placed and
    /// moved, for the exact model — only the rows that can bind when each
    /// candidate holds at most its cap. (Filters and caps need no rows:
    /// they decide which columns exist and their bounds. A move column
    /// exists wherever a candidate can take more replicas than it runs.)
    pub fn rows(self, p: &Problem) -> Vec<LinearRow> {
        let mut rows = Vec::new();
        match self {
            Rule::Limits => {
                let mut at_site: IndexVec<SiteIx, Vec<(WorkloadIx, &Candidate)>> =
                    IndexVec::from_elem_n(Vec::new(), p.sites.len());
                for (wi, w) in p.workloads.iter_enumerated() {
                    for c in &w.candidates {
                        at_site[c.site].push((wi, c));
                    }
                }
                for si in p.sites.indices() {
                    let here = &at_site[si];
                    for row in p.rows() {
                        let name = match row {
                            Row::Resource(r) => format!("cap_s{si}_{}", p.resources[r]),
                            Row::Power => format!("power_s{si}"),
                        };
                        let limit = p.limit(si, row);
                        // A candidate's kW is its own figure at the site.
                        let need = |wi: WorkloadIx, c: &Candidate| {
                            row.need_of(&p.workloads[wi].demand, c.dynamic_kw)
                        };
                        let terms: Vec<(Term, f64)> = here
                            .iter()
                            .map(|&(wi, c)| (Term::Placed(wi, si), need(wi, c)))
                            .filter(|(_, d)| *d > 0.0)
                            .collect();
                        let most: f64 = here
                            .iter()
                            .map(|&(wi, c)| need(wi, c).max(0.0) * c.max_count as f64)
                            .sum();
                        if most > limit && !terms.is_empty() {
                            rows.push(LinearRow {
                                name,
                                terms,
                                upper: limit,
                            });
                        }
                    }
                }
            }
            Rule::FailureDomainSpread => {
                for (wi, w) in p.workloads.iter_enumerated() {
                    let Some(k) = w.max_per_failure_domain else {
                        continue;
                    };
                    for d in 0..p.failure_domains.len() {
                        let inside: Vec<&Candidate> = w
                            .candidates
                            .iter()
                            .filter(|c| p.sites[c.site].failure_domain == Some(d))
                            .collect();
                        let most: u64 = inside.iter().map(|c| u64::from(c.max_count)).sum();
                        if most > u64::from(k) {
                            rows.push(LinearRow {
                                name: format!("domain_w{wi}_d{d}"),
                                terms: inside
                                    .iter()
                                    .map(|c| (Term::Placed(wi, c.site), 1.0))
                                    .collect(),
                                upper: f64::from(k),
                            });
                        }
                    }
                }
            }
            Rule::AntiAffinity => {
                for (g, (_, members)) in p.anti_affinity_groups.iter().enumerate() {
                    for si in p.sites.indices() {
                        let terms: Vec<(Term, f64)> = members
                            .iter()
                            .filter(|&&wi| p.workloads[wi].candidate_at(si).is_some())
                            .map(|&wi| (Term::Placed(wi, si), 1.0))
                            .collect();
                        if terms.len() > 1 {
                            rows.push(LinearRow {
                                name: format!("anti_g{g}_s{si}"),
                                terms,
                                upper: 1.0,
                            });
                        }
                    }
                }
            }
            Rule::MoveBudget => {
                if let Some(k) = p.max_moves {
                    let terms = p
                        .workloads
                        .iter_enumerated()
                        .flat_map(|(wi, w)| {
                            w.candidates
                                .iter()
                                .filter(move |c| w.current_at(c.site) < c.max_count)
                                .map(move |c| (Term::MovedIn(wi, c.site), 1.0))
                        })
                        .collect();
                    rows.push(LinearRow {
                        name: "max_moves".to_string(),
                        terms,
                        upper: f64::from(k),
                    });
                }
            }
            Rule::Forbidden | Rule::Pinned | Rule::Hardware | Rule::Latency | Rule::PerSite => {}
        }
        rows
    }
}

impl Load {
    /// May one more replica of `wi` go to `si` (a move when `is_move`)?
    /// Every rule's fits role: a candidate under its per-site count, the
    /// move budget, the site's limits, anti-affinity and the
    /// failure-domain spread.
    pub fn fits(&self, p: &Problem, wi: WorkloadIx, si: SiteIx, is_move: bool) -> bool {
        Rule::ALL.iter().all(|r| r.fits(p, self, wi, si, is_move))
    }
}

/// Why a site can never host a workload, whatever else runs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ineligible {
    /// Too little of the traffic is within the SLO's RTT.
    Latency {
        within_pct: f64,
        needed_pct: f64,
        rtt_ms: f64,
    },
    /// A traffic region has no network path to the site.
    Unreachable {
        region: String,
    },
    Hardware {
        missing: String,
    },
    NotPinned,
    Forbidden,
    /// One replica needs more of a resource than the site has.
    TooBig {
        resource: String,
        need: f64,
        capacity: f64,
    },
    /// One replica's power does not fit under the site's effective limit.
    TooHot {
        need_kw: f64,
        available_kw: f64,
        binding: PowerLimit,
    },
}

impl Ineligible {
    /// A short stable name of the kind of reason.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Ineligible::Latency { .. } => "latency",
            Ineligible::Unreachable { .. } => "unreachable",
            Ineligible::Hardware { .. } => "hardware",
            Ineligible::NotPinned => "pinned",
            Ineligible::Forbidden => "forbidden",
            Ineligible::TooBig { .. } => "too_big",
            Ineligible::TooHot { .. } => "too_hot",
        }
    }

    pub fn describe(&self, site: &str) -> String {
        match self {
            Ineligible::Latency { within_pct, needed_pct, rtt_ms } => format!(
                "{site} is out of latency reach ({within_pct:.0} % of traffic within {rtt_ms} ms, the SLO needs {needed_pct} %)"
            ),
            Ineligible::Unreachable { region } => {
                format!("{site} has no network path to region {region}")
            }
            Ineligible::Hardware { missing } => format!("{site} lacks hardware {missing:?}"),
            Ineligible::NotPinned => format!("{site} is not among its pinned sites"),
            Ineligible::Forbidden => format!("{site} is forbidden to it"),
            Ineligible::TooBig { resource, need, capacity } if resource == UPLINK => format!(
                "{site}'s {} Gbps uplink is too small: one replica's egress is {} Gbps",
                round2(*capacity),
                round2(*need)
            ),
            Ineligible::TooBig { resource, need, capacity } => format!(
                "{site} has {capacity} {resource} in all, one replica needs {need}"
            ),
            Ineligible::TooHot { need_kw, available_kw, binding } => format!(
                "{site} has {available_kw:.2} kW under its {} even when empty, one replica needs {need_kw:.2} kW",
                binding.describe()
            ),
        }
    }
}

impl Problem {
    /// Why site `si` can never host workload `wi`, or `None` if it may.
    pub fn ineligible(&self, wi: WorkloadIx, si: SiteIx) -> Option<Ineligible> {
        let wl = &self.workloads[wi];
        if wl.candidate_at(si).is_some() {
            return None;
        }
        self.first_filter(wi, si, &wl.demand, self.replica_dynamic_kw(wi, si), true)
    }

    /// The first filter that rules site `si` out for workload `wi`
    /// (`demand` and `dynamic_kw` are one replica's); latency only when
    /// asked (`build` checks it once per network node).
    pub(crate) fn first_filter(
        &self,
        wi: WorkloadIx,
        si: SiteIx,
        demand: &[f64],
        dynamic_kw: f64,
        latency: bool,
    ) -> Option<Ineligible> {
        Rule::ALL
            .iter()
            .filter(|r| latency || **r != Rule::Latency)
            .find_map(|r| r.filter(self, wi, si, demand, dynamic_kw))
    }

    /// Unreachable regions or an SLO the site's RTTs cannot meet.
    pub(crate) fn latency_reason(&self, wi: WorkloadIx, si: SiteIx) -> Option<Ineligible> {
        let wl = &self.instance_workloads[wi];
        for (ri, _) in self.traffic[wi].iter() {
            if !self.topology.rtt_ms[*ri][si.ix()].is_finite() {
                return Some(Ineligible::Unreachable {
                    region: region_name(&self.instance_workloads[wi], *ri, &self.traffic[wi]),
                });
            }
        }
        if let Some(slo) = &wl.slo {
            let within: f64 = self.traffic[wi]
                .iter()
                .filter(|(r, _)| self.topology.rtt_ms[*r][si.ix()] <= slo.rtt_ms)
                .map(|(_, share)| share)
                .sum();
            if within * 100.0 + 1e-6 < slo.percentile {
                return Some(Ineligible::Latency {
                    // + 0.0 turns an empty sum's -0.0 into 0.0 for display.
                    within_pct: within * 100.0 + 0.0,
                    needed_pct: slo.percentile,
                    rtt_ms: slo.rtt_ms,
                });
            }
        }
        None
    }

    /// One replica bigger than the site, or hotter than its power limit.
    pub(crate) fn size_reason(
        &self,
        si: SiteIx,
        demand: &[f64],
        dynamic_kw: f64,
    ) -> Option<Ineligible> {
        let (row, need, limit) = self
            .rows()
            .map(|row| (row, row.need_of(demand, dynamic_kw), self.limit(si, row)))
            .find(|(_, need, limit)| !within(*need, *limit))?;
        Some(match row {
            Row::Resource(r) => Ineligible::TooBig {
                resource: self.resources[r].clone(),
                need,
                capacity: limit,
            },
            Row::Power => Ineligible::TooHot {
                need_kw: need,
                available_kw: limit,
                binding: self.sites[si].physics.binding,
            },
        })
    }

    /// One line on why no site can host workload `wi` (for validation):
    /// reasons grouped by kind, a few sites named per kind.
    pub fn ineligibility_summary(&self, wi: WorkloadIx) -> String {
        let mut by_kind: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (si, site) in self.sites.iter_enumerated() {
            let (kind, text) = match self.ineligible(wi, si) {
                Some(reason) => (reason.kind_name(), reason.describe(&site.name)),
                None => ("room", format!("{} cannot fit even one replica", site.name)),
            };
            by_kind.entry(kind).or_default().push(text);
        }
        by_kind
            .into_values()
            .map(|v| {
                let shown = v.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
                if v.len() > 3 {
                    format!("{shown}; and {} more sites alike", v.len() - 3)
                } else {
                    shown
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Problem {
    /// This problem with each candidate capped by the rules alone, not by
    /// one site's limits: where a limit is reached, a cap carrying it would
    /// hide the limit's price from the multipliers (the fast path's
    /// Lagrangian never sees the row bind). For prices only: a placement of
    /// this problem may be over a limit.
    pub fn caps_without_limits(&self) -> Problem {
        let mut p = self.clone();
        for (wi, w) in p.workloads.iter_enumerated_mut() {
            for c in &mut w.candidates {
                c.max_count = Rule::ALL
                    .iter()
                    .filter(|r| **r != Rule::Limits)
                    .map(|r| r.cap(self, wi, c.site, &w.demand, c.dynamic_kw))
                    .min()
                    .unwrap_or(u32::MAX);
            }
        }
        p
    }
}
