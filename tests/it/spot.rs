//! Spot capacity: prices from the multipliers, worked by hand; spot never
//! displaces on-demand work on random fleets; prices rise with load.

use edgeplan::instance::{Instance, Spot};
use edgeplan::ix::SiteIx;
use edgeplan::problem::Problem;
use edgeplan::solver::{solve, Method, SolveOptions};
use edgeplan::spot;
use edgeplan::verify::verify;

use crate::common::*;

fn spot_of(bid: f64) -> Option<Spot> {
    Some(Spot {
        max_price_per_replica_hour: bid,
        notice_s: 120.0,
    })
}

/// The unit price of `row` at `site` in a market.
fn unit(m: &spot::Market, site: &str, row: &str) -> f64 {
    m.sites
        .iter()
        .find(|s| s.site == site)
        .and_then(|s| s.units.iter().find(|u| u.row == row))
        .map(|u| u.price_per_unit_hour)
        .unwrap_or_else(|| panic!("no {row} at {site}"))
}

fn market(inst: &Instance) -> (Problem, spot::Market) {
    let problem = Problem::build(inst).expect("builds");
    let solved = solve(&problem, &exact()).expect("solves");
    let m = match solved.market {
        Some(m) => *m,
        None => spot::on(&problem, &solved.x, None, 0.0),
    };
    (problem, m)
}

#[test]
fn the_binding_power_cap_is_priced_at_what_one_more_kw_saves() {
    // Two on-demand workloads of one replica each, 10 cores at u = 1: 1 kW
    // a replica. A: 0.10/kWh, B: 0.20/kWh, PUE 1, no idle power. A's cap
    // is 1 kW: one replica there, the other at B. One more kW at A would
    // move the second from B to A and save (0.20 − 0.10) × 1 kW = 0.10/h:
    // the dual price of A's power limit is 0.10 per kW-hour. B is far from
    // its limit: 0. Cores are ample everywhere: 0.
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = 1.0;
    let b = site("b", 100.0, 0.20);
    let mut s1 = workload("spot-rich", 1, 10.0);
    s1.spot = spot_of(0.25);
    let mut s2 = workload("spot-poor", 1, 10.0);
    s2.spot = spot_of(0.15);
    let inst = instance(
        vec![a, b],
        vec![workload("w1", 1, 10.0), workload("w2", 1, 10.0), s1, s2],
        &[("a", "b", 5.0)],
    );
    assert!(edgeplan::validate::validate(&inst).is_empty());
    let (problem, m) = market(&inst);
    let a_kw = unit(&m, "a", "it_kw");
    assert!((a_kw - 0.10).abs() <= 0.002, "A's kW-hour: {a_kw}");
    assert_eq!(unit(&m, "b", "it_kw"), 0.0);
    assert_eq!(unit(&m, "a", "cpu_cores"), 0.0);
    assert!(
        m.sites[0].text.contains("power cap binds"),
        "{}",
        m.sites[0].text
    );
    assert!(
        m.sites[1].text.contains("nothing binds"),
        "{}",
        m.sites[1].text
    );
    // A replica's shape price: its energy (the floor) plus its kW at the
    // kW price. A: 0.10 + 1 × 0.10 = 0.20; B: 0.20 + 0 = 0.20.
    let (wi, _) = problem
        .workloads
        .iter_enumerated()
        .find(|(_, w)| w.id == "spot-rich")
        .unwrap();
    for (si, want) in [(0, 0.20), (1, 0.20)] {
        let shape = spot::shape_price(&problem, &m.sites, wi, SiteIx::new(si)).unwrap();
        assert!(
            (shape.price_per_replica_hour - want).abs() <= 0.002,
            "{shape:?}"
        );
    }
    // The bid of 0.25 gets B (A is full); the bid of 0.15 is below every price.
    assert_eq!(m.admitted.len(), 1, "{:?}", m.admitted);
    assert_eq!(
        (m.admitted[0].workload.as_str(), m.admitted[0].site.as_str()),
        ("spot-rich", "b")
    );
    assert_eq!(m.left_out.len(), 1);
    assert!(
        m.left_out[0].text.contains("within its bid"),
        "{:?}",
        m.left_out
    );
    assert!(
        (m.revenue_per_hour - 0.20).abs() <= 0.002,
        "{}",
        m.revenue_per_hour
    );
    // The on-demand replicas are where they would be without spot work:
    // one at A, one at B; and the whole placement is feasible.
    let placement = problem.placement_of(&m.x);
    let report = verify(&inst, &placement);
    assert!(report.feasible, "{:?}", report.violations);
    let on = |w: &str, s: &str| placement.assignments[w].get(s).copied().unwrap_or(0);
    assert_eq!(on("w1", "a") + on("w2", "a"), 1);
    assert_eq!(on("w1", "b") + on("w2", "b"), 1);
    // A spot replica left out is not an unplaced replica.
    assert_eq!(report.unplaced_replicas, 0);
}

#[test]
fn a_limit_reached_by_one_workload_alone_is_priced_too() {
    // One workload of three 1 kW replicas, A's cap 1 kW (the case of
    // known_optimum::power_cap_splits…): the cap on replicas at A carries
    // A's limit, so the prices come from caps without the limits. One more
    // kW at A still saves 0.20 − 0.10 = 0.10/h.
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = 1.0;
    let inst = instance(
        vec![a, site("b", 100.0, 0.20)],
        vec![workload("w", 3, 10.0)],
        &[("a", "b", 5.0)],
    );
    let (_, m) = market(&inst);
    let a_kw = unit(&m, "a", "it_kw");
    assert!((a_kw - 0.10).abs() <= 0.002, "A's kW-hour: {a_kw}");
    assert_eq!(unit(&m, "b", "it_kw"), 0.0);
}

#[test]
fn prices_rise_with_load_on_a_sweep() {
    // Three sites at 0.10, 0.20, 0.30 per kWh, caps 2, 3 and 100 kW. k
    // on-demand replicas of 1 kW, one workload each: A fills first, then B.
    let mut last = [0.0f64; 3];
    for k in 1..=8 {
        let mut a = site("a", 100.0, 0.10);
        a.power.cap_kw = 2.0;
        let mut b = site("b", 100.0, 0.20);
        b.power.cap_kw = 3.0;
        let c = site("c", 100.0, 0.30);
        let workloads = (0..k)
            .map(|i| workload(&format!("w{i}"), 1, 10.0))
            .collect();
        let inst = instance(
            vec![a, b, c],
            workloads,
            &[("a", "b", 5.0), ("b", "c", 5.0)],
        );
        let (_, m) = market(&inst);
        let now = [
            unit(&m, "a", "it_kw"),
            unit(&m, "b", "it_kw"),
            unit(&m, "c", "it_kw"),
        ];
        for (i, (n, l)) in now.iter().zip(&last).enumerate() {
            assert!(*n + 1e-3 >= *l, "load {k}: site {i}'s price fell {l} → {n}");
        }
        // By hand: A binds from 3 replicas (0.10 saved by a kW there), B
        // from 6 (then A saves 0.20, B 0.10).
        let want = match k {
            1 | 2 => [0.0, 0.0, 0.0],
            3..=5 => [0.10, 0.0, 0.0],
            _ => [0.20, 0.10, 0.0],
        };
        for (i, (n, w)) in now.iter().zip(&want).enumerate() {
            assert!(
                (n - w).abs() <= 0.005,
                "load {k}: site {i} at {n}, by hand {w}"
            );
        }
        last = now;
    }
}

#[test]
fn spot_never_displaces_on_demand_work_on_random_fleets() {
    let options = SolveOptions {
        method: Method::Fast,
        deterministic: true,
        work: Some(5_000_000),
        ..exact()
    };
    let mut admitted_total = 0;
    let mut priced = 0;
    for seed in 0..12u64 {
        let mut inst = gen_instance(120, 6, seed, 0.7 + 0.05 * (seed % 5) as f64);
        // A third of the rule-free workloads become spot, with bids from
        // far below to far above any price.
        let mut k = 0;
        for w in &mut inst.workloads {
            if w.affinity_group.is_none() && w.anti_affinity_group.is_none() {
                if (k + seed) % 3 == 0 {
                    w.spot = spot_of([0.0005, 0.005, 0.05, 5.0][(k as usize) % 4]);
                }
                k += 1;
            }
        }
        assert!(
            edgeplan::validate::validate(&inst).is_empty(),
            "seed {seed}"
        );
        let problem = Problem::build(&inst).unwrap();
        let with_spot = solve(&problem, &options).unwrap();
        // The same fleet without its spot workloads.
        let mut od = inst.clone();
        od.workloads.retain(|w| w.spot.is_none());
        let od_problem = Problem::build(&od).unwrap();
        let alone = solve(&od_problem, &options).unwrap();
        let full = problem.placement_of(&with_spot.x);
        let od_only = od_problem.placement_of(&alone.x);
        for w in &od.workloads {
            assert_eq!(
                full.assignments.get(&w.id),
                od_only.assignments.get(&w.id),
                "seed {seed}: on-demand {} moved for spot work",
                w.id
            );
        }
        // The gap is the on-demand search's, in the solve and its report:
        // spot replicas' cost joins the objective and the bound alike and
        // does not dilute it.
        assert_eq!(with_spot.gap, alone.gap, "seed {seed}");
        assert_eq!(
            edgeplan::report::SolveReport::new(&problem, &with_spot).gap,
            alone.gap,
            "seed {seed}: the report's gap"
        );
        assert_close(
            with_spot.objective - with_spot.bound,
            alone.objective - alone.bound,
            &format!("seed {seed}: objective − bound"),
        );
        let report = verify(&inst, &full);
        assert!(report.feasible, "seed {seed}: {:?}", report.violations);
        assert_eq!(
            report.unplaced_replicas,
            verify(&od, &od_only).unplaced_replicas,
            "seed {seed}: spot work changed the on-demand unplaced count"
        );
        // Every admitted replica pays at most its bid.
        let m = with_spot.market.as_deref().expect("a market");
        for a in &m.admitted {
            let bid = inst
                .workloads
                .iter()
                .find(|w| w.id == a.workload)
                .and_then(|w| w.spot)
                .unwrap()
                .max_price_per_replica_hour;
            assert!(
                a.price_per_replica_hour <= bid + 1e-12,
                "seed {seed}: {a:?} over {bid}"
            );
            admitted_total += a.replicas;
        }
        // Complementary slackness: a resource priced above zero has no
        // room left for one more replica of the largest shape asking for it.
        for site in &m.sites {
            for u in site.units.iter().filter(|u| u.row != "it_kw") {
                let largest = inst
                    .workloads
                    .iter()
                    .filter_map(|w| w.resources.get(&u.row))
                    .fold(0.0_f64, |a, &b| a.max(b));
                if u.price_per_unit_hour > 0.0 {
                    priced += 1;
                    assert!(
                        u.limit - u.used <= largest + 1e-9,
                        "seed {seed}: {} priced {} with {} of {} in use",
                        site.site,
                        u.price_per_unit_hour,
                        u.used,
                        u.limit
                    );
                }
            }
        }
    }
    assert!(admitted_total > 0, "no spot replica admitted on any fleet");
    eprintln!("{priced} resource limits priced above zero on the random fleets");
}

#[test]
fn a_bad_spot_bid_and_a_spot_workload_in_a_group_are_refused_by_name() {
    let mut w = workload("s", 1, 10.0);
    w.spot = Some(Spot {
        max_price_per_replica_hour: -1.0,
        notice_s: f64::NAN,
    });
    w.anti_affinity_group = Some("g".into());
    let inst = instance(vec![site("a", 100.0, 0.1)], vec![w], &[]);
    let issues = edgeplan::validate::validate(&inst);
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for want in [
        "workloads[0].spot.max_price_per_replica_hour",
        "workloads[0].spot.notice_s",
        "workloads[0].anti_affinity_group",
    ] {
        assert!(paths.contains(&want), "{want} not in {issues:?}");
    }
}

/// The hand-worked fleet (A's 1 kW cap binds at 0.10 per kW-hour) with
/// one spot replica bidding 1.0/h.
fn two_sites_one_spot() -> Instance {
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = 1.0;
    let mut s = workload("s", 1, 10.0);
    s.spot = spot_of(1.0);
    instance(
        vec![a, site("b", 100.0, 0.20)],
        vec![workload("w1", 1, 10.0), workload("w2", 1, 10.0), s],
        &[("a", "b", 5.0)],
    )
}

#[test]
fn cli_spot_prices_explains_each_site_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let inst = two_sites_one_spot();
    let path = dir.path().join("fleet.json");
    std::fs::write(&path, serde_json::to_string(&inst).unwrap()).unwrap();
    let out = edgeplan(&["spot-prices", "--instance", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("per kW-hour of IT power — its 1 kW power cap binds"),
        "{stderr}"
    );
    assert!(stderr.contains("admitted: 1 × s at b"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["sites"].as_array().unwrap().len(), 2);
    assert!(json["revenue_per_hour"].as_f64().unwrap() > 0.0);
}

#[test]
fn spot_terms_cross_the_api_both_ways() {
    let mut w = workload("s", 2, 4.0);
    w.spot = spot_of(0.3);
    let message = edgeplan::api::convert::workload_to_pb(&w);
    let terms = message.spot.expect("spot in the message");
    assert_eq!(
        (terms.max_price_per_replica_hour, terms.notice_s),
        (0.3, 120.0)
    );
    assert_eq!(edgeplan::api::convert::workload_from_pb(message), w);
    // On-demand stays on-demand.
    let od = workload("o", 1, 1.0);
    assert!(edgeplan::api::convert::workload_to_pb(&od).spot.is_none());
}

/// The prices over gRPC: the call gives the hand-worked price of the
/// binding cap; the watch smooths a price change (half the step at the
/// first message after it, then closer), and a bad smoothing is refused
/// by name.
#[test]
fn grpc_gives_the_prices_and_a_watch_smooths_a_change() {
    use crate::live::{connect, rt, server, sim};
    use edgeplan::api::pb;
    use edgeplan::api::pb::inventory_client::InventoryClient;
    use edgeplan::api::pb::placement_client::PlacementClient;
    use edgeplan::service::client::{push_instance, Connect};

    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &[]);
    let srv = server(&dir.path().join("data"), &sim.url(), &[]);
    let inst = two_sites_one_spot();
    let kw = |m: &pb::SpotPrices, site: &str| {
        m.sites
            .iter()
            .find(|s| s.site == site)
            .and_then(|s| s.units.iter().find(|u| u.row == "it_kw"))
            .map(|u| u.price_per_unit_hour)
            .unwrap()
    };
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let now = placement
            .get_spot_prices(pb::GetSpotPricesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!((kw(&now, "a") - 0.10).abs() <= 0.002, "{now:?}");
        assert_eq!(kw(&now, "b"), 0.0);
        let text = &now.sites.iter().find(|s| s.site == "a").unwrap().text;
        assert!(text.contains("power cap binds"), "{text}");
        assert_eq!(now.admitted.len(), 1, "{now:?}");
        assert_eq!(now.admitted[0].site, "b");
        let err = placement
            .watch_spot_prices(pb::WatchSpotPricesRequest {
                interval_ms: 1000,
                smoothing: Some(1.5),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("smoothing"), "{}", err.message());
        let mut watch = placement
            .watch_spot_prices(pb::WatchSpotPricesRequest {
                interval_ms: 1000,
                smoothing: Some(0.5),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert!((kw(&first, "a") - 0.10).abs() <= 0.002, "{first:?}");
        // B's energy doubles: one more kW at A now saves 0.40 − 0.10 = 0.30.
        let mut inventory = connect(&srv.url(), InventoryClient::new).await;
        let snap = inventory
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut b = snap.sites.into_iter().find(|s| s.id == "b").unwrap();
        b.energy.as_mut().unwrap().price_per_kwh = 0.40;
        let changed = inventory
            .upsert_sites(pb::UpsertSitesRequest {
                sites: vec![b],
                expected_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .version;
        // Each message after the change keeps half the previous price.
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let m = watch.message().await.unwrap().unwrap();
            if m.inventory_version >= changed {
                seen.push(kw(&m, "a"));
            }
        }
        let want = [0.20, 0.25, 0.275];
        for (got, want) in seen.iter().zip(want) {
            assert!(
                (got - want).abs() <= 0.004,
                "smoothed {seen:?}, by hand {want}"
            );
        }
        let raw = placement
            .get_spot_prices(pb::GetSpotPricesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!((kw(&raw, "a") - 0.30).abs() <= 0.004, "{raw:?}");
    });
}

#[test]
fn the_report_shows_spot_prices_and_what_spot_work_got() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let fleet = format!("{root}/examples/spot.yaml");
    let placement = dir.path().join("placement.json");
    let out = edgeplan(&[
        "solve",
        "--instance",
        &fleet,
        "--out",
        placement.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for format in ["md", "html"] {
        let out = edgeplan(&[
            "report",
            "--instance",
            &fleet,
            "--placement",
            placement.to_str().unwrap(),
            "--format",
            format,
        ]);
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(page.contains("Spot capacity"), "{format}: no spot section");
        assert!(
            page.contains("batch-render"),
            "{format}: no admitted spot workload"
        );
        assert!(page.contains("Frankfurt: "), "{format}: no site's words");
    }
    // Without spot workloads, no spot section.
    let plain = format!("{root}/examples/three-cities.yaml");
    let out = edgeplan(&["report", "--instance", &plain, "--format", "md"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Spot capacity"));
}

/// `n` spot replicas of 1 kW run at `a` (IT cap `n` kW); `n` on-demand
/// replicas of 1 kW arrive that only `a` can hold (`b`'s cap is 0.5 kW):
/// the on-demand work takes the spot work's room back.
fn taken_back(n: u32, notice_s: f64) -> Instance {
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = f64::from(n);
    let mut b = site("b", 100.0, 0.10);
    b.power.cap_kw = 0.5;
    let mut s = workload("spot", n, 10.0);
    s.spot = Some(Spot {
        max_price_per_replica_hour: 10.0,
        notice_s,
    });
    s.current.insert("a".into(), n);
    instance(
        vec![a, b],
        vec![s, workload("od", n, 10.0)],
        &[("a", "b", 5.0)],
    )
}

#[test]
fn on_demand_work_takes_the_room_back_by_evictions_with_notice() {
    let inst = taken_back(3, 120.0);
    let (problem, solved, placement, _) = solve_and_verify(&inst);
    assert_eq!(placement.assignments["od"]["a"], 3);
    assert!(!placement.assignments.contains_key("spot"));
    let p = edgeplan::plan::plan(&inst, &problem, &placement).unwrap();
    let report = edgeplan::verify::verify_plan(&inst, &p);
    assert!(report.valid, "{:?}", report.violations);
    let evictions: Vec<_> = p
        .steps
        .iter()
        .filter(|s| s.kind == edgeplan::plan::StepKind::Evict)
        .collect();
    assert_eq!(evictions.len(), 3, "{:?}", p.steps);
    for e in &evictions {
        assert_eq!((e.workload.as_str(), e.notice_s), ("spot", 120.0));
        assert!(e.duration_s >= 120.0, "{e:?}");
    }
    // Every arrival at `a` waits for an eviction, and is scheduled after
    // the notice.
    for s in p.steps.iter().filter(|s| s.to.as_deref() == Some("a")) {
        assert!(
            s.depends_on
                .iter()
                .any(|d| p.steps[*d].kind == edgeplan::plan::StepKind::Evict),
            "{s:?} does not wait for an eviction"
        );
        assert!(s.start_s >= 120.0, "{s:?} scheduled inside the notice");
    }
    // Each eviction names the on-demand work that takes its room.
    let words = edgeplan::explain::moves(&problem, &problem.current_placement(), &p.steps);
    let evict_words: Vec<&str> = words
        .iter()
        .filter(|m| m.text.starts_with("evicts"))
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(evict_words.len(), 3, "{words:?}");
    for text in &evict_words {
        assert!(
            text.starts_with(
                "evicts a spot replica of spot at a with 120 s notice: on-demand work takes the room back — od start(s) there"
            ),
            "{text}"
        );
    }
    assert_eq!(solved.market.as_ref().unwrap().left_out[0].replicas, 3);
}

/// Energy ten times dearer at the spot replicas' site, nobody else needing
/// the room: the eviction says the price passed the bid, with the floor.
#[test]
fn an_eviction_for_a_price_past_the_bid_says_so() {
    let mut inst = taken_back(2, 60.0);
    inst.workloads.retain(|w| w.id == "spot");
    let spot = &mut inst.workloads[0];
    spot.spot.as_mut().unwrap().max_price_per_replica_hour = 0.5;
    // Within the bid at 0.10/kWh, not at ten times that.
    let floor = |inst: &Instance| {
        let p = Problem::build(inst).unwrap();
        let c = p.workloads[edgeplan::ix::WorkloadIx::new(0)]
            .candidate_at(SiteIx::new(0))
            .unwrap();
        c.energy_cost + c.carbon_cost
    };
    assert!(floor(&inst) < 0.5, "{}", floor(&inst));
    for s in &mut inst.sites {
        s.energy.price_per_kwh = edgeplan::instance::Price::Flat(1.0);
    }
    assert!(floor(&inst) > 0.5, "{}", floor(&inst));
    let (problem, _solved, placement, _) = solve_and_verify(&inst);
    assert!(!placement.assignments.contains_key("spot"));
    let p = edgeplan::plan::plan(&inst, &problem, &placement).unwrap();
    let words = edgeplan::explain::moves(&problem, &problem.current_placement(), &p.steps);
    assert_eq!(words.len(), 2, "{words:?}");
    for m in &words {
        assert!(
            m.text.starts_with("evicts a spot replica of spot at a with 60 s notice: its spot price there passed its bid — energy and carbon alone cost")
                && m.text.contains("1.000/kWh")
                && m.text.ends_with("over its bid of 0.5000/h"),
            "{}",
            m.text
        );
    }
}

/// Random completion orders on a clock that moves by random amounts: an
/// eviction's success is refused before its notice has passed and taken
/// after it, and every state the executor reaches is safe.
#[test]
fn an_eviction_waits_its_notice_under_any_completion_order() {
    use edgeplan::execution::{Execution, StepState, TransitionError};
    use edgeplan::plan::StepKind;
    use rand::{Rng, SeedableRng};
    let notice = 120.0;
    let inst = taken_back(4, notice);
    let problem = Problem::build(&inst).unwrap();
    let solved = solve(&problem, &exact()).unwrap();
    let p = edgeplan::plan::plan(&inst, &problem, &problem.placement_of(&solved.x)).unwrap();
    let (mut refused, mut taken) = (0, 0);
    for seed in 0..300u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut e = Execution::new(1, p.clone(), "test".into(), 1);
        e.approve().unwrap();
        let mut now = 1_000.0;
        for _ in 0..10_000 {
            for k in e.ready(&inst.limits) {
                if rng.random_bool(0.7) {
                    e.start(k).unwrap();
                    e.steps[k].started_unix_s = now;
                }
            }
            let running = e.running();
            if running.is_empty() {
                if e.ready(&inst.limits).is_empty() {
                    break;
                }
                continue;
            }
            let bad = edgeplan::verify::verify_in_flight(
                &inst,
                &e.plan,
                &(0..e.steps.len())
                    .filter(|&k| e.steps[k].state == StepState::Succeeded)
                    .collect::<Vec<_>>(),
                &running,
            );
            assert!(bad.is_empty(), "seed {seed}: unsafe: {bad:?}");
            now += rng.random_range(0.0..0.6 * notice);
            let k = running[rng.random_range(0..running.len())];
            let ends = e.steps[k].started_unix_s + notice;
            match e.finish_at(k, true, "ok".into(), now, 1.0) {
                Ok(()) => {
                    if e.plan.steps[k].kind == StepKind::Evict {
                        assert!(
                            now >= ends,
                            "seed {seed}: evicted {:.1} s early",
                            ends - now
                        );
                        taken += 1;
                    }
                }
                Err(TransitionError::NoticeNotPassed { .. }) => {
                    assert!(now < ends, "seed {seed}: refused after the notice");
                    refused += 1;
                }
                Err(other) => panic!("seed {seed}: {other}"),
            }
        }
        assert!(
            (0..e.steps.len()).all(|k| e.steps[k].state == StepState::Succeeded),
            "seed {seed}: the plan did not finish"
        );
    }
    assert!(refused > 0 && taken > 0, "refused {refused}, taken {taken}");
}

/// End to end: the provisioner answers an eviction at once (sim speed
/// 0.01), the service still records its success only after the notice
/// (scaled), and the on-demand replicas start after it.
#[test]
fn the_service_holds_an_evictions_success_until_its_notice_has_passed() {
    use crate::live::{connect, rt, server, sim, solve_and_approve, watch_to_end};
    use edgeplan::api::pb;
    use edgeplan::api::pb::placement_client::PlacementClient;
    use edgeplan::service::client::{push_instance, Connect};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.tsv");
    let sim = sim(&journal, &["--speed", "0.01"]);
    // Notice 120 s at time scale 0.02: 2.4 s.
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--time-scale", "0.02"],
    );
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &taken_back(2, 120.0))
            .await
            .unwrap();
        let (plan_id, _) = solve_and_approve(&srv.url()).await;
        let (end, _) = watch_to_end(&srv.url(), plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let view = connect(&srv.url(), PlacementClient::new)
            .await
            .get_plan(pb::PlanRef {
                plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        let at = |s: &pb::StepView, end: bool| {
            let t = if end { &s.ended_at } else { &s.started_at };
            let t = t.as_ref().unwrap();
            t.seconds as f64 + f64::from(t.nanos) * 1e-9
        };
        let evictions: Vec<_> = view
            .steps
            .iter()
            .filter(|s| s.kind == pb::StepKind::Evict as i32)
            .collect();
        assert_eq!(evictions.len(), 2, "{:?}", view.steps);
        for s in &evictions {
            assert_eq!(s.notice_s, 120.0);
            let held = at(s, true) - at(s, false);
            assert!(
                held >= 2.4 - 0.01,
                "eviction recorded after {held:.2} s, notice 2.4 s"
            );
        }
        let first_free = evictions
            .iter()
            .map(|s| at(s, true))
            .fold(f64::INFINITY, f64::min);
        for s in view.steps.iter().filter(|s| s.to_site == "a") {
            assert!(
                at(s, false) >= first_free - 0.01,
                "{} started at a inside the notice",
                s.workload
            );
        }
        let log = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(
            log.lines().filter(|l| l.contains("\tevict\t")).count(),
            2,
            "{log}"
        );
    });
}

/// What-if: spot figures per scenario. Energy ten times dearer everywhere
/// lifts every site's floor for the cheap bid (0.02/h) above it: its six
/// replicas are evicted, the 0.5/h bid stays.
#[test]
fn what_if_counts_spot_replicas_revenue_and_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let scenarios = dir.path().join("spot-what-if.yaml");
    std::fs::write(
        &scenarios,
        format!(
            "base: {root}/examples/spot.yaml\nseed: 1\ntime_limit_s: 10\nscenarios:\n  - name: energy-ten-times-dearer\n    perturbations:\n      - price: {{ sites: [fra, par, mil], multiplier: 10 }}\n"
        ),
    )
    .unwrap();
    let out = edgeplan(&[
        "whatif",
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--sequential",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("spot rev/h"), "{stderr}");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (base, dear) = (&results[0], &results[1]);
    assert_eq!(base["spot_replicas"], 10, "{base}");
    assert_eq!(base["spot_evictions"], 0);
    assert!(base["spot_revenue_per_h"].as_f64().unwrap() > 0.0);
    assert_eq!(dear["spot_replicas"], 4, "{dear}");
    assert_eq!(dear["spot_evictions"], 6, "{dear}");
    // On-demand work is placed the same either way: spot takes nothing from it.
    assert_eq!(base["unplaced_replicas"], dear["unplaced_replicas"]);
}

/// The notice runs from the eviction's first sending: a server killed
/// while it holds an eviction sends it again after a restart (the
/// provisioner answers at once), and still records it no sooner than the
/// first sending's notice, with the first sending's start kept.
#[test]
fn a_restart_mid_eviction_keeps_the_first_notice() {
    use crate::live::{connect, rt, server, sim, solve_and_approve, watch_to_end};
    use edgeplan::api::pb;
    use edgeplan::api::pb::placement_client::PlacementClient;
    use edgeplan::service::client::{push_instance, Connect};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = sim(&dir.path().join("journal.tsv"), &["--speed", "0.01"]);
    // Notice 600 s at time scale 0.01: 6 s.
    let args = ["--time-scale", "0.01"];
    let srv = server(&data, &sim.url(), &args);
    let get = |url: String, plan_id: u64| async move {
        connect(&url, PlacementClient::new)
            .await
            .get_plan(pb::PlanRef {
                plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner()
    };
    let at = |s: &pb::StepView, end: bool| {
        let t = if end { &s.ended_at } else { &s.started_at };
        let t = t.as_ref().unwrap();
        t.seconds as f64 + f64::from(t.nanos) * 1e-9
    };
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &taken_back(1, 600.0))
            .await
            .unwrap();
        let (plan_id, _) = solve_and_approve(&srv.url()).await;
        // Wait until the eviction has been sent (and answered at once).
        let deadline = Instant::now() + Duration::from_secs(30);
        let before = loop {
            let view = get(srv.url(), plan_id).await;
            let e = view
                .steps
                .iter()
                .find(|s| s.kind == pb::StepKind::Evict as i32)
                .unwrap()
                .clone();
            if e.state == pb::StepState::Running as i32 && e.started_at.is_some() {
                break e;
            }
            assert!(Instant::now() < deadline, "the eviction never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        srv.kill9();
        let srv = server(&data, &sim.url(), &args);
        let (end, _) = watch_to_end(&srv.url(), plan_id, Duration::from_secs(60)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let view = get(srv.url(), plan_id).await;
        let after = view
            .steps
            .iter()
            .find(|s| s.kind == pb::StepKind::Evict as i32)
            .unwrap();
        assert!(after.attempts >= 2, "not sent again: {after:?}");
        // Within a millisecond: the stored Unix seconds round-trip as f64.
        let moved = at(after, false) - at(&before, false);
        assert!(
            moved.abs() < 1e-3,
            "the restart moved the notice's start by {moved:.3} s"
        );
        let held = at(after, true) - at(after, false);
        assert!(
            held >= 6.0 - 0.01,
            "recorded {held:.2} s after the first sending, notice 6 s"
        );
    });
}

/// The demo fleet (797 workloads at twelve sites, lightly loaded) with a
/// spot workload: no limit with room for one more replica of every shape is
/// priced or said to bind. The multipliers leave small positive values on
/// slack rows; before complementary slackness was applied, Sacramento's
/// memory was "0.0000 per memory_gib-hour — memory_gib binds, 1115.5 of
/// 18432.0 in use".
#[test]
fn a_limit_with_room_left_is_not_priced_on_the_demo_fleet() {
    let mut inst: Instance = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/demo-fleet.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut w = inst.workloads[0].clone();
    w.id = "render-batch".into();
    w.replicas = 24;
    w.traffic.clear();
    w.slo = None;
    w.current.clear();
    w.spot = Some(Spot {
        max_price_per_replica_hour: 0.05,
        notice_s: 120.0,
    });
    inst.workloads.push(w);
    let p = Problem::build(&inst).unwrap();
    let x = edgeplan::replay::latency_only_start(&p);
    let started = std::time::Instant::now();
    let m = spot::on(&p, &x, None, 0.0);
    eprintln!(
        "prices for {} workloads at {} sites in {:.2} s",
        p.workloads.len(),
        p.sites.len(),
        started.elapsed().as_secs_f64()
    );
    let mut checked = 0;
    for site in &m.sites {
        for u in site.units.iter().filter(|u| u.row != "it_kw") {
            let largest = inst
                .workloads
                .iter()
                .filter_map(|w| w.resources.get(&u.row))
                .fold(0.0_f64, |a, &b| a.max(b));
            checked += 1;
            if u.limit - u.used > largest + 1e-9 {
                assert_eq!(
                    u.price_per_unit_hour, 0.0,
                    "{}: {} priced with {} of {} in use",
                    site.site, u.row, u.used, u.limit
                );
            }
        }
        if site.units.iter().all(|u| u.price_per_unit_hour == 0.0) {
            assert!(site.text.contains("nothing binds"), "{}", site.text);
        }
    }
    assert!(checked >= 24, "{checked} limits checked");
    assert!(
        m.admitted.iter().map(|a| a.replicas).sum::<u32>() == 24,
        "{:?}",
        m.left_out
    );
}

/// Continuous mode, nobody asking: energy ten times dearer everywhere puts
/// the spot replicas' floor over their bid, and the service evicts them on
/// its own, with their notice; the price back, it admits them again.
#[test]
fn continuous_mode_evicts_spot_work_past_its_bid_and_admits_it_again() {
    use crate::live::{connect, rt, server, sim, watch_to_end};
    use edgeplan::api::pb;
    use edgeplan::api::pb::inventory_client::InventoryClient;
    use edgeplan::api::pb::placement_client::PlacementClient;
    use edgeplan::service::client::{push_instance, Connect};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        "continuous:\n  enabled: true\n  interval_s: 0.2\n  min_interval_s: 0\n  min_gain: 0.001\n  auto_approve: true\n  slo: false\ndispatch:\n  time_scale: 0.01\n",
    )
    .unwrap();
    let sim = sim(&dir.path().join("journal.tsv"), &["--speed", "0.01"]);
    let srv = server(
        &dir.path().join("data"),
        &sim.url(),
        &["--config", config.to_str().unwrap()],
    );
    // Two spot replicas at `a` within their bid (0.5/h; a replica's floor
    // is 0.1/h at 0.10/kWh), on-demand work at `b`.
    let mut inst = taken_back(2, 60.0);
    inst.sites[0].power.cap_kw = 10.0;
    inst.sites[1].power.cap_kw = 10.0;
    inst.workloads[0]
        .spot
        .as_mut()
        .unwrap()
        .max_price_per_replica_hour = 0.5;
    inst.workloads[1].replicas = 1;
    inst.workloads[1].current.insert("b".into(), 1);
    rt().block_on(async {
        push_instance(&Connect::plain(&srv.url()), &inst)
            .await
            .unwrap();
        let mut placement = connect(&srv.url(), PlacementClient::new).await;
        let mut inventory = connect(&srv.url(), InventoryClient::new).await;
        let plans = |p: &mut PlacementClient<tonic::transport::Channel>| {
            let mut p = p.clone();
            async move {
                p.list_plans(pb::ListPlansRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .plans
            }
        };
        let set_price = |price: f64| {
            let mut inventory = inventory.clone();
            async move {
                let snap = inventory
                    .get_inventory(pb::GetInventoryRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                let sites: Vec<pb::Site> = snap
                    .sites
                    .into_iter()
                    .map(|mut s| {
                        let e = s.energy.as_mut().unwrap();
                        e.price_per_kwh = price;
                        e.price_series.clear();
                        s
                    })
                    .collect();
                inventory
                    .upsert_sites(pb::UpsertSitesRequest {
                        sites,
                        expected_version: None,
                    })
                    .await
                    .unwrap();
            }
        };
        let next_plan = |placement: PlacementClient<tonic::transport::Channel>,
                         after: usize,
                         what: &'static str| async move {
            let mut placement = placement;
            let started = Instant::now();
            loop {
                let now = plans(&mut placement).await;
                if let Some(p) = now
                    .iter()
                    .skip(after)
                    .find(|p| p.reason.starts_with("continuous:"))
                {
                    return (p.clone(), now.len());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no continuous plan {what} in 30 s: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        // Whatever the start asks for runs out first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = plans(&mut placement).await;
        for p in &before {
            watch_to_end(&srv.url(), p.plan_id, Duration::from_secs(30)).await;
        }
        set_price(1.0).await;
        let (evict, seen) =
            next_plan(placement.clone(), before.len(), "after the price rose").await;
        assert!(
            evict.reason.contains("2 spot replica(s) lose their place"),
            "{}",
            evict.reason
        );
        let (end, _) = watch_to_end(&srv.url(), evict.plan_id, Duration::from_secs(30)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let view = placement
            .get_plan(pb::PlanRef {
                plan_id: evict.plan_id,
                after_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        let secs = |t: &Option<_>| t.map(edgeplan::api::convert::unix_s).unwrap();
        let evictions: Vec<_> = view
            .steps
            .iter()
            .filter(|s| s.kind == pb::StepKind::Evict as i32)
            .collect();
        assert_eq!(evictions.len(), 2, "{:?}", view.steps);
        for s in &evictions {
            let held = secs(&s.ended_at) - secs(&s.started_at);
            assert!(
                held >= 0.6 - 0.01,
                "recorded after {held:.2} s, notice 0.6 s"
            );
        }
        // The price back: the spot replicas come back on their own.
        set_price(0.10).await;
        let (admit, _) = next_plan(placement.clone(), seen, "after the price fell").await;
        assert!(
            admit.reason.contains("spot revenue would grow"),
            "{}",
            admit.reason
        );
        let (end, _) = watch_to_end(&srv.url(), admit.plan_id, Duration::from_secs(30)).await;
        assert_eq!(end.state, pb::PlanState::Succeeded as i32, "{end:?}");
        let snap = inventory
            .get_inventory(pb::GetInventoryRequest::default())
            .await
            .unwrap()
            .into_inner();
        let spot = snap.workloads.iter().find(|w| w.id == "spot").unwrap();
        assert_eq!(spot.current.values().sum::<u32>(), 2, "{spot:?}");
    });
}

/// A spot replica stays where it runs while its price there is within its
/// bid, though a cheaper site has room (no move for nothing), as replay and
/// continuous mode promise; past its bid there, it goes to the cheapest
/// site within it.
#[test]
fn a_spot_replica_stays_where_it_runs_while_within_its_bid() {
    let mut a = site("a", 100.0, 0.10);
    a.power.cap_kw = 10.0;
    let mut b = site("b", 100.0, 0.20);
    b.power.cap_kw = 10.0;
    let mut s = workload("spot", 2, 10.0);
    s.spot = Some(Spot {
        max_price_per_replica_hour: 0.5,
        notice_s: 60.0,
    });
    let inst = instance(vec![a, b], vec![s], &[("a", "b", 5.0)]);
    let p = Problem::build(&inst).unwrap();
    let duals = spot::multipliers(&spot::on_demand(&p).0);
    let none = edgeplan::replicas::Replicas::empty(1);
    let at = |m: &spot::Market| m.x[edgeplan::ix::WorkloadIx::new(0)].clone();
    let (sa, sb) = (SiteIx::new(0), SiteIx::new(1));
    // Nowhere today: the cheapest site.
    assert_eq!(
        at(&spot::admit_from(&p, &none, &duals, None)),
        vec![(sa, 2)]
    );
    // At the dearer site today, within the bid there: it stays.
    let mut today = none.clone();
    today[edgeplan::ix::WorkloadIx::new(0)] = vec![(sb, 2)];
    assert_eq!(
        at(&spot::admit_from(&p, &none, &duals, Some(&today))),
        vec![(sb, 2)]
    );
    // A bid between the two floors: the dearer site is past it, so it moves.
    let floor = |si| {
        spot::shape_price(
            &p,
            &spot::site_prices(&p, &none, &duals),
            edgeplan::ix::WorkloadIx::new(0),
            si,
        )
        .unwrap()
        .price_per_replica_hour
    };
    let mut tight = inst.clone();
    tight.workloads[0]
        .spot
        .as_mut()
        .unwrap()
        .max_price_per_replica_hour = (floor(sa) + floor(sb)) / 2.0;
    let p = Problem::build(&tight).unwrap();
    assert_eq!(
        at(&spot::admit_from(&p, &none, &duals, Some(&today))),
        vec![(sa, 2)]
    );
}
