//! Each placement rule's roles, one at a time: the filter names its reason,
//! the cap bounds a candidate, and the fits role refuses exactly what it
//! should against a running `Load` — and `Load::fits` is all of them.

use edgeplan::load::Load;
use edgeplan::problem::Problem;
use edgeplan::rules::{Ineligible, Rule};

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

fn filtered(p: &Problem, wi: usize, si: usize) -> Option<Ineligible> {
    p.ineligible(wi, si)
}

#[test]
fn each_filter_names_its_reason() {
    let (_, p) = fixture();
    let (a, b, c) = (0, 1, 2);
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
    let cap = |wi: usize, si: usize| p.workloads[wi].candidate_at(si).unwrap().max_count;
    assert_eq!(cap(0, a), 1);
    assert_eq!(cap(1, b), 1);
    assert_eq!(cap(4, b), 1, "replicas bound the cap");
}

#[test]
fn each_fits_role_refuses_what_it_should_and_load_fits_is_all_of_them() {
    let (_, p) = fixture();
    let (a, b, c) = (0, 1, 2);
    let mut load = Load::empty(&p);
    load.add(&p, 0, a, 1); // spread: one at a (domain eu)
    load.add(&p, 1, c, 1); // front at c
    let fits = |rule: Rule, load: &Load, wi: usize, si: usize, is_move: bool| {
        rule.fits(&p, load, wi, si, is_move)
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
    full.add(&p, 4, b, 1);
    for _ in 0..7 {
        full.add(&p, 2, b, 1);
    }
    assert!(!fits(Rule::Limits, &full, 0, b, false));
    assert!(fits(Rule::Limits, &load, 0, b, false));
    // Load::fits is every role: each refusal above is a refusal there.
    assert!(!load.fits(&p, 0, a, false));
    assert!(!load.fits(&p, 0, b, false));
    assert!(!load.fits(&p, 2, c, false));
    assert!(!load.fits(&p, 4, b, true));
    assert!(!full.fits(&p, 0, b, false));
    assert!(load.fits(&p, 0, c, false));
    // A non-candidate is refused whatever the load.
    assert!(!Load::empty(&p).fits(&p, 3, a, false));
}
