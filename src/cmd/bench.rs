//! `edgeplan bench`: the scale benchmark. Each size is generated here and
//! solved in a fresh process (`bench --one`), so its peak memory is
//! its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use edgeplan::clock::Deadline;
use edgeplan::fast::{diff, Replanner, DEFAULT_REPLAN_TIME_LIMIT};
use edgeplan::gen::{generate_family, Family, GenOptions};
use edgeplan::instance::Instance;
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions};
use edgeplan::suite::suite;

use super::io::load_problem;
use super::verified::verified;

#[derive(clap::Args)]
pub struct Args {
    /// Sizes as REPLICASxSITES:SECONDS:GAP, comma-separated.
    #[arg(long, default_value = "5000x100:1:0.005,100000x1000:10:0.01")]
    pub sizes: String,
    /// Run a suite of instance families instead of --sizes: smoke (tiny,
    /// for tests), quick (5,000 × 100: gen at loads 0.6–0.9 and the
    /// gpu-tight, metro and rules families, two seeds each, 1 s) or full
    /// (quick, plus 100,000 × 1,000 at 10 s and 1,000,000 × 5,000 at 60 s).
    #[arg(long)]
    pub suite: Option<String>,
    /// With --suite: print its instances (family replicas sites load seed
    /// seconds, one a line) and stop — what `scripts/peer.py --suite` runs.
    #[arg(long)]
    pub list: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of the fleet's CPU the demand uses.
    #[arg(long, default_value_t = 0.7)]
    pub load: f64,
    #[arg(long, default_value = "fast")]
    pub method: Method,
    /// Keep the generated instances here (for `scripts/peer.py`).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Solve this one instance file (each size runs as such a process, so
    /// its peak memory is its own) and print one JSON line.
    #[arg(long)]
    pub one: Option<PathBuf>,
    /// With --one: seconds before returning the best placement found.
    #[arg(long, default_value_t = 10.0)]
    pub time_limit: f64,
    /// With --one: the gap on the placed cost at which to stop.
    #[arg(long, default_value_t = 0.01)]
    pub gap: f64,
    /// After each solve, this many incremental re-plans (one site's
    /// heat, cooling or price, or one workload's demand, in turn); prints
    /// their median and worst time.
    #[arg(long, default_value_t = 20)]
    pub replans: usize,
}

pub fn run(args: Args) -> Result<()> {
    match args.one {
        Some(path) => bench_one(
            &path,
            args.method,
            args.time_limit,
            args.gap,
            args.replans,
            args.seed,
        ),
        None => {
            let entries = match &args.suite {
                Some(name) => suite_entries(name)?,
                None => parse_sizes(&args.sizes)?
                    .into_iter()
                    .map(|(replicas, sites, seconds, gap)| Entry {
                        family: Family::Standard,
                        replicas,
                        sites,
                        load: args.load,
                        seed: args.seed,
                        seconds,
                        gap,
                    })
                    .collect(),
            };
            if args.list {
                for e in &entries {
                    println!(
                        "{} {} {} {} {} {}",
                        e.family.name(),
                        e.replicas,
                        e.sites,
                        e.load,
                        e.seed,
                        e.seconds
                    );
                }
                return Ok(());
            }
            bench(&entries, args.method, args.keep.as_deref(), args.replans)
        }
    }
}

/// One instance of a benchmark run.
struct Entry {
    family: Family,
    replicas: usize,
    sites: usize,
    load: f64,
    seed: u64,
    seconds: f64,
    gap: f64,
}

/// The suite's instances as benchmark entries (no gap target: every
/// entry runs to its time limit).
fn suite_entries(name: &str) -> Result<Vec<Entry>> {
    let entries = suite(name).map_err(|e| anyhow::anyhow!("--suite: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| Entry {
            family: e.family,
            replicas: e.replicas,
            sites: e.sites,
            load: e.load,
            seed: e.seed,
            seconds: e.time_limit_s,
            gap: 0.0,
        })
        .collect())
}

/// One benchmark size: (replicas, sites, seconds, gap).
fn parse_sizes(text: &str) -> Result<Vec<(usize, usize, f64, f64)>> {
    text.split(',')
        .map(|item| {
            let parse = || -> Option<(usize, usize, f64, f64)> {
                let mut parts = item.trim().split(':');
                let (replicas, sites) = parts.next()?.split_once('x')?;
                let seconds = parts.next().map_or(Some(10.0), |v| v.parse().ok())?;
                let gap = parts.next().map_or(Some(0.01), |v| v.parse().ok())?;
                Some((replicas.parse().ok()?, sites.parse().ok()?, seconds, gap))
            };
            parse().ok_or_else(|| {
                anyhow::anyhow!("--sizes: {item:?} is not REPLICASxSITES[:SECONDS[:GAP]]")
            })
        })
        .collect()
}

fn bench(entries: &[Entry], method: Method, keep: Option<&Path>, replans: usize) -> Result<()> {
    let temp = std::env::temp_dir().join(format!("edgeplan-bench-{}", std::process::id()));
    let dir = keep.unwrap_or(&temp);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    println!(
        "{:>9} {:>9} {:>6} {:>4} {:>4} {:>7} {:>6} {:>8} {:>8} {:>14} {:>8} {:>8} {:>14} {:>8} {:>9} {:>11} {:>11} {:>10}",
        "family",
        "replicas",
        "sites",
        "load",
        "seed",
        "limit_s",
        "method",
        "build_s",
        "solve_s",
        "objective",
        "unplaced",
        "proven",
        "bound",
        "gap_%",
        "peak_MiB",
        "replan_p50",
        "replan_max",
        "replan_out"
    );
    for e in entries {
        let (replicas, sites, seed, seconds, gap) = (e.replicas, e.sites, e.seed, e.seconds, e.gap);
        let inst = generate_family(
            &GenOptions {
                sites,
                workloads: 0,
                replicas: Some(replicas),
                seed,
                load: e.load,
            },
            e.family,
        )
        .map_err(anyhow::Error::msg)?;
        let path = dir.join(format!(
            "bench-{}-{replicas}x{sites}-load{}-seed{seed}.json",
            e.family.name(),
            e.load
        ));
        fs::write(&path, serde_json::to_string(&inst)?)?;
        drop(inst);
        let out = std::process::Command::new(&exe)
            .arg("bench")
            .arg("--one")
            .arg(&path)
            .arg("--method")
            .arg(format!("{method:?}").to_lowercase())
            .arg("--time-limit")
            .arg(seconds.to_string())
            .arg("--gap")
            .arg(gap.to_string())
            .arg("--replans")
            .arg(replans.to_string())
            .arg("--seed")
            .arg(seed.to_string())
            .output()?;
        if !out.status.success() {
            bail!(
                "{replicas}x{sites}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if keep.is_none() {
            let _ = fs::remove_file(&path);
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>9} {:>9} {:>6} {:>4} {:>4} {:>7} {:>6} {:>8.2} {:>8.2} {:>14.4} {:>8} {:>8} {:>14.4} {:>8.3} {:>9.0} {:>8.1} ms {:>8.1} ms {:>10}",
            e.family.name(),
            replicas,
            sites,
            e.load,
            seed,
            seconds,
            r["method"].as_str().unwrap_or("?"),
            num("build_s"),
            num("solve_s"),
            num("objective"),
            num("unplaced"),
            num("proven_unplaced"),
            num("bound"),
            num("gap") * 100.0,
            num("peak_mib"),
            num("replan_p50_ms"),
            num("replan_max_ms"),
            num("replan_unplaced"),
        );
    }
    if keep.is_none() {
        let _ = fs::remove_dir(&temp);
    }
    Ok(())
}

/// Load, build and solve one instance, then time `replans` incremental
/// re-plans; print the figures as one JSON line.
fn bench_one(
    path: &Path,
    method: Method,
    time_limit: f64,
    gap: f64,
    replans: usize,
    seed: u64,
) -> Result<()> {
    let started = Instant::now();
    let (inst, problem) = load_problem(path)?;
    let build_s = started.elapsed().as_secs_f64();
    let solving = Instant::now();
    let solved = solve(
        &problem,
        &SolveOptions {
            deadline: Deadline::after_s(time_limit),
            relative_gap: Some(gap),
            threads: None,
            seed: 0,
            method,
            work: None,
            deterministic: false,
        },
    )?;
    let solve_s = solving.elapsed().as_secs_f64();
    verified(&inst, &problem, &solved.x)?;
    // Replicas left out, and how many of them no placement could hold.
    let unplaced = problem.evaluate(&solved.x).unplaced_replicas;
    let proven = edgeplan::solver::proven_unplaced(&problem);
    let peak_kib: f64 = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN);
    let mut replan_ms = Vec::new();
    let mut replan_gap = f64::NAN;
    // Replicas the last re-plan's placement leaves out.
    let mut replan_unplaced = 0u64;
    if replans > 0 {
        let mut current = inst;
        let mut replanner = Replanner::new(problem, &solved.x, solved.price.clone());
        for (i, scenario) in bench_changes(&current, replans, seed).iter().enumerate() {
            let next = edgeplan::whatif::apply(&current, scenario, "bench")
                .map_err(|e| anyhow::anyhow!("bench change {i}: {e:?}"))?;
            let Some(changes) = diff(replanner.problem(), &current, &next) else {
                bail!("bench change {i} is structural");
            };
            let t = Instant::now();
            let r = replanner.apply(&next, &changes, Deadline::after(DEFAULT_REPLAN_TIME_LIMIT))?;
            replan_ms.push(t.elapsed().as_secs_f64() * 1e3);
            replan_gap = r.gap;
            current = next;
        }
        // The final placement against the changed instance, independently.
        let rebuilt = Problem::build(&current)?;
        verified(&current, &rebuilt, &replanner.placement())?;
        replan_unplaced = rebuilt.evaluate(&replanner.placement()).unplaced_replicas;
    }
    replan_ms.sort_by(f64::total_cmp);
    let nan = f64::NAN;
    println!(
        "{}",
        serde_json::json!({
            "method": solved.method,
            "build_s": build_s,
            "solve_s": solve_s,
            "objective": solved.objective,
            "unplaced": unplaced,
            "proven_unplaced": proven,
            "bound": solved.bound,
            "gap": solved.gap,
            "peak_mib": peak_kib / 1024.0,
            "replan_p50_ms": replan_ms.get(replan_ms.len() / 2).copied().unwrap_or(nan),
            "replan_max_ms": replan_ms.last().copied().unwrap_or(nan),
            "replan_final_gap": replan_gap,
            "replan_unplaced": replan_unplaced,
        })
    );
    Ok(())
}

/// `n` single changes in turn, deterministic for `seed`: a heat wave
/// (+10 °C), half the cooling lost, the electricity price halved at one
/// site; one workload's replicas doubled.
fn bench_changes(inst: &Instance, n: usize, seed: u64) -> Vec<edgeplan::whatif::Scenario> {
    use edgeplan::whatif::{Perturbation, Scenario, Selection};
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |m: usize| {
        // xorshift: enough to spread the changes over the fleet.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m.max(1) as u64) as usize
    };
    (0..n)
        .map(|i| {
            let site = inst.sites[next(inst.sites.len())].id.clone();
            let perturbation = match i % 4 {
                0 => Perturbation::HeatWave {
                    sites: vec![site],
                    delta_c: 10.0,
                    from_hour: 0,
                    hours: None,
                },
                1 => Perturbation::CoolingLoss {
                    site,
                    fraction: 0.5,
                },
                2 => Perturbation::Price {
                    sites: vec![site],
                    multiplier: 0.5,
                    series: None,
                },
                _ => Perturbation::DemandGrowth {
                    factor: 2.0,
                    selection: Selection {
                        regions: Vec::new(),
                        workloads: vec![inst.workloads[next(inst.workloads.len())].id.clone()],
                    },
                },
            };
            Scenario {
                name: format!("change {i}"),
                perturbations: vec![perturbation],
            }
        })
        .collect()
}
