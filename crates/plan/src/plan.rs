//! The migration planner: turns today's placement into a target through
//! waves of steps that a provisioner executes. Waves run one after another;
//! within a wave steps run concurrently in any order. Safety is by worst
//! case: while a wave runs, every step holds its target and no source is
//! released yet, and that state must keep every capacity, power, cooling and
//! inlet limit of each receiving site (`Problem::room_for`). The executor
//! enforces the same model: a wave starts only once the previous one has
//! finished (see `execution`). Spread rules hold in every state the executor
//! can reach, counting a replica where it serves (its source until its step
//! succeeds, then its target): with any subset of a wave cut over, that is
//! the wave's arrivals counted and its departures not yet released — so
//! `max_per_site`, `max_per_failure_domain` and anti-affinity are checked on
//! that worst case too (a move inside one failure domain counts once there).
//! A site over a limit at the start (a heat wave cut its cooling) takes no
//! arrival that adds to what it is over on (`room_for` refuses), and moves
//! away from it go first so it is back under as early as the limits allow.
//! Deadlocks
//! (A waits for B's space, B for A's) are broken through a staging site with
//! room or, where a workload allows disruption, break-before-make. What
//! cannot be reached safely is reported as blocked, with the reason. Pure.

use std::collections::HashMap;

use edgeplan_model::instance::{Instance, Limits};
use edgeplan_model::placement::Placement;
pub use edgeplan_model::plan::{state_hash, Blocked, Plan, Step, StepKind, Wave};
use edgeplan_physics::topology::Route;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::load::Load;
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;

/// Transfer time of a replica's state over a route, plus the fixed overhead.
pub fn step_duration_s(limits: &Limits, state_gib: f64, route: Option<&Route>) -> f64 {
    let transfer = match route {
        Some(r) if r.bottleneck_gbps.is_finite() && r.bottleneck_gbps > 0.0 => {
            state_gib * 8.0 / (r.bottleneck_gbps * limits.migration_bandwidth_share)
        }
        _ => 0.0,
    };
    limits.step_overhead_s + transfer
}

#[derive(Debug, Clone)]
struct Draft {
    id: usize,
    wi: WorkloadIx,
    kind: StepKind,
    from: Option<SiteIx>,
    to: Option<SiteIx>,
    after: Vec<usize>,
    /// Already rerouted through staging or split into stop + start.
    rewritten: bool,
    /// Final destination, for blocked reports of staged moves.
    goal: Option<SiteIx>,
}

struct Planner<'a> {
    p: &'a Problem,
    routes: HashMap<SiteIx, Vec<Option<Route>>>,
    /// Where replicas serve now (steps of finished waves applied).
    load: Load,
    per_link: usize,
}

/// A wave's arrivals so far, for the spread rules' worst case.
#[derive(Default)]
struct WaveSpread {
    /// (workload, site) → replicas arriving.
    at_site: HashMap<(WorkloadIx, SiteIx), u32>,
    /// (workload, failure domain) → replicas arriving from outside the domain.
    in_domain: HashMap<(WorkloadIx, usize), u32>,
    /// (anti-affinity group, site) → replicas arriving.
    in_group: HashMap<(usize, SiteIx), u32>,
}

impl<'a> Planner<'a> {
    fn route(&mut self, from: SiteIx, to: SiteIx) -> Option<Route> {
        let p = self.p;
        self.routes
            .entry(from)
            .or_insert_with(|| p.topology.routes_from(from.ix()))
            .get(to.ix())
            .cloned()
            .flatten()
    }

    fn count(&self, wi: WorkloadIx, si: SiteIx) -> u32 {
        self.load.count(wi, si)
    }

    /// Would one more replica of `wi` arriving at `to` (from `from`) keep
    /// `max_per_site`, `max_per_failure_domain` and anti-affinity in every
    /// state of the wave (arrivals cut over, departures not yet released)?
    fn spread_ok(
        &self,
        wi: WorkloadIx,
        from: Option<SiteIx>,
        to: SiteIx,
        wave: &WaveSpread,
    ) -> bool {
        let p = self.p;
        let w = &p.workloads[wi];
        let max_here = w.candidate_at(to).map_or(0, |c| c.max_count);
        if self.count(wi, to) + wave.at_site.get(&(wi, to)).copied().unwrap_or(0) + 1 > max_here {
            return false;
        }
        if let (Some(k), Some(d)) = (w.max_per_failure_domain, p.sites[to].failure_domain) {
            let from_inside = from.is_some_and(|f| p.sites[f].failure_domain == Some(d));
            if !from_inside {
                let committed = self.load.in_domain(wi, d);
                if committed + wave.in_domain.get(&(wi, d)).copied().unwrap_or(0) + 1 > k {
                    return false;
                }
            }
        }
        if let Some(g) = self.load.anti_group_of(wi) {
            let committed = self.load.in_group(g, to);
            if committed + wave.in_group.get(&(g, to)).copied().unwrap_or(0) + 1 > 1 {
                return false;
            }
        }
        true
    }

    fn note_arrival(
        &self,
        wi: WorkloadIx,
        from: Option<SiteIx>,
        to: SiteIx,
        wave: &mut WaveSpread,
    ) {
        let p = self.p;
        *wave.at_site.entry((wi, to)).or_default() += 1;
        if let Some(d) = p.sites[to].failure_domain {
            if from.is_none_or(|f| p.sites[f].failure_domain != Some(d)) {
                *wave.in_domain.entry((wi, d)).or_default() += 1;
            }
        }
        if let Some(g) = self.load.anti_group_of(wi) {
            *wave.in_group.entry((g, to)).or_default() += 1;
        }
    }

    fn apply(&mut self, wi: WorkloadIx, si: SiteIx, delta: i32) {
        if delta >= 0 {
            self.load.add(self.p, wi, si, delta.unsigned_abs());
        } else {
            self.load.remove(self.p, wi, si, delta.unsigned_abs());
        }
    }
}

/// Plan the way from the instance's current placement to `target`.
pub fn plan(
    instance: &Instance,
    problem: &Problem,
    target: &Placement,
) -> edgeplan_model::Result<Plan> {
    let target_x = problem.index_placement(target)?;
    let current = problem.current_placement();
    let s = schedule(&instance.limits, problem, &current, &target_x);
    Ok(Plan {
        state_hash: state_hash(instance),
        target: problem.placement_of(&target_x),
        steps: s.steps,
        waves: s.waves,
        makespan_s: s.makespan_s,
        blocked: s.blocked,
        reached: problem.placement_of(&s.reached),
        kpis_before: problem.kpis(&current),
        kpis_after: problem.kpis(&s.reached),
    })
}

/// A plan's steps without the instance around it (see [`schedule`]).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub steps: Vec<Step>,
    pub waves: Vec<Wave>,
    pub makespan_s: f64,
    pub blocked: Vec<Blocked>,
    /// Where the steps end (the target, unless something is blocked).
    pub reached: Replicas,
}

/// The steps from `current` to `target_x` under `limits`: what [`plan`]
/// does, for callers that hold placements rather than an instance (a
/// replay plans every hour's moves of every policy this way).
pub fn schedule(
    limits: &Limits,
    problem: &Problem,
    current: &Replicas,
    target_x: &Replicas,
) -> Schedule {
    let n_sites = problem.sites.len();
    let mut pl = Planner {
        p: problem,
        routes: HashMap::new(),
        load: Load::empty(problem),
        per_link: ((1.0 / limits.migration_bandwidth_share).floor() as usize).max(1),
    };
    for (wi, sites) in current.iter_enumerated() {
        for &(si, n) in sites {
            for _ in 0..n {
                pl.apply(wi, si, 1);
            }
        }
    }

    // The moves: pair each surplus replica with the nearest deficit.
    let mut drafts: Vec<Draft> = Vec::new();
    for (wi, target_sites) in target_x.iter_enumerated() {
        let tgt: HashMap<SiteIx, u32> = target_sites.iter().copied().collect();
        let mut surplus: Vec<SiteIx> = Vec::new();
        let mut deficit: Vec<SiteIx> = Vec::new();
        let mut sites: Vec<SiteIx> = pl.load.x[wi]
            .iter()
            .map(|(s, _)| *s)
            .chain(tgt.keys().copied())
            .collect();
        sites.sort_unstable();
        sites.dedup();
        for si in sites {
            let (c, t) = (pl.count(wi, si), tgt.get(&si).copied().unwrap_or(0));
            surplus.extend(std::iter::repeat_n(si, c.saturating_sub(t) as usize));
            deficit.extend(std::iter::repeat_n(si, t.saturating_sub(c) as usize));
        }
        for to in deficit {
            let best = surplus
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    let ra = pl.route(*a.1, to).map_or(f64::INFINITY, |r| r.rtt_ms);
                    let rb = pl.route(*b.1, to).map_or(f64::INFINITY, |r| r.rtt_ms);
                    ra.total_cmp(&rb)
                })
                .map(|(k, _)| k);
            let (kind, from) = match best {
                Some(k) => (StepKind::Migrate, Some(surplus.swap_remove(k))),
                None => (StepKind::Start, None),
            };
            drafts.push(Draft {
                id: drafts.len(),
                wi,
                kind,
                from,
                to: Some(to),
                after: Vec::new(),
                rewritten: false,
                goal: Some(to),
            });
        }
        // A spot replica that loses its place is evicted with its notice.
        let leaving = if problem.spot(wi).is_some() {
            StepKind::Evict
        } else {
            StepKind::Stop
        };
        for from in surplus {
            drafts.push(Draft {
                id: drafts.len(),
                wi,
                kind: leaving,
                from: Some(from),
                to: None,
                after: Vec::new(),
                rewritten: false,
                goal: None,
            });
        }
    }
    // A site over a limit at the start is brought back first.
    let overloaded: IndexVec<SiteIx, bool> = problem
        .sites
        .indices()
        .map(|si| problem.over_limit(si, &pl.load.used[si]))
        .collect();
    let relieves = |d: &Draft| d.from.is_some_and(|f| overloaded[f]);
    // Stops first (they only free space), then moves away from overloaded
    // sites, then the most important workloads.
    drafts.sort_by(|a, b| {
        let stop = |k: StepKind| matches!(k, StepKind::Stop | StepKind::Evict);
        (!stop(a.kind))
            .cmp(&!stop(b.kind))
            .then(relieves(b).cmp(&relieves(a)))
            .then(
                problem.workloads[b.wi]
                    .priority
                    .cmp(&problem.workloads[a.wi].priority),
            )
            .then(a.id.cmp(&b.id))
    });

    let mut pending: Vec<Draft> = drafts;
    let mut next_id = pending.iter().map(|d| d.id + 1).max().unwrap_or(0);
    let mut scheduled: Vec<(Draft, usize)> = Vec::new(); // (draft, wave)
    let mut wave_of: HashMap<usize, usize> = HashMap::new();
    let mut blocked: Vec<Blocked> = Vec::new();
    let mut wave_index = 0usize;
    // Which step last freed space at a site (for dependencies).
    let mut freed_at: IndexVec<SiteIx, Vec<usize>> = IndexVec::from_elem_n(Vec::new(), n_sites);

    while !pending.is_empty() {
        // Worst case of the wave so far: committed state plus every accepted target.
        let mut worst_used = pl.load.used.clone();
        let mut in_count: IndexVec<SiteIx, u32> = IndexVec::from_elem_n(0, n_sites);
        let mut out_count: IndexVec<SiteIx, u32> = IndexVec::from_elem_n(0, n_sites);
        let mut link_count: HashMap<usize, usize> = HashMap::new();
        let mut spread = WaveSpread::default();
        let mut chosen: Vec<usize> = Vec::new();
        for (k, d) in pending.iter().enumerate() {
            if chosen.len() >= limits.max_in_flight as usize {
                break;
            }
            if !d
                .after
                .iter()
                .all(|id| wave_of.get(id).is_some_and(|w| *w < wave_index))
            {
                continue;
            }
            if let Some(f) = d.from {
                if out_count[f] >= limits.max_out_per_site {
                    continue;
                }
            }
            let mut links = Vec::new();
            if let Some(t) = d.to {
                if in_count[t] >= limits.max_in_per_site {
                    continue;
                }
                if problem.room_for(d.wi, t, &worst_used[t]).is_err()
                    || !pl.spread_ok(d.wi, d.from, t, &spread)
                {
                    continue;
                }
                if let Some(f) = d.from {
                    links = pl.route(f, t).map(|r| r.links).unwrap_or_default();
                    if links
                        .iter()
                        .any(|l| link_count.get(l).copied().unwrap_or(0) >= pl.per_link)
                    {
                        continue;
                    }
                }
            }
            // Accept.
            if let Some(f) = d.from {
                out_count[f] += 1;
            }
            if let Some(t) = d.to {
                in_count[t] += 1;
                pl.note_arrival(d.wi, d.from, t, &mut spread);
                problem.add_use(d.wi, t, &mut worst_used[t], 1.0);
            }
            for l in links {
                *link_count.entry(l).or_default() += 1;
            }
            chosen.push(k);
        }

        if chosen.is_empty() {
            if !break_deadlock(&mut pl, &mut pending, &mut next_id, &wave_of, wave_index) {
                for d in pending.drain(..) {
                    blocked.push(blocked_reason(&mut pl, &d, &wave_of, wave_index));
                }
            }
            continue;
        }
        // Commit the wave: sources released, targets held.
        let mut is_chosen = vec![false; pending.len()];
        for &k in &chosen {
            is_chosen[k] = true;
        }
        let mut taken = Vec::with_capacity(chosen.len());
        let mut rest = Vec::with_capacity(pending.len());
        for (k, d) in pending.drain(..).enumerate() {
            if is_chosen[k] {
                taken.push(d);
            } else {
                rest.push(d);
            }
        }
        pending = rest;
        let mut freed_now: Vec<(SiteIx, usize)> = Vec::new();
        for mut d in taken {
            if let Some(t) = d.to {
                // Depends on whatever freed its space in earlier waves.
                for &id in &freed_at[t] {
                    if !d.after.contains(&id) {
                        d.after.push(id);
                    }
                }
                pl.apply(d.wi, t, 1);
            }
            if let Some(f) = d.from {
                pl.apply(d.wi, f, -1);
                freed_now.push((f, d.id));
            }
            wave_of.insert(d.id, wave_index);
            scheduled.push((d, wave_index));
        }
        for (f, id) in freed_now {
            freed_at[f].push(id);
            // `depends_on` names the latest few releases that made room, for
            // the provisioner's information; safety comes from the executor's
            // wave barrier, which waits for all of them.
            if freed_at[f].len() > 8 {
                freed_at[f].remove(0);
            }
        }
        wave_index += 1;
    }

    // Timing: a wave lasts as long as its slowest step.
    let mut steps: Vec<Step> = Vec::with_capacity(scheduled.len());
    let mut waves: Vec<Wave> = (0..wave_index)
        .map(|i| Wave {
            index: i,
            steps: Vec::new(),
            start_s: 0.0,
            duration_s: 0.0,
        })
        .collect();
    let mut order: Vec<usize> = (0..scheduled.len()).collect();
    order.sort_by_key(|&k| (scheduled[k].1, scheduled[k].0.id));
    let mut new_id: HashMap<usize, usize> = HashMap::new();
    for (i, &k) in order.iter().enumerate() {
        new_id.insert(scheduled[k].0.id, i);
    }
    for &k in &order {
        let (d, wave) = &scheduled[k];
        let w = &problem.workloads[d.wi];
        let route = match (d.from, d.to) {
            (Some(f), Some(t)) => pl.route(f, t),
            _ => None,
        };
        let moves_state = matches!(d.kind, StepKind::Migrate | StepKind::Stage);
        let notice_s = match d.kind {
            StepKind::Evict => problem.spot(d.wi).map_or(0.0, |s| s.notice_s),
            _ => 0.0,
        };
        // An eviction lasts its notice at least: what waits for its room
        // is scheduled after the notice.
        let duration_s = step_duration_s(
            limits,
            if moves_state { w.state_gib } else { 0.0 },
            route.as_ref(),
        )
        .max(notice_s);
        let id = steps.len();
        waves[*wave].steps.push(id);
        waves[*wave].duration_s = waves[*wave].duration_s.max(duration_s);
        let mut depends_on: Vec<usize> = d
            .after
            .iter()
            .filter_map(|a| new_id.get(a).copied())
            .collect();
        depends_on.sort_unstable();
        depends_on.dedup();
        steps.push(Step {
            id,
            workload: w.id.clone(),
            kind: d.kind,
            from: d.from.map(|s| problem.sites[s].id.clone()),
            to: d.to.map(|s| problem.sites[s].id.clone()),
            wave: *wave,
            depends_on,
            state_gib: if moves_state { w.state_gib } else { 0.0 },
            links: route.map(|r| r.links).unwrap_or_default(),
            duration_s,
            start_s: 0.0,
            notice_s,
        });
    }
    let mut t = 0.0;
    for w in &mut waves {
        w.start_s = t;
        t += w.duration_s;
        for &s in &w.steps {
            steps[s].start_s = w.start_s;
        }
    }
    let reached_x: Replicas = pl
        .load
        .x
        .iter()
        .map(|m| {
            let mut v: Vec<(SiteIx, u32)> = m.iter().copied().filter(|(_, n)| *n > 0).collect();
            v.sort_unstable();
            v
        })
        .collect();
    Schedule {
        steps,
        waves,
        makespan_s: t,
        blocked,
        reached: reached_x,
    }
}

/// Rewrite one blocked move so the plan can go on: through a staging site
/// with room, or as stop-then-start where the workload allows disruption.
fn break_deadlock(
    pl: &mut Planner,
    pending: &mut Vec<Draft>,
    next_id: &mut usize,
    wave_of: &HashMap<usize, usize>,
    wave_index: usize,
) -> bool {
    let p = pl.p;
    for k in 0..pending.len() {
        let d = pending[k].clone();
        let ready = d
            .after
            .iter()
            .all(|id| wave_of.get(id).is_some_and(|w| *w < wave_index));
        let (Some(from), Some(to)) = (d.from, d.to) else {
            continue;
        };
        if d.rewritten || !ready || d.kind != StepKind::Migrate {
            continue;
        }
        // Staging: an eligible site with room for one more replica, nearest to the source.
        let mut best: Option<(f64, SiteIx)> = None;
        for c in &p.workloads[d.wi].candidates {
            let s = c.site;
            if s == from || s == to || pl.count(d.wi, s) + 1 > c.max_count {
                continue;
            }
            if let Some(g) = pl.load.anti_group_of(d.wi) {
                if pl.load.in_group(g, s) > 0 {
                    continue;
                }
            }
            if p.room_for(d.wi, s, &pl.load.used[s]).is_err() {
                continue;
            }
            let rtt = pl.route(from, s).map_or(f64::INFINITY, |r| r.rtt_ms);
            if rtt.is_finite() && best.is_none_or(|(b, _)| rtt < b) {
                best = Some((rtt, s));
            }
        }
        // Either a hop through staging, or stop-then-start: draft k becomes the
        // first half, and the second half waits for it at the end of the queue.
        let halves = match best {
            Some((_, stage)) => Some((
                (StepKind::Stage, Some(stage)),
                (StepKind::Migrate, Some(stage)),
            )),
            None if p.workloads[d.wi].disruption_allowed => {
                Some(((StepKind::Stop, None), (StepKind::Start, None)))
            }
            None => None,
        };
        if let Some(((first_kind, first_to), (second_kind, second_from))) = halves {
            let first = *next_id;
            pending[k] = Draft {
                id: first,
                kind: first_kind,
                to: first_to,
                rewritten: true,
                ..d.clone()
            };
            pending.push(Draft {
                id: first + 1,
                wi: d.wi,
                kind: second_kind,
                from: second_from,
                to: Some(to),
                after: vec![first],
                rewritten: true,
                goal: Some(to),
            });
            *next_id += 2;
            return true;
        }
    }
    false
}

fn blocked_reason(
    pl: &mut Planner,
    d: &Draft,
    wave_of: &HashMap<usize, usize>,
    wave_index: usize,
) -> Blocked {
    let p = pl.p;
    let name = |s: Option<SiteIx>| s.map(|s| p.sites[s].id.clone());
    let reason = if !d
        .after
        .iter()
        .all(|id| wave_of.get(id).is_some_and(|w| *w < wave_index))
    {
        "waits for a step that is itself blocked".to_string()
    } else if let Some(t) = d.to {
        match p.room_for(d.wi, t, &pl.load.used[t]) {
            Err(short) => {
                let mut r = short.describe(p, t);
                if d.kind == StepKind::Migrate && !p.workloads[d.wi].disruption_allowed {
                    r.push_str(
                        "; no staging site has room and the workload does not allow disruption",
                    );
                }
                r
            }
            Ok(()) if !pl.spread_ok(d.wi, d.from, t, &WaveSpread::default()) => {
                "it would break a spread rule (max per site, per failure domain or \
                 anti-affinity) while the replicas it replaces still run"
                    .to_string()
            }
            Ok(()) => "no safe order found within the limits".to_string(),
        }
    } else {
        "no safe order found within the limits".to_string()
    };
    Blocked {
        workload: p.workloads[d.wi].id.clone(),
        from: name(d.from),
        to: name(d.goal.or(d.to)),
        reason,
    }
}
