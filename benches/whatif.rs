//! What-if at scale: 100 scenarios (heat waves, price spikes, outages,
//! cooling losses at 20 sites each, and 20 demand-growth factors) on a
//! `gen` base of 10,000 replicas × 200 sites, run in parallel. Each solve
//! stops on its work budget (what-if is deterministic) and is warm-started
//! from the base placement. A whole batch takes about a minute, so this is a
//! plain timed run (criterion would need ten): `cargo bench --bench whatif`
//! prints wall time, scenarios and the worst gap.

use std::time::Instant;

use edgeplan::clock::Deadline;
use edgeplan::gen::{generate, GenOptions};
use edgeplan::solver::{Method, SolveOptions};
use edgeplan::whatif::{run, Perturbation, Scenario, Selection};

fn scenarios(sites: &[String]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for (k, s) in sites.iter().take(20).enumerate() {
        let one = |name: String, p: Perturbation| Scenario {
            name,
            perturbations: vec![p],
        };
        out.push(one(
            format!("heat-{s}"),
            Perturbation::HeatWave {
                sites: vec![s.clone()],
                delta_c: 6.0 + k as f64 % 5.0,
                from_hour: 0,
                hours: None,
            },
        ));
        out.push(one(
            format!("price-{s}"),
            Perturbation::Price {
                sites: vec![s.clone()],
                multiplier: 3.0,
                series: None,
            },
        ));
        out.push(one(
            format!("outage-{s}"),
            Perturbation::SiteOutage { site: s.clone() },
        ));
        out.push(one(
            format!("cooling-{s}"),
            Perturbation::CoolingLoss {
                site: s.clone(),
                fraction: 0.5,
            },
        ));
        out.push(one(
            format!("growth-{k}"),
            Perturbation::DemandGrowth {
                factor: 1.0 + 0.05 * (k + 1) as f64,
                selection: Selection::default(),
            },
        ));
    }
    out
}

fn main() {
    // `cargo test --benches` runs benches with --test: build-check only.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let base = generate(&GenOptions {
        sites: 200,
        workloads: 0,
        replicas: Some(10_000),
        seed: 42,
        load: 0.75,
    })
    .expect("gen");
    let sites: Vec<String> = base.sites.iter().map(|s| s.id.clone()).collect();
    let list = scenarios(&sites);
    let options = SolveOptions {
        // What-if stops each solve on its work budget, never the clock.
        deadline: Deadline::NONE,
        // The fast path to a 0.5 % gap: a capacity planner's question does
        // not need the last 0.5 %, and 100 of them must fit in a minute.
        relative_gap: Some(0.005),
        threads: Some(1),
        seed: 1,
        method: Method::Fast,
        work: None,
        deterministic: false,
    };
    let started = Instant::now();
    let results = run(&base, &list, &options, true, &|_, _| ()).expect("run");
    let worst_gap = results.iter().map(|r| r.gap).fold(0.0, f64::max);
    eprintln!(
        "whatif/{}x10000x200: {} results in {:.1} s, worst gap {:.3} %",
        list.len(),
        results.len(),
        started.elapsed().as_secs_f64(),
        worst_gap * 100.0
    );
}
