//! `edgeplan replay`: a year of real hours, policies side by side. A
//! two-site, two-day replay worked out by hand (the right move, and a heat
//! spike no forecast saw); what each rule really does; breaches judged on
//! the real weather; the same replay twice gives the same tables.

use std::collections::BTreeMap;

use edgeplan::instance::{Instance, Limits};
use edgeplan::replay::{
    replay, Demand, PolicyHour, PolicyKind, Replay, ReplayOptions, Year, YearFiles,
};

use super::common::*;

/// A year of `hours` hours at the given zones, each series a function of
/// (zone, hour).
struct Series<'a> {
    zones: &'a [&'a str],
    hours: usize,
    price_per_kwh: &'a dyn Fn(usize, usize) -> f64,
    carbon_g_per_kwh: &'a dyn Fn(usize, usize) -> f64,
    temperature_c: &'a dyn Fn(usize, usize) -> f64,
}

fn year(s: &Series) -> Year {
    let wide = |f: &dyn Fn(usize, usize) -> f64, scale: f64| {
        let mut text = format!("utc_hour,{}\n", s.zones.join(","));
        for h in 0..s.hours {
            let values: Vec<String> = (0..s.zones.len())
                .map(|z| format!("{}", f(z, h) * scale))
                .collect();
            text += &format!(
                "2023-01-{:02}T{:02}:00:00Z,{}\n",
                h / 24 + 1,
                h % 24,
                values.join(",")
            );
        }
        text
    };
    let mut zones = "zone,city,lat,lon\n".to_string();
    for (i, z) in s.zones.iter().enumerate() {
        zones += &format!("{z},{z},{},0\n", 10.0 * i as f64);
    }
    let price = wide(s.price_per_kwh, 1000.0);
    let carbon = wide(s.carbon_g_per_kwh, 1.0);
    let temperature = wide(s.temperature_c, 1.0);
    let humidity = wide(&|_, _| 50.0, 1.0);
    Year::parse(&YearFiles {
        zones: &zones,
        price_usd_per_mwh: &price,
        carbon_g_per_kwh: &carbon,
        temperature_c: &temperature,
        humidity_pct: &humidity,
    })
    .expect("year")
}

fn zones(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(s, z)| (s.to_string(), z.to_string()))
        .collect()
}

fn hour(r: &Replay, policy: PolicyKind, t: usize) -> &PolicyHour {
    r.policy_hours
        .iter()
        .find(|h| h.policy == policy.name() && h.hour == t)
        .expect("hour")
}

/// Two sites, one replica of 0.5 kW. Day 1 (hours 48–71) A is cheap, day
/// 2 (72–95) B is. Both draw PUE 1.2 at 20 °C and 2.0 at 45 °C against a
/// 0.8 kW cap: the replica fits up to PUE 1.6. At hour 84, and only then,
/// B is 45 °C — after two days of a steady 20 °C no forecast sees it.
fn two_sites() -> (Instance, Year) {
    let mut sites = Vec::new();
    for id in ["A", "B"] {
        let mut s = site(id, 10.0, 0.1);
        s.power.cap_kw = 0.8;
        s.power.pue_min = 1.2;
        s.power.pue_max = 2.0;
        s.cooling.free_cooling_limit_c = 25.0;
        s.cooling.max_ambient_c = 45.0;
        sites.push(s);
    }
    let mut w = workload("w", 1, 5.0);
    w.current = BTreeMap::from([("A".to_string(), 1)]);
    let mut inst = instance(sites, vec![w], &[("A", "B", 5.0)]);
    inst.limits = Limits {
        horizon_hours: 1,
        ..Limits::default()
    };
    inst.objective.carbon_per_tonne = 0.0;
    let y = year(&Series {
        zones: &["ZA", "ZB"],
        hours: 96,
        price_per_kwh: &|z, h| match (z, h < 72) {
            (0, true) | (1, false) => 0.10,
            _ => 0.30,
        },
        carbon_g_per_kwh: &|z, _| if z == 0 { 100.0 } else { 300.0 },
        temperature_c: &|z, h| if z == 1 && h == 84 { 45.0 } else { 20.0 },
    });
    (inst, y)
}

fn two_day_options(policies: &[PolicyKind]) -> ReplayOptions {
    ReplayOptions {
        from_hour: 48,
        hours: 48,
        policies: policies.to_vec(),
        zones: zones(&[("A", "ZA"), ("B", "ZB")]),
        site_hours: true,
        // Worked by hand at constant demand.
        demand: Demand::Flat,
        ..ReplayOptions::default()
    }
}

#[test]
fn two_sites_two_days_worked_by_hand() {
    let (fleet, y) = two_sites();
    let policies = [
        PolicyKind::Edgeplan,
        PolicyKind::EdgeplanForesight,
        PolicyKind::Static,
        PolicyKind::LowestPrice,
    ];
    let r = replay(&fleet, &y, &two_day_options(&policies), &|_| {}).expect("replay");
    let total = |p: PolicyKind| r.totals_of(p).expect("totals").clone();

    // static: on A all along, 0.6 kW facility: 24 h × 0.6 × 0.10 + 24 h ×
    // 0.6 × 0.30; 48 h × 0.6 kWh × 100 g.
    let s = total(PolicyKind::Static);
    assert_close(s.energy_cost, 5.76, "static energy");
    assert_close(s.carbon_kg, 2.88, "static carbon");
    assert_eq!((s.moves, s.power_breach_site_hours), (0, 0));

    // lowest-price: to B when day 2's price is published for hour 72, and
    // stays through the heat (rules do not model it): hour 84 draws 1.0 kW
    // against the 0.8 kW cap. 24 × 0.06 + 23 × 0.06 + 1 × 0.10.
    let lp = total(PolicyKind::LowestPrice);
    assert_eq!(lp.moves, 1);
    assert_eq!(hour(&r, PolicyKind::LowestPrice, 72).moves, 1);
    assert_close(lp.energy_cost, 2.92, "lowest-price energy");
    assert_eq!(lp.power_breach_site_hours, 1);
    assert_eq!(hour(&r, PolicyKind::LowestPrice, 84).power_breaches, 1);
    assert_close(lp.worst_power_excess_kw, 0.2, "lowest-price excess");

    // edgeplan on forecasts: the same move at 72; the spike comes as a
    // surprise (a breach at 84, judged on the real 45 °C), and the next
    // hour's decision sees the 45 °C reading and leaves B for an hour
    // that turned out 20 °C again — the price of forecasting.
    let e = total(PolicyKind::Edgeplan);
    assert_eq!(hour(&r, PolicyKind::Edgeplan, 72).moves, 1);
    assert_eq!(hour(&r, PolicyKind::Edgeplan, 84).power_breaches, 1);
    assert_eq!(e.power_breach_site_hours, 1);
    assert_eq!(hour(&r, PolicyKind::Edgeplan, 85).moves, 1);
    assert!(e.energy_cost < s.energy_cost);
    assert_eq!(e.unplaced_replica_hours, 0);

    // With foresight the spike is seen coming: on A for hours 84 and 85
    // (85 starts from the 45 °C reading), back to B at 86, no breach.
    // 24 × 0.06 + 22 × 0.06 + 2 × 0.18.
    let f = total(PolicyKind::EdgeplanForesight);
    assert_eq!(f.power_breach_site_hours, 0);
    assert_eq!(hour(&r, PolicyKind::EdgeplanForesight, 84).moves, 1);
    assert_eq!(hour(&r, PolicyKind::EdgeplanForesight, 86).moves, 1);
    assert_eq!(f.moves, 3);
    assert_close(f.energy_cost, 3.12, "foresight energy");

    // Breaches are judged on what happened: at hour 85 every decision saw a
    // 45 °C reading at B, but B was 20 °C — nobody breached, lowest-price
    // included (still on B).
    for p in policies {
        assert_eq!(hour(&r, p, 85).power_breaches, 0, "{}", p.name());
    }
    // The site table agrees: B at hour 84 under lowest-price draws 1.0 kW.
    let row = r
        .site_hours
        .iter()
        .find(|h| h.policy == "lowest-price" && h.hour == 84 && r.site_zones[h.site].0 == "B")
        .expect("row");
    assert_close(row.facility_kw, 1.0, "B at 84");
    assert_eq!(
        (r.site_zones[row.site].1.as_str(), row.ambient_c),
        ("ZB", 45.0)
    );
}

/// lowest-price picks the cheapest eligible site with room: not the
/// cheapest (forbidden to the workload), not the next (full), but the
/// third; static never moves.
#[test]
fn lowest_price_takes_the_cheapest_eligible_site_with_room_and_static_never_moves() {
    let ids = ["C1", "C2", "C3", "C4"];
    let sites = ids.iter().map(|id| site(id, 10.0, 0.1)).collect::<Vec<_>>();
    let mut w = workload("w", 2, 4.0);
    w.forbidden_sites = vec!["C1".into()];
    w.current = BTreeMap::from([("C4".to_string(), 2)]);
    let mut blocker = workload("blocker", 1, 10.0);
    blocker.pinned_sites = vec!["C2".into()];
    blocker.current = BTreeMap::from([("C2".to_string(), 1)]);
    let fleet = instance(sites, vec![w, blocker], &[]);
    let y = year(&Series {
        zones: &ids,
        hours: 60,
        price_per_kwh: &|z, _| 0.01 * (z + 1) as f64,
        carbon_g_per_kwh: &|z, _| 100.0 * (4 - z) as f64,
        temperature_c: &|_, _| 15.0,
    });
    let opts = ReplayOptions {
        from_hour: 48,
        hours: 3,
        policies: vec![
            PolicyKind::Static,
            PolicyKind::LowestPrice,
            PolicyKind::LowestCarbon,
        ],
        zones: zones(&[("C1", "C1"), ("C2", "C2"), ("C3", "C3"), ("C4", "C4")]),
        demand: Demand::Flat,
        ..ReplayOptions::default()
    };
    let r = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    // Energy: w's 2 × 0.4 kW and blocker's 1 kW; lowest-price moves both of
    // w's replicas to C3 in the first hour, then never again.
    let lp = r.totals_of(PolicyKind::LowestPrice).expect("lp");
    assert_eq!(lp.moves, 2);
    assert_eq!(hour(&r, PolicyKind::LowestPrice, 48).moves, 2);
    assert_close(
        lp.energy_cost,
        3.0 * (0.8 * 0.03 + 1.0 * 0.02),
        "lowest-price",
    );
    // lowest-carbon: C4 is the cleanest, so w stays.
    assert_eq!(r.totals_of(PolicyKind::LowestCarbon).expect("lc").moves, 0);
    let st = r.totals_of(PolicyKind::Static).expect("static");
    assert_eq!(st.moves, 0);
    assert_close(st.energy_cost, 3.0 * (0.8 * 0.04 + 1.0 * 0.02), "static");
}

#[test]
fn a_replay_twice_gives_the_same_tables() {
    let fleet = gen_instance(300, 12, 3, 0.8);
    let y = Year::shipped_2023().expect("year");
    let opts = ReplayOptions {
        from_hour: y.hour_of("2023-07-10").expect("hour"),
        hours: 6,
        policies: PolicyKind::ALL.to_vec(),
        site_hours: true,
        ..ReplayOptions::default()
    };
    let a = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    let b = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    assert_eq!(a, b);
    assert_eq!(a.totals.len(), PolicyKind::ALL.len());
    assert_eq!(a.policy_hours.len(), 6 * PolicyKind::ALL.len());
    assert_eq!(a.site_hours.len(), 6 * 12 * PolicyKind::ALL.len());
    // Every policy keeps what the rules allow: none places a replica where
    // its SLO fails.
    for t in &a.totals {
        assert_eq!(t.slo_violating_replica_hours, 0, "{}", t.policy);
    }
    // Every move went through the migration planner: an hour with moves
    // has waves and takes time.
    let moving: Vec<_> = a.policy_hours.iter().filter(|h| h.moves > 0).collect();
    assert!(!moving.is_empty());
    for h in moving {
        assert!(h.waves >= 1 && h.migration_s > 0.0, "{h:?}");
    }
}

#[test]
fn a_replay_refuses_what_it_cannot_do_and_names_it() {
    let (fleet, y) = two_sites();
    let bad = |o: ReplayOptions| {
        replay(&fleet, &y, &o, &|_| {})
            .expect_err("refused")
            .to_string()
    };
    let too_early = bad(ReplayOptions {
        from_hour: 10,
        ..two_day_options(&[PolicyKind::Static])
    });
    assert!(too_early.contains("48 hours of history"), "{too_early}");
    let too_long = bad(ReplayOptions {
        hours: 100,
        ..two_day_options(&[PolicyKind::Static])
    });
    assert!(too_long.contains("year's end"), "{too_long}");
    // A policy named twice, not side by side, runs once.
    let twice = replay(
        &fleet,
        &y,
        &two_day_options(&[
            PolicyKind::Static,
            PolicyKind::LowestPrice,
            PolicyKind::Static,
        ]),
        &|_| {},
    )
    .expect("replay");
    let names: Vec<&str> = twice.totals.iter().map(|t| t.policy).collect();
    assert_eq!(names, ["static", "lowest-price"]);
    assert_eq!(twice.policy_hours.len(), 2 * 48);
    let amortized = bad(ReplayOptions {
        move_amortization_hours: 0.5,
        ..two_day_options(&[PolicyKind::Static])
    });
    assert!(amortized.contains("at least one hour"), "{amortized}");
    let mut opts = two_day_options(&[PolicyKind::Static]);
    opts.zones.insert("B".into(), "ZZ".into());
    let unknown = bad(opts);
    assert!(
        unknown.contains("zones.B") && unknown.contains("ZZ"),
        "{unknown}"
    );
}

#[test]
fn replay_from_the_cli_prints_the_comparison_and_writes_the_tables() {
    let dir = tempfile::tempdir().expect("tmp");
    let fleet = dir.path().join("fleet.json");
    let out = dir.path().join("replay.csv");
    let report = dir.path().join("replay.html");
    let fleet_s = fleet.to_str().expect("path");
    let gen = edgeplan(&[
        "gen",
        "--sites",
        "8",
        "--replicas",
        "120",
        "--seed",
        "2",
        "--out",
        fleet_s,
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let run = edgeplan(&[
        "replay",
        "--fleet",
        fleet_s,
        "--from",
        "2023-08-01",
        "--hours",
        "4",
        "--policies",
        "edgeplan,static,latency-only",
        "--out",
        out.to_str().expect("path"),
        "--report",
        report.to_str().expect("path"),
        "--step",
        "2h",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("latency-only") && stderr.contains("vs_lat"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(json["totals"].as_array().expect("totals").len(), 3);
    assert_eq!(json["first_hour"], "2023-08-01T00:00:00Z");
    let hours = std::fs::read_to_string(&out).expect("table");
    assert_eq!(hours.lines().count(), 1 + 4 * 3);
    let sites = std::fs::read_to_string(dir.path().join("replay-sites.csv")).expect("sites");
    assert_eq!(sites.lines().count(), 1 + 4 * 3 * 8);
    let days = std::fs::read_to_string(dir.path().join("replay-days.csv")).expect("days");
    assert_eq!(days.lines().count(), 1 + 3, "one day, three policies");
    assert!(days.lines().nth(1).expect("row").starts_with("2023-08-01,"));
    // --step 2h: decisions at hours 0 and 2 only.
    let odd_moves: u64 = hours
        .lines()
        .skip(1)
        .filter(|l| l.contains("T01:00") || l.contains("T03:00"))
        .map(|l| {
            l.split(',')
                .nth(5)
                .expect("moves")
                .parse::<u64>()
                .expect("n")
        })
        .sum();
    assert_eq!(odd_moves, 0, "{hours}");
    let page = std::fs::read_to_string(&report).expect("report");
    assert!(page.contains("<svg") && page.contains("The result"));
    let bad_step = edgeplan(&["replay", "--fleet", fleet_s, "--step", "0h"]);
    assert!(!bad_step.status.success());
    assert!(String::from_utf8_lossy(&bad_step.stderr).contains("--step"));

    let bad = edgeplan(&["replay", "--fleet", fleet_s, "--policies", "cheapest"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("cheapest") && stderr.contains("lowest-price"),
        "{stderr}"
    );
    let early = edgeplan(&["replay", "--fleet", fleet_s, "--from", "2023-01-01"]);
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("history"));
}

/// Two full sites whose workloads should swap (the heavy one to the cheap
/// site): no order of steps keeps both sites within capacity, there is no
/// third site to stage through and neither workload may be stopped, so the
/// migration planner blocks both moves. edgeplan's first solve asks for
/// the swap; it is blocked and counted, and the fleet stays where it is —
/// never half-moved, never over a limit.
#[test]
fn moves_the_planner_cannot_make_safely_are_blocked_and_counted() {
    let sites = vec![site("A", 10.0, 0.3), site("B", 10.0, 0.1)];
    let mut heavy = workload("heavy", 1, 10.0);
    heavy.current = BTreeMap::from([("A".to_string(), 1)]);
    let mut light = workload("light", 1, 10.0);
    light.utilization = 0.1;
    light.current = BTreeMap::from([("B".to_string(), 1)]);
    let mut fleet = instance(sites, vec![heavy, light], &[("A", "B", 5.0)]);
    fleet.objective = energy_only();
    fleet.limits.horizon_hours = 1;
    let y = year(&Series {
        zones: &["ZA", "ZB"],
        hours: 60,
        price_per_kwh: &|z, _| if z == 0 { 0.3 } else { 0.1 },
        carbon_g_per_kwh: &|_, _| 100.0,
        temperature_c: &|_, _| 15.0,
    });
    let opts = ReplayOptions {
        from_hour: 48,
        hours: 4,
        policies: vec![PolicyKind::Edgeplan, PolicyKind::Static],
        zones: zones(&[("A", "ZA"), ("B", "ZB")]),
        site_hours: true,
        demand: Demand::Flat,
        ..ReplayOptions::default()
    };
    let r = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    let e = r.totals_of(PolicyKind::Edgeplan).expect("edgeplan");
    let s = r.totals_of(PolicyKind::Static).expect("static");
    assert_eq!(e.moves, 0, "nothing moved");
    // The first hour's solve asks for the swap; the planner blocks both.
    assert_eq!(hour(&r, PolicyKind::Edgeplan, 48).blocked_moves, 2);
    assert!(e.blocked_moves >= 2);
    assert_close(e.energy_cost, s.energy_cost, "the fleet stayed put");
    let over = r.site_hours.iter().filter(|h| h.it_kw > 1.0 + 1e-9).count();
    assert_eq!(over, 0, "no site ever held both replicas");
}

/// `step_hours`: decisions every 24 hours, judged every hour. In the
/// two-site case, lowest-price sees B cheaper from hour 72 on, but decides
/// only at 48 and 72 — and at 72 it moves; edgeplan, deciding daily, moves
/// at 72 and stays through the heat at 84 (it cannot react), breaching.
#[test]
fn a_step_of_a_day_decides_daily_and_judges_every_hour() {
    let (fleet, y) = two_sites();
    let opts = ReplayOptions {
        step_hours: 24,
        ..two_day_options(&[PolicyKind::Edgeplan, PolicyKind::LowestPrice])
    };
    let r = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    assert_eq!(r.policy_hours.len(), 2 * 48, "every hour judged");
    for h in &r.policy_hours {
        if h.hour != 48 && h.hour != 72 {
            assert_eq!(
                h.moves, 0,
                "{} moved at {} between decisions",
                h.policy, h.hour
            );
        }
    }
    assert_eq!(hour(&r, PolicyKind::LowestPrice, 72).moves, 1);
    assert_eq!(hour(&r, PolicyKind::Edgeplan, 72).moves, 1);
    let e = r.totals_of(PolicyKind::Edgeplan).expect("edgeplan");
    assert_eq!((e.moves, e.power_breach_site_hours), (1, 1));
    let zero = replay(
        &fleet,
        &y,
        &ReplayOptions {
            step_hours: 0,
            ..two_day_options(&[PolicyKind::Static])
        },
        &|_| {},
    )
    .expect_err("refused")
    .to_string();
    assert!(zero.contains("at least one hour"), "{zero}");
}

/// The day table sums the hours: per policy, days add up to the totals,
/// and a day holds 24 hours (two days here, both whole).
#[test]
fn the_day_table_adds_up_to_the_totals() {
    let (fleet, y) = two_sites();
    let policies = [
        PolicyKind::Edgeplan,
        PolicyKind::Static,
        PolicyKind::LowestPrice,
    ];
    let r = replay(&fleet, &y, &two_day_options(&policies), &|_| {}).expect("replay");
    let days = r.days();
    assert_eq!(days.len(), 2 * policies.len());
    for t in &r.totals {
        let mine: Vec<_> = days.iter().filter(|d| d.policy == t.policy).collect();
        assert_eq!(mine.len(), 2, "{}", t.policy);
        assert!(mine.iter().all(|d| d.hours == 24));
        assert_ne!(mine[0].day, mine[1].day);
        assert_close(
            mine.iter().map(|d| d.energy_cost).sum(),
            t.energy_cost,
            t.policy,
        );
        assert_close(
            mine.iter().map(|d| d.carbon_kg).sum(),
            t.carbon_kg,
            t.policy,
        );
        assert_eq!(mine.iter().map(|d| d.moves).sum::<u64>(), t.moves);
        assert_eq!(
            mine.iter().map(|d| d.power_breach_site_hours).sum::<u64>(),
            t.power_breach_site_hours
        );
    }
    // lowest-price moved on day 2 (hour 72) and breached then.
    let lp: Vec<_> = days.iter().filter(|d| d.policy == "lowest-price").collect();
    assert_eq!((lp[0].moves, lp[1].moves), (0, 1));
    assert_eq!(lp[1].power_breach_site_hours, 1);
}

/// The report states the result in words — including that lowest-price
/// beat edgeplan on energy cost in the two-site case (it stayed through
/// the heat and breached) — and draws its charts.
#[test]
fn the_replay_report_says_where_edgeplan_did_not_win() {
    let (fleet, y) = two_sites();
    let policies = [
        PolicyKind::Edgeplan,
        PolicyKind::Static,
        PolicyKind::LowestPrice,
    ];
    let r = replay(&fleet, &y, &two_day_options(&policies), &|_| {}).expect("replay");
    let e = r.totals_of(PolicyKind::Edgeplan).expect("edgeplan").clone();
    let lp = r.totals_of(PolicyKind::LowestPrice).expect("lp").clone();
    let words = edgeplan::replay_report::verdict(&r).join("\n");
    assert!(words.contains("Against static"), "{words}");
    // A is the cleaner grid: static, never leaving it, beat edgeplan on
    // carbon; lowest-price (cheaper, through a breach) on energy cost.
    assert!(
        words.contains("Where edgeplan did not win: static beat edgeplan on carbon"),
        "{words}"
    );
    if lp.energy_cost < e.energy_cost {
        assert!(
            words.contains("lowest-price beat edgeplan on energy cost"),
            "{words}"
        );
    } else {
        assert!(!words.contains("lowest-price beat"), "{words}");
    }
    let html = edgeplan::replay_report::html("two sites", &r);
    assert!(html.contains("<svg"));
    assert!(!html.contains("chart not drawn"), "a chart failed");
    for p in policies {
        assert!(html.contains(p.name()), "{}", p.name());
    }
    // The hottest site is B (45 °C at hour 84), named with its zone.
    assert!(html.contains("B (ZB)"), "hottest site");
}

/// Policies run in parallel within an hour; on one thread the tables are
/// the same.
#[test]
fn a_replay_on_one_thread_gives_the_tables_of_many() {
    let fleet = gen_instance(200, 10, 5, 0.8);
    let y = Year::shipped_2023().expect("year");
    let opts = ReplayOptions {
        from_hour: y.hour_of("2023-08-20").expect("hour"),
        hours: 4,
        policies: PolicyKind::ALL.to_vec(),
        site_hours: true,
        ..ReplayOptions::default()
    };
    let many = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool")
        .install(|| replay(&fleet, &y, &opts, &|_| {}).expect("replay"));
    assert_eq!(many, one);
}

/// Diurnal demand: each workload's utilisation follows the Azure mean day
/// at its users' local hour. Two sites, one at longitude 2° (UTC+0), one
/// at 135° (UTC+9), each with a workload of 5 cores at half use whose
/// users are there; toy servers draw cores × use / 10 kW, PUE 1, a flat
/// 1.0 per kWh: hour t costs 0.25 × day[t] at the first and
/// 0.25 × day[t + 9] at the second. Flat demand costs 0.5 every hour.
#[test]
fn diurnal_demand_follows_the_users_local_day() {
    let mut sites = vec![site("W", 10.0, 1.0), site("E", 10.0, 1.0)];
    sites[1].lon = 135.0;
    let mut workloads = Vec::new();
    for id in ["W", "E"] {
        let mut w = workload(&format!("at-{id}"), 1, 5.0);
        w.utilization = 0.5;
        w.traffic = vec![edgeplan::instance::Traffic {
            region: format!("users-{id}"),
            weight: 1.0,
        }];
        w.pinned_sites = vec![id.into()];
        w.current = BTreeMap::from([(id.to_string(), 1)]);
        workloads.push(w);
    }
    let mut fleet = instance(sites, workloads, &[("W", "E", 200.0)]);
    fleet.objective = energy_only();
    let y = year(&Series {
        zones: &["ZW", "ZE"],
        hours: 96,
        price_per_kwh: &|_, _| 1.0,
        carbon_g_per_kwh: &|_, _| 0.0,
        temperature_c: &|_, _| 15.0,
    });
    let day = edgeplan::gen::azure_mean_day();
    let run = |demand: Demand| {
        let opts = ReplayOptions {
            from_hour: 48,
            hours: 24,
            policies: vec![PolicyKind::Static],
            zones: zones(&[("W", "ZW"), ("E", "ZE")]),
            demand,
            ..ReplayOptions::default()
        };
        replay(&fleet, &y, &opts, &|_| {}).expect("replay")
    };
    let diurnal = run(Demand::Diurnal);
    for t in 48..72 {
        let want = 0.25 * day[t % 24] + 0.25 * day[(t + 9) % 24];
        assert_close(
            hour(&diurnal, PolicyKind::Static, t).energy_cost,
            want,
            &format!("hour {t}"),
        );
    }
    let flat = run(Demand::Flat);
    for t in 48..72 {
        assert_close(hour(&flat, PolicyKind::Static, t).energy_cost, 0.5, "flat");
    }
    // A mean of 1 over the day: the same energy in total.
    assert_close(
        diurnal.totals[0].energy_cost,
        flat.totals[0].energy_cost,
        "daily total",
    );
}

/// Unplaced replica-hours are kept by priority, per hour, per day and in
/// the totals: a priority-3 workload of two 8-core replicas pinned to a
/// 10-core site runs one replica and leaves one out every hour.
#[test]
fn unplaced_replica_hours_are_counted_by_priority() {
    let (mut fleet, y) = two_sites();
    let mut w = workload("pinned", 2, 8.0);
    w.priority = 3;
    w.pinned_sites = vec!["B".into()];
    w.current = BTreeMap::from([("B".to_string(), 1)]);
    fleet.workloads.push(w);
    let opts = ReplayOptions {
        hours: 30,
        ..two_day_options(&[PolicyKind::Static])
    };
    let r = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    for h in &r.policy_hours {
        assert_eq!(
            h.unplaced_by_priority,
            BTreeMap::from([(3, 1)]),
            "hour {}",
            h.hour
        );
    }
    let t = r.totals_of(PolicyKind::Static).expect("static");
    assert_eq!(t.unplaced_by_priority, BTreeMap::from([(3, 30)]));
    let days = r.days();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].unplaced_by_priority, BTreeMap::from([(3, 24)]));
    assert_eq!(days[1].unplaced_by_priority, BTreeMap::from([(3, 6)]));
}

/// The demand curve reads the hour of day from the year's labels: a year
/// whose first hour is 06:00 UTC puts index `t` at UTC hour `t + 6`.
#[test]
fn diurnal_demand_takes_the_hour_of_day_from_the_labels() {
    let mut w = workload("w", 1, 5.0);
    w.utilization = 0.5;
    w.current = BTreeMap::from([("A".to_string(), 1)]);
    let mut fleet = instance(vec![site("A", 10.0, 1.0)], vec![w], &[]);
    fleet.objective = energy_only();
    let wide = |v: f64| {
        let mut text = "utc_hour,ZA\n".to_string();
        for h in 0..60 {
            let t = h + 6;
            text += &format!("2023-01-{:02}T{:02}:00:00Z,{v}\n", t / 24 + 1, t % 24);
        }
        text
    };
    let y = Year::parse(&YearFiles {
        zones: "zone,city,lat,lon\nZA,ZA,0,0\n",
        price_usd_per_mwh: &wide(1000.0),
        carbon_g_per_kwh: &wide(0.0),
        temperature_c: &wide(15.0),
        humidity_pct: &wide(50.0),
    })
    .expect("year");
    let opts = ReplayOptions {
        from_hour: 48,
        hours: 6,
        policies: vec![PolicyKind::Static],
        zones: zones(&[("A", "ZA")]),
        ..ReplayOptions::default()
    };
    let r = replay(&fleet, &y, &opts, &|_| {}).expect("replay");
    let day = edgeplan::gen::azure_mean_day();
    // No traffic: the workload keeps UTC. Index 48 is 06:00 UTC.
    for t in 48..54 {
        let want = 0.25 * day[(t + 6) % 24];
        assert_close(
            hour(&r, PolicyKind::Static, t).energy_cost,
            want,
            &format!("index {t}"),
        );
    }
}

/// The demo fleet through the ERCOT heat of 9–10 August 2023, with and
/// without its spot render farm: edgeplan's on-demand figures are the same
/// (spot never displaces on-demand work), the render farm is admitted at
/// night and evicted on both evenings, and every hour's spot revenue is
/// within what the running replicas bid. Deterministic: twice, the same.
#[test]
fn replay_with_spot_work_counts_it_and_leaves_on_demand_alone() {
    let with: Instance = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/demo-fleet.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let spot = with
        .workloads
        .iter()
        .find(|w| w.spot.is_some())
        .expect("the demo fleet has a spot workload")
        .clone();
    let bid = spot.spot.unwrap().max_price_per_replica_hour;
    let mut without = with.clone();
    without.workloads.retain(|w| w.spot.is_none());
    let y = Year::shipped_2023().expect("year");
    let opts = ReplayOptions {
        from_hour: y.hour_of("2023-08-09").expect("hour"),
        hours: 48,
        policies: vec![PolicyKind::Edgeplan],
        ..ReplayOptions::default()
    };
    let a = replay(&with, &y, &opts, &|_| {}).expect("replay");
    let b = replay(&without, &y, &opts, &|_| {}).expect("replay");
    let (ta, tb) = (&a.totals[0], &b.totals[0]);
    eprintln!("{}", edgeplan::replay::comparison_table(&a));
    assert_eq!(ta.unplaced_replica_hours, tb.unplaced_replica_hours);
    assert_eq!(ta.unplaced_by_priority, tb.unplaced_by_priority);
    assert_eq!(
        ta.slo_violating_replica_hours,
        tb.slo_violating_replica_hours
    );
    assert_eq!(tb.spot_replica_hours + tb.spot_left_out_replica_hours, 0);
    // Every hour counts all of the render farm's replicas, run or left out.
    for h in &a.policy_hours {
        assert_eq!(
            h.spot_replicas + h.spot_left_out,
            u64::from(spot.replicas),
            "{h:?}"
        );
        assert!(
            h.spot_revenue <= bid * h.spot_replicas as f64 + 1e-9,
            "hour {}: revenue {} over the bids",
            h.hour,
            h.spot_revenue
        );
        assert_eq!(h.spot_replicas > 0, h.spot_revenue > 0.0, "{h:?}");
    }
    // Run at night, left out in the heat of both evenings, evicted then.
    let evenings: Vec<usize> = a
        .policy_hours
        .iter()
        .filter(|h| h.spot_evictions > 0 && h.spot_replicas == 0)
        .map(|h| (h.hour - opts.from_hour) / 24)
        .collect();
    assert!(
        evenings.contains(&0) && evenings.contains(&1),
        "evictions on days {evenings:?}"
    );
    assert!(ta.spot_replica_hours > 0 && ta.spot_left_out_replica_hours > 0);
    assert!(ta.spot_revenue > 0.0);
    assert!(ta.spot_evictions >= 2 * u64::from(spot.replicas));
    let again = replay(&with, &y, &opts, &|_| {}).expect("replay");
    assert_eq!(a, again);
}
