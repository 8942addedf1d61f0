//! The fast path at the scale goals of issue #6 on `gen` instances (seed 1,
//! 70 % CPU load): 5,000 replicas × 100 sites with a 1 s limit and a 0.5 %
//! gap target, 100,000 × 1,000 with 10 s and 1 %. Criterion times the
//! problem build plus the solve; the objective, bound and gap each run
//! reaches go to stderr. `edgeplan bench` prints the same per size with
//! peak memory, each size in its own process.
//!
//! `incremental`: at 100,000 × 1,000, one incremental re-plan after one
//! site's telemetry change (a +10 °C heat wave at the busiest site, then
//! back, alternately), from the placement the fast path found.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use edgeplan::clock::Deadline;
use edgeplan::fast::{Change, Replanner, DEFAULT_REPLAN_TIME_LIMIT};
use edgeplan::gen::{generate, GenOptions};
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for (replicas, sites, seconds, gap) in [(5_000, 100, 1.0, 0.005), (100_000, 1_000, 10.0, 0.01)]
    {
        let inst = generate(&GenOptions {
            sites,
            workloads: 0,
            replicas: Some(replicas),
            seed: 1,
            load: 0.7,
        })
        .expect("gen");
        let options = SolveOptions {
            deadline: Deadline::after_s(seconds),
            relative_gap: Some(gap),
            threads: None,
            seed: 0,
            method: Method::Fast,
            work: None,
            deterministic: false,
        };
        let started = Instant::now();
        let problem = Problem::build(&inst).expect("problem");
        let solved = solve(&problem, &options).expect("solve");
        eprintln!(
            "scale/{replicas}x{sites}: {:.2} s, {:?}, objective {:.4}, bound {:.4}, gap {:.3} %",
            started.elapsed().as_secs_f64(),
            solved.method,
            solved.objective,
            solved.bound,
            solved.gap * 100.0
        );
        group.bench_function(format!("{replicas}x{sites}"), |b| {
            b.iter(|| {
                let problem = Problem::build(&inst).expect("problem");
                solve(&problem, &options).expect("solve")
            })
        });
    }
    group.finish();
}

fn incremental(c: &mut Criterion) {
    let inst = generate(&GenOptions {
        sites: 1_000,
        workloads: 0,
        replicas: Some(100_000),
        seed: 1,
        load: 0.7,
    })
    .expect("gen");
    let problem = Problem::build(&inst).expect("problem");
    let solved = solve(
        &problem,
        &SolveOptions {
            deadline: Deadline::after_s(10.0),
            relative_gap: Some(0.01),
            threads: None,
            seed: 0,
            method: Method::Fast,
            work: None,
            deterministic: false,
        },
    )
    .expect("solve");
    let mut sites = problem.evaluate(&solved.x).sites;
    sites.sort_by(|a, b| b.it_kw.total_cmp(&a.it_kw));
    let busiest = problem.site_index(&sites[0].site).expect("a site");
    let mut hot = inst.clone();
    let ambient = &mut hot.sites[busiest.ix()].ambient;
    ambient.current_c += 10.0;
    ambient.forecast_c.iter_mut().for_each(|t| *t += 10.0);
    let mut replanner = Replanner::new(problem, &solved.x, solved.price);
    let mut group = c.benchmark_group("incremental");
    group.sample_size(50);
    let mut heat = false;
    group.bench_function("100000x1000 one site", |b| {
        b.iter(|| {
            heat = !heat;
            let now = if heat { &hot } else { &inst };
            replanner
                .apply(
                    now,
                    &[Change::Site(busiest)],
                    Deadline::after(DEFAULT_REPLAN_TIME_LIMIT),
                )
                .expect("re-plan")
        })
    });
    group.finish();
}

criterion_group!(benches, bench, incremental);
criterion_main!(benches);
