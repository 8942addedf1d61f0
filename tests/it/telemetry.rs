//! Telemetry to effective capacity: sanity rejections, fitted models against
//! a known truth, fallbacks, forecasts on real weather, and a heat wave that
//! moves load.

use edgeplan::effective::{effective_instance, fit_line, EffectiveOptions, Source};
use edgeplan::forecast::{backtest_mae, HoltWinters};
use edgeplan::telemetry::{Reading, Rejection, SensorKind, TelemetryState};

use crate::common::*;

fn reading(
    sensor: &str,
    site: &str,
    rack: Option<&str>,
    kind: SensorKind,
    unit: &str,
    value: f64,
    t: f64,
) -> Reading {
    Reading {
        sensor: sensor.into(),
        site: site.into(),
        rack: rack.map(Into::into),
        kind,
        unit: unit.into(),
        value,
        timestamp_s: t,
    }
}

fn known(s: &str) -> bool {
    s == "a" || s == "b"
}

#[test]
fn every_rejection_class_is_counted() {
    let mut t = TelemetryState::default();
    use SensorKind::*;
    let ok = reading("amb", "a", None, Ambient, "C", 20.0, 1000.0);
    assert_eq!(t.ingest(&ok, known), Ok(()));
    let cases = [
        (
            reading("x", "a", None, Ambient, "C", f64::NAN, 1.0),
            Rejection::NotFinite,
        ),
        (
            reading("x", "mars", None, Ambient, "C", 20.0, 1.0),
            Rejection::UnknownSite,
        ),
        (
            reading("x", "a", None, Ambient, "kelvin", 290.0, 1.0),
            Rejection::UnknownUnit,
        ),
        (
            reading("x", "a", None, Inlet, "C", 25.0, 1.0),
            Rejection::MissingRack,
        ),
        (
            reading("x", "a", Some("r1"), Inlet, "C", 300.0, 1.0),
            Rejection::OutOfRange,
        ),
        (
            reading("x", "a", None, SitePower, "kW", -5.0, 1.0),
            Rejection::OutOfRange,
        ),
        (
            reading("amb", "a", None, Ambient, "C", 20.5, 1000.0),
            Rejection::Duplicate,
        ),
        (
            reading("amb", "a", None, Ambient, "C", 20.5, 900.0),
            Rejection::OutOfOrder,
        ),
        (
            reading("amb", "a", None, Ambient, "C", 45.0, 1010.0),
            Rejection::ImpossibleJump,
        ),
    ];
    for (r, why) in &cases {
        assert_eq!(t.ingest(r, known), Err(*why), "{r:?}");
    }
    assert_eq!(t.accepted, 1);
    assert_eq!(t.rejected[&Rejection::OutOfRange], 2);
    assert_eq!(t.rejected.values().sum::<u64>(), cases.len() as u64);
    // Rejected readings changed nothing.
    assert_eq!(t.sensors["amb"].last, 20.0);
    // °F is converted.
    assert_eq!(
        t.ingest(
            &reading("amb", "a", None, Ambient, "F", 69.8, 1600.0),
            known
        ),
        Ok(())
    );
    assert!((t.sensors["amb"].last - 21.0).abs() < 1e-9);
}

/// Within `late_window_s`, an older reading is counted (and in the hourly
/// series) but moves neither the last value nor the EWMA; beyond it, it is
/// out of order as before, and an exact repeat of the last is a duplicate.
#[test]
fn late_readings_within_the_window_are_counted_without_moving_the_latest() {
    use SensorKind::*;
    let mut t = TelemetryState::default();
    t.limits.late_window_s = 120.0;
    let at = |v: f64, ts: f64| reading("amb", "a", None, Ambient, "C", v, ts);
    assert_eq!(t.ingest(&at(20.0, 1000.0), known), Ok(()));
    assert_eq!(t.ingest(&at(20.5, 1010.0), known), Ok(()));
    let ewma = t.sensors["amb"].ewma;
    // 60 s late: taken, counted, latest unchanged (even a value that would
    // be an impossible jump from the latest is not compared with it).
    assert_eq!(t.ingest(&at(20.2, 950.0), known), Ok(()));
    assert_eq!(t.late, 1);
    assert_eq!(t.accepted, 3);
    assert_eq!(t.sensors["amb"].count, 3);
    assert_eq!(t.sensors["amb"].last, 20.5);
    assert_eq!(t.sensors["amb"].last_s, 1010.0);
    assert_eq!(t.sensors["amb"].ewma, ewma);
    // Beyond the window, and an exact repeat of the latest: refused.
    assert_eq!(
        t.ingest(&at(20.0, 880.0), known),
        Err(Rejection::OutOfOrder)
    );
    assert_eq!(
        t.ingest(&at(20.5, 1010.0), known),
        Err(Rejection::Duplicate)
    );
    assert_eq!(t.sensors["amb"].count, 3);
    // With no window (the default), late is out of order.
    let mut strict = TelemetryState::default();
    strict.ingest(&at(20.0, 1000.0), known).unwrap();
    assert_eq!(
        strict.ingest(&at(20.0, 990.0), known),
        Err(Rejection::OutOfOrder)
    );
}

/// Rack telemetry from a known truth: inlet = supply + 0.5 + 0.8 · rack kW + noise.
fn thermal_truth(t: &mut TelemetryState, samples: usize) {
    let mut x: u64 = 12345;
    let mut noise = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.6
    };
    for k in 0..samples {
        let ts = 10_000.0 + 60.0 * k as f64;
        let kw = 2.0 + 6.0 * ((k * 7919) % 100) as f64 / 100.0;
        let supply = 20.0 + (k % 5) as f64 * 0.1;
        t.ingest(
            &reading("sup", "a", None, SensorKind::Supply, "C", supply, ts),
            known,
        )
        .unwrap();
        t.ingest(
            &reading("pw1", "a", Some("r1"), SensorKind::RackPower, "kW", kw, ts),
            known,
        )
        .unwrap();
        let inlet = supply + 0.5 + 0.8 * kw + noise();
        t.ingest(
            &reading("in1", "a", Some("r1"), SensorKind::Inlet, "C", inlet, ts),
            known,
        )
        .unwrap();
    }
}

fn two_sites() -> edgeplan::instance::Instance {
    let mut a = site("a", 100.0, 0.1);
    a.thermal.recirc_c_per_kw = 1.5;
    instance(
        vec![a, site("b", 100.0, 0.2)],
        vec![workload("w", 4, 10.0)],
        &[("a", "b", 5.0)],
    )
}

#[test]
fn thermal_fit_recovers_the_truth_within_five_percent() {
    let mut t = TelemetryState::default();
    thermal_truth(&mut t, 400);
    let pairs: Vec<(f64, f64)> = t
        .thermal_pairs
        .values()
        .flat_map(|racks| racks.values())
        .flatten()
        .copied()
        .collect();
    let fit = fit_line(pairs).unwrap();
    assert!((fit.slope - 0.8).abs() / 0.8 < 0.05, "{fit:?}");
    assert!((fit.intercept - 0.5).abs() < 0.25, "{fit:?}");
    assert!(fit.r2 > 0.9, "{fit:?}");
    let (eff, rep) = effective_instance(
        &two_sites(),
        &t,
        10_000.0 + 60.0 * 400.0,
        &EffectiveOptions::default(),
    );
    assert_eq!(rep.sites[0].recirc_source, Source::Telemetry);
    assert!((eff.sites[0].thermal.recirc_c_per_kw - 0.8).abs() / 0.8 < 0.05);
    assert!(
        eff.sites[0].thermal.margin_c > 2.0,
        "the offset eats into the margin"
    );
}

#[test]
fn too_little_data_keeps_the_declared_model_and_says_so() {
    let mut t = TelemetryState::default();
    thermal_truth(&mut t, 10);
    let (eff, rep) = effective_instance(
        &two_sites(),
        &t,
        10_000.0 + 600.0,
        &EffectiveOptions::default(),
    );
    assert_eq!(rep.sites[0].recirc_source, Source::Declared);
    assert_eq!(eff.sites[0].thermal.recirc_c_per_kw, 1.5);
    assert!(
        rep.sites[0]
            .notes
            .iter()
            .any(|n| n.contains("declared coefficients (only")),
        "{:?}",
        rep.sites[0].notes
    );
}

#[test]
fn power_calibration_from_measured_site_power() {
    // The toy server draws 1 + u kW; the site measures 20 % more.
    let mut t = TelemetryState::default();
    for k in 0..60 {
        let ts = 1000.0 + 60.0 * k as f64;
        let u = 0.2 + 0.6 * (k % 10) as f64 / 10.0;
        t.ingest(
            &reading(
                "util",
                "a",
                None,
                SensorKind::Utilization,
                "%",
                u * 100.0,
                ts,
            ),
            known,
        )
        .unwrap();
        t.ingest(
            &reading(
                "pdu",
                "a",
                None,
                SensorKind::SitePower,
                "W",
                1.2 * (1000.0 + 1000.0 * u),
                ts,
            ),
            known,
        )
        .unwrap();
    }
    let (eff, rep) = effective_instance(
        &two_sites(),
        &t,
        1000.0 + 3600.0,
        &EffectiveOptions::default(),
    );
    assert_eq!(rep.sites[0].calibration_source, Source::Telemetry);
    assert!(
        (eff.sites[0].power.calibration - 1.2).abs() < 0.01,
        "{}",
        eff.sites[0].power.calibration
    );
}

#[test]
fn a_stale_ambient_sensor_makes_the_site_conservative() {
    let mut t = TelemetryState::default();
    t.ingest(
        &reading("amb", "a", None, SensorKind::Ambient, "C", 22.0, 1000.0),
        known,
    )
    .unwrap();
    let base = two_sites();
    let (fresh, _) = effective_instance(&base, &t, 1100.0, &EffectiveOptions::default());
    let (stale, rep) = effective_instance(&base, &t, 1000.0 + 3600.0, &EffectiveOptions::default());
    assert_eq!(rep.sites[0].ambient_source, Source::Conservative);
    assert_eq!(rep.sites[0].stale_sensors, vec!["amb".to_string()]);
    assert!(stale.sites[0].ambient.current_c >= 22.0 + 3.0);
    assert!(stale.sites[0].ambient.current_c > fresh.sites[0].ambient.current_c);
    assert!(rep.sites[0].it_limit_kw <= rep.sites[0].it_limit_kw_declared);
}

fn series(text: &str, column: usize) -> Vec<f64> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(column)?.parse().ok())
        .collect()
}

#[test]
fn six_hour_forecast_beats_persistence_on_real_weather() {
    let greensboro = series(include_str!("../../data/weather_greensboro_hourly.csv"), 1);
    let seattle = series(
        include_str!("../../data/weather_seattle_2010_hourly.csv"),
        1,
    );
    for (name, s) in [("Greensboro TMY3", greensboro), ("Seattle 2010", seattle)] {
        assert!(s.len() > 8000);
        let (hw, last) = backtest_mae(&HoltWinters::default(), &s, 6).unwrap();
        eprintln!("{name}: 6 h ahead MAE Holt-Winters {hw:.2} °C, persistence {last:.2} °C");
        assert!(hw < last, "{name}: {hw} vs {last}");
    }
}

#[test]
fn a_heat_wave_lowers_capacity_and_moves_load_away() {
    // Site a is cheaper; its cooling (4 kW nominal, half left at 40 °C, free
    // cooling to 20 °C) holds all four 1 kW replicas at the declared 15 °C.
    let mut inst = two_sites();
    inst.sites[0].thermal.recirc_c_per_kw = 0.0;
    inst.sites[0].cooling.nominal_kw = 4.0;
    inst.sites[0].cooling.derate_min = 0.5;
    inst.workloads[0].current.insert("a".into(), 4);
    let (_, solved, placement, _) = solve_and_verify(&inst);
    assert_eq!(placement.assignments["w"]["a"], 4, "{:?}", solved.x);

    // Three days of a building heat wave at a: 28 ± 8 °C, rising.
    let mut t = TelemetryState::default();
    for h in 0..72 {
        let temp =
            28.0 + 8.0 * (std::f64::consts::TAU * (h as f64 - 9.0) / 24.0).sin() + h as f64 / 12.0;
        t.ingest(
            &reading(
                "amb",
                "a",
                None,
                SensorKind::Ambient,
                "C",
                temp,
                3600.0 * h as f64,
            ),
            known,
        )
        .unwrap();
    }
    let (hot, rep) = effective_instance(&inst, &t, 3600.0 * 71.0, &EffectiveOptions::default());
    assert_eq!(rep.sites[0].ambient_source, Source::Telemetry);
    assert!(rep.sites[0].ambient_c > 35.0, "{}", rep.sites[0].ambient_c);
    assert!(
        rep.sites[0].it_limit_kw < rep.sites[0].it_limit_kw_declared - 1.0,
        "{:?}",
        rep.sites[0]
    );
    let (problem, solved, placement, _) = solve_and_verify(&hot);
    let on_a = placement.assignments["w"].get("a").copied().unwrap_or(0);
    assert!((1..4).contains(&on_a), "{placement:?}");
    assert_eq!(
        placement.replicas_of("w"),
        4,
        "nothing is dropped: b takes the rest"
    );
    assert_eq!(problem.kpis(&solved.x).slo_violations, 0);
}

#[test]
fn windows_are_bounded_and_configurable() {
    let mut t = TelemetryState::new(edgeplan::telemetry::SanityLimits {
        window_samples: 10,
        ..Default::default()
    });
    for k in 0..1000 {
        let ts = 60.0 * k as f64;
        t.ingest(
            &reading(
                "in1",
                "a",
                Some("r1"),
                SensorKind::Inlet,
                "C",
                20.0 + (k % 20) as f64 * 0.5,
                ts,
            ),
            known,
        )
        .unwrap();
        t.ingest(
            &reading("pw1", "a", Some("r1"), SensorKind::RackPower, "kW", 3.0, ts),
            known,
        )
        .unwrap();
    }
    let s = &t.sensors["in1"];
    assert_eq!(s.count, 1000);
    // The last ten samples are k = 990..999: 20 + (10..19) · 0.5 = 25.0 … 29.5.
    assert_eq!(s.quantile(0.0), 25.0);
    assert_eq!(s.quantile(1.0), 29.5);
    let summary = t.site_summary("a", 60.0 * 999.0);
    assert_eq!(summary.rack_power_kw, Some(3.0));
    assert!(summary.max_inlet_p95_c.unwrap() >= 29.0);
    assert_eq!(
        t.site_summary("a", 60.0 * 999.0 + 3600.0).max_inlet_p95_c,
        None,
        "stale sensors are not reported as fresh"
    );
}

/// Found by the `telemetry_batch` fuzz target: an ambient reading centuries
/// after the last one made the hourly series fill every hour between (a
/// huge allocation). Only the hours kept are filled now.
#[test]
fn a_timestamp_far_ahead_fills_no_more_hours_than_are_kept() {
    let mut t = TelemetryState::default();
    let ambient = |v: f64, at: f64| reading("a/out", "a", None, SensorKind::Ambient, "C", v, at);
    t.ingest(&ambient(20.0, 3_600.0), known).unwrap();
    t.ingest(&ambient(21.0, 7_200.0), known).unwrap();
    let far = 3_600.0 * 1e12;
    let _ = t.ingest(&ambient(22.0, far), known);
    let _ = t.ingest(&ambient(23.0, far + 3_600.0), known);
    for series in t.ambient_hourly.values() {
        assert!(series.points.len() <= edgeplan::telemetry::HOURS_KEPT);
        let hours: Vec<i64> = series.points.iter().map(|p| p.0).collect();
        assert!(
            hours.windows(2).all(|w| w[1] == w[0] + 1),
            "consecutive hours"
        );
    }
}

/// A reading dated past the server's clock by more than the allowed skew
/// is refused (counted, with its reason): before, it was taken, and every
/// real reading of its sensor after it was "older than the sensor's last
/// reading" while the sensor counted as fresh for as long as it was ahead.
#[test]
fn future_reading_beyond_the_skew_is_refused_and_silences_nothing() {
    let now = 1_700_000_000.0;
    let mut t = TelemetryState::default();
    assert_eq!(t.limits.max_future_skew_s, 300.0);
    let amb = |v: f64, at: f64| reading("amb", "a", None, SensorKind::Ambient, "C", v, at);
    let century = 100.0 * 365.25 * 86_400.0;
    for (label, at) in [
        ("a century ahead", now + century),
        ("milliseconds sent as seconds", now * 1000.0),
        ("one day ahead", now + 86_400.0),
        ("just past the skew", now + 301.0),
    ] {
        assert_eq!(
            t.ingest_at(&amb(20.0, at), known, now),
            Err(Rejection::FromTheFuture),
            "{label}"
        );
    }
    assert_eq!(t.rejected[&Rejection::FromTheFuture], 4);
    assert!(
        !t.sensors.contains_key("amb"),
        "a refused reading made a sensor"
    );
    // Within the skew (a gateway's clock a little fast): taken.
    assert_eq!(t.ingest_at(&amb(20.0, now + 60.0), known, now), Ok(()));
    // The sensor's real readings go on being taken.
    assert_eq!(
        t.ingest_at(&amb(20.1, now + 120.0), known, now + 120.0),
        Ok(())
    );
    assert_eq!(t.sensors["amb"].last, 20.1);
    // And it is stale once it goes silent, not a century later.
    assert_eq!(t.stale_sensors("a", now + 3_600.0).len(), 1);
    // The skew is a setting; without a clock (replays of past data) the
    // rule is off.
    let mut strict = TelemetryState::new(edgeplan::telemetry::SanityLimits {
        max_future_skew_s: 0.0,
        ..Default::default()
    });
    assert_eq!(
        strict.ingest_at(&amb(20.0, now + 1.0), known, now),
        Err(Rejection::FromTheFuture)
    );
    assert_eq!(strict.ingest(&amb(20.0, now + century), known), Ok(()));
}

/// New sensor ids beyond the per-site cap are refused with their reason;
/// known sensors and other sites go on.
#[test]
fn sensors_beyond_the_per_site_cap_are_refused_with_a_reason() {
    let mut t = TelemetryState::new(edgeplan::telemetry::SanityLimits {
        max_sensors_per_site: 3,
        ..Default::default()
    });
    let probe = |site: &str, i: usize, at: f64| {
        reading(
            &format!("{site}/probe-{i}"),
            site,
            None,
            SensorKind::Ambient,
            "C",
            20.0,
            at,
        )
    };
    for i in 0..5 {
        let r = t.ingest(&probe("a", i, 100.0), known);
        if i < 3 {
            assert_eq!(r, Ok(()), "probe {i}");
        } else {
            assert_eq!(r, Err(Rejection::TooManySensors), "probe {i}");
        }
    }
    assert_eq!(t.rejected[&Rejection::TooManySensors], 2);
    assert_eq!(t.sensors.len(), 3);
    assert_eq!(t.ingest(&probe("a", 0, 200.0), known), Ok(()));
    assert_eq!(t.ingest(&probe("b", 9, 200.0), known), Ok(()));
    assert!(Rejection::TooManySensors.to_string().contains("sensors"));
    assert_eq!(
        TelemetryState::default().limits.max_sensors_per_site,
        10_000
    );
}
