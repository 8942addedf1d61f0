#!/usr/bin/env python3
"""Writes the generated seeds of fuzz/corpus/ (telemetry_batch: protobuf
ReadingBatch messages, hand-encoded; execution: fixed pseudo-random bytes).
The instance and scenario seeds are plain text files kept as they are.
Run from anywhere: python3 fuzz/seeds/make_seeds.py"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def s(field, text):
    b = text.encode()
    return key(field, 2) + varint(len(b)) + b if b else b""


def d(field, value):
    return key(field, 1) + struct.pack("<d", value) if value != 0.0 else b""


def e(field, value):
    return key(field, 0) + varint(value) if value else b""


# DeviceType: 1 temperature, 2 humidity, 3 power, 4 airflow, 5 fan, 6 ups,
# 7 utilization. DevicePlacement: 1 outside, 2 rack, 3 supply, 4 site,
# 5 workload.
def reading(device_id, device_type, placement, value, ts=0.0, site="", rack="", unit=""):
    body = (s(1, device_id) + s(2, site) + s(3, rack) + e(4, device_type)
            + e(5, placement) + s(6, unit) + d(7, value) + d(8, ts))
    return key(1, 2) + varint(len(body)) + body


def batch(readings, site="", ts=0.0):
    return b"".join(readings) + s(2, site) + d(3, ts)


T0 = 1_700_000_000.0
seeds = {
    "fra-every-kind": batch([
        reading("fra-amb-1", 1, 1, 18.0, T0, "fra"),
        reading("fra-amb-1", 1, 1, 18.5, T0 + 60, "fra"),
        reading("fra-hum-1", 2, 1, 55.0, T0, "fra"),
        reading("fra-inlet-r1", 1, 2, 24.0, T0, "fra", "r1"),
        reading("fra-pdu-r1", 3, 2, 2.0, T0, "fra", "r1", "kW"),
        reading("fra-supply", 1, 3, 15.0, T0, "fra"),
        reading("fra-meter", 3, 4, 3.5, T0, "fra"),
        reading("fra-ups", 6, 4, 3400.0, T0 + 1, "fra", "", "W"),
        reading("fra-util", 7, 4, 0.6, T0, "fra"),
        reading("checkout", 7, 5, 40.0, T0, "fra", "", "%"),
        reading("fra-fan-r1", 5, 2, 3000.0, T0, "fra", "r1"),
        reading("fra-air-r1", 4, 2, 500.0, T0, "fra", "r1", "cfm"),
    ]),
    "batch-defaults": batch([
        reading("par-amb-1", 1, 1, 64.4, unit="F"),
        reading("par-inlet-r1", 1, 2, 25.0, rack="r1"),
        reading("par-util", 7, 0, 0.5),
    ], site="par", ts=T0),
    "rejections": batch([
        reading("x-1", 1, 1, 20.0, T0, "nowhere"),
        reading("mil-amb", 1, 1, float("nan"), T0, "mil"),
        reading("mil-amb", 1, 1, 500.0, T0, "mil"),
        reading("mil-inlet", 1, 2, 20.0, T0, "mil"),
        reading("mil-amb", 1, 1, 20.0, T0, "mil", "", "K"),
        reading("", 1, 1, 20.0, T0, "mil"),
        reading("mil-pdu", 3, 1, 1.0, T0, "mil"),
        reading("mil-x", 0, 0, 1.0, T0, "mil"),
        reading("mil-amb", 1, 1, 20.0, T0, "mil"),
        reading("mil-amb", 1, 1, 20.0, T0, "mil"),
        reading("mil-amb", 1, 1, 20.0, T0 - 5, "mil"),
        reading("mil-amb", 1, 1, 40.0, T0 + 1, "mil"),
    ]),
    "hourly": batch([
        reading("mil-amb", 1, 1, 20.0 + h * 0.5, T0 + h * 3600, "mil") for h in range(6)
    ] + [
        reading("analytics", 7, 5, 0.1 * h, T0 + h * 3600, "mil") for h in range(6)
    ]),
}
os.makedirs(os.path.join(CORPUS, "telemetry_batch"), exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(CORPUS, "telemetry_batch", name + ".pb"), "wb") as f:
        f.write(data)

rng = random.Random(1)
os.makedirs(os.path.join(CORPUS, "execution"), exist_ok=True)
for i, size in enumerate([16, 64, 128, 256, 512]):
    with open(os.path.join(CORPUS, "execution", f"random-{i}.bin"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(size)))
