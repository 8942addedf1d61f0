//! Every class of bad input is rejected with the path of the offending item.

use edgeplan::instance::{parse, Format, Instance, Slo, Traffic};
use edgeplan::validate::validate;

use crate::common::*;

fn valid() -> Instance {
    let mut w = workload("web", 2, 4.0);
    w.traffic = vec![Traffic {
        region: "users-a".into(),
        weight: 1.0,
    }];
    w.slo = Some(Slo {
        rtt_ms: 20.0,
        percentile: 95.0,
    });
    instance(
        vec![site("a", 32.0, 0.1), site("b", 32.0, 0.2)],
        vec![w, workload("db", 1, 8.0)],
        &[("a", "b", 8.0)],
    )
}

fn messages(inst: &Instance) -> Vec<String> {
    validate(inst).iter().map(|i| i.to_string()).collect()
}

fn has(msgs: &[String], needle: &str) -> bool {
    msgs.iter().any(|m| m.contains(needle))
}

#[test]
fn the_fixture_is_valid() {
    assert!(messages(&valid()).is_empty(), "{:?}", messages(&valid()));
}

#[test]
fn negative_slo_is_reported_with_its_path() {
    let mut inst = valid();
    inst.workloads[0].slo.as_mut().unwrap().rtt_ms = -3.0;
    let m = messages(&inst);
    assert!(
        has(&m, "workloads[0].slo.rtt_ms: must be > 0, got -3"),
        "{m:?}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let mut inst = valid();
    inst.workloads[0].slo.as_mut().unwrap().rtt_ms = -3.0;
    inst.sites[1].power.cap_kw = f64::NAN;
    inst.workloads[1].pinned_sites = vec!["nowhere".into()];
    inst.sites[0].thermal.racks = 0;
    let m = messages(&inst);
    assert!(m.len() >= 4, "{m:?}");
    assert!(
        has(
            &m,
            "sites[1].power.cap_kw: must be a finite number, got NaN"
        ),
        "{m:?}"
    );
    assert!(
        has(&m, "workloads[1].pinned_sites[0]: unknown site \"nowhere\""),
        "{m:?}"
    );
    assert!(has(&m, "sites[0].thermal.racks: must be > 0"), "{m:?}");
}

#[test]
fn duplicate_ids_name_both_places() {
    let mut inst = valid();
    inst.workloads[1].id = "web".into();
    inst.sites[1].id = "a".into();
    let m = messages(&inst);
    assert!(
        has(
            &m,
            "workloads[1].id: duplicate id \"web\" (first at workloads[0])"
        ),
        "{m:?}"
    );
    assert!(
        has(&m, "sites[1].id: duplicate id \"a\" (first at sites[0])"),
        "{m:?}"
    );
}

#[test]
fn unknown_references_are_named() {
    let mut inst = valid();
    inst.workloads[0].traffic[0].region = "mars".into();
    inst.workloads[1].current.insert("atlantis".into(), 1);
    inst.network.links[0].b = "zz".into();
    inst.sites[0].servers.model = "no-such-server".into();
    let m = messages(&inst);
    assert!(
        has(
            &m,
            "workloads[0].traffic[0].region: unknown region \"mars\""
        ),
        "{m:?}"
    );
    assert!(
        has(
            &m,
            "workloads[1].current.atlantis: unknown site \"atlantis\""
        ),
        "{m:?}"
    );
    assert!(
        has(&m, "network.links[0].b: unknown network node \"zz\""),
        "{m:?}"
    );
    assert!(
        has(
            &m,
            "sites[0].servers.model: unknown server model \"no-such-server\""
        ),
        "{m:?}"
    );
}

#[test]
fn nan_in_yaml_is_rejected() {
    let mut inst = valid();
    inst.workloads[1].utilization = 0.5;
    let yaml = serde_yaml::to_string(&inst)
        .unwrap()
        .replace("utilization: 0.5", "utilization: .nan");
    let parsed = parse(&yaml, Format::Yaml).expect("NaN parses as a number");
    let m = messages(&parsed);
    assert!(
        has(
            &m,
            "workloads[1].utilization: must be within 0..=1, got NaN"
        ),
        "{m:?}"
    );
}

#[test]
fn a_workload_no_site_could_ever_host_is_rejected() {
    let mut inst = valid();
    // 40 cores per replica; both sites have 32.
    inst.workloads[1].resources.insert("cpu_cores".into(), 40.0);
    let m = messages(&inst);
    assert!(
        has(&m, "workloads[1]: no site could ever host workload \"db\""),
        "{m:?}"
    );
    assert!(
        has(&m, "has 32 cpu_cores in all, one replica needs 40"),
        "{m:?}"
    );
}

#[test]
fn type_errors_and_unknown_fields_carry_their_path() {
    let json = serde_json::to_string(&valid()).unwrap();
    let bad = json.replacen("\"replicas\":2", "\"replicas\":\"two\"", 1);
    let err = parse(&bad, Format::Json).unwrap_err().to_string();
    assert!(err.starts_with("workloads[0].replicas:"), "{err}");
    let typo = json.replacen("\"replicas\":2", "\"replica\":2", 1);
    let err = parse(&typo, Format::Json).unwrap_err().to_string();
    assert!(err.contains("unknown field `replica`"), "{err}");
}

#[test]
fn out_of_range_physics_is_rejected() {
    let mut inst = valid();
    inst.sites[0].power.pue_min = 0.8;
    inst.sites[0].cooling.max_ambient_c = 10.0;
    inst.sites[1]
        .reserve_fraction
        .insert("cpu_cores".into(), 1.5);
    let m = messages(&inst);
    assert!(
        has(&m, "sites[0].power.pue_min: must be within 1..=10, got 0.8"),
        "{m:?}"
    );
    assert!(
        has(
            &m,
            "sites[0].cooling.max_ambient_c: must be above free_cooling_limit_c"
        ),
        "{m:?}"
    );
    assert!(
        has(
            &m,
            "sites[1].reserve_fraction.cpu_cores: must be within 0..1, got 1.5"
        ),
        "{m:?}"
    );
}
