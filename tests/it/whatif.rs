//! What-if: scenarios perturb the base, re-solve from its placement, and
//! report KPIs; sweeps expand; bad scenarios are named; parallel equals
//! sequential.

use edgeplan::clock::Deadline;
use edgeplan::instance::{parse, Format, Instance};
use edgeplan::solver::SolveOptions;
use edgeplan::whatif::{apply, comparison_table, expand, run, ScenarioFile};

fn example() -> Instance {
    let text = include_str!("../../examples/three-cities.yaml");
    parse(text, Format::Yaml).unwrap()
}

fn file() -> ScenarioFile {
    edgeplan::whatif::parse(include_str!("../../examples/what-if.yaml")).unwrap()
}

fn options() -> SolveOptions {
    SolveOptions {
        deadline: Deadline::after_s(20.0),
        relative_gap: Some(0.0),
        threads: Some(1),
        seed: 1,
        method: edgeplan::solver::Method::Auto,
        work: None,
        deterministic: false,
    }
}

#[test]
fn sweeps_expand_into_one_scenario_per_value() {
    let list = expand(&file()).unwrap();
    assert_eq!(list.len(), 6 + 4);
    assert_eq!(list[6].name, "milan-power-cap=1");
    assert_eq!(list[9].name, "milan-power-cap=0.4");
    let mut bad = file();
    bad.sweeps[0].field = "nonsense".into();
    let issues = expand(&bad).unwrap_err();
    assert_eq!(issues[0].path, "sweeps[0].field");
}

#[test]
fn bad_perturbations_are_named() {
    let base = example();
    let file = edgeplan::whatif::parse(
        "base: b.yaml\nscenarios:\n - name: x\n   perturbations:\n    - site_outage: { site: atlantis }\n    - cooling_loss: { site: fra, fraction: 1.5 }\n    - cut_link: { a: fra, b: lon }\n",
    )
    .unwrap();
    let scenario = &file.scenarios[0];
    let issues = apply(&base, scenario, "scenarios[0]").unwrap_err();
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    assert!(
        text.contains(&"scenarios[0].perturbations[0]: unknown site \"atlantis\"".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"scenarios[0].perturbations[1].cooling_loss.fraction: must be within 0..1, got 1.5"
                .to_string()
        ),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"scenarios[0].perturbations[2]: no link between \"fra\" and \"lon\"".to_string()
        ),
        "{text:?}"
    );
    let issue = edgeplan::whatif::parse(
        "base: x.yaml\nscenarios:\n  - name: y\n    perturbations:\n      - meteor_strike: {}\n",
    )
    .unwrap_err();
    assert_eq!(issue.path, "scenarios[0].perturbations[0]");
    assert!(issue.message.contains("meteor_strike"), "{issue}");
}

#[test]
fn scenarios_change_the_kpis_they_should() {
    let base = example();
    let list = expand(&file()).unwrap();
    let results = run(&base, &list, &options(), true, &|_, _| ()).unwrap();
    assert_eq!(results.len(), 1 + list.len());
    let by = |name: &str| results.iter().find(|r| r.scenario == name).unwrap();
    let b = by("base");
    assert_eq!(b.moves, 0, "the base is where every scenario starts");
    let outage = by("paris-outage");
    assert!(outage.sites.iter().find(|s| s.site == "par").unwrap().it_kw <= b.sites[1].it_kw);
    assert!(outage.moves > 0 && outage.plan_steps > 0);
    let price = by("spot-price-triples-tonight");
    assert!(
        (price.energy_cost_per_h - 3.0 * b.energy_cost_per_h).abs() < 0.25 * b.energy_cost_per_h,
        "{} vs {}",
        price.energy_cost_per_h,
        b.energy_cost_per_h
    );
    let heat = by("frankfurt-loses-half-its-cooling-in-a-heat-wave");
    let fra = |r: &edgeplan::whatif::ScenarioResult| {
        r.sites
            .iter()
            .find(|s| s.site == "fra")
            .unwrap()
            .it_limit_kw
    };
    assert!(fra(heat) < fra(b));
    let growth = by("paris-demand-grows-40-percent");
    assert!(
        growth.placed_replicas + growth.unplaced_replicas > b.placed_replicas + b.unplaced_replicas
    );
    let caps: Vec<f64> = ["1", "0.8", "0.6", "0.4"]
        .iter()
        .map(|v| {
            by(&format!("milan-power-cap={v}"))
                .sites
                .iter()
                .find(|s| s.site == "mil")
                .unwrap()
                .it_limit_kw
        })
        .collect();
    assert!(caps.windows(2).all(|w| w[1] <= w[0] + 1e-9), "{caps:?}");
    let table = comparison_table(&results);
    assert!(
        table.lines().count() == results.len() + 1 && table.contains("paris-outage"),
        "{table}"
    );
}

#[test]
fn parallel_and_sequential_runs_give_identical_tables() {
    let base = example();
    let list = expand(&file()).unwrap();
    let a = run(&base, &list, &options(), true, &|_, _| ()).unwrap();
    let b = run(&base, &list, &options(), false, &|_, _| ()).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

fn site_of<'a>(
    r: &'a edgeplan::whatif::ScenarioResult,
    id: &str,
) -> &'a edgeplan::evaluate::SiteKpi {
    r.sites.iter().find(|s| s.site == id).unwrap()
}

fn one(
    name: &str,
    yaml: &str,
) -> (
    edgeplan::whatif::ScenarioResult,
    edgeplan::whatif::ScenarioResult,
) {
    let file = edgeplan::whatif::parse(&format!(
        "base: x.yaml\nscenarios:\n  - name: {name}\n    perturbations:\n{yaml}"
    ))
    .unwrap();
    let mut r = run(
        &example(),
        &expand(&file).unwrap(),
        &options(),
        false,
        &|_, _| (),
    )
    .unwrap();
    let s = r.pop().unwrap();
    (r.pop().unwrap(), s)
}

#[test]
fn an_outage_leaves_nothing_on_the_site() {
    let (base, out) = one("outage", "      - site_outage: { site: par }\n");
    assert!(site_of(&base, "par").utilization["cpu_cores"] > 0.0);
    assert_eq!(site_of(&out, "par").utilization["cpu_cores"], 0.0);
}

#[test]
fn a_heat_wave_lowers_only_the_sites_it_covers() {
    let (base, hot) = one("heat", "      - heat_wave: { sites: [mil], delta_c: 10 }\n");
    assert!(site_of(&hot, "mil").it_limit_kw < site_of(&base, "mil").it_limit_kw);
    for s in ["fra", "par"] {
        assert_eq!(
            site_of(&hot, s).it_limit_kw,
            site_of(&base, s).it_limit_kw,
            "{s}"
        );
    }
}

#[test]
fn a_price_spike_shifts_load_away_where_latency_allows() {
    let (base, spike) = one("spike", "      - price: { sites: [par], multiplier: 20 }\n");
    assert!(site_of(&spike, "par").it_kw < site_of(&base, "par").it_kw);
    assert_eq!(spike.slo_violations, 0);
}

#[test]
fn a_growth_sweep_gives_monotone_unplaced_counts() {
    let file = edgeplan::whatif::parse(
        "base: x.yaml\nsweeps:\n  - name: growth\n    field: factor\n    values: [1, 1.5, 2, 3, 4]\n    perturbation: { demand_growth: { factor: 1 } }\n",
    )
    .unwrap();
    let r = run(
        &example(),
        &expand(&file).unwrap(),
        &options(),
        true,
        &|_, _| (),
    )
    .unwrap();
    let unplaced: Vec<u64> = r[1..].iter().map(|x| x.unplaced_replicas).collect();
    assert!(unplaced.windows(2).all(|w| w[0] <= w[1]), "{unplaced:?}");
    assert!(unplaced.last() > unplaced.first(), "{unplaced:?}");
}

#[test]
fn a_new_site_absorbs_load() {
    // Video transcoding doubles: 12 replicas need a GPU each, Frankfurt has 8.
    // A second Frankfurt site (a copy of it) takes the rest.
    let grow = "      - demand_growth: { factor: 2, workloads: [video-transcode] }\n";
    let (base, without) = one("grow", grow);
    let (_, with) = one(
        "new",
        &format!("{grow}      - new_site: {{ template: fra, id: fra-2 }}\n"),
    );
    assert!(without.unplaced_replicas > 0);
    assert!(
        with.unplaced_replicas < without.unplaced_replicas,
        "{} vs {}",
        with.unplaced_replicas,
        without.unplaced_replicas
    );
    assert!(site_of(&with, "fra-2").utilization["gpus"] > 0.0);
    assert!(base.sites.iter().all(|s| s.site != "fra-2"));
}

/// Found by the `scenario` fuzz target: a heat wave starting at the last
/// representable hour overflowed `from_hour + hours`. It now reaches past
/// the horizon and changes nothing.
#[test]
fn a_heat_wave_beyond_any_horizon_changes_nothing_and_does_not_overflow() {
    let base = example();
    let file = edgeplan::whatif::parse(include_str!(
        "../../fuzz/regressions/scenario/heat-wave-hour-overflow.yaml"
    ))
    .unwrap();
    let changed = apply(&base, &file.scenarios[0], "scenarios[0]").unwrap();
    for (a, b) in changed.sites.iter().zip(&base.sites) {
        assert_eq!(a.ambient.current_c, b.ambient.current_c);
        let peak = |s: &edgeplan::instance::Site| {
            s.ambient
                .forecast_c
                .iter()
                .copied()
                .fold(f64::MIN, f64::max)
        };
        assert!(peak(a) <= peak(b).max(b.ambient.current_c), "{}", a.id);
    }
}
