//! The operator report: one self-contained HTML page (inline CSS and SVG
//! charts drawn with plotters, no scripts, no external fonts) or a Markdown
//! summary, from a placement under its problem, an optional migration plan
//! and optional what-if results. Every figure comes from `problem::kpis`,
//! `evaluate`, `explain` and the plan; this module only lays them out. Pure:
//! values in, a string out.

use std::fmt::Write as _;

use plotters::prelude::*;

use edgeplan_analysis::whatif::ScenarioResult;
use edgeplan_model::instance::Instance;
use edgeplan_physics::physics::supply_c_at;
use edgeplan_plan::explain;
use edgeplan_plan::plan::{Plan, StepKind};
use edgeplan_problem::evaluate::Evaluation;
use edgeplan_problem::ix::SiteIx;
use edgeplan_problem::problem::{Kpis, Problem};
use edgeplan_problem::replicas::Replicas;

/// What a report is made from.
pub struct ReportInput<'a> {
    pub title: &'a str,
    pub instance: &'a Instance,
    pub problem: &'a Problem,
    /// The placement reported on (per workload: site, replicas).
    pub x: &'a Replicas,
    pub plan: Option<&'a Plan>,
    pub whatif: Option<&'a [ScenarioResult]>,
}

/// The numbers both formats show, computed once.
struct Facts {
    kpis: Kpis,
    eval: Evaluation,
    placed: u64,
    /// Replicas no placement can place (`solver::proven_unplaced`).
    proven_unplaced: u64,
    slo_compliance: f64,
    unplaced: Vec<explain::UnplacedExplanation>,
    moves: Vec<explain::MoveExplanation>,
    /// With spot workloads: the prices on the reported placement's
    /// on-demand work, and what spot work gets at them.
    market: Option<edgeplan_solve::spot::Market>,
}

fn facts(input: &ReportInput<'_>) -> Facts {
    let p = input.problem;
    let kpis = p.kpis(input.x);
    let eval = p.evaluate(input.x);
    let placed = kpis.placed_replicas;
    let slo_compliance = if placed == 0 {
        1.0
    } else {
        1.0 - kpis.slo_violations as f64 / placed as f64
    };
    let moves = input
        .plan
        .map(|plan| explain::moves(p, &p.current_placement(), &plan.steps))
        .unwrap_or_default();
    let market = p
        .has_spot()
        .then(|| edgeplan_solve::spot::on(p, input.x, None, 0.0));
    Facts {
        market,
        unplaced: explain::unplaced(p, input.x),
        proven_unplaced: edgeplan_solve::solver::proven_unplaced(p),
        kpis,
        eval,
        placed,
        slo_compliance,
        moves,
    }
}

/// A site's accelerator power, or a dash where it has none.
fn gpu_kw(kw: f64) -> String {
    if kw > 0.0 {
        format!("{kw:.2}")
    } else {
        "—".to_string()
    }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Red (no headroom) to green (`good` or more).
fn headroom_color(headroom: f64, good: f64) -> RGBColor {
    let t = (headroom / good).clamp(0.0, 1.0);
    RGBColor(
        (220.0 * (1.0 - t) + 40.0 * t) as u8,
        (60.0 + 120.0 * t) as u8,
        60,
    )
}

pub(crate) type ChartResult = Result<(), String>;

pub(crate) fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> ChartResult,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(root.clone()))
            .and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!("<p class=\"err\">chart not drawn: {}</p>", esc(&e)),
    }
}

pub(crate) fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// Sites on the land they stand on (Natural Earth, `basemap`), coloured by
/// inlet headroom, and the plan's moves as arrows between sites (width by
/// how many replicas take that way).
fn map_chart(input: &ReportInput<'_>, f: &Facts) -> String {
    let sites = &input.instance.sites;
    let (mut lat0, mut lat1, mut lon0, mut lon1) = (90f64, -90f64, 180f64, -180f64);
    for s in sites {
        lat0 = lat0.min(s.lat);
        lat1 = lat1.max(s.lat);
        lon0 = lon0.min(s.lon);
        lon1 = lon1.max(s.lon);
    }
    // A margin of a tenth of the span (at least 2°), and a frame no
    // narrower than the 720 × 400 chart's shape, so land keeps its form.
    let pad = (0.1 * (lon1 - lon0).max(lat1 - lat0)).max(2.0);
    let (mut lon, mut lat) = ((lon0 - pad, lon1 + pad), (lat0 - pad, lat1 + pad));
    let (w, h) = (lon.1 - lon.0, lat.1 - lat.0);
    if w < 1.8 * h {
        let grow = (1.8 * h - w) / 2.0;
        lon = (lon.0 - grow, lon.1 + grow);
    } else {
        let grow = (w / 1.8 - h) / 2.0;
        lat = (lat.0 - grow, lat.1 + grow);
    }
    let (lon, lat) = (
        (lon.0.max(-180.0), lon.1.min(180.0)),
        (lat.0.max(-90.0), lat.1.min(90.0)),
    );
    // Moves between sites, counted per (from, to).
    let at: std::collections::HashMap<&str, (f64, f64)> = sites
        .iter()
        .map(|s| (s.id.as_str(), (s.lon, s.lat)))
        .collect();
    let mut ways: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for step in input.plan.map_or(&[][..], |p| &p.steps[..]) {
        if let (Some(a), Some(b)) = (step.from.as_deref(), step.to.as_deref()) {
            *ways.entry((a, b)).or_default() += 1;
        }
    }
    let most = ways.values().copied().max().unwrap_or(1) as f64;
    svg(720, 400, |root| {
        let caption = if ways.is_empty() {
            "Sites by inlet headroom (green ≥ 10 °C, red 0 °C)".to_string()
        } else {
            format!(
                "Sites by inlet headroom (green ≥ 10 °C, red 0 °C); moves as arrows (thicker: more replicas, most {most:.0})"
            )
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(25)
            .y_label_area_size(35)
            .build_cartesian_2d(lon.0..lon.1, lat.0..lat.1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("longitude")
            .y_desc("latitude")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(
                crate::basemap::in_view(lon, lat)
                    .into_iter()
                    .map(|ring| Polygon::new(ring, RGBColor(226, 226, 218).filled())),
            )
            .map_err(e)?;
        for ((a, b), n) in &ways {
            let (Some(&p), Some(&q)) = (at.get(a), at.get(b)) else {
                continue;
            };
            let width = 1 + (4.0 * *n as f64 / most).round() as u32;
            let style = RGBColor(40, 90, 170).mix(0.75).stroke_width(width);
            chart
                .draw_series(LineSeries::new([p, q], style))
                .map_err(e)?;
            // The head: two short strokes back from the target, 30° apart.
            let (dx, dy) = (q.0 - p.0, q.1 - p.1);
            let len = (dx * dx + dy * dy).sqrt().max(1e-9);
            let size = 0.025 * (lon.1 - lon.0);
            for turn in [0.5f64, -0.5f64] {
                let (c, s) = (turn.cos(), turn.sin());
                let (ux, uy) = (-dx / len, -dy / len);
                let tip = (
                    q.0 + size * (ux * c - uy * s),
                    q.1 + size * (ux * s + uy * c),
                );
                chart
                    .draw_series(LineSeries::new([q, tip], style))
                    .map_err(e)?;
            }
        }
        for (s, k) in sites.iter().zip(&f.eval.sites) {
            let h = k.inlet_limit_c - k.inlet_c;
            let color = headroom_color(h, 10.0);
            chart
                .draw_series(std::iter::once(Circle::new(
                    (s.lon, s.lat),
                    6,
                    color.filled(),
                )))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} {:.1}°", s.id, h),
                    (s.lon, s.lat),
                    ("sans-serif", 11).into_font(),
                )))
                .map_err(e)?;
        }
        Ok(())
    })
}

/// One panel of bars, one per named category, `lo..hi` on the value axis.
fn bar_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    names: &[String],
    (lo, hi): (f64, f64),
    bars: &[(f64, RGBColor)],
) -> ChartResult {
    let n = names.len().max(1) as i32;
    // Side by side, more than a few names overlap: they stand upright then.
    let upright = names.len() > 8;
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(if upright {
            (longest.min(16) * 6 + 8) as u32
        } else {
            20
        })
        .y_label_area_size(50)
        .build_cartesian_2d(0..n, lo..hi)
        .map_err(e)?;
    let label_style = if upright {
        ("sans-serif", 11)
            .into_font()
            .transform(FontTransform::Rotate90)
    } else {
        ("sans-serif", 11).into_font()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_style(label_style)
        .x_label_formatter(&|i| {
            names
                .get(*i as usize)
                .map(|s| s.chars().take(16).collect())
                .unwrap_or_default()
        })
        .draw()
        .map_err(e)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (v, color))| {
            Rectangle::new([(i as i32, 0.0), (i as i32 + 1, v.min(hi))], color.filled())
        }))
        .map_err(e)?;
    Ok(())
}

/// Power use and inlet headroom per site, as bars.
fn headroom_chart(f: &Facts) -> String {
    let names: Vec<String> = f.eval.sites.iter().map(|k| k.site.clone()).collect();
    let uses: Vec<(f64, RGBColor)> = f
        .eval
        .sites
        .iter()
        .map(|k| {
            let use_ = if k.it_limit_kw > 0.0 {
                (k.it_kw / k.it_limit_kw).min(1.2)
            } else {
                1.2
            };
            (use_, headroom_color(1.0 - use_, 0.4))
        })
        .collect();
    let headroom: Vec<(f64, RGBColor)> = f
        .eval
        .sites
        .iter()
        .map(|k| {
            let h = k.inlet_limit_c - k.inlet_c;
            (h, headroom_color(h, 10.0))
        })
        .collect();
    let max_h = headroom.iter().map(|b| b.0).fold(1.0f64, f64::max);
    let min_h = headroom.iter().map(|b| b.0).fold(0.0f64, f64::min);
    let tall = names.len() > 8; // upright names need room (see `bar_panel`)
    svg(720, if tall { 460 } else { 340 }, |root| {
        let (top, bottom) = root.split_vertically(if tall { 230 } else { 170 });
        bar_panel(
            &top,
            "IT power / effective limit",
            &names,
            (0.0, 1.2),
            &uses,
        )?;
        bar_panel(
            &bottom,
            "Inlet headroom, °C",
            &names,
            (min_h, max_h * 1.1),
            &headroom,
        )
    })
}

/// Replicas by mean RTT, those within their SLO and those missing it.
fn latency_chart(input: &ReportInput<'_>) -> String {
    let p = input.problem;
    let bin_ms = 5.0;
    let mut ok: Vec<u64> = Vec::new();
    let mut miss: Vec<u64> = Vec::new();
    for (wi, sites) in input.x.iter_enumerated() {
        for &(si, n) in sites {
            let b = (p.mean_rtt_ms(wi, si) / bin_ms).floor().max(0.0) as usize;
            let b = b.min(60);
            if ok.len() <= b {
                ok.resize(b + 1, 0);
                miss.resize(b + 1, 0);
            }
            let violates = matches!(
                p.ineligible(wi, si),
                Some(
                    edgeplan_problem::rules::Ineligible::Latency { .. }
                        | edgeplan_problem::rules::Ineligible::Unreachable { .. }
                )
            );
            if violates {
                miss[b] += u64::from(n);
            } else {
                ok[b] += u64::from(n);
            }
        }
    }
    let top = ok
        .iter()
        .zip(&miss)
        .map(|(a, b)| a + b)
        .max()
        .unwrap_or(1)
        .max(1);
    let bins = ok.len().max(1) as f64;
    svg(720, 300, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Replicas by mean RTT to their users (red: outside the SLO)",
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..bins * bin_ms, 0u64..top + top / 10 + 1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("replicas")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(ok.iter().enumerate().map(|(b, &n)| {
                let x = b as f64 * bin_ms;
                Rectangle::new(
                    [(x, 0), (x + bin_ms * 0.9, n)],
                    RGBColor(60, 120, 200).filled(),
                )
            }))
            .map_err(e)?;
        chart
            .draw_series(
                miss.iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(b, &n)| {
                        let x = b as f64 * bin_ms;
                        let base = ok[b];
                        Rectangle::new(
                            [(x, base), (x + bin_ms * 0.9, base + n)],
                            RGBColor(220, 60, 60).filled(),
                        )
                    }),
            )
            .map_err(e)?;
        Ok(())
    })
}

/// Ambient forecast and predicted inlet against the limit, for the hottest sites.
fn forecast_chart(input: &ReportInput<'_>, f: &Facts) -> String {
    let mut order: Vec<usize> = (0..f.eval.sites.len()).collect();
    order.sort_by(|&a, &b| {
        let ha = f.eval.sites[a].inlet_limit_c - f.eval.sites[a].inlet_c;
        let hb = f.eval.sites[b].inlet_limit_c - f.eval.sites[b].inlet_c;
        ha.total_cmp(&hb)
    });
    order.truncate(3);
    let horizon = input.instance.limits.horizon_hours.max(1) as usize;
    let series: Vec<(String, Vec<f64>, Vec<f64>, f64)> = order
        .iter()
        .map(|&si| {
            let site = &input.instance.sites[si];
            let k = &f.eval.sites[si];
            let mut ambient: Vec<f64> = std::iter::once(site.ambient.current_c)
                .chain(site.ambient.forecast_c.iter().copied())
                .take(horizon + 1)
                .collect();
            if ambient.len() == 1 {
                ambient.push(ambient[0]);
            }
            let rise = input.problem.sites[SiteIx::new(si)].inlet_c_per_it_kw * k.it_kw;
            let inlet = ambient
                .iter()
                .map(|&t| supply_c_at(site, t) + rise)
                .collect();
            (site.id.clone(), ambient, inlet, k.inlet_limit_c)
        })
        .collect();
    let hours = series.iter().map(|s| s.1.len()).max().unwrap_or(2) as f64;
    let lo = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let hi = series
        .iter()
        .flat_map(|s| s.2.iter().copied().chain([s.3]))
        .fold(f64::NEG_INFINITY, f64::max)
        + 3.0;
    let palette = [
        RGBColor(200, 60, 60),
        RGBColor(60, 110, 200),
        RGBColor(60, 160, 90),
    ];
    svg(720, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Hottest sites: ambient forecast (dashed), predicted inlet (solid), inlet limit (thin)", ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..hours - 1.0, lo..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("hours from now")
            .y_desc("°C")
            .draw()
            .map_err(e)?;
        for (i, (id, ambient, inlet, limit)) in series.iter().enumerate() {
            let c = palette[i % palette.len()];
            chart
                .draw_series(DashedLineSeries::new(
                    ambient.iter().enumerate().map(|(h, &t)| (h as f64, t)),
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(e)?;
            chart
                .draw_series(LineSeries::new(
                    inlet.iter().enumerate().map(|(h, &t)| (h as f64, t)),
                    c.stroke_width(2),
                ))
                .map_err(e)?
                .label(id.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(LineSeries::new(
                    [(0.0, *limit), (hours - 1.0, *limit)],
                    c.stroke_width(1),
                ))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// The plan as a Gantt chart: one row per step (the first 80), coloured by kind.
/// Steps drawn one by one up to this many; a larger plan is drawn wave by
/// wave (a 3,795-step plan on one row per step is an empty tall chart).
const GANTT_STEPS: usize = 60;

/// The plan over time: each step (small plans) or each wave (large ones).
fn plan_chart(plan: &Plan) -> String {
    if plan.steps.len() <= GANTT_STEPS {
        gantt_chart(plan)
    } else {
        waves_chart(plan)
    }
}

/// Each wave as a bar over its time span, as tall as its steps; labelled
/// with its number.
fn waves_chart(plan: &Plan) -> String {
    let end = plan.makespan_s.max(1.0);
    let most = plan
        .waves
        .iter()
        .map(|w| w.steps.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let label_every = plan.waves.len().div_ceil(12).max(1);
    svg(720, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Migration plan: {} steps in {} waves, {:.0} s — steps per wave over time (labels: wave · state moved)",
                    plan.steps.len(),
                    plan.waves.len(),
                    plan.makespan_s
                ),
                ("sans-serif", 13),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..end, 0f64..most as f64 * 1.15)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("steps in the wave")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(plan.waves.iter().map(|w| {
                Rectangle::new(
                    [
                        (w.start_s, 0.0),
                        (
                            (w.start_s + w.duration_s).max(w.start_s + end * 0.002),
                            w.steps.len() as f64,
                        ),
                    ],
                    RGBColor(60, 120, 200).mix(0.8).filled(),
                )
            }))
            .map_err(e)?;
        chart
            .draw_series(
                plan.waves
                    .iter()
                    .filter(|w| w.index % label_every == 0)
                    .map(|w| {
                        let gib: f64 = w
                            .steps
                            .iter()
                            .filter_map(|&i| plan.steps.get(i))
                            .map(|s| s.state_gib)
                            .sum();
                        Text::new(
                            format!("w{} · {gib:.0} GiB", w.index),
                            (w.start_s, w.steps.len() as f64 + most as f64 * 0.03),
                            ("sans-serif", 10),
                        )
                    }),
            )
            .map_err(e)?;
        Ok(())
    })
}

/// Per site: steps and GiB leaving and arriving.
fn plan_sites_table(plan: &Plan) -> String {
    let mut by_site: std::collections::BTreeMap<&str, [f64; 4]> = Default::default();
    for s in &plan.steps {
        if let Some(from) = s.from.as_deref() {
            let r = by_site.entry(from).or_default();
            r[0] += 1.0;
            r[1] += s.state_gib;
        }
        if let Some(to) = s.to.as_deref() {
            let r = by_site.entry(to).or_default();
            r[2] += 1.0;
            r[3] += s.state_gib;
        }
    }
    let mut h = String::from("<table><tr><th class=\"l\">site</th><th>steps out</th><th>GiB out</th><th>steps in</th><th>GiB in</th></tr>");
    for (site, r) in &by_site {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1}</td></tr>",
            esc(site),
            r[0],
            r[1],
            r[2],
            r[3]
        );
    }
    h.push_str("</table>");
    h
}

fn gantt_chart(plan: &Plan) -> String {
    let steps: Vec<_> = plan.steps.iter().take(GANTT_STEPS).collect();
    let rows = steps.len().max(1) as i32;
    let end = plan.makespan_s.max(1.0);
    let color = |k: StepKind| match k {
        StepKind::Migrate => RGBColor(60, 120, 200),
        StepKind::Stage => RGBColor(230, 150, 40),
        StepKind::Start => RGBColor(60, 160, 90),
        StepKind::Stop | StepKind::Evict => RGBColor(200, 60, 60),
    };
    let height = (80 + 12 * rows).min(1100) as u32;
    svg(720, height, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Migration plan: {} steps in {} waves (w0, w1, …), {:.0} s (blue migrate, orange stage, green start, red stop)",
                    plan.steps.len(),
                    plan.waves.len(),
                    plan.makespan_s
                ),
                ("sans-serif", 13),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..end, 0..rows)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("step")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(steps.iter().enumerate().map(|(i, s)| {
                Rectangle::new(
                    [
                        (s.start_s, i as i32),
                        (
                            (s.start_s + s.duration_s).max(s.start_s + end * 0.003),
                            i as i32 + 1,
                        ),
                    ],
                    color(s.kind).filled(),
                )
            }))
            .map_err(e)?;
        let label_every = plan.waves.len().div_ceil(12).max(1);
        for w in &plan.waves {
            chart
                .draw_series(LineSeries::new(
                    [(w.start_s, 0), (w.start_s, rows)],
                    BLACK.mix(0.3),
                ))
                .map_err(e)?;
            if w.index % label_every == 0 {
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("w{}", w.index),
                        (w.start_s, 0),
                        ("sans-serif", 10),
                    )))
                    .map_err(e)?;
            }
        }
        Ok(())
    })
}

/// What-if KPIs across scenarios, as bars of energy cost and unplaced replicas.
fn whatif_chart(results: &[ScenarioResult]) -> String {
    let names: Vec<String> = results.iter().map(|r| r.scenario.clone()).collect();
    let cost: Vec<(f64, RGBColor)> = results
        .iter()
        .map(|r| (r.energy_cost_per_h, RGBColor(60, 120, 200)))
        .collect();
    let unplaced: Vec<(f64, RGBColor)> = results
        .iter()
        .map(|r| (r.unplaced_replicas as f64, RGBColor(200, 60, 60)))
        .collect();
    let max_cost = cost.iter().map(|b| b.0).fold(0.0f64, f64::max).max(1e-9);
    let max_unplaced = unplaced.iter().map(|b| b.0).fold(1.0f64, f64::max);
    svg(720, 360, |root| {
        let (top, bottom) = root.split_vertically(180);
        bar_panel(
            &top,
            "Energy cost per hour by scenario",
            &names,
            (0.0, max_cost * 1.1),
            &cost,
        )?;
        bar_panel(
            &bottom,
            "Unplaced replicas by scenario",
            &names,
            (0.0, max_unplaced + 1.0),
            &unplaced,
        )
    })
}

/// The what-if KPI table (HTML).
fn whatif_table(results: &[ScenarioResult]) -> String {
    let mut h = String::new();
    h.push_str("<table><tr><th class=\"l\">scenario</th><th>energy /h</th><th>carbon kg/h</th><th>mean RTT ms</th><th>SLO violations</th><th>unplaced</th><th>moves</th><th>makespan s</th><th>min inlet headroom °C</th><th>max power use</th></tr>");
    for r in results {
        let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{:.3}</td><td>{:.2}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.0} %</td></tr>",
                esc(&r.scenario),
                r.energy_cost_per_h,
                r.carbon_kg_per_h,
                r.mean_latency_ms,
                r.slo_violations,
                r.unplaced_replicas,
                r.moves,
                r.makespan_s,
                r.min_inlet_headroom_c,
                r.max_power_use * 100.0
            );
    }
    h.push_str("</table>");
    h
}

/// A report from what-if results alone (no instance at hand): the
/// scenarios compared, and the base's sites as its row recorded them.
pub fn whatif_html(title: &str, results: &[ScenarioResult]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{0}</title><style>{CSS}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    h.push_str("<h2>What-if scenarios</h2>");
    h.push_str(&whatif_chart(results));
    h.push_str(&whatif_table(results));
    if let Some(base) = results.first() {
        let _ = write!(h, "<h2>Sites in {}</h2>", esc(&base.scenario));
        h.push_str("<table><tr><th class=\"l\">site</th><th>IT kW / limit</th><th>facility kW / cap</th><th>inlet °C / limit</th><th>cooling headroom kW</th><th class=\"l\">binding</th></tr>");
        for s in &base.sites {
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{:.2} / {:.2}</td><td>{:.2} / {:.2}</td><td>{:.1} / {:.1}</td><td>{:.2}</td><td class=\"l\">{}</td></tr>",
                esc(&s.site),
                s.it_kw,
                s.it_limit_kw,
                s.facility_kw,
                s.power_cap_kw,
                s.inlet_c,
                s.inlet_limit_c,
                s.cooling_headroom_kw,
                esc(s.binding.describe())
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// What-if results alone, as Markdown.
pub fn whatif_markdown(title: &str, results: &[ScenarioResult]) -> String {
    format!(
        "# {title}\n\n{}",
        edgeplan_analysis::whatif::comparison_table(results)
    )
}

pub(crate) const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.cards{display:flex;flex-wrap:wrap;gap:10px}\
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}.card b{display:block;font-size:18px}\
.bad{color:#b22}.ok{color:#282}ul{font-size:13px}.err{color:#b22}\
svg{max-width:100%;height:auto}table{display:block;overflow-x:auto;max-width:100%}\
@media (max-width:600px){body{margin:10px}.card{min-width:100px}}";

/// Move explanations shown before the rest are folded away.
const MOVES_SHOWN: usize = 25;

/// The report as one self-contained HTML page.
pub fn html(input: &ReportInput<'_>) -> String {
    let f = facts(input);
    let k = &f.kpis;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body>",
        esc(input.title)
    );
    let _ = write!(h, "<h1>{}</h1>", esc(input.title));
    h.push_str("<h2>Fleet</h2><div class=\"cards\">");
    let mut card = |label: &str, value: String| {
        let _ = write!(
            h,
            "<div class=\"card\">{}<b>{}</b></div>",
            esc(label),
            esc(&value)
        );
    };
    card("sites", input.instance.sites.len().to_string());
    card("replicas placed", f.placed.to_string());
    card("unplaced", k.unplaced_replicas.to_string());
    // Apart from the unplaced penalty, which would swamp it (as in `solve`).
    card("proven unplaceable", f.proven_unplaced.to_string());
    card(
        "placed cost / h",
        format!("{:.4}", f.eval.objective.total - f.eval.objective.unplaced),
    );
    card("energy cost / h", format!("{:.3}", k.energy_cost_per_h));
    card("carbon kg / h", format!("{:.2}", k.carbon_kg_per_h));
    card(
        "SLO compliance",
        format!("{:.1} %", f.slo_compliance * 100.0),
    );
    card("mean RTT", format!("{:.1} ms", k.mean_latency_ms));
    card(
        "min inlet headroom",
        format!("{:.1} °C", k.min_inlet_headroom_c),
    );
    card("max power use", format!("{:.0} %", k.max_power_use * 100.0));
    if let Some(plan) = input.plan {
        card("plan steps", plan.steps.len().to_string());
        card("makespan", format!("{:.0} s", plan.makespan_s));
    }
    h.push_str("</div>");

    h.push_str("<h2>Sites</h2><table><tr><th class=\"l\">site</th>");
    for r in &input.problem.resources {
        let _ = write!(h, "<th>{} use</th>", esc(r));
    }
    h.push_str("<th>outside °C</th><th>IT kW / limit</th><th>of it GPUs kW</th><th>facility kW / cap</th><th>inlet °C / limit</th><th>cooling headroom kW</th><th>price /kWh</th><th>gCO2/kWh</th><th class=\"l\">binding</th></tr>");
    for (si, s) in f.eval.sites.iter().enumerate() {
        let _ = write!(h, "<tr><td class=\"l\">{}</td>", esc(&s.site));
        for (ri, r) in input.problem.resources.iter().enumerate() {
            // No figure where the site has no such limit (no uplink declared).
            if input.problem.sites[SiteIx::new(si)].capacity[ri].is_infinite() {
                h.push_str("<td>—</td>");
            } else {
                let u = s.utilization.get(r).copied().unwrap_or(0.0);
                let _ = write!(h, "<td>{:.0} %</td>", u * 100.0);
            }
        }
        let inlet_class = if s.inlet_c > s.inlet_limit_c {
            "bad"
        } else {
            "ok"
        };
        let site = &input.problem.sites[SiteIx::new(si)];
        let _ = write!(
            h,
            "<td>{:.1}</td><td>{:.2} / {:.2}</td><td>{}</td><td>{:.2} / {:.2}</td><td class=\"{inlet_class}\">{:.1} / {:.1}</td><td>{:.2}</td><td>{:.3}</td><td>{:.0}</td><td class=\"l\">{}</td></tr>",
            s.ambient_c,
            s.it_kw,
            s.it_limit_kw,
            gpu_kw(s.accelerator_kw),
            s.facility_kw,
            s.power_cap_kw,
            s.inlet_c,
            s.inlet_limit_c,
            s.cooling_headroom_kw,
            site.physics.price_per_kwh,
            site.carbon_g_per_kwh,
            esc(s.binding.describe())
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Where the sites are</h2>");
    h.push_str(&map_chart(input, &f));
    h.push_str("<h2>Power and thermal headroom</h2>");
    h.push_str(&headroom_chart(&f));
    h.push_str("<h2>Latency</h2>");
    h.push_str(&latency_chart(input));
    h.push_str("<h2>Ambient forecast against the inlet limit</h2>");
    h.push_str(&forecast_chart(input, &f));
    if let Some(plan) = input.plan {
        h.push_str("<h2>Migration plan</h2>");
        h.push_str(&plan_chart(plan));
        if !plan.steps.is_empty() {
            h.push_str("<p>Steps and state moved, by site:</p>");
            h.push_str(&plan_sites_table(plan));
        }
        if !plan.blocked.is_empty() {
            h.push_str("<p>Blocked moves:</p><ul>");
            for b in &plan.blocked {
                let _ = write!(h, "<li>{}: {}</li>", esc(&b.workload), esc(&b.reason));
            }
            h.push_str("</ul>");
        }
    }
    if let Some(m) = &f.market {
        h.push_str("<h2>Spot capacity</h2><p>Prices per unit-hour above the floor (energy and carbon), from the optimizer's dual prices on the on-demand work:</p><ul>");
        for s in &m.sites {
            let _ = write!(h, "<li>{}</li>", esc(&s.text));
        }
        h.push_str("</ul><table><tr><th class=\"l\">spot workload</th><th class=\"l\">site</th><th>replicas</th><th>price /replica-hour</th></tr>");
        for a in &m.admitted {
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.4}</td></tr>",
                esc(&a.workload),
                esc(&a.site),
                a.replicas,
                a.price_per_replica_hour
            );
        }
        let _ = write!(
            h,
            "</table><p>Spot revenue at these prices: {:.4}/h.</p>",
            m.revenue_per_hour
        );
        if !m.left_out.is_empty() {
            h.push_str("<p>Left out:</p><ul>");
            for l in &m.left_out {
                let _ = write!(h, "<li>{} replica(s): {}</li>", l.replicas, esc(&l.text));
            }
            h.push_str("</ul>");
        }
    }
    if let Some(results) = input.whatif {
        h.push_str("<h2>What-if scenarios</h2>");
        h.push_str(&whatif_chart(results));
        h.push_str(&whatif_table(results));
    }
    h.push_str("<h2>Why</h2>");
    if f.moves.is_empty() && f.unplaced.is_empty() {
        h.push_str("<p>Nothing moves and every replica is placed.</p>");
    }
    if !f.moves.is_empty() {
        // The moves that save most per hour first, in full; the rest, in
        // the plan's order, folded a click away.
        let mut top: Vec<&explain::MoveExplanation> = f.moves.iter().collect();
        top.sort_by(|a, b| {
            let s = |m: &explain::MoveExplanation| m.saving_per_h.unwrap_or(f64::NEG_INFINITY);
            s(b).total_cmp(&s(a)).then(a.step.cmp(&b.step))
        });
        top.truncate(MOVES_SHOWN);
        if f.moves.len() > MOVES_SHOWN {
            let _ = write!(
                h,
                "<p>The {MOVES_SHOWN} moves that save most per hour (of {}):</p><ul>",
                f.moves.len()
            );
        } else {
            h.push_str("<p>Moves, those that save most per hour first:</p><ul>");
        }
        for m in &top {
            let _ = write!(h, "<li>step {}: {}</li>", m.step, esc(&m.text));
        }
        h.push_str("</ul>");
        if f.moves.len() > MOVES_SHOWN {
            let shown: std::collections::HashSet<usize> = top.iter().map(|m| m.step).collect();
            let _ = write!(
                h,
                "<details><summary>the other {} moves</summary><ul>",
                f.moves.len() - MOVES_SHOWN
            );
            for m in f.moves.iter().filter(|m| !shown.contains(&m.step)) {
                let _ = write!(h, "<li>step {}: {}</li>", m.step, esc(&m.text));
            }
            h.push_str("</ul></details>");
        }
    }
    if !f.unplaced.is_empty() {
        h.push_str("<p>Unplaced:</p><ul>");
        for u in &f.unplaced {
            let _ = write!(h, "<li>{}</li>", esc(&u.text));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}

/// The report as Markdown, for terminals and tickets.
pub fn markdown(input: &ReportInput<'_>) -> String {
    let f = facts(input);
    let k = &f.kpis;
    let mut m = String::new();
    let _ = writeln!(m, "# {}\n", input.title);
    let _ = writeln!(
        m,
        "- sites: {} · replicas placed: {} · unplaced: {} ({} proven unplaceable) · placed cost {:.4}/h\n- energy {:.3}/h · carbon {:.2} kg/h · SLO compliance {:.1} % · mean RTT {:.1} ms\n- min inlet headroom {:.1} °C · max power use {:.0} %",
        input.instance.sites.len(),
        f.placed,
        k.unplaced_replicas,
        f.proven_unplaced,
        f.eval.objective.total - f.eval.objective.unplaced,
        k.energy_cost_per_h,
        k.carbon_kg_per_h,
        f.slo_compliance * 100.0,
        k.mean_latency_ms,
        k.min_inlet_headroom_c,
        k.max_power_use * 100.0
    );
    if let Some(plan) = input.plan {
        let _ = writeln!(
            m,
            "- plan: {} steps in {} waves, makespan {:.0} s, {} blocked",
            plan.steps.len(),
            plan.waves.len(),
            plan.makespan_s,
            plan.blocked.len()
        );
    }
    let _ = writeln!(m, "\n| site | outside °C | IT kW / limit | of it GPUs kW | facility kW / cap | inlet °C / limit | cooling headroom kW | binding |\n|---|---|---|---|---|---|---|---|");
    for s in &f.eval.sites {
        let _ = writeln!(
            m,
            "| {} | {:.1} | {:.2} / {:.2} | {} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} | {} |",
            s.site,
            s.ambient_c,
            s.it_kw,
            s.it_limit_kw,
            gpu_kw(s.accelerator_kw),
            s.facility_kw,
            s.power_cap_kw,
            s.inlet_c,
            s.inlet_limit_c,
            s.cooling_headroom_kw,
            s.binding.describe()
        );
    }
    if let Some(market) = &f.market {
        let _ = writeln!(m, "\n## Spot capacity\n");
        for s in &market.sites {
            let _ = writeln!(m, "- {}", s.text);
        }
        for a in &market.admitted {
            let _ = writeln!(
                m,
                "- admitted: {} × {} at {} for {:.4}/replica-hour",
                a.replicas, a.workload, a.site, a.price_per_replica_hour
            );
        }
        for l in &market.left_out {
            let _ = writeln!(m, "- left out: {} replica(s) of {}", l.replicas, l.text);
        }
        let _ = writeln!(
            m,
            "- spot revenue at these prices: {:.4}/h",
            market.revenue_per_hour
        );
    }
    if let Some(results) = input.whatif {
        let _ = writeln!(
            m,
            "\n## What-if\n\n{}",
            edgeplan_analysis::whatif::comparison_table(results)
        );
    }
    if !f.moves.is_empty() {
        let _ = writeln!(m, "\n## Moves\n");
        for mv in &f.moves {
            let _ = writeln!(m, "- step {}: {}", mv.step, mv.text);
        }
    }
    if !f.unplaced.is_empty() {
        let _ = writeln!(m, "\n## Unplaced\n");
        for u in &f.unplaced {
            let _ = writeln!(m, "- {}", u.text);
        }
    }
    m
}
