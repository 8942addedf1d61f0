//! The exact model as a solver-neutral MILP: columns with bounds, cost and
//! integrality, rows with bounds, and an objective offset. Built from a
//! [`Problem`]; solved by `solver` (good_lp on HiGHS) and written in the
//! standard MPS and LP formats by `export`, so every solver sees the very
//! same model. Pure: no I/O.

use std::collections::HashMap;
use std::fmt::Write as _;

use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;
use edgeplan_problem::replicas::Replicas;
use edgeplan_problem::rules::{LinearRow, Rule, Term};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub lower: f64,
    pub upper: f64,
    pub integer: bool,
    pub cost: f64,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub coefs: Vec<(usize, f64)>,
    pub lower: f64,
    pub upper: f64,
}

/// The MILP and where each decision lives in it.
#[derive(Debug, Clone)]
pub struct Milp {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// Constant part of the objective (idle power of every site).
    pub offset: f64,
    /// Per workload: (site, column of x = replicas there).
    pub x: IndexVec<WorkloadIx, Vec<(SiteIx, usize)>>,
    /// Per workload: (site, column of m = replicas moved in), where a move is possible.
    pub m: IndexVec<WorkloadIx, Vec<(SiteIx, usize)>>,
    /// Per workload: column of u = unplaced replicas.
    pub u: IndexVec<WorkloadIx, usize>,
    /// Per affinity group: (site, column of y = the group uses the site).
    pub y: Vec<Vec<(SiteIx, usize)>>,
}

impl Milp {
    fn col(&mut self, name: String, lower: f64, upper: f64, integer: bool, cost: f64) -> usize {
        self.columns.push(Column {
            name,
            lower,
            upper,
            integer,
            cost,
        });
        self.columns.len() - 1
    }

    fn row(&mut self, name: String, coefs: Vec<(usize, f64)>, lower: f64, upper: f64) {
        if !coefs.is_empty() {
            self.rows.push(Row {
                name,
                coefs,
                lower,
                upper,
            });
        }
    }

    /// Build the exact model of a problem.
    pub fn build(p: &Problem) -> Milp {
        let mut milp = Milp {
            columns: Vec::new(),
            rows: Vec::new(),
            offset: p.fixed_cost(),
            x: IndexVec::with_capacity(p.workloads.len()),
            m: IndexVec::with_capacity(p.workloads.len()),
            u: IndexVec::with_capacity(p.workloads.len()),
            y: Vec::new(),
        };
        let track_moves = p.max_moves.is_some();
        // x, m, u and the demand row of every workload; then every rule's
        // rows; then the affinity groups' y (not a per-replica rule).
        for (wi, w) in p.workloads.iter_enumerated() {
            let mut xs = Vec::with_capacity(w.candidates.len());
            let mut ms = Vec::new();
            for c in &w.candidates {
                let x = milp.col(
                    format!("x_w{wi}_s{}", c.site),
                    0.0,
                    c.max_count as f64,
                    true,
                    c.cost(),
                );
                xs.push((c.site, x));
                let cur = w.current_at(c.site);
                if cur < c.max_count && (w.move_cost > 0.0 || track_moves) {
                    let m = milp.col(
                        format!("m_w{wi}_s{}", c.site),
                        0.0,
                        (c.max_count - cur) as f64,
                        false,
                        w.move_cost,
                    );
                    ms.push((c.site, m));
                    // m >= x - current
                    milp.row(
                        format!("move_w{wi}_s{}", c.site),
                        vec![(m, 1.0), (x, -1.0)],
                        -(cur as f64),
                        f64::INFINITY,
                    );
                }
            }
            let u = milp.col(
                format!("u_w{wi}"),
                0.0,
                w.replicas as f64,
                false,
                w.unplaced_cost,
            );
            let mut coefs: Vec<(usize, f64)> = xs.iter().map(|&(_, x)| (x, 1.0)).collect();
            coefs.push((u, 1.0));
            milp.row(
                format!("demand_w{wi}"),
                coefs,
                w.replicas as f64,
                w.replicas as f64,
            );
            milp.x.push(xs);
            milp.m.push(ms);
            milp.u.push(u);
        }
        // Every rule's rows (spread, the per-site limits, anti-affinity, the
        // move budget), each rule saying which of its rows can bind.
        for rule in Rule::WITH_ROWS {
            for row in rule.rows(p) {
                let coefs: Vec<(usize, f64)> = row
                    .terms
                    .iter()
                    .map(|&(term, coef)| {
                        let column = match term {
                            Term::Placed(wi, si) => milp.x_col(wi, si),
                            Term::MovedIn(wi, si) => milp.m_col(wi, si),
                        };
                        let column = column.expect("a rule's row speaks of a column that exists");
                        (column, coef)
                    })
                    .collect();
                milp.row(row.name, coefs, f64::NEG_INFINITY, row.upper);
            }
        }
        // Affinity: all members on exactly the same set of sites.
        for (g, (_, members)) in p.affinity_groups.iter().enumerate() {
            let mut ys = Vec::new();
            for si in p.sites.indices() {
                let cols: Vec<Option<usize>> =
                    members.iter().map(|&wi| milp.x_col(wi, si)).collect();
                if cols.iter().all(Option::is_some) {
                    let y = milp.col(format!("y_g{g}_s{si}"), 0.0, 1.0, true, 0.0);
                    for x in cols.into_iter().flatten() {
                        let ub = milp.columns[x].upper;
                        // x <= ub·y and x >= y
                        milp.row(
                            format!("aff_hi_g{g}_s{si}_c{x}"),
                            vec![(x, 1.0), (y, -ub)],
                            f64::NEG_INFINITY,
                            0.0,
                        );
                        milp.row(
                            format!("aff_lo_g{g}_s{si}_c{x}"),
                            vec![(x, 1.0), (y, -1.0)],
                            0.0,
                            f64::INFINITY,
                        );
                    }
                    ys.push((si, y));
                } else {
                    // A site some member can't use: none of them may.
                    for x in cols.into_iter().flatten() {
                        milp.columns[x].upper = 0.0;
                    }
                }
            }
            milp.y.push(ys);
        }
        milp
    }

    /// The column of x = replicas of `wi` on `si`, if it is a candidate.
    pub fn x_col(&self, wi: WorkloadIx, si: SiteIx) -> Option<usize> {
        self.x[wi].iter().find(|(s, _)| *s == si).map(|&(_, c)| c)
    }

    /// The column of m = replicas of `wi` moved in to `si`, if any.
    pub fn m_col(&self, wi: WorkloadIx, si: SiteIx) -> Option<usize> {
        self.m[wi].iter().find(|(s, _)| *s == si).map(|&(_, c)| c)
    }

    /// Column values for an indexed placement (x as given; m, u, y implied).
    /// Replicas on sites that have no column are dropped.
    pub fn assignment_of(&self, p: &Problem, x: &Replicas) -> Vec<f64> {
        let mut values = vec![0.0; self.columns.len()];
        for (wi, sites) in x.iter_enumerated() {
            let mut placed = 0u32;
            for &(si, n) in sites {
                if let Some(c) = self.x_col(wi, si) {
                    values[c] = n as f64;
                    placed += n;
                }
            }
            values[self.u[wi]] = p.workloads[wi].replicas.saturating_sub(placed) as f64;
            for &(si, m) in &self.m[wi] {
                let xv = self.x_col(wi, si).map_or(0.0, |c| values[c]);
                values[m] = (xv - p.workloads[wi].current_at(si) as f64).max(0.0);
            }
        }
        for (g, ys) in self.y.iter().enumerate() {
            let members = &p.affinity_groups[g].1;
            for &(si, y) in ys {
                let used = members
                    .iter()
                    .any(|&wi| self.x_col(wi, si).is_some_and(|c| values[c] > 0.0));
                values[y] = if used { 1.0 } else { 0.0 };
            }
        }
        values
    }

    /// The objective at given column values, offset included.
    pub fn objective_at(&self, values: &[f64]) -> f64 {
        self.offset
            + self
                .columns
                .iter()
                .zip(values)
                .map(|(c, v)| c.cost * v)
                .sum::<f64>()
    }

    /// Read the placement out of column values (rounded to integers).
    pub fn placement_from(&self, values: &[f64]) -> Replicas {
        self.x
            .iter()
            .map(|xs| {
                xs.iter()
                    .filter_map(|&(s, c)| {
                        let n = values[c].round().max(0.0) as u32;
                        (n > 0).then_some((s, n))
                    })
                    .collect()
            })
            .collect()
    }

    /// The model's rows of every rule (spread, the per-site limits,
    /// anti-affinity, the move budget), each rule saying which can bind.
    pub fn rule_rows(p: &Problem) -> Vec<LinearRow> {
        Rule::WITH_ROWS
            .iter()
            .flat_map(|rule| rule.rows(p))
            .collect()
    }

    /// Free-format MPS. The objective row's RHS carries the negated offset
    /// (the convention HiGHS and most readers follow).
    pub fn to_mps(&self, name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "NAME {}", sanitize(name));
        let _ = writeln!(out, "OBJSENSE\n    MIN");
        let _ = writeln!(out, "ROWS\n N  obj");
        for r in &self.rows {
            let kind = if r.lower == r.upper {
                "E"
            } else if r.lower.is_finite() {
                "G"
            } else {
                "L"
            };
            let _ = writeln!(out, " {kind}  {}", r.name);
        }
        // Column-major coefficients.
        let mut by_col: Vec<Vec<(usize, f64)>> = vec![Vec::new(); self.columns.len()];
        for (ri, r) in self.rows.iter().enumerate() {
            for &(c, v) in &r.coefs {
                by_col[c].push((ri, v));
            }
        }
        let _ = writeln!(out, "COLUMNS");
        let mut in_int = false;
        for (ci, c) in self.columns.iter().enumerate() {
            if c.integer != in_int {
                let marker = if c.integer { "INTORG" } else { "INTEND" };
                let _ = writeln!(out, "    MARKER 'MARKER' '{marker}'");
                in_int = c.integer;
            }
            let _ = writeln!(out, "    {} obj {}", c.name, num(c.cost));
            for &(ri, v) in &by_col[ci] {
                let _ = writeln!(out, "    {} {} {}", c.name, self.rows[ri].name, num(v));
            }
        }
        if in_int {
            let _ = writeln!(out, "    MARKER 'MARKER' 'INTEND'");
        }
        let _ = writeln!(out, "RHS");
        if self.offset != 0.0 {
            let _ = writeln!(out, "    rhs obj {}", num(-self.offset));
        }
        for r in &self.rows {
            let rhs = if r.lower.is_finite() {
                r.lower
            } else {
                r.upper
            };
            if rhs != 0.0 {
                let _ = writeln!(out, "    rhs {} {}", r.name, num(rhs));
            }
        }
        let ranged: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.lower.is_finite() && r.upper.is_finite() && r.lower != r.upper)
            .collect();
        if !ranged.is_empty() {
            let _ = writeln!(out, "RANGES");
            for r in ranged {
                let _ = writeln!(out, "    rng {} {}", r.name, num(r.upper - r.lower));
            }
        }
        let _ = writeln!(out, "BOUNDS");
        for c in &self.columns {
            if c.lower != 0.0 {
                let _ = writeln!(out, " LO bnd {} {}", c.name, num(c.lower));
            }
            if c.upper.is_finite() {
                let _ = writeln!(out, " UP bnd {} {}", c.name, num(c.upper));
            } else {
                let _ = writeln!(out, " PL bnd {}", c.name);
            }
        }
        let _ = writeln!(out, "ENDATA");
        out
    }

    /// CPLEX LP format; the offset is a constant term of the objective.
    pub fn to_lp(&self, name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\\ {}", sanitize(name));
        let _ = writeln!(out, "Minimize");
        let mut line = String::from(" obj:");
        for c in &self.columns {
            if c.cost != 0.0 {
                let _ = write!(line, " {} {}", signed(c.cost), c.name);
            }
        }
        if self.offset != 0.0 {
            let _ = write!(line, " {}", signed(self.offset));
        }
        wrap(&mut out, &line);
        let _ = writeln!(out, "Subject To");
        for r in &self.rows {
            let mut lhs = String::new();
            for &(c, v) in &r.coefs {
                let _ = write!(lhs, " {} {}", signed(v), self.columns[c].name);
            }
            if r.lower == r.upper {
                wrap(&mut out, &format!(" {}:{lhs} = {}", r.name, num(r.lower)));
            } else {
                if r.lower.is_finite() {
                    wrap(
                        &mut out,
                        &format!(" {}_lo:{lhs} >= {}", r.name, num(r.lower)),
                    );
                }
                if r.upper.is_finite() {
                    wrap(&mut out, &format!(" {}:{lhs} <= {}", r.name, num(r.upper)));
                }
            }
        }
        let _ = writeln!(out, "Bounds");
        for c in &self.columns {
            if c.upper.is_finite() {
                let _ = writeln!(out, " {} <= {} <= {}", num(c.lower), c.name, num(c.upper));
            } else {
                let _ = writeln!(out, " {} >= {}", c.name, num(c.lower));
            }
        }
        let ints: Vec<&str> = self
            .columns
            .iter()
            .filter(|c| c.integer)
            .map(|c| c.name.as_str())
            .collect();
        if !ints.is_empty() {
            let _ = writeln!(out, "General");
            for chunk in ints.chunks(8) {
                let _ = writeln!(out, " {}", chunk.join(" "));
            }
        }
        let _ = writeln!(out, "End");
        out
    }
}

fn num(v: f64) -> String {
    format!("{v:.12e}")
}

fn signed(v: f64) -> String {
    if v < 0.0 {
        format!("- {}", num(-v))
    } else {
        format!("+ {}", num(v))
    }
}

/// LP readers limit line length; break long expressions between terms.
fn wrap(out: &mut String, line: &str) {
    let mut width = 0;
    for (i, token) in line.split(' ').enumerate() {
        if i > 0 {
            if width > 200 && (token == "+" || token == "-") {
                out.push('\n');
                width = 0;
            } else {
                out.push(' ');
            }
        }
        out.push_str(token);
        width += token.len() + 1;
    }
    out.push('\n');
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "edgeplan".into()
    } else {
        s
    }
}

/// The exact model of the part of a problem that a placement leaves open:
/// columns only for the free (workload, site) pairs; every other pair is
/// held where the placement has it, and its share of each row moves into
/// the row's bound. The same rows as [`Milp::build`] (the rules' own rows,
/// the demand and move rows), so a repair solves the very model the exact
/// path does, with most of it fixed. Members of affinity groups are never
/// free (their sites are chosen together, across the fleet).
#[derive(Debug, Clone)]
pub struct Around {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// (workload, site, column of x = replicas there).
    pub x: Vec<(WorkloadIx, SiteIx, usize)>,
    /// (workload, replicas held elsewhere, column of u = unplaced).
    pub u: Vec<(WorkloadIx, u32, usize)>,
    /// (workload, site, column of m = replicas moved in).
    m: Vec<(WorkloadIx, SiteIx, usize)>,
}

impl Around {
    /// The model of `free` (per workload, the candidate sites whose count
    /// may change) around placement `x`. `rows` are [`Milp::rule_rows`] of
    /// `p`, and `rows_of` the indices of those rows each workload appears
    /// in ([`rows_by_workload`]).
    pub fn build(
        p: &Problem,
        x: &Replicas,
        free: &[(WorkloadIx, Vec<SiteIx>)],
        rows: &[LinearRow],
        rows_of: &IndexVec<WorkloadIx, Vec<usize>>,
    ) -> Around {
        let mut in_affinity = IndexVec::from_elem_n(false, p.workloads.len());
        for (_, members) in &p.affinity_groups {
            for &w in members {
                in_affinity[w] = true;
            }
        }
        let mut model = Milp {
            columns: Vec::new(),
            rows: Vec::new(),
            offset: 0.0,
            x: IndexVec::new(),
            m: IndexVec::new(),
            u: IndexVec::new(),
            y: Vec::new(),
        };
        let (mut xs, mut ms, mut us) = (Vec::new(), Vec::new(), Vec::new());
        let mut column_of: HashMap<Term, usize> = HashMap::new();
        let track_moves = p.max_moves.is_some();
        for (wi, sites) in free {
            let wi = *wi;
            if in_affinity[wi] {
                continue;
            }
            let w = &p.workloads[wi];
            let mut coefs = Vec::new();
            for &si in sites {
                let Some(c) = w.candidate_at(si) else {
                    continue;
                };
                let xc = model.col(
                    format!("x_w{wi}_s{si}"),
                    0.0,
                    c.max_count as f64,
                    true,
                    c.cost(),
                );
                xs.push((wi, si, xc));
                column_of.insert(Term::Placed(wi, si), xc);
                coefs.push((xc, 1.0));
                let cur = w.current_at(si);
                if cur < c.max_count && (w.move_cost > 0.0 || track_moves) {
                    let mc = model.col(
                        format!("m_w{wi}_s{si}"),
                        0.0,
                        (c.max_count - cur) as f64,
                        false,
                        w.move_cost,
                    );
                    ms.push((wi, si, mc));
                    column_of.insert(Term::MovedIn(wi, si), mc);
                    model.row(
                        format!("move_w{wi}_s{si}"),
                        vec![(mc, 1.0), (xc, -1.0)],
                        -(cur as f64),
                        f64::INFINITY,
                    );
                }
            }
            if coefs.is_empty() {
                continue;
            }
            let held: u32 = x[wi]
                .iter()
                .filter(|&&(s, _)| !sites.contains(&s) || w.candidate_at(s).is_none())
                .map(|&(_, n)| n)
                .sum();
            let open = w.replicas.saturating_sub(held);
            let uc = model.col(format!("u_w{wi}"), 0.0, open as f64, false, w.unplaced_cost);
            us.push((wi, held, uc));
            coefs.push((uc, 1.0));
            model.row(format!("demand_w{wi}"), coefs, open as f64, open as f64);
        }
        // Every rule row a free workload appears in, its fixed terms moved
        // into the bound.
        let mut touched: Vec<usize> = us
            .iter()
            .flat_map(|&(wi, _, _)| rows_of[wi].iter().copied())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let count = |wi: WorkloadIx, si: SiteIx| x.count(wi, si);
        for r in touched {
            let row = &rows[r];
            let mut held = 0.0;
            let mut coefs = Vec::new();
            for &(term, coef) in &row.terms {
                match column_of.get(&term) {
                    Some(&c) => coefs.push((c, coef)),
                    None => {
                        let value = match term {
                            Term::Placed(wi, si) => count(wi, si),
                            Term::MovedIn(wi, si) => {
                                count(wi, si).saturating_sub(p.workloads[wi].current_at(si))
                            }
                        };
                        held += coef * f64::from(value);
                    }
                }
            }
            model.row(row.name.clone(), coefs, f64::NEG_INFINITY, row.upper - held);
        }
        Around {
            columns: model.columns,
            rows: model.rows,
            x: xs,
            u: us,
            m: ms,
        }
    }

    /// Column values of placement `x` (x as given on the free pairs; m and
    /// u implied).
    pub fn values_of(&self, p: &Problem, x: &Replicas) -> Vec<f64> {
        let mut values = vec![0.0; self.columns.len()];
        let count = |wi: WorkloadIx, si: SiteIx| x.count(wi, si);
        let mut placed: HashMap<WorkloadIx, u32> = HashMap::new();
        for &(wi, si, c) in &self.x {
            let n = count(wi, si);
            values[c] = f64::from(n);
            *placed.entry(wi).or_default() += n;
        }
        for &(wi, si, c) in &self.m {
            values[c] = f64::from(count(wi, si).saturating_sub(p.workloads[wi].current_at(si)));
        }
        for &(wi, held, c) in &self.u {
            let open = p.workloads[wi].replicas.saturating_sub(held);
            values[c] = f64::from(open.saturating_sub(placed.get(&wi).copied().unwrap_or(0)));
        }
        values
    }

    /// Placement `x` with the free pairs set from column values (rounded).
    pub fn apply(&self, x: &Replicas, values: &[f64]) -> Replicas {
        let mut out = x.clone();
        for &(wi, si, c) in &self.x {
            let n = values[c].round().max(0.0) as u32;
            let at = &mut out[wi];
            match at.iter().position(|&(s, _)| s == si) {
                Some(i) if n == 0 => {
                    at.remove(i);
                }
                Some(i) => at[i].1 = n,
                None if n > 0 => at.push((si, n)),
                None => {}
            }
        }
        out
    }
}

/// Per workload, the indices of the rows (of `rows`) it appears in.
pub fn rows_by_workload(p: &Problem, rows: &[LinearRow]) -> IndexVec<WorkloadIx, Vec<usize>> {
    let mut of: IndexVec<WorkloadIx, Vec<usize>> =
        IndexVec::from_elem_n(Vec::new(), p.workloads.len());
    for (r, row) in rows.iter().enumerate() {
        for &(term, _) in &row.terms {
            let (Term::Placed(wi, _) | Term::MovedIn(wi, _)) = term;
            if of[wi].last() != Some(&r) {
                of[wi].push(r);
            }
        }
    }
    of
}
