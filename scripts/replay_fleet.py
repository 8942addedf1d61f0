#!/usr/bin/env python3
"""Build examples/replay-fleet.yaml, the fleet `edgeplan replay` is shown on:
edge sites in the metros near the ten grid zones of data/year2023/ (each site
takes its nearest zone's prices, carbon and weather), sized like real edge
sites (20–270 kW of IT at full load), users in every metro, measured RTTs
between the metros (data/rtt_ms.csv, WonderNetwork), VM sizes and
utilisations from the Bitbrains trace (data/vm_sizes.csv) — a replica is a
service of eight such VMs moved together (eight times a sampled VM's cores
and memory, its utilisation), since single small VMs by the thousand would
fill a few per cent of sites this size — and a mix of
SLOs: most replicas serve users within 30 ms, some within 80 ms (a region),
a fifth anything within 250 ms (batch and inference that may cross zones).

No placement is given: every policy of a replay starts from the
latency-only placement of its first hour. Deterministic (seeded).

    python3 scripts/replay_fleet.py [--replicas 20000] [--seed 7] [--out examples/replay-fleet.yaml]

`--region us` builds the demo's fleet instead (`edgeplan demo`): twelve
metros of the three US grid zones (California, Texas, New York), sites
cooled by dry coolers (no chillers) designed for `--max-ambient` °C, which
keep `--derate-min` of their capacity at and past it:

    python3 scripts/replay_fleet.py --region us --replicas 4000 --max-ambient 38 \\
        --derate-min 0.35 --name demo-fleet --out examples/demo-fleet.yaml
"""

import argparse
import csv
import json
import random

# (city as in data/cities.csv, size tier) near each zone's weather station.
METROS = [
    ("San Francisco", "L"), ("Sacramento", "S"), ("Los Angeles", "L"),
    ("Dallas", "L"), ("Austin", "M"), ("Houston", "M"), ("San Antonio", "S"),
    ("New York", "L"), ("Philadelphia", "M"), ("Stamford", "S"),
    ("Sao Paulo", "L"), ("Brasilia", "S"),
    ("Santiago", "M"), ("Buenos Aires", "M"),
    ("Frankfurt", "L"), ("Dusseldorf", "M"), ("Nuremberg", "S"), ("Strasbourg", "S"),
    ("Johannesburg", "M"), ("Cape Town", "S"),
    ("Singapore", "L"), ("Jakarta", "M"), ("Malaysia", "S"),
    ("Tokyo", "L"), ("Osaka", "M"),
    ("Sydney", "L"), ("Melbourne", "M"), ("Brisbane", "S"),
]
# The demo's region: metros whose nearest zone is their own grid's
# (CAISO, ERCOT, NYISO; Boston and Stamford sit in ISO-NE and take NYISO's).
METROS_US = [
    ("San Francisco", "L"), ("Sacramento", "S"), ("Los Angeles", "L"), ("San Diego", "M"),
    ("Dallas", "L"), ("Austin", "M"), ("Houston", "M"), ("San Antonio", "S"),
    ("New York", "L"), ("Philadelphia", "M"), ("Stamford", "S"), ("Boston", "M"),
]
SERVER = ("dell-r730-e5-2699v4", 44, 128.0, 0.0446, 0.272)  # name, cores, GiB, idle kW, full kW
VMS_PER_REPLICA = 8
TIERS = {"S": (80, 150), "M": (200, 400), "L": (500, 1000)}  # servers per site


def slug(name):
    return name.lower().replace(" ", "-")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--load", type=float, default=0.55, help="share of the fleet's cores the demand uses")
    ap.add_argument("--out", default="examples/replay-fleet.yaml")
    ap.add_argument("--region", choices=["world", "us"], default="world")
    ap.add_argument("--name", default="replay-fleet")
    ap.add_argument("--max-ambient", type=float, default=45.0,
                    help="outside air (°C) the sites' coolers are designed for")
    ap.add_argument("--derate-min", type=float, default=None,
                    help="share of cooling left at and past the design ambient (default: 0.6–0.8 drawn per site; dry coolers without chillers keep about a third)")
    args = ap.parse_args()
    metros = METROS_US if args.region == "us" else METROS
    rng = random.Random(args.seed)

    cities = list(csv.DictReader(open("data/cities.csv")))
    index = {c["city"]: i for i, c in enumerate(cities)}
    rtt = {}
    for r in csv.DictReader(open("data/rtt_ms.csv")):
        a, b = int(r["a"]), int(r["b"])
        rtt[(a, b)] = rtt[(b, a)] = float(r["rtt_ms"])
    vms = [r for r in csv.DictReader(open("data/vm_sizes.csv"))
           if float(r["cpu_cores"]) >= 1 and float(r["cpu_util_mean"]) > 0.01]

    sites, cores_total = [], 0
    for name, tier in metros:
        c = cities[index[name]]
        servers = rng.randint(*TIERS[tier])
        it_full = servers * SERVER[4]
        idle = servers * SERVER[3]
        pue_min = round(rng.uniform(1.15, 1.3), 2)
        pue_max = round(pue_min + rng.uniform(0.25, 0.45), 2)
        cores = servers * SERVER[1]
        cores_total += cores * 0.95
        sites.append({
            "id": slug(name),
            "name": name,
            "lat": float(c["lat"]),
            "lon": float(c["lon"]),
            "capacity": {"cpu_cores": float(cores), "memory_gib": servers * SERVER[2]},
            "reserve_fraction": {"cpu_cores": 0.05},
            "servers": {"model": SERVER[0], "count": servers},
            "power": {
                "cap_kw": round((idle + (it_full - idle) * rng.uniform(0.75, 0.95)) * pue_max, 1),
                "pue_min": pue_min,
                "pue_max": pue_max,
            },
            "cooling": {
                "nominal_kw": round(it_full * rng.uniform(0.95, 1.2), 1),
                "derate_min": round(rng.uniform(0.6, 0.8), 2) if args.derate_min is None else args.derate_min,
                "free_cooling_limit_c": round(rng.uniform(18.0, 24.0), 1),
                "max_ambient_c": args.max_ambient,
                "humidity_derate": 0.8,
            },
            "thermal": {
                "ashrae_class": rng.choice(["A2", "A2", "A3"]),
                "margin_c": 2.0,
                "supply_setpoint_c": 18.0,
                "approach_c": 3.0,
                "recirc_c_per_kw": round(rng.uniform(0.5, 1.0), 2),
                "racks": max(1, servers // 20),
            },
            # Replaced every hour by the replay's zone series.
            "energy": {"price_per_kwh": 0.1, "carbon_g_per_kwh": 400.0},
            "ambient": {"current_c": 20.0},
        })
    ids = [s["id"] for s in sites]
    members = [index[n] for n, _ in metros]
    links = []
    for i, a in enumerate(members):
        for j in range(i + 1, len(members)):
            b = members[j]
            if (a, b) in rtt:
                links.append({"a": ids[i], "b": ids[j], "rtt_ms": rtt[(a, b)], "bandwidth_gbps": 100.0})
    regions = [{"id": f"users-{i}", "node": i} for i in ids]

    # Users where the servers are: a workload's home metro weighted by its
    # cores, a second metro among the five nearest (see below).
    weights = [s["capacity"]["cpu_cores"] for s in sites]
    near = {}
    for i, a in enumerate(members):
        others = sorted((rtt.get((a, b), 1e9), j) for j, b in enumerate(members) if j != i)
        near[i] = [j for _, j in others[:5]]
    workloads, placed_cores, n = [], 0.0, 0
    target = args.load * cores_total
    while placed_cores < target and sum(w["replicas"] for w in workloads) < args.replicas:
        vm = rng.choice(vms)
        home = rng.choices(range(len(sites)), weights=weights)[0]
        replicas = rng.choice([1, 2, 2, 3, 4, 6, 8])
        cores = VMS_PER_REPLICA * float(vm["cpu_cores"])
        roll = rng.random()
        slo = 30.0 if roll < 0.55 else 80.0 if roll < 0.8 else 250.0
        # A second user metro a fifth of the traffic comes from, near
        # enough that a site at home serves both within the SLO.
        reach = [j for j in near[home] if rtt.get((members[home], members[j]), 1e9) <= slo / 2]
        other = rng.choice(reach) if reach else home
        w = {
            "id": f"wl-{n:05d}",
            "replicas": replicas,
            "resources": {"cpu_cores": cores, "memory_gib": round(VMS_PER_REPLICA * float(vm["memory_gib"]), 2)},
            "utilization": max(0.05, round(float(vm["cpu_util_mean"]), 2)),
            "traffic": [
                {"region": f"users-{ids[home]}", "weight": 0.8},
                {"region": f"users-{ids[other]}", "weight": 0.2},
            ] if other != home else [{"region": f"users-{ids[home]}", "weight": 1.0}],
            "slo": {"rtt_ms": slo, "percentile": 95.0},
            "priority": rng.choice([1, 2, 3, 5, 8]),
            "state_gib": round(rng.uniform(1.0, 16.0), 1),
        }
        workloads.append(w)
        placed_cores += replicas * cores
        n += 1
    if args.region == "us":
        # A spot customer (docs/spot.md): a render farm whose data stays in
        # Texas, preemptible, bidding a little over what a replica's energy
        # and carbon cost there on a summer evening; the heat wave's prices
        # take its room back, with two minutes' notice.
        workloads.append({
            "id": "render-farm",
            "replicas": 24,
            "resources": {"cpu_cores": 16.0, "memory_gib": 32.0},
            "utilization": 0.9,
            "pinned_sites": [i for i in ids if i in ("dallas", "austin", "houston", "san-antonio")],
            "priority": 1,
            "state_gib": 0.0,
            "spot": {"max_price_per_replica_hour": 0.008, "notice_s": 120.0},
        })
    inst = {
        "name": args.name,
        "sites": sites,
        "network": {"nodes": [{"id": i} for i in ids], "links": links},
        "regions": regions,
        "workloads": workloads,
        "objective": {
            "energy": 1.0, "carbon_per_tonne": 80.0, "latency_per_ms": 5e-05,
            "migration_per_move": 0.01, "migration_per_gib": 0.0005,
            "thermal_risk": 0.05, "unplaced_per_priority": 1000.0,
        },
        # Re-planned every hour: plan for the next three.
        "limits": {"horizon_hours": 3, "max_moves": 200},
    }
    with open(args.out, "w") as f:
        if args.out.endswith((".yaml", ".yml")):
            import yaml  # only here: the JSON path needs no third-party module

            f.write("# Built by scripts/replay_fleet.py; see its docstring for what is real here.\n")
            # Flow style for leaf collections: one line per site's resources,
            # a workload's traffic entry, a link.
            yaml.safe_dump(inst, f, sort_keys=False, default_flow_style=None, width=120)
        else:
            json.dump(inst, f, indent=1)
            f.write("\n")
    it_kw = [s["servers"]["count"] * SERVER[4] for s in sites]
    print(f"{args.out}: {len(sites)} sites ({min(it_kw):.0f}–{max(it_kw):.0f} kW IT at full load), "
          f"{len(workloads)} workloads, {sum(w['replicas'] for w in workloads)} replicas, "
          f"{len(links)} measured links, {placed_cores / cores_total:.0%} of the cores")


if __name__ == "__main__":
    main()
