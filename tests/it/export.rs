//! The exported MPS file is the model `solve` optimises: read back by a small
//! independent MPS reader, its objective at the solved assignment equals the
//! objective `solve` reports, and the assignment satisfies every row.

use std::collections::HashMap;

use edgeplan::gen::{generate, GenOptions};
use edgeplan::milp::Milp;
use edgeplan::problem::Problem;
use edgeplan::report::SolveReport;
use edgeplan::solver::solve;

use crate::common::*;

struct Mps {
    row_kind: HashMap<String, char>,
    coefs: HashMap<String, Vec<(String, f64)>>, // row -> (column, value)
    cost: HashMap<String, f64>,
    rhs: HashMap<String, f64>,
    range: HashMap<String, f64>,
    offset: f64,
}

fn read_mps(text: &str) -> Mps {
    let mut m = Mps {
        row_kind: HashMap::new(),
        coefs: HashMap::new(),
        cost: HashMap::new(),
        rhs: HashMap::new(),
        range: HashMap::new(),
        offset: 0.0,
    };
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line.split_whitespace().next().unwrap_or("");
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match section {
            "ROWS" => {
                m.row_kind
                    .insert(f[1].to_string(), f[0].chars().next().unwrap());
            }
            "COLUMNS" if f[1] != "'MARKER'" => {
                let v: f64 = f[2].parse().unwrap();
                if f[1] == "obj" {
                    m.cost.insert(f[0].to_string(), v);
                } else {
                    m.coefs
                        .entry(f[1].to_string())
                        .or_default()
                        .push((f[0].to_string(), v));
                }
            }
            "RHS" => {
                let v: f64 = f[2].parse().unwrap();
                if f[1] == "obj" {
                    m.offset = -v;
                } else {
                    m.rhs.insert(f[1].to_string(), v);
                }
            }
            "RANGES" => {
                m.range.insert(f[1].to_string(), f[2].parse().unwrap());
            }
            _ => {}
        }
    }
    m
}

#[test]
fn exported_mps_objective_equals_reported_objective() {
    let inst = generate(&GenOptions {
        sites: 8,
        workloads: 30,
        replicas: None,
        seed: 3,
        load: 0.8,
    })
    .unwrap();
    let mut inst = inst;
    inst.limits.max_moves = Some(25);
    assert!(edgeplan::validate::validate(&inst).is_empty());
    let problem = Problem::build(&inst).unwrap();
    let milp = Milp::build(&problem);
    let mps = read_mps(&milp.to_mps("t"));
    let solved = solve(&problem, &exact()).unwrap();
    let report = SolveReport::new(&problem, &solved);

    let values = milp.assignment_of(&problem, &solved.x);
    let value: HashMap<&str, f64> = milp
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .zip(values.iter().copied())
        .collect();
    let objective: f64 = mps.offset
        + mps
            .cost
            .iter()
            .map(|(c, v)| v * value[c.as_str()])
            .sum::<f64>();
    assert_close(
        objective,
        report.objective.total,
        "MPS objective vs reported",
    );
    let verified = edgeplan::verify::verify(&inst, &report.placement);
    assert!(verified.feasible, "{:?}", verified.violations);
    assert_close(
        verified.objective.total,
        report.objective.total,
        "verifier vs reported",
    );

    for (row, kind) in &mps.row_kind {
        if *kind == 'N' {
            continue;
        }
        let lhs: f64 = mps.coefs.get(row).map_or(0.0, |cs| {
            cs.iter().map(|(c, v)| v * value[c.as_str()]).sum()
        });
        let rhs = mps.rhs.get(row).copied().unwrap_or(0.0);
        let tol = 1e-6 * rhs.abs().max(1.0);
        match kind {
            'L' => assert!(lhs <= rhs + tol, "{row}: {lhs} > {rhs}"),
            'G' => {
                assert!(lhs >= rhs - tol, "{row}: {lhs} < {rhs}");
                if let Some(r) = mps.range.get(row) {
                    assert!(lhs <= rhs + r + tol, "{row}: {lhs} above range");
                }
            }
            'E' => assert!((lhs - rhs).abs() <= tol, "{row}: {lhs} != {rhs}"),
            _ => panic!("unexpected row kind {kind}"),
        }
    }
    let lp = milp.to_lp("t");
    assert!(lp.starts_with("\\ t\nMinimize\n obj:"));
    assert!(lp.contains("Subject To") && lp.contains("General") && lp.trim_end().ends_with("End"));
}
