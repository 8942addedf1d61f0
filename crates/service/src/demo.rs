//! `edgeplan demo`: the whole product in two minutes. Starts the service
//! (temporary data directory, continuous mode with auto-approve) and the
//! reference provisioner on loopback, registers a generated fleet in real
//! cities (measured RTTs, SPECpower servers, Bitbrains VM sizes, TMY3
//! weather), streams sensor telemetry over gRPC driven by the sites' real
//! weather, then injects a heat wave and an electricity price spike and
//! narrates what the service notices, plans and executes. Ends with the
//! operator report. Time is compressed: a simulated hour of weather per
//! `hour_s` seconds, plan steps at `time_scale` of their modelled duration.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use edgeplan_analysis::gen::{generate, GenOptions};
use edgeplan_api::pb;
use edgeplan_api::pb::inventory_client::InventoryClient;
use edgeplan_api::pb::placement_client::PlacementClient;
use edgeplan_api::pb::telemetry_client::TelemetryClient;
use edgeplan_model::instance::Instance;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub sites: usize,
    pub workloads: usize,
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
}

fn say(t0: Instant, text: impl AsRef<str>) {
    println!("[{:5.1} s] {}", t0.elapsed().as_secs_f64(), text.as_ref());
}

fn kpi_line(b: &pb::Kpis, a: &pb::Kpis) -> String {
    format!(
        "energy {:.3} → {:.3}/h · carbon {:.2} → {:.2} kg/h · mean RTT {:.1} → {:.1} ms · min inlet headroom {:.1} → {:.1} °C · max power use {:.0} → {:.0} % · unplaced {} → {}",
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

/// Ambient at a site `hour` simulated hours in: its real hourly weather
/// (the generated forecast from TMY3), plus the injected heat.
fn ambient_c(inst: &Instance, site: usize, hour: f64) -> f64 {
    let s = &inst.sites[site];
    let series: Vec<f64> = std::iter::once(s.ambient.current_c)
        .chain(s.ambient.forecast_c.iter().copied())
        .collect();
    let h = hour.max(0.0);
    let i = (h.floor() as usize) % series.len();
    let j = (i + 1) % series.len();
    let f = h.fract();
    series[i] * (1.0 - f) + series[j] * f
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
    // One simulated hour of weather per `hour_s` seconds.
    let hour_s = duration / 24.0;

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
    config.dispatch.time_scale = 0.02;
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
        format!("live view: {live} (open it in a browser to watch the heat wave and the re-plans; metrics at {live}metrics)"),
    );

    let result = story(opts, &url, t0, duration, hour_s).await;

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
    t0: Instant,
    duration: f64,
    hour_s: f64,
) -> anyhow::Result<DemoOutcome> {
    let mut inst = generate(&GenOptions {
        sites: opts.sites,
        workloads: opts.workloads,
        replicas: None,
        seed: opts.seed,
        load: 0.8,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    // Dry coolers: past their design ambient they keep a third of their capacity.
    for s in &mut inst.sites {
        s.cooling.derate_min = 0.35;
    }
    let replicas: u32 = inst.workloads.iter().map(|w| w.replicas).sum();
    let cities: Vec<String> = inst
        .sites
        .iter()
        .map(|s| s.name.clone().unwrap_or_else(|| s.id.clone()))
        .collect();
    super::client::push_instance(&super::client::Connect::plain(url), &inst).await?;
    say(
        t0,
        format!(
            "registered {} micro data centers ({}) and {} workloads ({} replicas) with measured city RTTs",
            inst.sites.len(),
            cities.join(", "),
            inst.workloads.len(),
            replicas
        ),
    );

    let mut placement = PlacementClient::connect(url.to_string()).await?;
    let mut telemetry = TelemetryClient::connect(url.to_string()).await?;
    let mut inventory = InventoryClient::connect(url.to_string()).await?;

    // Telemetry: every half second, each site's outside air from its real
    // weather, plus the heat wave once it starts.
    let heat: std::sync::Arc<std::sync::Mutex<BTreeMap<usize, f64>>> = Default::default();
    let heat_t = heat.clone();
    let inst_t = inst.clone();
    let url_t = url.to_string();
    let start = Instant::now();
    let feeder = tokio::spawn(async move {
        let Ok(mut client) = TelemetryClient::connect(url_t).await else {
            return 0u64;
        };
        let mut sent = 0u64;
        loop {
            let hour = start.elapsed().as_secs_f64() / hour_s;
            let now = super::now_s();
            let extra = heat_t.lock().map(|h| h.clone()).unwrap_or_default();
            let readings: Vec<pb::Reading> = (0..inst_t.sites.len())
                .flat_map(|si| {
                    let s = &inst_t.sites[si];
                    let t = ambient_c(&inst_t, si, hour) + extra.get(&si).copied().unwrap_or(0.0);
                    [
                        pb::Reading {
                            device_id: format!("{}/outside-air", s.id),
                            site: s.id.clone(),
                            rack: String::new(),
                            device_type: pb::DeviceType::Temperature as i32,
                            placement: pb::DevicePlacement::Outside as i32,
                            unit: "C".into(),
                            value: (t * 10.0).round() / 10.0,
                            timestamp_s: now,
                        },
                        pb::Reading {
                            device_id: format!("{}/outside-humidity", s.id),
                            site: s.id.clone(),
                            rack: String::new(),
                            device_type: pb::DeviceType::Humidity as i32,
                            placement: pb::DevicePlacement::Outside as i32,
                            unit: "%".into(),
                            value: s.ambient.humidity_pct.unwrap_or(50.0),
                            timestamp_s: now,
                        },
                    ]
                })
                .collect();
            sent += readings.len() as u64;
            let batch = pb::ReadingBatch {
                readings,
                ..Default::default()
            };
            if client
                .ingest(tokio_stream::iter(vec![batch]))
                .await
                .is_err()
            {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    // Narration: every plan the service makes, and its steps as they run.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut outcome = DemoOutcome {
        report: opts.report.clone(),
        ..DemoOutcome::default()
    };
    let mut heat_done = false;
    let mut price_done = false;
    let mut first_done = false;
    let deadline = t0 + edgeplan_model::duration_s(duration);
    while Instant::now() < deadline {
        let elapsed = t0.elapsed().as_secs_f64();
        if !first_done && elapsed > 2.0 {
            first_done = true;
        }
        if first_done && seen.is_empty() && elapsed > 2.0 && elapsed < 2.6 {
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
        if !heat_done && elapsed > duration * 0.3 {
            heat_done = true;
            let states = telemetry
                .watch_sites(pb::WatchSitesRequest {
                    sites: vec![],
                    interval_ms: 100,
                })
                .await?
                .into_inner()
                .message()
                .await?
                .map(|s| s.sites)
                .unwrap_or_default();
            let mut by_use: Vec<(usize, f64)> = states
                .iter()
                .filter_map(|s| {
                    let i = inst.sites.iter().position(|x| x.id == s.site)?;
                    Some((i, s.it_kw / s.it_limit_kw.max(1e-9)))
                })
                .collect();
            by_use.sort_by(|a, b| b.1.total_cmp(&a.1));
            let hot: Vec<usize> = by_use.iter().take(2).map(|x| x.0).collect();
            if let Ok(mut h) = heat.lock() {
                for &si in &hot {
                    // Up to the cooling plant's design maximum and beyond.
                    let now_c = ambient_c(&inst, si, start.elapsed().as_secs_f64() / hour_s);
                    h.insert(
                        si,
                        (inst.sites[si].cooling.max_ambient_c + 3.0 - now_c).max(8.0),
                    );
                }
            }
            let names: Vec<&str> = hot.iter().map(|&i| inst.sites[i].id.as_str()).collect();
            say(
                t0,
                format!(
                    "HEAT WAVE: outside air at {} climbs past its cooling plant's design limit",
                    names.join(" and ")
                ),
            );
        }
        if !price_done && elapsed > duration * 0.6 {
            price_done = true;
            let mut snapshot = inventory
                .get_inventory(pb::GetInventoryRequest::default())
                .await?
                .into_inner();
            // The two cheapest sites' spot price goes up sixfold.
            let mut by_price: Vec<(usize, f64)> = snapshot
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.energy.as_ref().map_or(0.0, |e| e.price_per_kwh)))
                .collect();
            by_price.sort_by(|a, b| a.1.total_cmp(&b.1));
            let mut changed = Vec::new();
            for &(i, p) in by_price.iter().take(2) {
                let mut site = snapshot.sites[i].clone();
                if let Some(e) = site.energy.as_mut() {
                    e.price_per_kwh = p * 6.0;
                    e.price_series.clear();
                }
                changed.push((site.id.clone(), p));
                snapshot.sites[i] = site;
            }
            let sites: Vec<pb::Site> = snapshot
                .sites
                .iter()
                .filter(|s| changed.iter().any(|(id, _)| id == &s.id))
                .cloned()
                .collect();
            inventory
                .upsert_sites(pb::UpsertSitesRequest {
                    sites,
                    expected_version: None,
                })
                .await?;
            let text: Vec<String> = changed
                .iter()
                .map(|(id, p)| format!("{id} {p:.3} → {:.3}/kWh", p * 6.0))
                .collect();
            say(
                t0,
                format!("PRICE SPIKE on the spot market: {}", text.join(", ")),
            );
        }
        let plans = placement
            .list_plans(pb::ListPlansRequest::default())
            .await?
            .into_inner()
            .plans;
        for p in &plans {
            if seen.insert(p.plan_id) {
                let view = placement
                    .get_plan(pb::PlanRef {
                        plan_id: p.plan_id,
                        after_revision: None,
                    })
                    .await?
                    .into_inner();
                say(
                    t0,
                    format!(
                        "plan {}: {} steps — {}",
                        p.plan_id,
                        p.steps,
                        if p.reason.starts_with("continuous:") {
                            format!(
                                "edgeplan re-planned on its own because {}",
                                p.reason.trim_start_matches("continuous: ")
                            )
                        } else {
                            p.reason.clone()
                        }
                    ),
                );
                if let (Some(b), Some(a)) = (&view.kpis_before, &view.kpis_after) {
                    say(t0, format!("  expected: {}", kpi_line(b, a)));
                }
                for s in view.steps.iter().take(4) {
                    say(
                        t0,
                        format!(
                            "  step {}: {} {} {} → {}",
                            s.step_id,
                            pb::StepKind::try_from(s.kind)
                                .map(|k| k
                                    .as_str_name()
                                    .trim_start_matches("STEP_KIND_")
                                    .to_lowercase())
                                .unwrap_or_default(),
                            s.workload,
                            if s.from_site.is_empty() {
                                "-"
                            } else {
                                &s.from_site
                            },
                            if s.to_site.is_empty() {
                                "-"
                            } else {
                                &s.to_site
                            }
                        ),
                    );
                }
                if view.steps.len() > 4 {
                    say(t0, format!("  … and {} more steps", view.steps.len() - 4));
                }
            }
        }
        for p in &plans {
            let old = outcome.plans.iter().find(|o| o.plan_id == p.plan_id);
            if old.is_none_or(|o| o.state != p.state || o.succeeded != p.succeeded) {
                let state = pb::PlanState::try_from(p.state)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("PLAN_STATE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                if old.is_some() || p.state != pb::PlanState::Recommended as i32 {
                    say(
                        t0,
                        format!(
                            "plan {}: {state}, {}/{} steps done at the provisioner",
                            p.plan_id, p.succeeded, p.steps
                        ),
                    );
                }
            }
        }
        outcome.plans = plans;
        tokio::time::sleep(Duration::from_millis(500)).await;
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
        let state = pb::PlanState::try_from(p.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("PLAN_STATE_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        say(
            t0,
            format!(
                "plan {} ({state}, {}/{} steps): {}",
                p.plan_id, p.succeeded, p.steps, p.reason
            ),
        );
    }

    // The operator report, from the service's state as the solver saw it
    // (the inventory made effective by telemetry: the heat wave shows).
    let snapshot = inventory
        .get_inventory(pb::GetInventoryRequest {
            effective: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let live: Instance = serde_json::from_str(&snapshot.instance_json)?;
    let last = outcome
        .plans
        .iter()
        .rev()
        .find(|p| p.state == pb::PlanState::Succeeded as i32 && p.steps > 0);
    let plan = match last {
        Some(p) => {
            let view = placement
                .get_plan(pb::PlanRef {
                    plan_id: p.plan_id,
                    after_revision: None,
                })
                .await?
                .into_inner();
            Some(serde_json::from_str::<edgeplan_plan::plan::Plan>(
                &view.plan_json,
            )?)
        }
        None => None,
    };
    let problem = edgeplan_problem::problem::Problem::build(&live)?;
    let x = problem.current_placement();
    let title = format!(
        "edgeplan demo: {} sites, {} workloads",
        live.sites.len(),
        live.workloads.len()
    );
    let page =
        edgeplan_files::operator_report::html(&edgeplan_files::operator_report::ReportInput {
            title: &title,
            instance: &live,
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
            "now: energy {:.3}/h · carbon {:.2} kg/h · mean RTT {:.1} ms · min inlet headroom {:.1} °C · max power use {:.0} % · {} unplaced",
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
