//! Each placement rule's roles, one at a time: the filter names its reason,
//! the cap bounds a candidate, the fits role refuses exactly what it
//! should against a running `Load` — and `Load::fits` is all of them — and
//! the rows role is what the exact model holds of the rule, no more.

use edgeplan::ix::{SiteIx, WorkloadIx};
use edgeplan::load::Load;
use edgeplan::milp::Milp;
use edgeplan::problem::Problem;
use edgeplan::rules::{Ineligible, LinearRow, Rule, Term};

use crate::common::*;

/// Sites a and b in failure domain "eu", c in "us". `spread` (3 replicas)
/// has at most 1 per site and 1 per domain; `front` and `back` share an
/// anti-affinity group; `pinned` may only use c; `forbidden` never a;
/// `gpu` needs hardware only c has; at most one move in all.
fn fixture() -> (edgeplan::instance::Instance, Problem) {
    let mut a = site("a", 8.0, 0.1);
    a.failure_domain = Some("eu".into());
    let mut b = site("b", 8.0, 0.1);
    b.failure_domain = Some("eu".into());
    let mut c = site("c", 8.0, 0.1);
    c.failure_domain = Some("us".into());
    c.hardware = vec!["gpu".into()];
    let mut spread = workload("spread", 3, 1.0);
    spread.max_per_site = Some(1);
    spread.max_per_failure_domain = Some(1);
    let mut front = workload("front", 1, 1.0);
    front.anti_affinity_group = Some("g".into());
    let mut back = workload("back", 1, 1.0);
    back.anti_affinity_group = Some("g".into());
    let mut pinned = workload("pinned", 1, 1.0);
    pinned.pinned_sites = vec!["c".into()];
    let mut forbidden = workload("forbidden", 1, 1.0);
    forbidden.forbidden_sites = vec!["a".into()];
    let mut gpu = workload("gpu", 1, 1.0);
    gpu.hardware = vec!["gpu".into()];
    let big = workload("big", 1, 9.0); // more cores than any site has
    let mut inst = instance(
        vec![a, b, c],
        vec![spread, front, back, pinned, forbidden, gpu, big],
        &[("a", "b", 5.0), ("b", "c", 5.0)],
    );
    inst.limits.max_moves = Some(1);
    let problem = Problem::build(&inst).unwrap();
    (inst, problem)
}

const A: SiteIx = SiteIx::at(0);
const B: SiteIx = SiteIx::at(1);
const C: SiteIx = SiteIx::at(2);

fn w(i: usize) -> WorkloadIx {
    WorkloadIx::new(i)
}

fn filtered(p: &Problem, wi: usize, si: SiteIx) -> Option<Ineligible> {
    p.ineligible(w(wi), si)
}

#[test]
fn each_filter_names_its_reason() {
    let (_, p) = fixture();
    let (a, b, c) = (A, B, C);
    assert_eq!(filtered(&p, 3, a), Some(Ineligible::NotPinned));
    assert_eq!(filtered(&p, 3, c), None);
    assert_eq!(filtered(&p, 4, a), Some(Ineligible::Forbidden));
    assert_eq!(filtered(&p, 4, b), None);
    assert!(matches!(
        filtered(&p, 5, a),
        Some(Ineligible::Hardware { .. })
    ));
    assert!(matches!(
        filtered(&p, 6, c),
        Some(Ineligible::TooBig { .. })
    ));
    // Caps: max_per_site 1; anti-affinity 1; cores 8 / 1 otherwise.
    let cap = |wi: usize, si: SiteIx| p.workloads[w(wi)].candidate_at(si).unwrap().max_count;
    assert_eq!(cap(0, a), 1);
    assert_eq!(cap(1, b), 1);
    assert_eq!(cap(4, b), 1, "replicas bound the cap");
}

#[test]
fn each_fits_role_refuses_what_it_should_and_load_fits_is_all_of_them() {
    let (_, p) = fixture();
    let (a, b, c) = (A, B, C);
    let mut load = Load::empty(&p);
    load.add(&p, w(0), a, 1); // spread: one at a (domain eu)
    load.add(&p, w(1), c, 1); // front at c
    let fits = |rule: Rule, load: &Load, wi: usize, si: SiteIx, is_move: bool| {
        rule.fits(&p, load, w(wi), si, is_move)
    };
    // PerSite: spread already has its one replica at a.
    assert!(!fits(Rule::PerSite, &load, 0, a, false));
    assert!(fits(Rule::PerSite, &load, 0, c, false));
    // FailureDomainSpread: b shares a's domain.
    assert!(!fits(Rule::FailureDomainSpread, &load, 0, b, false));
    assert!(fits(Rule::FailureDomainSpread, &load, 0, c, false));
    // AntiAffinity: front holds c for the group.
    assert!(!fits(Rule::AntiAffinity, &load, 2, c, false));
    assert!(fits(Rule::AntiAffinity, &load, 2, b, false));
    // MoveBudget: one move allowed; after one, no more.
    assert!(fits(Rule::MoveBudget, &load, 4, b, true));
    load.moves = 1;
    assert!(!fits(Rule::MoveBudget, &load, 4, b, true));
    assert!(
        fits(Rule::MoveBudget, &load, 4, b, false),
        "staying is no move"
    );
    // Limits: fill b's 8 cores, then nothing more fits there.
    let mut full = Load::empty(&p);
    full.add(&p, w(4), b, 1);
    for _ in 0..7 {
        full.add(&p, w(2), b, 1);
    }
    assert!(!fits(Rule::Limits, &full, 0, b, false));
    assert!(fits(Rule::Limits, &load, 0, b, false));
    // Load::fits is every role: each refusal above is a refusal there.
    assert!(!load.fits(&p, w(0), a, false));
    assert!(!load.fits(&p, w(0), b, false));
    assert!(!load.fits(&p, w(2), c, false));
    assert!(!load.fits(&p, w(4), b, true));
    assert!(!full.fits(&p, w(0), b, false));
    assert!(load.fits(&p, w(0), c, false));
    // A non-candidate is refused whatever the load.
    assert!(!Load::empty(&p).fits(&p, w(3), a, false));
}

fn row<'a>(rows: &'a [LinearRow], name: &str) -> &'a LinearRow {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

#[test]
fn each_rows_role_holds_its_rule_and_only_rows_that_can_bind() {
    let (_, p) = fixture();
    // Spread: one per domain; "eu" (a, b) could hold 2 — a row; "us" (c)
    // holds at most 1 anyway — none.
    let spread = Rule::FailureDomainSpread.rows(&p);
    assert_eq!(spread.len(), 1, "{spread:?}");
    let eu = row(&spread, "domain_w0_d0");
    assert_eq!(eu.upper, 1.0);
    assert_eq!(
        eu.terms,
        vec![(Term::Placed(w(0), A), 1.0), (Term::Placed(w(0), B), 1.0)]
    );
    // Anti-affinity: front and back may both use every site.
    let anti = Rule::AntiAffinity.rows(&p);
    assert_eq!(anti.len(), 3);
    for (si, r) in [A, B, C].into_iter().zip(&anti) {
        assert_eq!(r.upper, 1.0);
        assert_eq!(
            r.terms,
            vec![(Term::Placed(w(1), si), 1.0), (Term::Placed(w(2), si), 1.0)]
        );
    }
    // The move budget: every replica that could start anywhere.
    let moves = Rule::MoveBudget.rows(&p);
    let budget = row(&moves, "max_moves");
    assert_eq!(budget.upper, 1.0);
    let candidates: usize = p.workloads.iter().map(|wl| wl.candidates.len()).sum();
    assert_eq!(budget.terms.len(), candidates);
    assert!(budget
        .terms
        .iter()
        .all(|(t, c)| matches!(t, Term::MovedIn(..)) && *c == 1.0));
    // The limits: 8 cores a site, at most 3 asked at a — nothing can bind.
    assert!(Rule::Limits.rows(&p).is_empty());
    // Filters and caps live in the columns: no rows.
    for rule in [
        Rule::Forbidden,
        Rule::Pinned,
        Rule::Hardware,
        Rule::Latency,
        Rule::PerSite,
    ] {
        assert!(rule.rows(&p).is_empty(), "{rule:?}");
    }
}

#[test]
fn the_limits_rows_are_each_site_row_that_can_overflow() {
    // Two 5-core workloads of 1 replica on an 8-core site: a cores row;
    // a 1-core one beside them on a 16-core site: none there.
    let inst = instance(
        vec![site("small", 8.0, 0.1), site("big", 16.0, 0.1)],
        vec![workload("x", 1, 5.0), workload("y", 1, 5.0)],
        &[("small", "big", 5.0)],
    );
    let p = Problem::build(&inst).unwrap();
    let rows = Rule::Limits.rows(&p);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let cores = row(&rows, "cap_s0_cpu_cores");
    assert_eq!(cores.upper, 8.0);
    assert_eq!(
        cores.terms,
        vec![(Term::Placed(w(0), A), 5.0), (Term::Placed(w(1), A), 5.0)]
    );
}

#[test]
fn the_exact_model_holds_every_rules_rows_and_no_other_rule_rows() {
    let (_, p) = fixture();
    let milp = Milp::build(&p);
    let mut from_rules: Vec<String> = Rule::WITH_ROWS
        .iter()
        .flat_map(|r| r.rows(&p))
        .filter(|r| !r.terms.is_empty())
        .map(|r| r.name)
        .collect();
    let structural = ["move_", "demand_", "aff_hi_", "aff_lo_"];
    let mut in_model: Vec<String> = milp
        .rows
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| !structural.iter().any(|s| n.starts_with(s)))
        .collect();
    from_rules.sort();
    in_model.sort();
    assert_eq!(in_model, from_rules);
    assert!(!in_model.is_empty());
}

#[test]
fn the_fast_paths_own_fits_agrees_with_every_rules_fits_role() {
    // The fast path keeps its counts in flat per-slot arrays; whatever it
    // says about one more replica must be what `Load::fits` (every rule's
    // fits role) says, on states a random walk reaches: tight fleets,
    // failure domains, anti-affinity, a move budget.
    use edgeplan::fast::fits_under;
    use edgeplan::replicas::Replicas;
    use rand::seq::IndexedRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    let mut free = fixture().0;
    free.limits.max_moves = None;
    let mut fleets = vec![fixture().0, free];
    for (seed, load, moves) in [(1, 0.95, None), (2, 0.8, Some(60))] {
        let mut inst = gen_instance(300, 12, seed, load);
        inst.limits.max_moves = moves;
        // `gen` sets no spread rules: some of every kind.
        for (i, wl) in inst.workloads.iter_mut().enumerate() {
            if i % 5 == 0 {
                wl.anti_affinity_group = Some(format!("g{}", i % 3));
            }
            if i % 7 == 0 {
                wl.max_per_failure_domain = Some(1 + (i % 2) as u32);
            }
            if i % 11 == 0 {
                wl.max_per_site = Some(1);
            }
        }
        fleets.push(inst);
    }
    let (mut fitting, mut refused) = (0u64, 0u64);
    for (f, inst) in fleets.iter().enumerate() {
        let p = Problem::build(inst).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(f as u64);
        let mut x = p.current_placement();
        for step in 0..120 {
            let load = Load::of(&p, &x);
            let fast = fits_under(&p, &x);
            let mut open = Vec::new();
            for (wi, slots) in fast.iter_enumerated() {
                let wl = &p.workloads[wi];
                for &(si, fast_fits) in slots {
                    let is_move = load.count(wi, si) >= wl.current_at(si);
                    let by_rules = load.placed[wi] < wl.replicas && load.fits(&p, wi, si, is_move);
                    assert_eq!(
                        fast_fits, by_rules,
                        "fleet {f} step {step}: {} at {} — fast path {fast_fits}, rules {by_rules}",
                        wl.id, p.sites[si].id
                    );
                    if by_rules {
                        fitting += 1;
                        open.push((wi, si));
                    } else {
                        refused += 1;
                    }
                }
            }
            // One step: mostly add where it fits, sometimes take one away.
            let placed: Vec<(WorkloadIx, SiteIx)> = x
                .iter_enumerated()
                .flat_map(|(wi, sites)| sites.iter().map(move |&(si, _)| (wi, si)))
                .collect();
            if rng.random_bool(0.5) || placed.is_empty() {
                if let Some(&(wi, si)) = open.choose(&mut rng) {
                    add(&mut x, wi, si, 1);
                }
            } else if let Some(&(wi, si)) = placed.choose(&mut rng) {
                add(&mut x, wi, si, -1);
            }
        }
    }
    assert!(
        fitting > 1_000 && refused > 1_000,
        "{fitting} fit, {refused} refused"
    );

    fn add(x: &mut Replicas, wi: WorkloadIx, si: SiteIx, delta: i32) {
        let sites = &mut x[wi];
        match sites.iter_mut().find(|(s, _)| *s == si) {
            Some((_, n)) => *n = n.saturating_add_signed(delta),
            None => sites.push((si, delta.max(0) as u32)),
        }
        sites.retain(|(_, n)| *n > 0);
    }
}
