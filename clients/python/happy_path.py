#!/usr/bin/env python3
"""edgeplan's happy path from Python: register a fleet, stream telemetry,
solve, approve, and watch the plan run to the end.

The stubs are generated from proto/ at start with grpcio-tools, so this
script is also the check that the .proto is a contract other languages can
use. Needs `pip install grpcio grpcio-tools`.

    python3 clients/python/happy_path.py --server 127.0.0.1:50051 \
        --instance fleet.json [--proto-dir proto]
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time


def load_stubs(proto_dir):
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="edgeplan-py-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "edgeplan/v1/edgeplan.proto",
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {proto_dir} ({rc})")
    sys.path.insert(0, out)
    pb = importlib.import_module("edgeplan.v1.edgeplan_pb2")
    rpc = importlib.import_module("edgeplan.v1.edgeplan_pb2_grpc")
    return pb, rpc


def site_message(pb, site):
    """The instance format's site as the API's Site (the fields mirror it)."""
    from google.protobuf import json_format

    s = json.loads(json.dumps(site))
    thermal = s.get("thermal", {})
    if "ashrae_class" in thermal:
        thermal["ashrae_class"] = "ASHRAE_CLASS_" + thermal["ashrae_class"]
    energy = s.get("energy", {})
    price = energy.get("price_per_kwh")
    if isinstance(price, list):
        energy["price_series"] = price
        energy["price_per_kwh"] = price[0]["price_per_kwh"] if price else 0.0
    return json_format.ParseDict(s, pb.Site())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--instance", required=True)
    ap.add_argument("--proto-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "proto"))
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    import grpc
    from google.protobuf import json_format

    pb, rpc = load_stubs(os.path.abspath(args.proto_dir))
    with open(args.instance) as f:
        inst = json.load(f)

    channel = grpc.insecure_channel(args.server)
    inventory = rpc.InventoryStub(channel)
    telemetry = rpc.TelemetryStub(channel)
    placement = rpc.PlacementStub(channel)

    if inst.get("server_models"):  # the fleet's own power curves, before the sites naming them
        inventory.UpsertServerModels(pb.UpsertServerModelsRequest(
            server_models=[json_format.ParseDict(m, pb.ServerModel()) for m in inst["server_models"]]))
    inventory.UpsertSites(pb.UpsertSitesRequest(sites=[site_message(pb, s) for s in inst["sites"]]))
    links = inst.get("network", {}).get("links", [])
    if links:
        inventory.UpsertLinks(pb.UpsertLinksRequest(
            links=[json_format.ParseDict(l, pb.Link()) for l in links]))
    inventory.UpsertRegions(pb.UpsertRegionsRequest(
        regions=[json_format.ParseDict(r, pb.Region()) for r in inst["regions"]]))
    change = inventory.UpsertWorkloads(pb.UpsertWorkloadsRequest(
        workloads=[json_format.ParseDict(w, pb.Workload()) for w in inst["workloads"]]))
    print(f"registered {len(inst['sites'])} sites, {len(inst['workloads'])} workloads; version {change.version}")

    now = time.time()

    def batches():
        readings = []
        for s in inst["sites"]:
            readings.append(pb.Reading(
                device_id=f"{s['id']}/outside-temp", site=s["id"],
                device_type=pb.DEVICE_TYPE_TEMPERATURE, placement=pb.DEVICE_PLACEMENT_OUTSIDE,
                unit="C", value=s["ambient"]["current_c"], timestamp_s=now))
        readings.append(pb.Reading(
            device_id="nowhere/outside-temp", site="nowhere",
            device_type=pb.DEVICE_TYPE_TEMPERATURE, placement=pb.DEVICE_PLACEMENT_OUTSIDE,
            unit="C", value=20.0, timestamp_s=now))
        yield pb.ReadingBatch(readings=readings)

    summary = telemetry.Ingest(batches())
    print(f"telemetry: {summary.accepted} accepted, {summary.rejected} rejected {dict(summary.rejected_by_reason)}")
    assert summary.accepted == len(inst["sites"]), summary
    assert summary.rejected == 1 and summary.examples[0].device_id == "nowhere/outside-temp", summary

    solved = placement.Solve(pb.SolveRequest(time_limit_s=10.0), timeout=60)
    print(f"solve: {solved.status}, objective {solved.objective:.4f}, plan {solved.plan_id} "
          f"with {len(solved.plan.steps)} steps")
    placement.ApprovePlan(pb.PlanRef(plan_id=solved.plan_id))
    final = None
    for event in placement.WatchPlan(pb.PlanRef(plan_id=solved.plan_id), timeout=args.timeout):
        s = event.summary
        if event.HasField("step"):
            print(f"  step {event.step.step_id} {pb.StepState.Name(event.step.state)}")
        final = s
    state = pb.PlanState.Name(final.state)
    print(f"plan {final.plan_id}: {state}, {final.succeeded}/{final.steps} steps succeeded")
    if final.state != pb.PLAN_STATE_SUCCEEDED:
        sys.exit(1)


if __name__ == "__main__":
    main()
