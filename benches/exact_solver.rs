//! The exact solver (good_lp + HiGHS) on `gen` instances of 200×20,
//! 1000×50 and 5000×100 replicas × sites. Besides criterion's timings it
//! prints each size's objective, proven bound and gap (stderr), which is
//! what the time buys. Each solve has a time limit (EDGEPLAN_BENCH_LIMIT_S,
//! default 30 s), as an operator would set one.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use edgeplan::clock::Deadline;
use edgeplan::gen::{generate, GenOptions};
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, SolveOptions};

fn sizes() -> Vec<(usize, usize)> {
    vec![(200, 20), (1000, 50), (5000, 100)]
}

fn bench(c: &mut Criterion) {
    let limit: f64 = std::env::var("EDGEPLAN_BENCH_LIMIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    // A deadline is a moment: each solve gets its own, made just before.
    let options = || SolveOptions {
        deadline: Deadline::after_s(limit),
        relative_gap: None,
        threads: None,
        seed: 0,
        method: edgeplan::solver::Method::Exact,
        work: None,
        deterministic: false,
    };
    let mut group = c.benchmark_group("exact_solver");
    group.sample_size(10);
    for (replicas, sites) in sizes() {
        let inst = generate(&GenOptions {
            sites,
            workloads: 0,
            replicas: Some(replicas),
            seed: 42,
            load: 0.8,
        })
        .expect("gen");
        let problem = Problem::build(&inst).expect("problem");
        let started = Instant::now();
        let solved = solve(&problem, &options()).expect("solve");
        eprintln!(
            "exact_solver/{replicas}x{sites}: {:.2} s, status {:?}, objective {:.6}, bound {:.6}, gap {:.4} %",
            started.elapsed().as_secs_f64(),
            solved.status,
            solved.objective,
            solved.bound,
            solved.gap * 100.0
        );
        group.bench_function(format!("{replicas}x{sites}"), |b| {
            b.iter(|| solve(&problem, &options()).expect("solve"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
