//! Unplaced replicas are explained by what really stopped them: latency,
//! power and thermal limits, each named.

use edgeplan::explain::{self, CauseKind};
use edgeplan::instance::{Instance, Slo, Traffic};

use crate::common::*;

/// Near site A (2 ms from the users) and far site B (60 ms away). "gold"
/// (priority 10) and "lo" (priority 1) both serve users at A with a 20 ms SLO,
/// so only A is in reach; gold fills A by the limit under test.
fn contested(limit: impl Fn(&mut edgeplan::instance::Site)) -> Instance {
    let mut a = site("a", 100.0, 0.1);
    limit(&mut a);
    let b = site("b", 100.0, 0.1);
    let slo = Some(Slo {
        rtt_ms: 20.0,
        percentile: 95.0,
    });
    let users = vec![Traffic {
        region: "users-a".into(),
        weight: 1.0,
    }];
    let mut gold = workload("gold", 2, 10.0);
    gold.priority = 10;
    gold.traffic = users.clone();
    gold.slo = slo.clone();
    let mut lo = workload("lo", 1, 10.0);
    lo.traffic = users;
    lo.slo = slo;
    instance(vec![a, b], vec![gold, lo], &[("a", "b", 60.0)])
}

fn explain_lo(inst: &Instance) -> edgeplan::explain::UnplacedExplanation {
    let (problem, solved, placement, _) = solve_and_verify(inst);
    assert_eq!(placement.replicas_of("gold"), 2);
    assert_eq!(placement.replicas_of("lo"), 0);
    let all = explain::unplaced(&problem, &solved.x);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

#[test]
fn latency_power_cap_explained() {
    // Two 1 kW replicas fill A's 2 kW cap (PUE 1); B is out of reach.
    let e = explain_lo(&contested(|a| a.power.cap_kw = 2.0));
    assert_eq!(
        e.kinds(),
        vec![CauseKind::Latency, CauseKind::PowerCap],
        "{}",
        e.text
    );
    let b = e.causes.iter().find(|c| c.site == "b").unwrap();
    assert!(
        b.text
            .contains("out of latency reach (0 % of traffic within 20 ms, the SLO needs 95 %)"),
        "{}",
        b.text
    );
    let a = e.causes.iter().find(|c| c.site == "a").unwrap();
    assert!(a.text.contains("at its 2 kW power cap"), "{}", a.text);
    assert!(
        e.text
            .contains("1 of 1 replicas of lo unplaced (priority 1)"),
        "{}",
        e.text
    );
}

#[test]
fn thermal_cooling_explained() {
    // A's cooling is 2 kW: two 1 kW replicas fill it.
    let e = explain_lo(&contested(|a| a.cooling.nominal_kw = 2.0));
    assert_eq!(
        e.kinds(),
        vec![CauseKind::Latency, CauseKind::Cooling],
        "{}",
        e.text
    );
    assert!(
        e.text.contains(
            "0/2 sites can take another replica: 1 out of latency reach, 1 at its cooling capacity."
        ),
        "{}",
        e.text
    );
}

#[test]
fn thermal_inlet_explained() {
    // Supply 18 °C, A2 limit 35 − 2 = 33 °C: 15 °C of room at 7.5 °C/kW → 2 kW.
    let e = explain_lo(&contested(|a| a.thermal.recirc_c_per_kw = 7.5));
    assert_eq!(
        e.kinds(),
        vec![CauseKind::Latency, CauseKind::Inlet],
        "{}",
        e.text
    );
    let a = e.causes.iter().find(|c| c.site == "a").unwrap();
    assert!(a.text.contains("inlet limit"), "{}", a.text);
}

#[test]
fn latency_with_full_resources_explained() {
    // A has 20 cores: gold's two replicas fill it; the cause is the resource.
    let e = explain_lo(&contested(|a| {
        a.capacity.insert("cpu_cores".into(), 20.0);
    }));
    assert_eq!(
        e.kinds(),
        vec![CauseKind::Latency, CauseKind::Resource],
        "{}",
        e.text
    );
    assert!(
        e.text
            .contains("out of cpu_cores: one replica needs 10, 0 free"),
        "{}",
        e.text
    );
}

/// Kubernetes' `FailedScheduling` habit: a one-line count first, then the
/// sites within reach and what stops each; the ten sites out of reach are
/// only counted unless all are asked for.
#[test]
fn the_count_comes_first_and_out_of_reach_sites_are_only_counted() {
    let mut inst = contested(|a| {
        a.capacity.insert("cpu_cores".into(), 20.0);
    });
    let mut links = vec![("a".to_string(), "b".to_string(), 60.0)];
    for k in 0..10 {
        let id = format!("far{k:02}");
        inst.sites.push(site(&id, 100.0, 0.1));
        inst.network
            .nodes
            .push(edgeplan::instance::Node { id: id.clone() });
        links.push(("a".into(), id, 80.0));
    }
    inst.network.links = links
        .iter()
        .map(|(a, b, rtt)| edgeplan::instance::Link {
            a: a.clone(),
            b: b.clone(),
            rtt_ms: *rtt,
            bandwidth_gbps: 10.0,
        })
        .collect();
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_eq!(placement.replicas_of("lo"), 0);

    let e = &explain::unplaced(&problem, &solved.x)[0];
    let count = "1 of 1 replicas of lo unplaced (priority 1). 0/12 sites can take another replica: 11 out of latency reach, 1 out of cores.";
    assert!(e.text.starts_with(count), "{}", e.text);
    assert!(
        e.text
            .contains("Within reach: a is out of cpu_cores: one replica needs 10, 0 free."),
        "{}",
        e.text
    );
    assert!(
        !e.text.contains("far03"),
        "out-of-reach sites named: {}",
        e.text
    );
    // The structured causes still hold every site.
    assert_eq!(e.causes.len(), 12);

    let all = &explain::unplaced_with(&problem, &solved.x, explain::Detail::All)[0];
    assert!(all.text.starts_with(count), "{}", all.text);
    for k in 0..10 {
        let far = format!("far{k:02} is out of latency reach");
        assert!(all.text.contains(&far), "{far} missing: {}", all.text);
    }
    let (within, out) = (
        all.text.find("Within reach").unwrap(),
        all.text.find("Out of reach").unwrap(),
    );
    assert!(within < out, "{}", all.text);
}
