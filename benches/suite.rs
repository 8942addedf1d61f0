//! The benchmark suite (`edgeplan::suite`, the same list `edgeplan bench
//! --suite` and `scripts/peer.py --suite` run): every family of the
//! `quick` suite (5,000 × 100; `standard` at loads 0.6–0.9, `gpu-tight`,
//! `metro`, `rules`; two seeds), solved by `auto` in its 1 s. Criterion
//! times the problem build plus the solve; before timing, each instance's
//! objective, replicas left out and the proven count of replicas no
//! placement can hold go to stderr, so a faster run that places less shows.
//!
//! `EDGEPLAN_SUITE=full cargo bench --bench suite` runs the large sizes too
//! (minutes each: prefer `edgeplan bench --suite full`, which measures
//! peak memory per instance in its own process).

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use edgeplan::clock::Deadline;
use edgeplan::gen::{generate_family, GenOptions};
use edgeplan::problem::Problem;
use edgeplan::solver::{proven_unplaced, solve, Method, SolveOptions};
use edgeplan::suite::suite;

fn bench(c: &mut Criterion) {
    let name = std::env::var("EDGEPLAN_SUITE").unwrap_or_else(|_| "quick".into());
    let mut group = c.benchmark_group(format!("suite-{name}"));
    group.sample_size(10);
    for entry in suite(&name).expect("suite") {
        let inst = generate_family(
            &GenOptions {
                sites: entry.sites,
                workloads: 0,
                replicas: Some(entry.replicas),
                seed: entry.seed,
                load: entry.load,
            },
            entry.family,
        )
        .expect("gen");
        let options = SolveOptions {
            deadline: Deadline::after_s(entry.time_limit_s),
            relative_gap: Some(0.0),
            threads: None,
            seed: 0,
            method: Method::Auto,
            work: None,
            deterministic: false,
        };
        let label = format!(
            "{}-{}x{}-load{}-seed{}",
            entry.family.name(),
            entry.replicas,
            entry.sites,
            entry.load,
            entry.seed
        );
        let started = Instant::now();
        let problem = Problem::build(&inst).expect("problem");
        let solved = solve(&problem, &options).expect("solve");
        eprintln!(
            "{label}: {:.2} s, {:?}, objective {:.4}, {} left out, {} proven unplaceable, gap {:.3} %",
            started.elapsed().as_secs_f64(),
            solved.method,
            solved.objective,
            problem.evaluate(&solved.x).unplaced_replicas,
            proven_unplaced(&problem),
            solved.gap * 100.0
        );
        group.bench_function(label, |b| {
            b.iter(|| {
                let problem = Problem::build(&inst).expect("problem");
                solve(&problem, &options).expect("solve")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
