//! Realistic instances from real data shipped in `data/` (see
//! `data/SOURCES.md`): cities and their measured RTTs (WonderNetwork 2018),
//! SPECpower servers (`models/`), Bitbrains VM sizes, the Azure 2019 diurnal
//! CPU shape, and TMY3 weather. Deterministic for a seed. Pure.

use std::collections::BTreeMap;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use edgeplan_model::accelerator_models::{self, GPU_RESOURCE};
use edgeplan_model::instance::*;
use edgeplan_model::server_models::builtin;
use edgeplan_problem::ix::{IndexVec, SiteIx, WorkloadIx};
use edgeplan_problem::problem::Problem;

const CITIES: &str = include_str!("../../../data/cities.csv");
const RTT: &str = include_str!("../../../data/rtt_ms.csv");
const VM_SIZES: &str = include_str!("../../../data/vm_sizes.csv");
const AZURE_CPU: &str = include_str!("../../../data/azure_cpu_hourly.csv");
const WEATHER: &str = include_str!("../../../data/weather_greensboro_hourly.csv");
/// Latitude of the weather station (Greensboro, NC).
const WEATHER_LAT: f64 = 36.1;

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub sites: usize,
    pub workloads: usize,
    /// If set, add workloads until this many replicas (overrides `workloads`).
    pub replicas: Option<usize>,
    pub seed: u64,
    /// Target share of CPU capacity the demand uses.
    pub load: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            sites: 12,
            workloads: 60,
            replicas: None,
            seed: 1,
            load: 0.75,
        }
    }
}

struct City {
    name: String,
    continent: String,
    lat: f64,
    lon: f64,
    population: f64,
}

/// The Azure 2019 trace's mean day: CPU use by hour of day (its 30 days
/// averaged), scaled to a mean of 1. Hour `h` of the trace is taken as
/// local hour `h` of a workload's users.
pub fn azure_mean_day() -> [f64; 24] {
    let values: Vec<f64> = rows(AZURE_CPU).map(|r| num(r[1])).collect();
    let mut day = [0.0; 24];
    let mut count = [0usize; 24];
    for (h, v) in values.iter().enumerate() {
        day[h % 24] += v;
        count[h % 24] += 1;
    }
    for (d, n) in day.iter_mut().zip(count) {
        *d /= n.max(1) as f64;
    }
    let mean = day.iter().sum::<f64>() / 24.0;
    if mean > 0.0 {
        for d in &mut day {
            *d /= mean;
        }
    }
    day
}

fn rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
}

fn num(s: &str) -> f64 {
    s.trim().parse().unwrap_or(0.0)
}

fn cities() -> Vec<City> {
    rows(CITIES)
        .map(|r| City {
            name: r[0].to_string(),
            // The source says "Eurasia"; prices and grids differ, so split at the Urals' longitude.
            continent: match (r[2], num(r[4]) < 40.0) {
                ("Eurasia", true) => "Europe".to_string(),
                ("Eurasia", false) => "Asia".to_string(),
                (other, _) => other.to_string(),
            },
            lat: num(r[3]),
            lon: num(r[4]),
            population: num(r[5]),
        })
        .collect()
}

/// Measured RTT between two city indices (symmetric), if measured.
fn rtt_table(n: usize) -> Vec<Vec<Option<f64>>> {
    let mut t = vec![vec![None; n]; n];
    for r in rows(RTT) {
        let (a, b, v) = (num(r[0]) as usize, num(r[1]) as usize, num(r[2]));
        if a < n && b < n {
            t[a][b] = Some(v);
            t[b][a] = Some(v);
        }
    }
    t
}

/// A family of generated fleets: `gen`'s default, or one that departs from
/// it where the optimizer has it hardest (the benchmark suite's families).
/// Every family is deterministic for a seed, and `Standard` is exactly what
/// `gen` built before families existed (the others draw from a random
/// stream of their own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Family {
    /// Edge VMs from Bitbrains, 3 % of workloads wanting one GPU.
    #[default]
    Standard,
    /// A quarter of the workloads want 1, 2, 4 or 8 GPUs a replica (60 /
    /// 20 / 15 / 5 %, the shape of public GPU-cluster traces, where most
    /// jobs take one GPU and a few a whole 8-GPU server); 40 % of sites
    /// have GPUs, sized so the demand is about 95 % of the supply.
    GpuTight,
    /// Ten sites to a metro: many micro data centers behind one network
    /// node, all at the same RTT from their users.
    Metro,
    /// Placement rules everywhere: a fifth of the workloads in
    /// anti-affinity groups of 2–4, pairs in affinity groups (sharing their
    /// users), and failure-domain spread on a third of the rest.
    Rules,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Standard,
        Family::GpuTight,
        Family::Metro,
        Family::Rules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Standard => "standard",
            Family::GpuTight => "gpu-tight",
            Family::Metro => "metro",
            Family::Rules => "rules",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Family, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                format!("unknown family {s:?}: one of {}", names.join(", "))
            })
    }
}

/// The largest fleet `gen` builds. Beyond the cities with measured
/// latencies, further sites share a city's network node (a second or third
/// micro data center in the same metro).
pub const MAX_SITES: usize = 20_000;

/// Build an instance (of the `Standard` family).
pub fn generate(opts: &GenOptions) -> Result<Instance, String> {
    generate_family(opts, Family::Standard)
}

/// Build an instance of a family.
pub fn generate_family(opts: &GenOptions, family: Family) -> Result<Instance, String> {
    let all = cities();
    if opts.sites == 0 || opts.sites > MAX_SITES {
        return Err(format!(
            "--sites must be within 1..={MAX_SITES}, got {}",
            opts.sites
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    // Network nodes and user regions are cities; sites beyond the number of
    // cities are further micro data centers in the same metros.
    let metros = match family {
        Family::Metro => (opts.sites / 10).max(1),
        _ => usize::MAX,
    };
    let n = opts.sites.min(all.len()).min(metros);
    let chosen: Vec<&City> = all.iter().take(n).collect();
    let rtt = rtt_table(n);
    let ids: Vec<String> = chosen.iter().map(|c| slug(&c.name)).collect();
    let site_city: Vec<usize> = (0..opts.sites).map(|i| i % n).collect();

    // Network: each city links to its 4 nearest measured neighbours and to the 3 largest hubs.
    let mut links: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for (i, row) in rtt.iter().enumerate() {
        let mut near: Vec<(usize, f64)> = (0..n)
            .filter(|&j| j != i)
            .filter_map(|j| Some((j, row[j]?)))
            .collect();
        near.sort_by(|a, b| a.1.total_cmp(&b.1));
        for &(j, v) in near
            .iter()
            .take(4)
            .chain(near.iter().filter(|(j, _)| *j < 3))
        {
            links.insert((i.min(j), i.max(j)), v);
        }
    }
    let network = Network {
        nodes: ids.iter().map(|id| Node { id: id.clone() }).collect(),
        links: links
            .iter()
            .map(|(&(a, b), &v)| Link {
                a: ids[a].clone(),
                b: ids[b].clone(),
                rtt_ms: v.max(0.5),
                bandwidth_gbps: *[10.0, 40.0, 100.0].choose(&mut rng).unwrap_or(&10.0),
            })
            .collect(),
    };
    let regions: Vec<Region> = ids
        .iter()
        .map(|id| Region {
            id: format!("users-{id}"),
            node: id.clone(),
        })
        .collect();

    // Demand first, so that capacity can be sized to the target load.
    // Edge-sized VMs: up to 16 cores and 64 GiB.
    let vms: Vec<(f64, f64, f64)> = rows(VM_SIZES)
        .map(|r| (num(r[1]), num(r[2]), num(r[4])))
        .filter(|(cores, mem, _)| *cores <= 16.0 && *mem <= 64.0)
        .collect();
    let diurnal: Vec<f64> = rows(AZURE_CPU).map(|r| num(r[1])).collect();
    let weather: Vec<(f64, f64)> = rows(WEATHER).map(|r| (num(r[1]), num(r[2]))).collect();
    let hour0 = rng.random_range(0..weather.len().saturating_sub(48).max(1));
    let load_now = diurnal
        .get(hour0 % diurnal.len().max(1))
        .copied()
        .unwrap_or(1.0);
    let pop_weight: Vec<f64> = chosen
        .iter()
        .map(|c| c.population.max(1.0).sqrt())
        .collect();
    let pop_total: f64 = pop_weight.iter().sum();
    // Each city's share of capacity, split over its sites.
    let sites_in_city: Vec<usize> = (0..n)
        .map(|c| site_city.iter().filter(|&&x| x == c).count())
        .collect();

    let mut workloads = Vec::new();
    let mut total_replicas = 0usize;
    let mut total_cores = 0.0;
    let mut total_gpus = 0.0;
    let mut k = 0usize;
    loop {
        let done = match opts.replicas {
            Some(r) => total_replicas >= r,
            None => k >= opts.workloads,
        };
        if done {
            break;
        }
        let (cores, mem, p95) = vms[rng.random_range(0..vms.len())];
        let mut replicas = *[1u32, 2, 2, 3, 3, 4].choose(&mut rng).unwrap_or(&1);
        if let Some(r) = opts.replicas {
            replicas = replicas.min((r - total_replicas) as u32).max(1);
        }
        let home = pick_weighted(&mut rng, &pop_weight, pop_total);
        let mut near: Vec<(usize, f64)> = (0..n)
            .filter(|&j| j != home)
            .filter_map(|j| Some((j, rtt[home][j]?)))
            .collect();
        near.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut traffic = vec![Traffic {
            region: format!("users-{}", ids[home]),
            weight: round2(rng.random_range(0.6..0.9)),
        }];
        for &(j, _) in near.iter().take(rng.random_range(0..=2)) {
            traffic.push(Traffic {
                region: format!("users-{}", ids[j]),
                weight: round2(rng.random_range(0.05..0.2)),
            });
        }
        let gpu = rng.random_bool(0.03);
        let mut resources = BTreeMap::from([
            ("cpu_cores".to_string(), cores),
            ("memory_gib".to_string(), round2(mem)),
        ]);
        if gpu {
            resources.insert("gpus".to_string(), 1.0);
            total_gpus += replicas as f64;
        }
        total_cores += cores * replicas as f64;
        total_replicas += replicas as usize;
        let spread = replicas > 1 && rng.random_bool(0.7);
        workloads.push(Workload {
            id: format!("wl-{k:05}"),
            replicas,
            resources,
            utilization: round2((p95 * load_now).clamp(0.05, 1.0)),
            gpu_utilization: None,
            traffic,
            slo: None,
            max_per_site: spread.then_some(1),
            max_per_failure_domain: None,
            anti_affinity_group: None,
            affinity_group: None,
            pinned_sites: Vec::new(),
            forbidden_sites: Vec::new(),
            hardware: if gpu {
                vec!["gpu".to_string()]
            } else {
                Vec::new()
            },
            priority: *[1u32, 1, 1, 1, 1, 1, 5, 5, 5, 20]
                .choose(&mut rng)
                .unwrap_or(&1),
            state_gib: round2(mem * rng.random_range(0.1..1.0)),
            egress_gbps: 0.0,
            current: BTreeMap::new(),
            disruption_allowed: false,
            spot: None,
        });
        k += 1;
    }

    // The family's own changes, from a stream of their own.
    let mut family_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x05ee_dfa3_11e5);
    match family {
        Family::GpuTight => total_gpus = make_gpu_heavy(&mut workloads, &mut family_rng),
        Family::Rules => add_rules(&mut workloads, &mut family_rng),
        Family::Standard | Family::Metro => {}
    }
    // Accelerators from a stream of their own, so fleets without them are
    // what they were: each GPU workload's GPU utilisation, each GPU site's
    // accelerator model.
    let mut accel_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0acc_e1e7_a70e);
    for w in &mut workloads {
        if w.resources.contains_key(GPU_RESOURCE) {
            w.gpu_utilization = Some(round2(accel_rng.random_range(0.3..0.95)));
        }
    }
    let accelerator_names: Vec<&String> = accelerator_models::builtin().keys().collect();
    let (gpu_share, gpu_load, gpu_min) = match family {
        Family::GpuTight => (0.4, 0.95, 8.0),
        _ => (0.15, opts.load, 4.0),
    };

    // Sites, sized so the fleet's CPU is `load` used.
    let models: Vec<&edgeplan_model::server_models::ServerModel> =
        builtin().values().filter(|m| m.cores >= 16).collect();
    let n_sites = opts.sites;
    let gpu_sites =
        ((n_sites as f64 * gpu_share).ceil() as usize).max(if total_gpus > 0.0 { 1 } else { 0 });
    let mut sites = Vec::with_capacity(n_sites);
    for (i, &city) in site_city.iter().enumerate() {
        let c = chosen[city];
        let model = models[rng.random_range(0..models.len())];
        let cores_needed = total_cores / opts.load.clamp(0.05, 1.0) * pop_weight[city]
            / pop_total
            / sites_in_city[city] as f64;
        let servers = ((cores_needed / model.cores as f64).ceil() as u32).max(2);
        let cpu = (servers * model.cores) as f64;
        let it_full_kw = servers as f64 * model.watts[10] / 1000.0;
        let idle_kw = servers as f64 * model.watts[0] / 1000.0;
        let (pue_min, pue_max) = (
            round2(rng.random_range(1.1..1.3)),
            round2(rng.random_range(1.5..1.9)),
        );
        let lat_shift = (WEATHER_LAT - c.lat.abs()) * 0.4;
        let forecast: Vec<f64> = (0..24)
            .map(|h| round1(weather[(hour0 + h) % weather.len()].0 + lat_shift))
            .collect();
        let dew = round1((weather[hour0 % weather.len()].1 + lat_shift).min(forecast[0]));
        let base_price = match c.continent.as_str() {
            "Europe" => 0.22,
            "North America" => 0.12,
            "South America" => 0.14,
            "Africa" => 0.15,
            "Oceania" => 0.2,
            _ => 0.1,
        } * rng.random_range(0.8..1.2);
        let price = if rng.random_bool(0.33) {
            Price::Series(
                (0..24)
                    .map(|h| PricePoint {
                        hour: h as f64,
                        price_per_kwh: round3(
                            base_price * (0.7 + 0.6 * diurnal[(hour0 + h) % diurnal.len()]),
                        ),
                    })
                    .collect(),
            )
        } else {
            Price::Flat(round3(base_price))
        };
        let carbon: f64 = match c.continent.as_str() {
            "Europe" => 250.0,
            "North America" => 380.0,
            "South America" => 150.0,
            "Oceania" => 600.0,
            "Africa" => 500.0,
            _ => 550.0,
        } * rng.random_range(0.7..1.3);
        let has_gpu = i < gpu_sites;
        let mut capacity = BTreeMap::from([
            ("cpu_cores".to_string(), cpu),
            ("memory_gib".to_string(), cpu * 4.0),
        ]);
        // The site's accelerators: their idle and full power join the
        // servers' in sizing the feed and the cooling.
        let mut accelerators = None;
        let (mut gpu_idle_kw, mut gpu_dynamic_full_kw) = (0.0, 0.0);
        if has_gpu {
            let gpus = (total_gpus / gpu_sites as f64 / gpu_load)
                .ceil()
                .max(gpu_min);
            capacity.insert(GPU_RESOURCE.to_string(), gpus);
            if let Some(name) = accelerator_names.choose(&mut accel_rng) {
                let m = &accelerator_models::builtin()[*name];
                gpu_idle_kw = gpus * m.idle_watts() / 1000.0;
                gpu_dynamic_full_kw = gpus * m.dynamic_kw(1.0);
                accelerators = Some(AcceleratorFleet {
                    model: (*name).clone(),
                    count: gpus as u32,
                    calibration: 1.0,
                });
            }
        }
        let racks = servers.div_ceil(16).max(1);
        let dynamic_full = it_full_kw - idle_kw;
        let (id, node) = if i < n {
            (ids[i].clone(), None)
        } else {
            (
                format!("{}-{}", ids[city], i / n + 1),
                Some(ids[city].clone()),
            )
        };
        sites.push(Site {
            id,
            node,
            name: Some(if i < n {
                c.name.clone()
            } else {
                format!("{} {}", c.name, i / n + 1)
            }),
            lat: c.lat,
            lon: c.lon,
            failure_domain: Some(c.continent.replace(' ', "-").to_lowercase()),
            capacity,
            reserve_fraction: BTreeMap::from([("cpu_cores".to_string(), 0.05)]),
            hardware: if has_gpu {
                vec!["gpu".to_string()]
            } else {
                Vec::new()
            },
            uplink_gbps: None,
            servers: ServerFleet {
                model: model.name.clone(),
                count: servers,
            },
            accelerators,
            power: PowerSpec {
                cap_kw: round1(
                    (idle_kw
                        + gpu_idle_kw
                        + (dynamic_full + gpu_dynamic_full_kw) * rng.random_range(0.6..1.0))
                        * pue_max,
                ),
                pue_min,
                pue_max,
                idle_kw: None,
                calibration: 1.0,
            },
            cooling: CoolingSpec {
                nominal_kw: round1(
                    (it_full_kw + gpu_idle_kw + gpu_dynamic_full_kw) * rng.random_range(0.9..1.3),
                ),
                derate_min: round2(rng.random_range(0.55..0.8)),
                free_cooling_limit_c: round1(rng.random_range(18.0..24.0)),
                max_ambient_c: 45.0,
                humidity_derate: 0.8,
            },
            thermal: ThermalSpec {
                ashrae_class: Some(
                    *[
                        AshraeClass::A1,
                        AshraeClass::A2,
                        AshraeClass::A2,
                        AshraeClass::A3,
                    ]
                    .choose(&mut rng)
                    .unwrap_or(&AshraeClass::A2),
                ),
                inlet_limit_c: None,
                margin_c: 2.0,
                supply_setpoint_c: 18.0,
                approach_c: 3.0,
                recirc_c_per_kw: round2(rng.random_range(0.6..1.6)),
                racks,
            },
            energy: EnergySpec {
                price_per_kwh: price,
                carbon_g_per_kwh: carbon.round(),
                series_start_unix_s: None,
            },
            ambient: AmbientSpec {
                current_c: forecast[0],
                forecast_c: forecast,
                dew_point_c: Some(dew),
                humidity_pct: None,
                forecast_start_unix_s: None,
            },
        });
    }

    let mut inst = Instance {
        name: format!(
            "gen-{n_sites}sites-{}replicas-seed{}",
            total_replicas, opts.seed
        ),
        server_models: Vec::new(),
        accelerator_models: Vec::new(),
        sites,
        network,
        regions,
        workloads,
        objective: ObjectiveWeights::default(),
        limits: Limits::default(),
    };
    set_slos(&mut inst, &mut rng);
    set_current(&mut inst, &mut rng);
    Ok(inst)
}

/// A quarter of the workloads want GPUs (1, 2, 4 or 8 a replica); the
/// rest none. Returns the GPUs wanted in all.
fn make_gpu_heavy(workloads: &mut [Workload], rng: &mut ChaCha8Rng) -> f64 {
    let mut total = 0.0;
    for w in workloads.iter_mut() {
        if rng.random_bool(0.25) {
            let gpus = match rng.random_range(0..100) {
                0..60 => 1.0,
                60..80 => 2.0,
                80..95 => 4.0,
                _ => 8.0,
            };
            w.resources.insert("gpus".to_string(), gpus);
            w.hardware = vec!["gpu".to_string()];
            total += gpus * w.replicas as f64;
        } else {
            w.resources.remove("gpus");
            w.hardware.clear();
        }
    }
    total
}

/// Anti-affinity groups of 2–4 consecutive workloads (a fifth of them),
/// affinity pairs sharing their users (one in 25), failure-domain spread on
/// a third of the other workloads with more than one replica.
fn add_rules(workloads: &mut [Workload], rng: &mut ChaCha8Rng) {
    let mut i = 0;
    let mut group = 0;
    while i < workloads.len() {
        let draw = rng.random_range(0..100);
        if draw < 20 {
            let k = rng.random_range(2..=4).min(workloads.len() - i);
            for w in &mut workloads[i..i + k] {
                w.anti_affinity_group = Some(format!("anti-{group}"));
            }
            group += 1;
            i += k;
        } else if draw < 24 && i + 1 < workloads.len() {
            let traffic = workloads[i].traffic.clone();
            for w in &mut workloads[i..i + 2] {
                w.affinity_group = Some(format!("aff-{group}"));
                w.traffic = traffic.clone();
            }
            group += 1;
            i += 2;
        } else {
            let w = &mut workloads[i];
            if w.replicas > 1 && rng.random_bool(1.0 / 3.0) {
                w.max_per_failure_domain = Some(w.replicas.div_ceil(2));
            }
            i += 1;
        }
    }
}

/// Give each workload an SLO that a handful of sites can meet. Workloads
/// are judged in chunks, so memory stays bounded for large fleets.
fn set_slos(inst: &mut Instance, rng: &mut ChaCha8Rng) {
    const CHUNK: usize = 20_000;
    // Candidates per chunk stay around five million.
    let chunk = (5_000_000 / inst.sites.len().max(1)).clamp(1, CHUNK);
    let mut unhostable = Vec::new();
    // Sites and topology once; each chunk's workloads are judged against them.
    let Ok(mut problem) = Problem::frame(inst) else {
        return;
    };
    for first in (0..inst.workloads.len()).step_by(chunk) {
        let last = (first + chunk).min(inst.workloads.len());
        problem.set_workloads(&inst.workloads[first..last]);
        for (local, w) in inst.workloads[first..last].iter_mut().enumerate() {
            if !set_slo(
                w,
                WorkloadIx::new(local),
                &problem,
                &inst.sites,
                &inst.regions,
                rng,
            ) {
                unhostable.push(first + local);
            }
        }
    }
    // A VM no site of this fleet can hold at all is left out of it.
    for wi in unhostable.into_iter().rev() {
        inst.workloads.remove(wi);
    }
}

/// One workload's SLO; false if no site could host it at all.
fn set_slo(
    w: &mut Workload,
    wi: WorkloadIx,
    problem: &Problem,
    sites: &[Site],
    regions: &[Region],
    rng: &mut ChaCha8Rng,
) -> bool {
    let percentile = if rng.random_bool(0.5) { 95.0 } else { 90.0 };
    let total: f64 = w.traffic.iter().map(|t| t.weight).sum();
    // (region index, share) of its traffic, looked up once (not per site).
    let shares: Vec<(usize, f64)> = w
        .traffic
        .iter()
        .filter_map(|t| {
            let r = regions.iter().position(|r| r.id == t.region)?;
            Some((r, t.weight / total))
        })
        .collect();
    // The RTT each site needs to serve `percentile` % of the traffic.
    // Only sites that could host it at all (hardware, size, power); the
    // problem was built before any SLO, so latency plays no part yet.
    let mut needed: Vec<f64> = (0..sites.len())
        .filter(|&si| problem.ineligible(wi, SiteIx::new(si)).is_none())
        .map(|si| {
            let mut by_rtt: Vec<(f64, f64)> = shares
                .iter()
                .map(|&(r, share)| (problem.topology.rtt_ms[r][si], share))
                .collect();
            by_rtt.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut acc = 0.0;
            for (r, share) in by_rtt {
                acc += share;
                if acc * 100.0 + 1e-9 >= percentile {
                    return r;
                }
            }
            f64::INFINITY
        })
        .collect();
    needed.sort_by(|a, b| a.total_cmp(b));
    // Enough sites for the replicas to spread over, and a few more.
    let spread = if w.max_per_site.is_some() {
        w.replicas as usize
    } else {
        1
    };
    if needed.is_empty() {
        return false;
    }
    let k = (rng.random_range(2..=6) + spread).min(needed.len()) - 1;
    let rtt_ms = ((needed[k].max(5.0) / 5.0).ceil() * 5.0).min(500.0);
    w.slo = Some(Slo { rtt_ms, percentile });
    true
}

/// A plausible placement today: most replicas on some eligible site with room.
fn set_current(inst: &mut Instance, rng: &mut ChaCha8Rng) {
    let Ok(problem) = Problem::build(inst) else {
        return;
    };
    let mut used: IndexVec<SiteIx, Vec<f64>> =
        IndexVec::from_elem_n(vec![0.0; problem.resources.len()], problem.sites.len());
    let mut kw: IndexVec<SiteIx, f64> = IndexVec::from_elem_n(0.0, problem.sites.len());
    for (w, wl) in problem.workloads.iter().zip(inst.workloads.iter_mut()) {
        let mut current: BTreeMap<String, u32> = BTreeMap::new();
        let mut cands = w.candidates.clone();
        cands.shuffle(rng);
        let mut left = w.replicas;
        for c in &cands {
            while left > 0
                && current.get(&problem.sites[c.site].id).copied().unwrap_or(0) < c.max_count
                && rng.random_bool(0.9)
                && w.demand
                    .iter()
                    .enumerate()
                    .all(|(r, d)| used[c.site][r] + d <= problem.sites[c.site].capacity[r])
                && kw[c.site] + c.dynamic_kw <= problem.sites[c.site].dynamic_kw_limit
            {
                for (r, d) in w.demand.iter().enumerate() {
                    used[c.site][r] += d;
                }
                kw[c.site] += c.dynamic_kw;
                *current.entry(problem.sites[c.site].id.clone()).or_default() += 1;
                left -= 1;
            }
        }
        wl.current = current;
    }
}

fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[f64], total: f64) -> usize {
    let mut x = rng.random_range(0.0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn slug(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
