#!/usr/bin/env python3
"""Regenerate models/ and data/ from the public data in ../shared/data.

Only selects, renames, aggregates and rounds: no value is invented. Run from
the repository root: `python3 scripts/extract_data.py ../shared/data`.
"""
import csv
import json
import os
import sys
from collections import defaultdict

SRC = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"

# SPECpower_ssj2008 results picked to span 2007-2016, vendors and core counts.
SERVERS = {
    "dell-r730-e5-2699v4": "power_ssj2008-20160510-00732",
    "dell-r630-e5-2699v4": "power_ssj2008-20160510-00731",
    "dell-r630-e5-2699v3": "power_ssj2008-20150317-00691",
    "dell-r730-e5-2699v3": "power_ssj2008-20150203-00686",
    "hpe-dl560-gen9": "power_ssj2008-20150707-00696",
    "fujitsu-rx2540-m1": "power_ssj2008-20140930-00675",
    "dell-r820-e5-4650v2": "power_ssj2008-20140401-00654",
    "sugon-i840-g25": "power_ssj2008-20140615-00658",
    "acer-ar585-f1": "power_ssj2008-20120518-00472",
    "ibm-x3755-m3": "power_ssj2008-20111111-00409",
    "dell-r815-opteron6174": "power_ssj2008-20100615-00270",
    "hp-dl785-g6": "power_ssj2008-20090819-00188",
    "hp-dl585-g5": "power_ssj2008-20081113-00097",
    "asus-rs160-e5": "power_ssj2008-20081103-00094",
    "dell-2950-iii": "power_ssj2008-20071128-00013",
}


def servers():
    by_id = {r["result_id"]: r for r in csv.DictReader(open(f"{SRC}/specpower_ssj2008_power_curves.csv"))}
    out = []
    for name, rid in SERVERS.items():
        r = by_id[rid]
        out.append({
            "name": name,
            "spec_result_id": rid,
            "vendor": r["vendor"],
            "system": r["system"],
            "processor": r["processor"],
            "cores": int(r["cores"]),
            "memory_gib": float(r["memory_gb"]),
            "watts": [float(r["watts_idle"])] + [float(r[f"watts_{p}"]) for p in range(10, 101, 10)],
            "source": r["disclosure_url"],
        })
    os.makedirs("models", exist_ok=True)
    with open("models/servers.json", "w") as f:
        json.dump({
            "source": "SPECpower_ssj2008 published results (SPEC), via github.com/Derek-Jones/ESEUR-code-data "
                      "hardware/ssj2008-results-20160613.csv.xz; watts at active idle, 10 %, ..., 100 % target load",
            "servers": out,
        }, f, indent=1)


def cities_and_rtt():
    rtt = defaultdict(list)
    for r in csv.DictReader(open(f"{SRC}/latency_wondernetwork_rtt_2018.csv")):
        a, b = sorted((r["src_city"], r["dst_city"]))
        rtt[(a, b)].append(float(r["rtt_avg_ms"]))
    names_in_rtt = {c for pair in rtt for c in pair}
    cities = [r for r in csv.DictReader(open(f"{SRC}/latency_wondernetwork_cities.csv")) if r["city"] in names_in_rtt]
    cities.sort(key=lambda r: -int(r["population"] or 0))
    index = {r["city"]: i for i, r in enumerate(cities)}
    os.makedirs("data", exist_ok=True)
    with open("data/cities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["city", "country", "continent", "lat", "lon", "population"])
        for r in cities:
            w.writerow([r["city"], r["country"], r["continent"], round(float(r["lat"]), 4), round(float(r["lon"]), 4), r["population"] or 0])
    with open("data/rtt_ms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "rtt_ms"])  # indices into cities.csv; mean of both directions
        for (a, b), v in sorted(rtt.items(), key=lambda kv: (index[kv[0][0]], index[kv[0][1]])):
            i, j = sorted((index[a], index[b]))
            w.writerow([i, j, round(sum(v) / len(v), 1)])


def vm_sizes():
    with open("data/vm_sizes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vm_id", "cpu_cores", "memory_gib", "cpu_util_mean", "cpu_util_p95"])
        for r in csv.DictReader(open(f"{SRC}/bitbrains_rnd_2013-07_vm_summary.csv")):
            cores = int(float(r["cpu_cores"]))
            mem_gib = float(r["mem_capacity_mb"]) / 1024
            cap = float(r["cpu_capacity_mhz"])
            if cores <= 0 or mem_gib < 0.5 or cap <= 0:
                continue
            w.writerow([r["vm_id"], cores, round(mem_gib, 2),
                        round(min(1.0, float(r["cpu_usage_mhz_mean"]) / cap), 3),
                        round(min(1.0, float(r["cpu_usage_mhz_p95"]) / cap), 3)])


def diurnal():
    hourly = defaultdict(list)
    for r in csv.DictReader(open(f"{SRC}/azure2019_vm_aggregate_cpu_mem_5min.csv")):
        hourly[int(r["t_offset_s"]) // 3600].append(float(r["total_cpu_usage"]))
    means = [sum(v) / len(v) for _, v in sorted(hourly.items())]
    peak = max(means)
    with open("data/azure_cpu_hourly.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hour", "cpu_relative"])
        for h, m in enumerate(means):
            w.writerow([h, round(m / peak, 4)])


def weather():
    with open("data/weather_greensboro_hourly.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hour", "dry_bulb_c", "dew_point_c"])
        for h, r in enumerate(csv.DictReader(open(f"{SRC}/weather_tmy3_greensboro_nc_hourly.csv"))):
            w.writerow([h, r["dry_bulb_c"], r["dew_point_c"]])


def weather_seattle():
    with open("data/weather_seattle_2010_hourly.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hour", "temp_c"])  # converted from °F
        for h, r in enumerate(csv.DictReader(open(f"{SRC}/weather_seattle_2010_hourly_f.csv"))):
            w.writerow([h, round((float(r["temp"]) - 32) * 5 / 9, 2)])


def gpu_samples():
    # Hourly mean utilisation and power of one GPU (the readings are per
    # device: hourly means stay under each card's board power).
    with open("data/gpu_power_hourly.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "gpu_util_pct", "gpu_power_w"])
        for r in csv.DictReader(open(f"{SRC}/biohpc_gpu_server_power_temp_hourly.csv")):
            w.writerow([r["server"], r["gpu_util_avg_pct"], r["gpu_power_avg_w"]])


servers()
gpu_samples()
weather_seattle()
cities_and_rtt()
vm_sizes()
diurnal()
weather()
