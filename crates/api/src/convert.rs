//! Between the API's messages and the core's types. Inbound conversions
//! name the field path of anything missing or unknown; the values
//! themselves are checked by `validate`, once, for both the files and the API.

use std::collections::BTreeMap;

use super::pb;
use edgeplan_model::accelerator_models::{AcceleratorModel, CurveBasis};
use edgeplan_model::instance::Policy;
use edgeplan_model::instance::{
    AcceleratorFleet, AmbientSpec, AshraeClass, CoolingSpec, EnergySpec, Limits, Link,
    ObjectiveWeights, PowerSpec, Price, PricePoint, Region, ServerFleet, Site, Slo, Spot,
    ThermalSpec, Traffic, Workload,
};
use edgeplan_model::server_models::ServerModel;
use edgeplan_plan::execution::{Execution, PlanState, StepState, StepStatus};
use edgeplan_plan::plan::{Step, StepKind};
use edgeplan_problem::problem::Kpis;
use edgeplan_telemetry::telemetry::{ReadingRef, SensorKind};

/// A field the API message lacks or gets wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

fn required<T>(v: Option<T>, path: &str) -> Result<T, FieldError> {
    v.ok_or_else(|| FieldError {
        path: path.to_string(),
        message: "required".into(),
    })
}

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn sorted<V: Clone>(m: &std::collections::HashMap<String, V>) -> BTreeMap<String, V> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn site_from_pb(s: pb::Site, path: &str) -> Result<Site, FieldError> {
    let servers = required(s.servers, &format!("{path}.servers"))?;
    let power = required(s.power, &format!("{path}.power"))?;
    let cooling = required(s.cooling, &format!("{path}.cooling"))?;
    let thermal = required(s.thermal, &format!("{path}.thermal"))?;
    let energy = required(s.energy, &format!("{path}.energy"))?;
    let ambient = required(s.ambient, &format!("{path}.ambient"))?;
    let ashrae_class = match pb::AshraeClass::try_from(thermal.ashrae_class) {
        Ok(pb::AshraeClass::Unspecified) => None,
        Ok(pb::AshraeClass::A1) => Some(AshraeClass::A1),
        Ok(pb::AshraeClass::A2) => Some(AshraeClass::A2),
        Ok(pb::AshraeClass::A3) => Some(AshraeClass::A3),
        Ok(pb::AshraeClass::A4) => Some(AshraeClass::A4),
        Err(_) => {
            return Err(FieldError {
                path: format!("{path}.thermal.ashrae_class"),
                message: format!("unknown class {}", thermal.ashrae_class),
            })
        }
    };
    let price_per_kwh = if energy.price_series.is_empty() {
        Price::Flat(energy.price_per_kwh)
    } else {
        Price::Series(
            energy
                .price_series
                .iter()
                .map(|p| PricePoint {
                    hour: p.hour,
                    price_per_kwh: p.price_per_kwh,
                })
                .collect(),
        )
    };
    Ok(Site {
        id: s.id,
        node: opt_str(&s.node),
        name: opt_str(&s.name),
        lat: s.lat,
        lon: s.lon,
        failure_domain: opt_str(&s.failure_domain),
        capacity: sorted(&s.capacity),
        reserve_fraction: sorted(&s.reserve_fraction),
        hardware: s.hardware,
        uplink_gbps: s.uplink_gbps,
        accelerators: s.accelerators.map(|a| AcceleratorFleet {
            model: a.model,
            count: a.count,
            calibration: a.calibration.unwrap_or(1.0),
        }),
        servers: ServerFleet {
            model: servers.model,
            count: servers.count,
        },
        power: PowerSpec {
            cap_kw: power.cap_kw,
            pue_min: power.pue_min,
            pue_max: power.pue_max,
            idle_kw: power.idle_kw,
            calibration: power.calibration.unwrap_or(1.0),
        },
        cooling: CoolingSpec {
            nominal_kw: cooling.nominal_kw,
            derate_min: cooling.derate_min,
            free_cooling_limit_c: cooling.free_cooling_limit_c,
            max_ambient_c: cooling.max_ambient_c,
            humidity_derate: cooling.humidity_derate.unwrap_or(0.8),
        },
        thermal: ThermalSpec {
            ashrae_class,
            inlet_limit_c: thermal.inlet_limit_c,
            margin_c: thermal.margin_c.unwrap_or(2.0),
            supply_setpoint_c: thermal.supply_setpoint_c.unwrap_or(18.0),
            approach_c: thermal.approach_c.unwrap_or(3.0),
            recirc_c_per_kw: thermal.recirc_c_per_kw,
            racks: thermal.racks,
        },
        energy: EnergySpec {
            price_per_kwh,
            carbon_g_per_kwh: energy.carbon_g_per_kwh,
            series_start_unix_s: energy.price_series_start.map(unix_s),
        },
        ambient: AmbientSpec {
            current_c: ambient.current_c,
            forecast_c: ambient.forecast_c,
            dew_point_c: ambient.dew_point_c,
            humidity_pct: ambient.humidity_pct,
            forecast_start_unix_s: ambient.forecast_start.map(unix_s),
        },
    })
}

pub fn site_to_pb(s: &Site) -> pb::Site {
    let (price, series) = match &s.energy.price_per_kwh {
        Price::Flat(p) => (*p, Vec::new()),
        Price::Series(points) => (
            points.first().map_or(0.0, |p| p.price_per_kwh),
            points
                .iter()
                .map(|p| pb::PricePoint {
                    hour: p.hour,
                    price_per_kwh: p.price_per_kwh,
                })
                .collect(),
        ),
    };
    pb::Site {
        id: s.id.clone(),
        name: s.name.clone().unwrap_or_default(),
        node: s.node.clone().unwrap_or_default(),
        lat: s.lat,
        lon: s.lon,
        failure_domain: s.failure_domain.clone().unwrap_or_default(),
        capacity: s.capacity.clone().into_iter().collect(),
        reserve_fraction: s.reserve_fraction.clone().into_iter().collect(),
        hardware: s.hardware.clone(),
        uplink_gbps: s.uplink_gbps,
        accelerators: s.accelerators.as_ref().map(|a| pb::AcceleratorFleet {
            model: a.model.clone(),
            count: a.count,
            calibration: Some(a.calibration),
        }),
        servers: Some(pb::ServerFleet {
            model: s.servers.model.clone(),
            count: s.servers.count,
        }),
        power: Some(pb::PowerSpec {
            cap_kw: s.power.cap_kw,
            pue_min: s.power.pue_min,
            pue_max: s.power.pue_max,
            idle_kw: s.power.idle_kw,
            calibration: Some(s.power.calibration),
        }),
        cooling: Some(pb::CoolingSpec {
            nominal_kw: s.cooling.nominal_kw,
            derate_min: s.cooling.derate_min,
            free_cooling_limit_c: s.cooling.free_cooling_limit_c,
            max_ambient_c: s.cooling.max_ambient_c,
            humidity_derate: Some(s.cooling.humidity_derate),
        }),
        thermal: Some(pb::ThermalSpec {
            ashrae_class: match s.thermal.ashrae_class {
                None => pb::AshraeClass::Unspecified,
                Some(AshraeClass::A1) => pb::AshraeClass::A1,
                Some(AshraeClass::A2) => pb::AshraeClass::A2,
                Some(AshraeClass::A3) => pb::AshraeClass::A3,
                Some(AshraeClass::A4) => pb::AshraeClass::A4,
            } as i32,
            inlet_limit_c: s.thermal.inlet_limit_c,
            margin_c: Some(s.thermal.margin_c),
            supply_setpoint_c: Some(s.thermal.supply_setpoint_c),
            approach_c: Some(s.thermal.approach_c),
            recirc_c_per_kw: s.thermal.recirc_c_per_kw,
            racks: s.thermal.racks,
        }),
        energy: Some(pb::EnergySpec {
            price_per_kwh: price,
            price_series: series,
            carbon_g_per_kwh: s.energy.carbon_g_per_kwh,
            price_series_start: s.energy.series_start_unix_s.and_then(timestamp),
        }),
        ambient: Some(pb::AmbientSpec {
            current_c: s.ambient.current_c,
            forecast_c: s.ambient.forecast_c.clone(),
            dew_point_c: s.ambient.dew_point_c,
            humidity_pct: s.ambient.humidity_pct,
            forecast_start: s.ambient.forecast_start_unix_s.and_then(timestamp),
        }),
    }
}

pub fn link_from_pb(l: pb::Link) -> Link {
    Link {
        a: l.a,
        b: l.b,
        rtt_ms: l.rtt_ms,
        bandwidth_gbps: l.bandwidth_gbps,
    }
}

pub fn link_to_pb(l: &Link) -> pb::Link {
    pb::Link {
        a: l.a.clone(),
        b: l.b.clone(),
        rtt_ms: l.rtt_ms,
        bandwidth_gbps: l.bandwidth_gbps,
    }
}

pub fn region_from_pb(r: pb::Region) -> Region {
    Region {
        id: r.id,
        node: r.node,
    }
}

pub fn region_to_pb(r: &Region) -> pb::Region {
    pb::Region {
        id: r.id.clone(),
        node: r.node.clone(),
    }
}

pub fn server_model_from_pb(m: pb::ServerModel) -> ServerModel {
    ServerModel {
        name: m.name,
        spec_result_id: m.spec_result_id,
        vendor: m.vendor,
        system: m.system,
        processor: m.processor,
        cores: m.cores,
        memory_gib: m.memory_gib,
        watts: m.watts,
        source: m.source,
    }
}

pub fn accelerator_model_from_pb(m: pb::AcceleratorModel) -> AcceleratorModel {
    AcceleratorModel {
        name: m.name,
        vendor: m.vendor,
        device: m.device,
        memory_gib: m.memory_gib,
        tdp_watts: m.tdp_watts,
        watts: m.watts,
        basis: CurveBasis::Declared,
        fit: None,
        source: m.source,
    }
}

pub fn accelerator_model_to_pb(m: &AcceleratorModel) -> pb::AcceleratorModel {
    pb::AcceleratorModel {
        name: m.name.clone(),
        vendor: m.vendor.clone(),
        device: m.device.clone(),
        memory_gib: m.memory_gib,
        tdp_watts: m.tdp_watts,
        watts: m.watts.clone(),
        source: m.source.clone(),
    }
}

pub fn server_model_to_pb(m: &ServerModel) -> pb::ServerModel {
    pb::ServerModel {
        name: m.name.clone(),
        spec_result_id: m.spec_result_id.clone(),
        vendor: m.vendor.clone(),
        system: m.system.clone(),
        processor: m.processor.clone(),
        cores: m.cores,
        memory_gib: m.memory_gib,
        watts: m.watts.clone(),
        source: m.source.clone(),
    }
}

pub fn workload_from_pb(w: pb::Workload) -> Workload {
    Workload {
        id: w.id,
        replicas: w.replicas,
        resources: sorted(&w.resources),
        utilization: w.utilization.unwrap_or(0.5),
        gpu_utilization: w.gpu_utilization,
        traffic: w
            .traffic
            .into_iter()
            .map(|t| Traffic {
                region: t.region,
                weight: t.weight,
            })
            .collect(),
        // A present Slo is an SLO (an rtt_ms of 0 is refused by validation,
        // not read as "none"): no SLO is an absent message.
        slo: w.slo.map(|s| Slo {
            rtt_ms: s.rtt_ms,
            percentile: s.percentile.unwrap_or(95.0),
        }),
        max_per_site: w.max_per_site,
        max_per_failure_domain: w.max_per_failure_domain,
        anti_affinity_group: opt_str(&w.anti_affinity_group),
        affinity_group: opt_str(&w.affinity_group),
        pinned_sites: w.pinned_sites,
        forbidden_sites: w.forbidden_sites,
        hardware: w.hardware,
        priority: w.priority.unwrap_or(1),
        state_gib: w.state_gib,
        egress_gbps: w.egress_gbps,
        current: sorted(&w.current),
        disruption_allowed: w.disruption_allowed,
        spot: w.spot.map(|s| Spot {
            max_price_per_replica_hour: s.max_price_per_replica_hour,
            notice_s: s.notice_s,
        }),
    }
}

pub fn workload_to_pb(w: &Workload) -> pb::Workload {
    pb::Workload {
        id: w.id.clone(),
        replicas: w.replicas,
        resources: w.resources.clone().into_iter().collect(),
        utilization: Some(w.utilization),
        gpu_utilization: w.gpu_utilization,
        traffic: w
            .traffic
            .iter()
            .map(|t| pb::Traffic {
                region: t.region.clone(),
                weight: t.weight,
            })
            .collect(),
        slo: w.slo.as_ref().map(|s| pb::Slo {
            rtt_ms: s.rtt_ms,
            percentile: Some(s.percentile),
        }),
        max_per_site: w.max_per_site,
        max_per_failure_domain: w.max_per_failure_domain,
        anti_affinity_group: w.anti_affinity_group.clone().unwrap_or_default(),
        affinity_group: w.affinity_group.clone().unwrap_or_default(),
        pinned_sites: w.pinned_sites.clone(),
        forbidden_sites: w.forbidden_sites.clone(),
        hardware: w.hardware.clone(),
        priority: Some(w.priority),
        state_gib: w.state_gib,
        egress_gbps: w.egress_gbps,
        current: w.current.clone().into_iter().collect(),
        disruption_allowed: w.disruption_allowed,
        spot: w.spot.map(|s| pb::Spot {
            max_price_per_replica_hour: s.max_price_per_replica_hour,
            notice_s: s.notice_s,
        }),
    }
}

/// Apply a policy message's set fields over the stored policy.
pub fn policy_apply(p: &pb::Policy, into: &mut Policy) {
    let o: &mut ObjectiveWeights = &mut into.objective;
    let l: &mut Limits = &mut into.limits;
    macro_rules! set {
        ($dst:expr, $src:expr) => {
            if let Some(v) = $src {
                $dst = v;
            }
        };
    }
    set!(o.energy, p.energy);
    set!(o.carbon_per_tonne, p.carbon_per_tonne);
    set!(o.latency_per_ms, p.latency_per_ms);
    set!(o.migration_per_move, p.migration_per_move);
    set!(o.migration_per_gib, p.migration_per_gib);
    set!(o.thermal_risk, p.thermal_risk);
    set!(o.unplaced_per_priority, p.unplaced_per_priority);
    if p.max_moves.is_some() {
        l.max_moves = p.max_moves;
    }
    set!(l.horizon_hours, p.horizon_hours);
    set!(l.max_in_flight, p.max_in_flight);
    set!(l.max_in_per_site, p.max_in_per_site);
    set!(l.max_out_per_site, p.max_out_per_site);
    set!(l.migration_bandwidth_share, p.migration_bandwidth_share);
    set!(l.step_overhead_s, p.step_overhead_s);
    if let Some(name) = &p.name {
        into.name.clone_from(name);
    }
}

pub fn policy_to_pb(p: &Policy) -> pb::Policy {
    let (o, l) = (&p.objective, &p.limits);
    pb::Policy {
        energy: Some(o.energy),
        carbon_per_tonne: Some(o.carbon_per_tonne),
        latency_per_ms: Some(o.latency_per_ms),
        migration_per_move: Some(o.migration_per_move),
        migration_per_gib: Some(o.migration_per_gib),
        thermal_risk: Some(o.thermal_risk),
        unplaced_per_priority: Some(o.unplaced_per_priority),
        max_moves: l.max_moves,
        horizon_hours: Some(l.horizon_hours),
        max_in_flight: Some(l.max_in_flight),
        max_in_per_site: Some(l.max_in_per_site),
        max_out_per_site: Some(l.max_out_per_site),
        migration_bandwidth_share: Some(l.migration_bandwidth_share),
        step_overhead_s: Some(l.step_overhead_s),
        name: Some(p.name.clone()),
        expected_version: None,
    }
}

/// The core's sensor role of a Synse-shaped reading, or why it has none.
pub fn sensor_kind(device: i32, placement: i32) -> Result<SensorKind, &'static str> {
    use pb::DevicePlacement as P;
    use pb::DeviceType as D;
    let device = D::try_from(device).map_err(|_| "unknown device_type")?;
    let placement = P::try_from(placement).map_err(|_| "unknown placement")?;
    Ok(match (device, placement) {
        (D::Temperature, P::Outside) => SensorKind::Ambient,
        (D::Temperature, P::Rack) => SensorKind::Inlet,
        (D::Temperature, P::Supply) => SensorKind::Supply,
        (D::Humidity, P::Outside | P::Unspecified) => SensorKind::Humidity,
        (D::Power, P::Rack) => SensorKind::RackPower,
        (D::Power | D::Ups, P::Site | P::Unspecified) => SensorKind::SitePower,
        (D::Utilization, P::Site | P::Unspecified) => SensorKind::Utilization,
        (D::Utilization, P::Workload) => SensorKind::WorkloadUtilization,
        (D::Power, P::Accelerators) => SensorKind::GpuPower,
        (D::Utilization, P::Accelerators) => SensorKind::GpuUtilization,
        (D::Airflow, _) => SensorKind::Airflow,
        (D::Fan, _) => SensorKind::FanSpeed,
        (D::Unspecified, _) => return Err("device_type is required"),
        _ => return Err("device_type does not fit its placement"),
    })
}

/// A reading of the API as the core's (borrowed) reading; `site` and
/// `timestamp_s` fill in what the reading leaves empty (the batch's
/// defaults), and an empty unit is the kind's canonical one.
pub fn reading_ref<'a>(
    r: &'a pb::Reading,
    kind: SensorKind,
    site: &'a str,
    timestamp_s: f64,
) -> ReadingRef<'a> {
    ReadingRef {
        sensor: &r.device_id,
        site: if r.site.is_empty() { site } else { &r.site },
        rack: (!r.rack.is_empty()).then_some(r.rack.as_str()),
        kind,
        unit: if r.unit.is_empty() {
            kind.canonical_unit()
        } else {
            &r.unit
        },
        value: r.value,
        timestamp_s: if r.timestamp_s == 0.0 {
            timestamp_s
        } else {
            r.timestamp_s
        },
    }
}

pub fn kpis_to_pb(k: &Kpis) -> pb::Kpis {
    pb::Kpis {
        energy_cost_per_h: k.energy_cost_per_h,
        carbon_kg_per_h: k.carbon_kg_per_h,
        mean_latency_ms: k.mean_latency_ms,
        min_cooling_headroom_kw: k.min_cooling_headroom_kw,
        slo_violations: k.slo_violations,
        unplaced_replicas: k.unplaced_replicas,
        min_inlet_headroom_c: k.min_inlet_headroom_c,
        max_power_use: k.max_power_use,
        moves: k.moves,
        placed_replicas: k.placed_replicas,
    }
}

pub fn plan_state_to_pb(s: PlanState) -> pb::PlanState {
    match s {
        PlanState::Recommended => pb::PlanState::Recommended,
        PlanState::Approved => pb::PlanState::Approved,
        PlanState::Executing => pb::PlanState::Executing,
        PlanState::Succeeded => pb::PlanState::Succeeded,
        PlanState::Failed => pb::PlanState::Failed,
        PlanState::Cancelled => pb::PlanState::Cancelled,
        PlanState::Superseded => pb::PlanState::Superseded,
        PlanState::Cancelling => pb::PlanState::Cancelling,
    }
}

pub fn step_kind_to_pb(k: StepKind) -> pb::StepKind {
    match k {
        StepKind::Migrate => pb::StepKind::Migrate,
        StepKind::Stage => pb::StepKind::Stage,
        StepKind::Start => pb::StepKind::Start,
        StepKind::Stop => pb::StepKind::Stop,
        StepKind::Evict => pb::StepKind::Evict,
    }
}

fn step_state_to_pb(s: StepState) -> pb::StepState {
    match s {
        StepState::Pending => pb::StepState::Pending,
        StepState::Running => pb::StepState::Running,
        StepState::Succeeded => pb::StepState::Succeeded,
        StepState::Failed => pb::StepState::Failed,
        StepState::Skipped => pb::StepState::Skipped,
    }
}

pub fn summary_to_pb(e: &Execution) -> pb::PlanSummary {
    pb::PlanSummary {
        plan_id: e.id,
        state: plan_state_to_pb(e.state) as i32,
        steps: e.steps.len() as u32,
        succeeded: e.count(StepState::Succeeded) as u32,
        failed: e.count(StepState::Failed) as u32,
        makespan_s: e.plan.makespan_s,
        reason: e.reason.clone(),
        inventory_version: e.inventory_version,
        revision: e.revision,
        created_at: timestamp(e.created_unix_s),
        updated_at: timestamp(e.updated_unix_s),
    }
}

/// A solve status's wire name (`gap_limit`; what-if's `gaplimit`) as the enum.
pub fn solve_status_to_pb(name: &str) -> pb::SolveStatus {
    match name.replace('_', "").as_str() {
        "optimal" => pb::SolveStatus::Optimal,
        "gaplimit" => pb::SolveStatus::GapLimit,
        "timelimit" => pb::SolveStatus::TimeLimit,
        "worklimit" => pb::SolveStatus::WorkLimit,
        "replanned" => pb::SolveStatus::Replanned,
        "replayed" => pb::SolveStatus::Replayed,
        _ => pb::SolveStatus::Unspecified,
    }
}

/// A Timestamp as Unix seconds.
pub fn unix_s(t: prost_types::Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

/// Unix seconds as a Timestamp; unset for 0 (not yet, or not recorded).
pub fn timestamp(unix_s: f64) -> Option<prost_types::Timestamp> {
    (unix_s > 0.0 && unix_s.is_finite()).then(|| prost_types::Timestamp {
        seconds: unix_s.floor() as i64,
        nanos: ((unix_s - unix_s.floor()) * 1e9).min(999_999_999.0) as i32,
    })
}

pub fn step_to_pb(e: &Execution, step: &Step, status: &StepStatus) -> pb::StepView {
    pb::StepView {
        step_id: step.id as u64,
        workload: step.workload.clone(),
        kind: step_kind_to_pb(step.kind) as i32,
        from_site: step.from.clone().unwrap_or_default(),
        to_site: step.to.clone().unwrap_or_default(),
        wave: step.wave as u32,
        depends_on: step.depends_on.iter().map(|&d| d as u64).collect(),
        state_gib: step.state_gib,
        expected_duration_s: step.duration_s,
        state: step_state_to_pb(status.state) as i32,
        attempts: status.attempts,
        message: status.message.clone(),
        idempotency_key: e.idempotency_key(step.id),
        started_at: timestamp(status.started_unix_s),
        ended_at: timestamp(status.ended_unix_s),
        notice_s: step.notice_s,
    }
}

pub fn plan_to_pb(e: &Execution) -> pb::PlanView {
    pb::PlanView {
        summary: Some(summary_to_pb(e)),
        steps: e
            .plan
            .steps
            .iter()
            .zip(&e.steps)
            .map(|(s, st)| step_to_pb(e, s, st))
            .collect(),
        kpis_before: Some(kpis_to_pb(&e.plan.kpis_before)),
        kpis_after: Some(kpis_to_pb(&e.plan.kpis_after)),
        blocked: e
            .plan
            .blocked
            .iter()
            .map(|b| format!("{}: {}", b.workload, b.reason))
            .collect(),
        error: e.error.clone(),
        plan_json: serde_json::to_string(&e.plan).unwrap_or_default(),
    }
}
