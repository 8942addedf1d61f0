//! The operator report: content on a fixed instance, Markdown, the CLI, and
//! a real browser (Debian's headless Chromium) rendering it.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeplan::clock::Deadline;
use edgeplan::gen::{generate, GenOptions};
use edgeplan::operator_report::{html, markdown, ReportInput};
use edgeplan::plan::plan;
use edgeplan::problem::Problem;
use edgeplan::replicas::Replicas;
use edgeplan::solver::{solve, SolveOptions};

struct Fixture {
    inst: edgeplan::instance::Instance,
    problem: Problem,
    x: Replicas,
    plan: edgeplan::plan::Plan,
}

fn fixture() -> Fixture {
    let inst = generate(&GenOptions {
        sites: 8,
        workloads: 40,
        replicas: None,
        seed: 11,
        load: 0.8,
    })
    .unwrap();
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(
        &problem,
        &SolveOptions {
            deadline: Deadline::after_s(20.0),
            ..SolveOptions::default()
        },
    )
    .unwrap();
    let target = problem.placement_of(&solved.x);
    let plan = plan(&inst, &problem, &target).unwrap();
    Fixture {
        inst,
        problem,
        x: solved.x,
        plan,
    }
}

fn input(f: &Fixture) -> ReportInput<'_> {
    ReportInput {
        title: "fixture",
        instance: &f.inst,
        problem: &f.problem,
        x: &f.x,
        plan: Some(&f.plan),
        whatif: None,
    }
}

#[test]
fn the_page_shows_every_site_and_the_placements_numbers_and_is_self_contained() {
    let f = fixture();
    let page = html(&input(&f));
    let kpis = f.problem.kpis(&f.x);
    for s in &f.inst.sites {
        assert!(page.contains(&s.id), "site {} missing", s.id);
    }
    assert!(page.contains(&format!("<b>{:.3}</b>", kpis.energy_cost_per_h)));
    assert!(page.contains(&format!("<b>{}</b>", kpis.placed_replicas)));
    assert!(page.contains(&format!("<b>{}</b>", kpis.unplaced_replicas)));
    assert!(page.contains(&format!("<b>{}</b>", f.plan.steps.len())));
    let eval = f.problem.evaluate(&f.x);
    for s in &eval.sites {
        assert!(page.contains(&format!("{:.2} / {:.2}", s.it_kw, s.it_limit_kw)));
    }
    // Five charts (map, headroom, latency, forecast, plan), from plotters.
    assert!(page.matches("<svg").count() >= 5, "charts missing");
    assert!(!page.contains("chart not drawn"));
    // Nothing to fetch: no scripts, no external references.
    assert!(!page.contains("<script"));
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!page.contains(attr), "external reference {attr}");
    }
    // Every move and every unplaced workload is explained.
    assert!(page.matches("<li>step ").count() >= f.plan.steps.len());
}

#[test]
fn markdown_carries_the_same_figures() {
    let f = fixture();
    let md = markdown(&input(&f));
    let kpis = f.problem.kpis(&f.x);
    assert!(md.contains(&format!("replicas placed: {}", kpis.placed_replicas)));
    assert!(md.contains(&format!("energy {:.3}/h", kpis.energy_cost_per_h)));
    for s in &f.inst.sites {
        assert!(md.contains(&format!("| {} |", s.id)), "{}", s.id);
    }
    assert!(md.contains(&format!("plan: {} steps", f.plan.steps.len())));
}

fn edgeplan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeplan"))
        .args(args)
        .output()
        .unwrap()
}

pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGEPLAN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Render a page headless; returns Chromium's log.
pub fn screenshot(browser: &Path, page: &Path, png: &Path) -> String {
    headless(
        browser,
        &format!("file://{}", page.display()),
        &format!("--screenshot={}", png.display()),
        (1200, 1800),
    )
    .1
}

/// Chromium headless on `url` with one action (`--screenshot=…` or
/// `--dump-dom`) at a window size: (stdout, stderr log).
pub fn headless(browser: &Path, url: &str, action: &str, size: (u32, u32)) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(action)
        .arg(url)
        .output()
        .expect("run chromium");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "chromium failed:\n{log}");
    (String::from_utf8_lossy(&out.stdout).to_string(), log)
}

/// Lines of a Chromium log that say the page failed: console messages,
/// uncaught errors, failed fetches.
pub fn page_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("net::ERR") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn chromium_renders_the_report_without_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (see .ci/run)"
        );
        eprintln!("skipping: no chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let page = dir.path().join("report.html");
    let out = edgeplan(&[
        "report",
        "--instance",
        &format!("{root}/examples/three-cities.yaml"),
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = dir.path().join("report.png");
    let log = screenshot(&browser, &page, &png);
    // The page logged nothing to the console and fetched nothing.
    assert!(page_errors(&log).is_empty(), "{:?}", page_errors(&log));
    // The screenshot is a real page, not a blank one.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut colors = std::collections::HashSet::new();
    let mut non_white = 0usize;
    for p in pixels.chunks(px) {
        colors.insert(p[..3].to_vec());
        if p[..3].iter().any(|&c| c < 240) {
            non_white += 1;
        }
    }
    let total = pixels.len() / px;
    assert!(colors.len() > 50, "only {} colours: blank?", colors.len());
    assert!(
        non_white * 20 > total,
        "{non_white} of {total} pixels drawn: blank?"
    );
}

#[test]
fn the_cli_writes_html_and_markdown_and_names_a_bad_plan_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let inst = format!("{root}/examples/three-cities.yaml");
    let md = edgeplan(&["report", "--instance", &inst, "--format", "md"]);
    assert!(md.status.success());
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(text.contains("| fra |"), "{text}");
    let bad = dir.path().join("plan.json");
    std::fs::write(&bad, "{\"steps\": 3}").unwrap();
    let out = edgeplan(&[
        "report",
        "--instance",
        &inst,
        "--plan",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plan.json is not a plan"), "{err}");
}

#[test]
fn a_whatif_results_file_alone_makes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let run = edgeplan(&[
        "whatif",
        "--scenarios",
        &format!("{root}/examples/what-if.yaml"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = dir.path().join("results.json");
    std::fs::write(&results, &run.stdout).unwrap();
    let parsed: Vec<edgeplan::whatif::ScenarioResult> =
        serde_json::from_slice(&run.stdout).unwrap();
    let page = dir.path().join("whatif.html");
    let out = edgeplan(&[
        "report",
        "--whatif",
        results.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg"));
    for r in &parsed {
        assert!(html.contains(&r.scenario), "{} missing", r.scenario);
        assert!(html.contains(&format!("{:.3}", r.energy_cost_per_h)));
    }
    for s in &parsed[0].sites {
        assert!(html.contains(&s.site));
    }
}

/// A plan too large for a step-by-step Gantt chart is drawn wave by wave,
/// with steps and GiB per site, its moves ranked by what they save and the
/// rest folded; no chart grows past a screen.
#[test]
fn a_large_plan_is_drawn_wave_by_wave_with_its_moves_ranked_and_folded() {
    let mut inst = generate(&GenOptions {
        sites: 20,
        workloads: 400,
        replicas: None,
        seed: 5,
        load: 0.6,
    })
    .unwrap();
    // Power twenty times dearer at every other site: much moves.
    for s in inst.sites.iter_mut().step_by(2) {
        s.energy.price_per_kwh = edgeplan::instance::Price::Flat(2.0);
    }
    inst.limits.max_moves = None;
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(
        &problem,
        &SolveOptions {
            deadline: Deadline::after_s(20.0),
            ..SolveOptions::default()
        },
    )
    .unwrap();
    let target = problem.placement_of(&solved.x);
    let big = plan(&inst, &problem, &target).unwrap();
    let migrations = big
        .steps
        .iter()
        .filter(|s| s.from.is_some() && s.to.is_some())
        .count();
    assert!(
        big.steps.len() > 60 && migrations > 25,
        "{} steps, {migrations} migrations",
        big.steps.len()
    );
    let page = html(&ReportInput {
        title: "big",
        instance: &inst,
        problem: &problem,
        x: &solved.x,
        plan: Some(&big),
        whatif: None,
    });
    assert!(page.contains("steps per wave over time"));
    assert!(page.contains("moves as arrows"));
    assert!(page.contains("<th>steps out</th><th>GiB out</th>"));
    assert!(page.contains(&format!(
        "<details><summary>the other {} moves</summary>",
        big.steps.len() - 25
    )));
    // Every chart fits a screen's height.
    for svg in page.split("<svg width=\"").skip(1) {
        let height: u32 = svg
            .split("height=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|h| h.parse().ok())
            .unwrap();
        assert!(height <= 460, "a chart {height} px tall");
    }
    // The moves shown first save the most, in order.
    let saves: Vec<f64> = page
        .split("<details>")
        .next()
        .unwrap()
        .split(": saves ")
        .skip(1)
        .map(|r| r.split("/h").next().unwrap().parse().unwrap())
        .collect();
    assert!(saves.len() >= 2, "{saves:?}");
    assert!(saves.windows(2).all(|w| w[0] >= w[1]), "{saves:?}");
}
