//! `edgeplan demo`: the whole product in two minutes, on real places and
//! real days. Starts the service (temporary data directory, continuous mode
//! with auto-approve, the HTTP port's live view) and the reference
//! provisioner on loopback, registers the demo fleet — twelve edge sites in
//! the metros of three US grid zones (`examples/demo-fleet.yaml`, built by
//! `scripts/replay_fleet.py --region us`: measured RTTs, SPECpower servers,
//! Bitbrains VM sizes), placed nearest their users — then runs through a
//! real stretch of 2023 hour by hour (`data/year2023/`: the ERCOT heat wave
//! and price spike of 9–10 August by default): outside air and humidity,
//! each workload's utilisation on the Azure diurnal curve and each site's
//! metered IT power stream in as telemetry; each grid zone's day-ahead price
//! and carbon reach the inventory when they move. It narrates what the
//! service notices, plans and executes, and ends with the operator report.
//! Time is compressed: a real hour per `hour_s` seconds, plan steps at
//! `time_scale` of their modelled duration.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use edgeplan_analysis::replay::year::Year;
use edgeplan_analysis::replay::{
    latency_only_start, set_actual_hour, set_current, site_zones, Demand, DemandCurve,
};
use edgeplan_api::pb;
use edgeplan_api::pb::inventory_client::InventoryClient;
use edgeplan_api::pb::placement_client::PlacementClient;
use edgeplan_api::pb::telemetry_client::TelemetryClient;
use edgeplan_model::instance::Instance;
use edgeplan_problem::problem::Problem;

/// The demo's fleet, compiled in (see the module doc).
const DEMO_FLEET: &str = include_str!("../../../examples/demo-fleet.yaml");

/// The real stretch the demo runs through by default: from midnight in
/// Texas (05:00 UTC) on 9 August 2023, two days of ERCOT's heat and prices.
pub const DEFAULT_FROM: &str = "2023-08-09T05";
pub const DEFAULT_HOURS: usize = 48;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A fleet file instead of the shipped demo fleet.
    pub fleet: Option<PathBuf>,
    /// The first real hour (UTC, `YYYY-MM-DDTHH`) and how many follow.
    pub from: String,
    pub hours: usize,
    pub duration_s: f64,
    pub seed: u64,
    /// Where the operator report goes.
    pub report: PathBuf,
    /// Keep the service's data here instead of a temporary directory.
    pub data_dir: Option<PathBuf>,
    /// The live view's address (a free loopback port if it is taken).
    pub http: std::net::SocketAddr,
}

/// What the demo saw, for tests.
#[derive(Debug, Clone, Default)]
pub struct DemoOutcome {
    pub plans: Vec<pb::PlanSummary>,
    pub report: PathBuf,
    pub live: String,
}

fn say(t0: Instant, text: impl AsRef<str>) {
    println!("[{:5.1} s] {}", t0.elapsed().as_secs_f64(), text.as_ref());
}

fn kpi_line(b: &pb::Kpis, a: &pb::Kpis) -> String {
    format!(
        "energy {:.2} → {:.2}/h · carbon {:.1} → {:.1} kg/h · mean RTT {:.1} → {:.1} ms · min inlet headroom {:.1} → {:.1} °C · max power use {:.0} → {:.0} % · unplaced {} → {}",
        b.energy_cost_per_h,
        a.energy_cost_per_h,
        b.carbon_kg_per_h,
        a.carbon_kg_per_h,
        b.mean_latency_ms,
        a.mean_latency_ms,
        b.min_inlet_headroom_c,
        a.min_inlet_headroom_c,
        b.max_power_use * 100.0,
        a.max_power_use * 100.0,
        b.unplaced_replicas,
        a.unplaced_replicas
    )
}

/// The fleet the demo runs, placed nearest its users at the first hour
/// (the latency-only rule an operator would follow by hand).
pub fn demo_fleet(opts: &DemoOptions, year: &Year) -> anyhow::Result<(Instance, usize)> {
    let text = match &opts.fleet {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => DEMO_FLEET.to_string(),
    };
    let value: serde_json::Value = serde_yaml::from_str(&text).context("the fleet is not YAML")?;
    let mut fleet: Instance = serde_path_to_error::deserialize(value)
        .map_err(|e| anyhow::anyhow!("fleet: {}: {}", e.path(), e.inner()))?;
    let first = year.hour_of(&opts.from).map_err(anyhow::Error::msg)?;
    if opts.hours == 0 || first + opts.hours > year.len() {
        anyhow::bail!(
            "--hours {} from {} pass the year's end",
            opts.hours,
            opts.from
        );
    }
    let zones = site_zones(&fleet, year);
    set_actual_hour(&mut fleet, year, &zones, first);
    DemandCurve::new(&fleet, year, Demand::Diurnal).set(&mut fleet, first, 1);
    if fleet.workloads.iter().all(|w| w.current.is_empty()) {
        let p = Problem::build(&fleet)?;
        set_current(&mut fleet, &latency_only_start(&p));
    }
    Ok((fleet, first))
}

/// Plan steps take this share of their modelled duration (an eviction's
/// notice too).
const TIME_SCALE: f64 = 0.02;

/// A price this many times the week before's median is a spike.
const SPIKE: f64 = 3.0;

/// "2023-08-10 23:00 UTC" from a year label.
fn when(year: &Year, t: usize) -> String {
    year.labels
        .get(t)
        .map(|l| {
            format!(
                "{} {} UTC",
                &l[..10.min(l.len())],
                l.get(11..16).unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// Linear between hour `t` and the next.
fn between(series: &[f64], t: usize, frac: f64) -> f64 {
    let a = series[t.min(series.len() - 1)];
    let b = series[(t + 1).min(series.len() - 1)];
    a + (b - a) * frac
}

pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let t0 = Instant::now();
    let data_dir = match &opts.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "edgeplan-demo-{}-{}",
            std::process::id(),
            t0.elapsed().as_nanos()
        )),
    };
    let duration = opts.duration_s.max(10.0);
    // One real hour per `hour_s` seconds, the last hour reached at 90 %
    // of the run (the rest lets the last re-plan show).
    let hour_s = duration * 0.9 / opts.hours.max(1) as f64;

    // The reference provisioner and the service, on loopback ports of their own.
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim_listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let sim = tokio::spawn(super::provisioner_sim::serve_on(
        super::provisioner_sim::SimConfig {
            listen: sim_addr,
            fail_workloads: Vec::new(),
            fail_rate: 0.0,
            seed: opts.seed,
            journal: None,
            speed: 1.0,
            tls: None,
            faults: Default::default(),
        },
        sim_listener,
        stopped(stop_rx.clone()),
    ));
    let mut config = super::Config {
        data_dir: data_dir.clone(),
        provisioners: vec![format!("http://{sim_addr}")],
        ..super::Config::default()
    };
    config.continuous.enabled = true;
    config.continuous.auto_approve = true;
    config.continuous.interval_s = 0.5;
    config.continuous.min_interval_s = (duration / 12.0).max(2.0);
    config.continuous.min_gain = 0.005;
    config.continuous.min_inlet_headroom_c = 2.0;
    config.continuous.slo = false;
    config.dispatch.time_scale = TIME_SCALE;
    config.solve_time_limit_s = 5.0;
    // Weather runs `3600 / hour_s` times faster than real time here.
    config.telemetry.max_temperature_rate_c_per_s *= 3600.0 / hour_s;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let http = match tokio::net::TcpListener::bind(opts.http).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind((opts.http.ip(), 0)).await?,
    };
    let live = format!("http://{}/", http.local_addr()?);
    let server = tokio::spawn(super::serve_listeners(
        config,
        listener,
        Some(http),
        stopped(stop_rx.clone()),
    ));
    say(
        t0,
        format!(
            "edgeplan serving on {addr} (data in {}), provisioner-sim on {sim_addr}",
            data_dir.display()
        ),
    );

    say(
        t0,
        format!("live view: {live} — open it in a browser to watch the heat and the re-plans as they happen (metrics: {live}metrics)"),
    );
    let result = story(opts, &url, &live, t0, duration, hour_s).await;

    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = sim.await;
    if opts.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn story(
    opts: &DemoOptions,
    url: &str,
    live: &str,
    t0: Instant,
    duration: f64,
    hour_s: f64,
) -> anyhow::Result<DemoOutcome> {
    let year = Year::shipped_2023().map_err(anyhow::Error::msg)?;
    let (fleet, first) = demo_fleet(opts, &year)?;
    let zones = site_zones(&fleet, &year);
    let replicas: u32 = fleet.workloads.iter().map(|w| w.replicas).sum();
    let it_kw: Vec<f64> = {
        let p = Problem::build(&fleet)?;
        p.sites.iter().map(|s| s.physics.it_limit_kw).collect()
    };
    let mut by_zone: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (s, &z) in fleet.sites.iter().zip(&zones) {
        by_zone
            .entry(z)
            .or_default()
            .push(s.name.clone().unwrap_or_else(|| s.id.clone()));
    }
    super::client::push_instance(&super::client::Connect::plain(url), &fleet).await?;
    let zone_text: Vec<String> = by_zone
        .iter()
        .map(|(z, names)| format!("{} ({})", year.zones[*z].id, names.join(", ")))
        .collect();
    say(
        t0,
        format!(
            "registered {} micro data centers in {} grid zones — {} — with IT limits of {:.0}–{:.0} kW now, and {} workloads ({} replicas, Bitbrains VM sizes) placed nearest their users",
            fleet.sites.len(),
            by_zone.len(),
            zone_text.join("; "),
            it_kw.iter().copied().fold(f64::INFINITY, f64::min),
            it_kw.iter().copied().fold(0.0, f64::max),
            fleet.workloads.len(),
            replicas
        ),
    );
    say(
        t0,
        format!(
            "weather, prices and carbon are the real hours of {} to {} ({} s a real hour): outside air, humidity, each workload's utilisation and each site's IT power stream in as telemetry",
            when(&year, first),
            when(&year, first + opts.hours - 1),
            (hour_s * 10.0).round() / 10.0
        ),
    );

    let mut placement = PlacementClient::new(super::client::Connect::plain(url).channel().await?);
    let mut inventory = InventoryClient::connect(url.to_string()).await?;

    // Telemetry, every half second: the real hour's weather (linear between
    // hours), the workloads' utilisation and the sites' metered IT power.
    let start = Instant::now();
    let feeder = {
        let (url, fleet, zones, year) =
            (url.to_string(), fleet.clone(), zones.clone(), year.clone());
        let hours = opts.hours;
        tokio::spawn(async move {
            let Ok(mut client) = TelemetryClient::connect(url.clone()).await else {
                return;
            };
            let Ok(mut inv) = InventoryClient::connect(url).await else {
                return;
            };
            let demand = DemandCurve::new(&fleet, &year, Demand::Diurnal);
            let mut hour_state: Option<(usize, Instance, Vec<f64>)> = None;
            loop {
                let hf = (start.elapsed().as_secs_f64() / hour_s).min(hours as f64 - 1.0);
                let (t, frac) = (first + hf.floor() as usize, hf.fract());
                if hour_state.as_ref().is_none_or(|h| h.0 != t) {
                    // The placement now, at this hour's demand: what the meters read.
                    let now = match inv.get_inventory(pb::GetInventoryRequest::default()).await {
                        Ok(r) => {
                            serde_json::from_str::<Instance>(&r.into_inner().instance_json).ok()
                        }
                        Err(_) => None,
                    };
                    let mut at = now.unwrap_or_else(|| fleet.clone());
                    set_actual_hour(&mut at, &year, &zones, t);
                    demand.set(&mut at, t, 1);
                    let it_kw = Problem::build(&at)
                        .map(|p| {
                            let x = p.current_placement();
                            p.evaluate(&x).sites.iter().map(|k| k.it_kw).collect()
                        })
                        .unwrap_or_default();
                    hour_state = Some((t, at, it_kw));
                }
                let Some((_, at, it_kw)) = &hour_state else {
                    continue;
                };
                let ts = super::now_s();
                let mut readings = Vec::with_capacity(at.sites.len() * 3 + at.workloads.len());
                let reading = |device: String,
                               site: &str,
                               kind: pb::DeviceType,
                               place: pb::DevicePlacement,
                               unit: &str,
                               value: f64| pb::Reading {
                    device_id: device,
                    site: site.to_string(),
                    rack: String::new(),
                    device_type: kind as i32,
                    placement: place as i32,
                    unit: unit.into(),
                    value,
                    timestamp_s: ts,
                };
                for (si, s) in at.sites.iter().enumerate() {
                    let h = &year.hours[zones[si]];
                    let air = between(&h.temperature_c, t, frac);
                    readings.push(reading(
                        format!("{}/outside-air", s.id),
                        &s.id,
                        pb::DeviceType::Temperature,
                        pb::DevicePlacement::Outside,
                        "C",
                        (air * 10.0).round() / 10.0,
                    ));
                    readings.push(reading(
                        format!("{}/outside-humidity", s.id),
                        &s.id,
                        pb::DeviceType::Humidity,
                        pb::DevicePlacement::Outside,
                        "%",
                        between(&h.humidity_pct, t, frac).clamp(0.0, 100.0).round(),
                    ));
                    if let Some(kw) = it_kw.get(si) {
                        readings.push(reading(
                            format!("{}/ups", s.id),
                            &s.id,
                            pb::DeviceType::Power,
                            pb::DevicePlacement::Site,
                            "kW",
                            (kw * 100.0).round() / 100.0,
                        ));
                    }
                }
                for w in &at.workloads {
                    let Some(site) = w.current.keys().next() else {
                        continue;
                    };
                    readings.push(reading(
                        w.id.clone(),
                        site,
                        pb::DeviceType::Utilization,
                        pb::DevicePlacement::Workload,
                        "ratio",
                        w.utilization,
                    ));
                }
                let batch = pb::ReadingBatch {
                    readings,
                    ..Default::default()
                };
                if client
                    .ingest(tokio_stream::iter(vec![batch]))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // Narration: the real hour's events, every plan the service makes and
    // its steps as they run.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut outcome = DemoOutcome {
        report: opts.report.clone(),
        live: live.to_string(),
        ..DemoOutcome::default()
    };
    let mut solved = false;
    let mut hour_done: Option<usize> = None;
    // Per zone: the price last put in the inventory, and the week before's median.
    let mut published: Vec<f64> = year.hours.iter().map(|h| h.price_per_kwh[first]).collect();
    let median: Vec<f64> = year
        .hours
        .iter()
        .map(|h| {
            let mut week: Vec<f64> = h.price_per_kwh[first.saturating_sub(168)..first].to_vec();
            week.sort_by(f64::total_cmp);
            week.get(week.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let mut hot_said: HashSet<(usize, usize)> = HashSet::new();
    let mut spike_said: HashSet<(usize, usize)> = HashSet::new();
    let deadline = t0 + edgeplan_model::duration_s(duration);
    while Instant::now() < deadline {
        let elapsed = t0.elapsed().as_secs_f64();
        if !solved && elapsed > 2.0 {
            solved = true;
            say(
                t0,
                "the operator asks for a placement (Solve) and approves it",
            );
            match placement
                .solve(pb::SolveRequest {
                    time_limit_s: Some(5.0),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    say(
                        t0,
                        format!(
                            "solve: {} (gap {:.2} % on the placed cost), {} moves planned",
                            r.status,
                            r.placed_gap * 100.0,
                            r.plan.as_ref().map_or(0, |p| p.steps.len())
                        ),
                    );
                    placement
                        .approve_plan(pb::PlanRef {
                            plan_id: r.plan_id,
                            after_revision: None,
                        })
                        .await?;
                }
                Err(e) => say(t0, format!("solve refused: {}", e.message())),
            }
        }
        let hf = (start.elapsed().as_secs_f64() / hour_s).min(opts.hours as f64 - 1.0);
        let t = first + hf.floor() as usize;
        if hour_done != Some(t) {
            hour_done = Some(t);
            let day = (t - first) / 24;
            // Heat: a site's outside air past what its coolers are designed for.
            for (z, names) in &by_zone {
                let air = year.hours[*z].temperature_c[t];
                let design = fleet
                    .sites
                    .iter()
                    .zip(&zones)
                    .filter(|(_, zz)| *zz == z)
                    .map(|(s, _)| s.cooling.max_ambient_c)
                    .fold(f64::INFINITY, f64::min);
                if air > design && hot_said.insert((*z, day)) {
                    say(
                        t0,
                        format!(
                            "HEAT WAVE: {:.1} °C outside in {} at {} — past the {:.0} °C the sites' dry coolers are designed for ({})",
                            air,
                            year.zones[*z].city,
                            when(&year, t),
                            design,
                            names.join(", ")
                        ),
                    );
                }
            }
            // Prices: a zone's day-ahead price reaches the inventory when it moves.
            let mut moved: Vec<usize> = Vec::new();
            for (z, h) in year.hours.iter().enumerate() {
                if !by_zone.contains_key(&z) {
                    continue;
                }
                let p = h.price_per_kwh[t];
                if (p - published[z]).abs() > (0.3 * published[z].abs()).max(0.02) {
                    moved.push(z);
                    published[z] = p;
                }
            }
            if !moved.is_empty() {
                let snapshot = inventory
                    .get_inventory(pb::GetInventoryRequest::default())
                    .await?
                    .into_inner();
                let sites: Vec<pb::Site> = snapshot
                    .sites
                    .into_iter()
                    .filter_map(|mut s| {
                        let si = fleet.sites.iter().position(|f| f.id == s.id)?;
                        let z = zones[si];
                        if !moved.contains(&z) {
                            return None;
                        }
                        let e = s.energy.as_mut()?;
                        e.price_per_kwh = year.hours[z].price_per_kwh[t];
                        e.price_series.clear();
                        e.carbon_g_per_kwh = year.hours[z].carbon_g_per_kwh[t];
                        Some(s)
                    })
                    .collect();
                inventory
                    .upsert_sites(pb::UpsertSitesRequest {
                        sites,
                        expected_version: None,
                    })
                    .await?;
                for &z in &moved {
                    let p = published[z];
                    if p > SPIKE * median[z].max(0.001) && spike_said.insert((z, day)) {
                        say(
                            t0,
                            format!(
                                "PRICE SPIKE: {} day-ahead at {:.3}/kWh at {} — {:.0}× the week before's median ({:.3}/kWh)",
                                year.zones[z].id,
                                p,
                                when(&year, t),
                                p / median[z].max(0.001),
                                median[z]
                            ),
                        );
                    }
                }
            }
        }
        narrate_plans(&mut placement, &mut inventory, &mut seen, &mut outcome, t0).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    feeder.abort();

    // Let a running plan finish (steps are short) before the report.
    let settle = Instant::now() + Duration::from_secs(15);
    loop {
        let plans = placement
            .list_plans(pb::ListPlansRequest::default())
            .await?
            .into_inner()
            .plans;
        let busy = plans.iter().any(|p| {
            p.state == pb::PlanState::Executing as i32 || p.state == pb::PlanState::Approved as i32
        });
        outcome.plans = plans;
        if !busy || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for p in &outcome.plans {
        say(
            t0,
            format!(
                "plan {} ({}, {}/{} steps): {}",
                p.plan_id,
                state_name(p.state),
                p.succeeded,
                p.steps,
                p.reason
            ),
        );
    }

    // The operator report, from the service's state as the solver saw it
    // (the inventory made effective by telemetry: the heat shows).
    let live_inst = effective_now(&mut inventory).await?;
    let last = outcome
        .plans
        .iter()
        .rev()
        .find(|p| p.state == pb::PlanState::Succeeded as i32 && p.steps > 0);
    let plan = match last {
        Some(p) => Some(super::client::plan_of(&mut placement, p.plan_id).await?.1),
        None => None,
    };
    let problem = Problem::build(&live_inst)?;
    let x = problem.current_placement();
    let title = format!(
        "edgeplan demo: {} sites, {} workloads, {}",
        live_inst.sites.len(),
        live_inst.workloads.len(),
        when(&year, first + opts.hours - 1)
    );
    let page =
        edgeplan_files::operator_report::html(&edgeplan_files::operator_report::ReportInput {
            title: &title,
            instance: &live_inst,
            problem: &problem,
            x: &x,
            plan: plan.as_ref(),
            whatif: None,
        });
    std::fs::write(&opts.report, page)
        .with_context(|| format!("cannot write {}", opts.report.display()))?;
    let k = problem.kpis(&x);
    say(
        t0,
        format!(
            "now: energy {:.2}/h · carbon {:.1} kg/h · mean RTT {:.1} ms · min inlet headroom {:.1} °C · max power use {:.0} % · {} unplaced",
            k.energy_cost_per_h,
            k.carbon_kg_per_h,
            k.mean_latency_ms,
            k.min_inlet_headroom_c,
            k.max_power_use * 100.0,
            k.unplaced_replicas
        ),
    );
    say(t0, format!("operator report: {}", opts.report.display()));
    Ok(outcome)
}

fn state_name(state: i32) -> String {
    pb::PlanState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PLAN_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// Say each new plan (why, expected KPIs, its first steps) and each change
/// of a plan's state.
async fn narrate_plans(
    placement: &mut PlacementClient<super::client::AuthChannel>,
    inventory: &mut InventoryClient<tonic::transport::Channel>,
    seen: &mut HashSet<u64>,
    outcome: &mut DemoOutcome,
    t0: Instant,
) -> anyhow::Result<()> {
    let plans = placement
        .list_plans(pb::ListPlansRequest::default())
        .await?
        .into_inner()
        .plans;
    for p in &plans {
        if !seen.insert(p.plan_id) {
            continue;
        }
        let (view, plan) = super::client::plan_of(placement, p.plan_id).await?;
        say(
            t0,
            format!(
                "plan {}: {} steps — {}",
                p.plan_id,
                p.steps,
                match p.reason.strip_prefix("continuous: ") {
                    Some(why) => format!("edgeplan re-planned on its own because {why}"),
                    None => p.reason.clone(),
                }
            ),
        );
        if let (Some(b), Some(a)) = (&view.kpis_before, &view.kpis_after) {
            say(t0, format!("  expected: {}", kpi_line(b, a)));
        }
        for s in view.steps.iter().take(3) {
            let kind = pb::StepKind::try_from(s.kind)
                .map(|k| {
                    k.as_str_name()
                        .trim_start_matches("STEP_KIND_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let site = |x: &str| {
                if x.is_empty() {
                    "-".to_string()
                } else {
                    x.to_string()
                }
            };
            say(
                t0,
                format!(
                    "  step {}: {kind} {} {} → {}",
                    s.step_id,
                    s.workload,
                    site(&s.from_site),
                    site(&s.to_site)
                ),
            );
        }
        if view.steps.len() > 3 {
            say(t0, format!("  … and {} more steps", view.steps.len() - 3));
        }
        say_evictions(inventory, &view, &plan, t0).await?;
    }
    for p in &plans {
        let old = outcome.plans.iter().find(|o| o.plan_id == p.plan_id);
        if p.state == pb::PlanState::Succeeded as i32 && old.is_some_and(|o| o.state != p.state) {
            say_notice_kept(placement, p.plan_id, t0).await?;
        }
        if old.is_none_or(|o| o.state != p.state || o.succeeded != p.succeeded)
            && (old.is_some() || p.state != pb::PlanState::Recommended as i32)
        {
            say(
                t0,
                format!(
                    "plan {}: {}, {}/{} steps done at the provisioner",
                    p.plan_id,
                    state_name(p.state),
                    p.succeeded,
                    p.steps
                ),
            );
        }
    }
    outcome.plans = plans;
    Ok(())
}

/// A plan's evictions, per spot workload: how many, where, the notice, and
/// why (the plan's own words for the first, on the inventory as it is).
async fn say_evictions(
    inventory: &mut InventoryClient<tonic::transport::Channel>,
    view: &pb::PlanView,
    plan: &edgeplan_model::plan::Plan,
    t0: Instant,
) -> anyhow::Result<()> {
    let evict = pb::StepKind::Evict as i32;
    let mut by_workload: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
    for s in view.steps.iter().filter(|s| s.kind == evict) {
        *by_workload
            .entry(s.workload.as_str())
            .or_default()
            .entry(s.from_site.as_str())
            .or_default() += 1;
    }
    if by_workload.is_empty() {
        return Ok(());
    }
    let problem = Problem::build(&effective_now(inventory).await?)?;
    let words = edgeplan_plan::explain::moves(&problem, &problem.current_placement(), &plan.steps);
    for (workload, sites) in by_workload {
        let n: u32 = sites.values().sum();
        let notice = view
            .steps
            .iter()
            .find(|s| s.kind == evict && s.workload == workload)
            .map_or(0.0, |s| s.notice_s);
        let at: Vec<String> = sites.iter().map(|(s, k)| format!("{s} ×{k}")).collect();
        let why = words
            .iter()
            .find(|m| m.workload == workload && m.text.starts_with("evicts"))
            .and_then(|m| {
                m.text
                    .split_once("notice: ")
                    .map(|(_, why)| why.to_string())
            })
            .unwrap_or_default();
        say(
            t0,
            format!(
                "  SPOT EVICTION: {n} replica(s) of {workload} ({}) get {notice:.0} s notice ({:.1} s here) — {why}",
                at.join(", "),
                notice * TIME_SCALE
            ),
        );
    }
    Ok(())
}

/// After a plan with evictions succeeds: each was recorded no sooner than
/// its notice after it was sent (the shortest, against the notice).
async fn say_notice_kept(
    placement: &mut PlacementClient<super::client::AuthChannel>,
    plan_id: u64,
    t0: Instant,
) -> anyhow::Result<()> {
    let (view, _) = super::client::plan_of(placement, plan_id).await?;
    let secs = |t: &Option<_>| t.map(edgeplan_api::convert::unix_s);
    let held: Vec<(f64, f64)> = view
        .steps
        .iter()
        .filter(|s| s.kind == pb::StepKind::Evict as i32)
        .filter_map(|s| {
            Some((
                secs(&s.ended_at)? - secs(&s.started_at)?,
                s.notice_s * TIME_SCALE,
            ))
        })
        .collect();
    if let Some(&(shortest, notice)) = held.iter().min_by(|a, b| a.0.total_cmp(&b.0)) {
        say(
            t0,
            format!(
                "  plan {plan_id}: {} eviction(s) recorded after their notice — the shortest {shortest:.2} s from sending to done, notice {notice:.2} s",
                held.len()
            ),
        );
    }
    Ok(())
}

/// The inventory as the solver sees it now (made effective by telemetry:
/// the heat shows).
async fn effective_now(
    inventory: &mut InventoryClient<tonic::transport::Channel>,
) -> anyhow::Result<Instance> {
    let snapshot = inventory
        .get_inventory(pb::GetInventoryRequest {
            effective: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(serde_json::from_str(&snapshot.instance_json)?)
}
