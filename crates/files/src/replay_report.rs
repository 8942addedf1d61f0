//! The replay report: one self-contained HTML page (the operator report's
//! style and SVG charts) of a replay — the result in words, the policies'
//! totals, cumulative energy cost and carbon, daily moves, the hottest
//! site's real inlet against its limit under every policy, and what the
//! zones' prices and weather did. Every figure comes from `Replay`; this
//! module only lays them out. Pure: values in, a string out.

use std::fmt::Write as _;

use plotters::prelude::*;

use edgeplan_analysis::replay::{PolicyTotals, Replay};

use crate::operator_report::{e, esc, svg, CSS};

/// One colour per policy, in the order they ran.
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(100, 100, 100),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Hours between plotted points: a few hundred points per line at most.
fn stride(hours: usize) -> usize {
    hours.div_ceil(400).max(1)
}

/// Per policy, the running sum of `value` over its hours (one per hour).
fn cumulative(
    replay: &Replay,
    value: fn(&edgeplan_analysis::replay::PolicyHour) -> f64,
) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(replay.hours); replay.totals.len()];
    let index = |p: &str| replay.totals.iter().position(|t| t.policy == p);
    for h in &replay.policy_hours {
        if let Some(i) = index(h.policy) {
            let last = out[i].last().copied().unwrap_or(0.0);
            out[i].push(last + value(h));
        }
    }
    out
}

/// Every series minus series `base`, hour by hour.
fn minus(series: &[Vec<f64>], base: usize) -> Vec<Vec<f64>> {
    series
        .iter()
        .map(|v| v.iter().zip(&series[base]).map(|(a, b)| a - b).collect())
        .collect()
}

/// Lines over the replay's days, one per policy.
fn lines_chart(
    replay: &Replay,
    caption: &str,
    y_desc: &str,
    series: &[Vec<f64>],
    per_hour: bool,
) -> String {
    let points = |v: &Vec<f64>| -> Vec<(f64, f64)> {
        if per_hour {
            let k = stride(v.len());
            v.iter()
                .enumerate()
                .filter(|(i, _)| i % k == k - 1 || *i + 1 == v.len())
                .map(|(i, &y)| ((i + 1) as f64 / 24.0, y))
                .collect()
        } else {
            v.iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 + 0.5, y))
                .collect()
        }
    };
    let lines: Vec<Vec<(f64, f64)>> = series.iter().map(points).collect();
    let x_max = lines
        .iter()
        .flat_map(|l| l.iter().map(|p| p.0))
        .fold(1.0 / 24.0, f64::max);
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.iter().map(|p| p.1))
        .fold((0.0f64, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    let hi = if hi > lo {
        hi + (hi - lo) * 0.05
    } else {
        lo + 1.0
    };
    svg(1000, 340, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, lo..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(format!("days from {}", replay.first_hour))
            .y_desc(y_desc)
            .draw()
            .map_err(e)?;
        for (i, line) in lines.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(line.iter().copied(), c.stroke_width(2)))
                .map_err(e)?
                .label(replay.totals[i].policy)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// The site whose real inlet came closest to (or went furthest past) its
/// limit under any policy, and per policy its daily (or, in a short replay,
/// hourly) highest inlet; `None` without site rows.
fn hottest_site(replay: &Replay) -> Option<(usize, f64, Vec<Vec<f64>>)> {
    let worst = replay
        .site_hours
        .iter()
        .max_by(|a, b| (a.inlet_c - a.inlet_limit_c).total_cmp(&(b.inlet_c - b.inlet_limit_c)))?;
    let site = worst.site;
    let per_day = replay.hours > 72;
    let buckets = if per_day {
        replay.hours.div_ceil(24)
    } else {
        replay.hours
    };
    let mut series = vec![vec![f64::NEG_INFINITY; buckets]; replay.totals.len()];
    for r in replay.site_hours.iter().filter(|r| r.site == site) {
        let Some(i) = replay.totals.iter().position(|t| t.policy == r.policy) else {
            continue;
        };
        let k = replay.offset_of(r.hour);
        let b = if per_day { k / 24 } else { k };
        series[i][b] = series[i][b].max(r.inlet_c);
    }
    Some((site, worst.inlet_limit_c, series))
}

fn inlet_chart(replay: &Replay) -> String {
    let Some((site, limit, series)) = hottest_site(replay) else {
        return "<p>Not drawn: the replay kept no per-site rows.</p>".into();
    };
    let per_day = replay.hours > 72;
    let unit = if per_day { 1.0 } else { 1.0 / 24.0 };
    let n = series.first().map_or(0, Vec::len);
    let lo = series
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min)
        .min(limit)
        - 2.0;
    let hi = series.iter().flatten().copied().fold(limit, f64::max) + 2.0;
    let (name, zone) = &replay.site_zones[site];
    let caption = format!(
        "{name} ({zone}): real inlet, {} highest, against its limit {limit:.1} °C (black)",
        if per_day { "daily" } else { "hourly" }
    );
    svg(1000, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..(n as f64 * unit).max(unit), lo..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(format!("days from {}", replay.first_hour))
            .y_desc("°C")
            .draw()
            .map_err(e)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(
                    s.iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(k, &v)| ((k as f64 + 0.5) * unit, v)),
                    c.stroke_width(1),
                ))
                .map_err(e)?
                .label(replay.totals[i].policy)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, limit), (n as f64 * unit, limit)],
                BLACK.stroke_width(2),
            ))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// Daily means of an hourly series.
fn daily_means(v: &[f64]) -> Vec<f64> {
    v.chunks(24)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// Blue (low) through yellow to red (high), `t` in 0..=1.
fn heat(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let (a, b, u) = if t < 0.5 {
        ((49.0, 54.0, 149.0), (255.0, 255.0, 191.0), t * 2.0)
    } else {
        ((255.0, 255.0, 191.0), (165.0, 0.0, 38.0), t * 2.0 - 1.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The 5th and 95th percentiles: a colour scale a single spike does not flatten.
fn scale(values: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let (lo, hi) = (q(0.05), q(0.95));
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// One row per zone, one cell per day (or hour, in a short replay),
/// coloured by `value`'s mean.
fn strip(
    replay: &Replay,
    caption: &str,
    value: fn(&edgeplan_analysis::replay::ZoneSeries) -> &[f64],
) -> String {
    let per_day = replay.hours > 72;
    let rows: Vec<Vec<f64>> = replay
        .zones
        .iter()
        .map(|z| {
            if per_day {
                daily_means(value(z))
            } else {
                value(z).to_vec()
            }
        })
        .collect();
    let all: Vec<f64> = rows.iter().flatten().copied().collect();
    let (lo, hi) = scale(&all);
    let n = rows.first().map_or(1, Vec::len).max(1);
    let names: Vec<String> = replay.zones.iter().map(|z| z.zone.clone()).collect();
    let nz = names.len().max(1) as i32;
    let caption = format!(
        "{caption}, {} mean (blue {lo:.1}, red {hi:.1} and beyond)",
        if per_day { "daily" } else { "hourly" }
    );
    svg(1000, 60 + 22 * nz as u32, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(110)
            .build_cartesian_2d(0f64..n as f64, (0..nz).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .y_labels(nz as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    names.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_desc(if per_day { "day" } else { "hour" })
            .draw()
            .map_err(e)?;
        for (z, row) in rows.iter().enumerate() {
            chart
                .draw_series(row.iter().enumerate().map(|(k, &v)| {
                    Rectangle::new(
                        [
                            (k as f64, SegmentValue::Exact(z as i32)),
                            ((k + 1) as f64, SegmentValue::Exact(z as i32 + 1)),
                        ],
                        heat((v - lo) / (hi - lo)).filled(),
                    )
                }))
                .map_err(e)?;
        }
        Ok(())
    })
}

fn pct(v: f64, base: f64) -> String {
    if base.abs() < 1e-12 {
        "—".into()
    } else {
        format!("{:+.1} %", 100.0 * (v - base) / base.abs())
    }
}

fn with_moves(t: &PolicyTotals) -> f64 {
    t.energy_cost + t.migration_cost
}

fn breaches(t: &PolicyTotals) -> u64 {
    t.inlet_breach_site_hours + t.power_breach_site_hours + t.cooling_shortfall_site_hours
}

/// The result in words: edgeplan against `static` and `latency-only`, what
/// forecasting cost, and every policy that beat edgeplan on a figure.
pub fn verdict(replay: &Replay) -> Vec<String> {
    let get = |name: &str| replay.totals.iter().find(|t| t.policy == name);
    let mut out = Vec::new();
    let Some(ep) = get("edgeplan") else {
        out.push(
            "edgeplan was not among the policies replayed; the table compares the others.".into(),
        );
        return out;
    };
    for base in ["static", "latency-only"].into_iter().filter_map(get) {
        out.push(format!(
            "Against {}: energy cost {} ({} with the moves' cost), carbon {}; SLO-violating replica-hours {} against {}, unplaced replica-hours {} against {}, site-hours past a limit {} against {}.",
            base.policy,
            pct(ep.energy_cost, base.energy_cost),
            pct(with_moves(ep), with_moves(base)),
            pct(ep.carbon_kg, base.carbon_kg),
            ep.slo_violating_replica_hours,
            base.slo_violating_replica_hours,
            ep.unplaced_replica_hours,
            base.unplaced_replica_hours,
            breaches(ep),
            breaches(base),
        ));
    }
    if let Some(fs) = get("edgeplan-foresight") {
        let cost = with_moves(ep) - with_moves(fs);
        out.push(format!(
            "With the real weather and carbon known in advance (edgeplan-foresight), edgeplan would have paid {:.2} for energy and moves instead of {:.2}, with {} site-hours past a limit instead of {}: {}",
            with_moves(fs),
            with_moves(ep),
            breaches(fs),
            breaches(ep),
            if cost > 0.0 {
                format!("forecasting cost {cost:.2} ({}).", pct(with_moves(ep), with_moves(fs)))
            } else {
                "foresight did no better here; a difference this small comes from the re-plan's search, not from the forecasts.".into()
            }
        ));
    }
    let mut lost = Vec::new();
    for t in replay
        .totals
        .iter()
        .filter(|t| !t.policy.starts_with("edgeplan"))
    {
        let mut figures = Vec::new();
        if t.energy_cost < ep.energy_cost {
            figures.push(format!(
                "energy cost {}",
                pct(t.energy_cost, ep.energy_cost)
            ));
        }
        if with_moves(t) < with_moves(ep) {
            figures.push(format!(
                "energy and moves {}",
                pct(with_moves(t), with_moves(ep))
            ));
        }
        if t.carbon_kg < ep.carbon_kg {
            figures.push(format!("carbon {}", pct(t.carbon_kg, ep.carbon_kg)));
        }
        if !figures.is_empty() {
            lost.push(format!(
                "{} beat edgeplan on {} — with {} moves against {}, {} SLO-violating replica-hours against {} and {} site-hours past a limit against {}",
                t.policy,
                figures.join(", "),
                t.moves,
                ep.moves,
                t.slo_violating_replica_hours,
                ep.slo_violating_replica_hours,
                breaches(t),
                breaches(ep),
            ));
        }
    }
    if lost.is_empty() {
        out.push(
            "No other policy beat edgeplan on energy cost, cost with moves, or carbon.".into(),
        );
    } else {
        out.push(format!("Where edgeplan did not win: {}.", lost.join("; ")));
    }
    if ep.blocked_moves > 0 {
        out.push(format!(
            "The migration planner left out {} of the moves edgeplan asked for (no safe order within the move limits); those replicas stayed where they were.",
            ep.blocked_moves
        ));
    }
    out
}

fn totals_table(replay: &Replay) -> String {
    let base = replay.totals.iter().find(|t| t.policy == "static");
    let mut h = String::from(
        "<table><tr><th class=\"l\">policy</th><th>energy cost</th><th>vs static</th><th>with moves</th><th>vs static</th><th>carbon kg</th><th>vs static</th><th>moves</th><th>blocked</th><th>migration h</th><th>GiB moved</th><th>unplaced replica-h</th><th>SLO-violating replica-h</th><th>mean RTT ms</th><th>inlet site-h</th><th>power site-h</th><th>cooling site-h</th></tr>",
    );
    for t in &replay.totals {
        let vs = |v: f64, g: fn(&PolicyTotals) -> f64| base.map_or("—".into(), |b| pct(v, g(b)));
        let bad = |n: u64| if n > 0 { " class=\"bad\"" } else { "" };
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td><td{}>{}</td><td{}>{}</td><td>{:.1}</td><td{}>{}</td><td{}>{}</td><td{}>{}</td></tr>",
            esc(t.policy),
            t.energy_cost,
            vs(t.energy_cost, |b| b.energy_cost),
            with_moves(t),
            vs(with_moves(t), with_moves),
            t.carbon_kg,
            vs(t.carbon_kg, |b| b.carbon_kg),
            t.moves,
            t.blocked_moves,
            t.migration_hours,
            t.migrated_gib,
            bad(t.unplaced_replica_hours),
            t.unplaced_replica_hours,
            bad(t.slo_violating_replica_hours),
            t.slo_violating_replica_hours,
            t.mean_rtt_ms,
            bad(t.inlet_breach_site_hours),
            t.inlet_breach_site_hours,
            bad(t.power_breach_site_hours),
            t.power_breach_site_hours,
            bad(t.cooling_shortfall_site_hours),
            t.cooling_shortfall_site_hours,
        );
    }
    h.push_str("</table><p>Energy cost: the facilities' energy bill at the hour's real price; with moves: plus the objective's migration cost; site-h: site-hours past a limit on the real weather.</p>");
    h
}

/// The replay as one self-contained HTML page.
pub fn html(title: &str, replay: &Replay) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title><style>{CSS}body{{max-width:1300px}}table{{font-size:11px}}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    let _ = write!(
        h,
        "<p>{} sites, {} hours from {} to {}, {} policies, each deciding on what it could know then and judged on what happened.</p>",
        replay.site_zones.len(),
        replay.hours,
        esc(&replay.first_hour),
        esc(&replay.last_hour),
        replay.totals.len()
    );
    h.push_str("<h2>The result</h2>");
    for line in verdict(replay) {
        let _ = write!(h, "<p>{}</p>", esc(&line));
    }
    h.push_str(&totals_table(replay));
    h.push_str("<h2>Cumulative energy cost and carbon</h2>");
    let cost = cumulative(replay, |p| p.energy_cost + p.migration_cost);
    let carbon = cumulative(replay, |p| p.carbon_kg / 1000.0);
    match replay.totals.iter().position(|t| t.policy == "static") {
        // Policies differ by a few per cent of the bill: drawn as running
        // differences from `static`, the lines part; the totals are above.
        Some(s) => {
            h.push_str(&lines_chart(
                replay,
                "Energy cost with the moves' cost, cumulative, minus static's (below 0: cheaper)",
                "cost − static's",
                &minus(&cost, s),
                true,
            ));
            h.push_str(&lines_chart(
                replay,
                "Carbon, cumulative, minus static's (below 0: less)",
                "t CO2 − static's",
                &minus(&carbon, s),
                true,
            ));
        }
        None => {
            h.push_str(&lines_chart(
                replay,
                "Energy cost with the moves' cost, cumulative",
                "cost",
                &cost,
                true,
            ));
            h.push_str(&lines_chart(
                replay,
                "Carbon, cumulative",
                "t CO2",
                &carbon,
                true,
            ));
        }
    }
    h.push_str("<h2>Moves per day</h2>");
    let days = replay.days();
    let daily: Vec<Vec<f64>> = replay
        .totals
        .iter()
        .map(|t| {
            days.iter()
                .filter(|d| d.policy == t.policy)
                .map(|d| d.moves as f64)
                .collect()
        })
        .collect();
    h.push_str(&lines_chart(
        replay,
        "Replicas moved per UTC day",
        "moves",
        &daily,
        false,
    ));
    h.push_str("<h2>The hottest site</h2>");
    h.push_str(&inlet_chart(replay));
    h.push_str("<h2>What the zones did</h2>");
    h.push_str(&strip(replay, "Day-ahead price, per kWh", |z| {
        &z.price_per_kwh
    }));
    h.push_str(&strip(replay, "Outside temperature, °C", |z| {
        &z.temperature_c
    }));
    h.push_str("<p>Zones and sites: ");
    let list: Vec<String> = replay
        .zones
        .iter()
        .map(|z| {
            let sites: Vec<&str> = replay
                .site_zones
                .iter()
                .filter(|(_, zone)| *zone == z.zone)
                .map(|(s, _)| s.as_str())
                .collect();
            format!("{} ({}): {}", z.zone, z.city, sites.join(", "))
        })
        .collect();
    let _ = write!(h, "{}.</p>", esc(&list.join("; ")));
    h.push_str("</body></html>\n");
    h
}
