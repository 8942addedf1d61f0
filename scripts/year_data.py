#!/usr/bin/env python3
"""Build data/year2023/ (what `edgeplan replay` ships) from the green-dcc
extract in ../shared/data/greendcc_2023/: one wide CSV per kind, a row per
UTC hour of 2023 and a column per grid zone, plus zones.csv.

Values are copied as they stand in the extract (no rounding, no invented
values) except one: DE-LU has no price at 2023-10-29T01:00:00Z (the extract's
only gap, the repeated hour when clocks went back); it takes the hour
before's price, and README.md says so.

    python3 scripts/year_data.py [--src ../shared/data/greendcc_2023] [--out data/year2023]
"""

import argparse
import csv
import os


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="../shared/data/greendcc_2023")
    ap.add_argument("--out", default="data/year2023")
    args = ap.parse_args()
    zones = rows(os.path.join(args.src, "locations.csv"))
    ids = [z["location"] for z in zones]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "zones.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["zone", "city", "lat", "lon", "iana_tz", "price_series"])
        for z in zones:
            w.writerow([z["location"], z["weather_city"], z["weather_lat"], z["weather_lon"],
                        z["iana_tz"], z["price_series"]])
    kinds = [
        ("electricity_price_2023_utc.csv", "value", "price_usd_per_mwh.csv"),
        ("carbon_intensity_2023_utc.csv", "value", "carbon_g_per_kwh.csv"),
        ("weather_2023_utc.csv", "value", "temperature_c.csv"),
        ("weather_2023_utc.csv", "relative_humidity_2m_pct", "humidity_pct.csv"),
    ]
    for src, column, out in kinds:
        table = {}
        hours = set()
        for r in rows(os.path.join(args.src, src)):
            table[(r["utc_hour"], r["location"])] = r[column]
            hours.add(r["utc_hour"])
        hours = sorted(hours)
        assert len(hours) == 8760, (src, len(hours))
        filled = 0
        with open(os.path.join(args.out, out), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["utc_hour"] + ids)
            last = {}
            for h in hours:
                line = [h]
                for z in ids:
                    v = table.get((h, z))
                    if v is None or v == "":
                        v = last[z]
                        filled += 1
                    last[z] = v
                    line.append(v)
                w.writerow(line)
        print(out, len(hours), "hours,", filled, "filled from the hour before")


if __name__ == "__main__":
    main()
