#!/usr/bin/env python3
"""edgeplan's gRPC contract as a Python client sees it: TLS and bearer
tokens, every error class with its stable reason (google.rpc.ErrorInfo) and
field paths (google.rpc.BadRequest), expected versions, a retried solve,
WhatIf, WatchSites, and a WatchPlan resumed after a disconnect.

Written from the proto and the README only. Needs `pip install grpcio
grpcio-tools googleapis-common-protos`. Exits non-zero on the first broken
promise, naming it.

    python3 clients/python/contract.py --server localhost:50051 \\
        --instance fleet.json --ca ca.pem \\
        --admin-token T --reader-token T
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from happy_path import load_stubs, site_message  # noqa: E402


def details(err):
    """(ErrorInfo, BadRequest) from an RpcError's trailing metadata."""
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        fail(f"no google.rpc.Status on {err.code()}: {err.details()}")
    status = status_pb2.Status.FromString(raw)
    info, bad = None, None
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
    if info is None or info.domain != "edgeplan.dev":
        fail(f"no edgeplan.dev ErrorInfo on {err.code()}: {err.details()}")
    return info, bad


def fail(why):
    sys.exit(f"contract broken: {why}")


def expect_error(call, code, reason):
    """Run `call`; it must fail with `code` and `reason`. Returns the details."""
    import grpc

    try:
        call()
    except grpc.RpcError as err:
        info, bad = details(err)
        if err.code() != getattr(grpc.StatusCode, code) or info.reason != reason:
            fail(f"expected {code}/{reason}, got {err.code()}/{info.reason}: {err.details()}")
        print(f"  {code:<20} {reason:<18} {err.details()[:90]}")
        return info, bad
    fail(f"expected {code}/{reason}, the call succeeded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--ca", required=True, help="the CA that signed the server's certificate")
    ap.add_argument("--admin-token", required=True)
    ap.add_argument("--reader-token", required=True)
    ap.add_argument("--proto-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "proto"))
    args = ap.parse_args()

    import grpc
    from google.protobuf import json_format

    pb, rpc = load_stubs(os.path.abspath(args.proto_dir))
    with open(args.instance) as f:
        inst = json.load(f)
    with open(args.ca, "rb") as f:
        tls = grpc.ssl_channel_credentials(root_certificates=f.read())

    def channel(token):
        creds = tls
        if token is not None:
            creds = grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(args.server, creds)

    admin, reader, anonymous = channel(args.admin_token), channel(args.reader_token), channel(None)
    inventory = rpc.InventoryStub(admin)
    placement = rpc.PlacementStub(admin)
    telemetry = rpc.TelemetryStub(admin)

    print("auth:")
    expect_error(lambda: rpc.InventoryStub(anonymous).GetInventory(pb.GetInventoryRequest()),
                 "UNAUTHENTICATED", "UNAUTHENTICATED")
    expect_error(lambda: rpc.InventoryStub(channel("not-a-token")).GetInventory(pb.GetInventoryRequest()),
                 "UNAUTHENTICATED", "UNAUTHENTICATED")
    expect_error(lambda: rpc.InventoryStub(reader).UpsertSites(pb.UpsertSitesRequest()),
                 "PERMISSION_DENIED", "PERMISSION_DENIED")

    sites = [site_message(pb, s) for s in inst["sites"]]
    inventory.UpsertSites(pb.UpsertSitesRequest(sites=sites))
    inventory.UpsertRegions(pb.UpsertRegionsRequest(
        regions=[json_format.ParseDict(r, pb.Region()) for r in inst["regions"]]))
    links = inst.get("network", {}).get("links", [])
    if links:
        inventory.UpsertLinks(pb.UpsertLinksRequest(
            links=[json_format.ParseDict(l, pb.Link()) for l in links]))
    change = inventory.UpsertWorkloads(pb.UpsertWorkloadsRequest(
        workloads=[json_format.ParseDict(w, pb.Workload()) for w in inst["workloads"]]))
    version = change.version
    print(f"registered {len(sites)} sites, {len(inst['workloads'])} workloads at version {version}")

    print("errors:")
    bad_sites = []
    for s in sites[:2]:
        b = pb.Site()
        b.CopyFrom(s)
        b.power.cap_kw = -5.0
        bad_sites.append(b)
    _, bad = expect_error(lambda: inventory.UpsertSites(pb.UpsertSitesRequest(sites=bad_sites)),
                          "INVALID_ARGUMENT", "INVALID_INVENTORY")
    fields = {v.field for v in bad.field_violations}
    for s in sites[:2]:
        if f"sites[id={s.id}].power.cap_kw" not in fields:
            fail(f"BadRequest lacks sites[id={s.id}].power.cap_kw: {sorted(fields)}")
    _, bad = expect_error(lambda: inventory.Delete(pb.DeleteRequest(ids=["x"])),
                          "INVALID_ARGUMENT", "INVALID_FIELD")
    if [v.field for v in bad.field_violations] != ["kind"]:
        fail(f"the violation should name `kind`: {bad}")
    info, _ = expect_error(lambda: inventory.Delete(pb.DeleteRequest(
        kind=pb.ENTITY_KIND_WORKLOAD, ids=["no-such-workload"])), "NOT_FOUND", "NOT_FOUND")
    if dict(info.metadata) != {"kind": "workload", "id": "no-such-workload"}:
        fail(f"NOT_FOUND metadata: {dict(info.metadata)}")
    busy = next(site for w in inst["workloads"] for site in w.get("current", {}))
    expect_error(lambda: inventory.Delete(pb.DeleteRequest(kind=pb.ENTITY_KIND_SITE, ids=[busy])),
                 "FAILED_PRECONDITION", "IN_USE")
    info, _ = expect_error(lambda: inventory.SetPolicy(pb.Policy(max_moves=5, expected_version=version - 1)),
                           "ABORTED", "VERSION_MISMATCH")
    if info.metadata["version"] != str(version):
        fail(f"VERSION_MISMATCH should carry the current version {version}: {dict(info.metadata)}")
    expect_error(lambda: placement.Solve(pb.SolveRequest(time_limit_s=-1)),
                 "INVALID_ARGUMENT", "INVALID_FIELD")
    expect_error(lambda: placement.GetPlan(pb.PlanRef(plan_id=424242)), "NOT_FOUND", "NOT_FOUND")
    if inventory.GetInventory(pb.GetInventoryRequest()).version != version:
        fail("a refused change moved the version")

    print("a solve retried with its request_id:")
    request = pb.SolveRequest(request_id="py-1", deterministic=True, seed=1)
    first = placement.Solve(request, timeout=120)
    again = placement.Solve(request, timeout=120)
    if again.plan_id != first.plan_id or first.plan_id == 0:
        fail(f"the retry made plan {again.plan_id}, the first {first.plan_id}")
    if len(placement.ListPlans(pb.ListPlansRequest()).plans) != 1:
        fail("a retried solve stored a second plan")
    print(f"  plan {first.plan_id} both times, {len(first.plan.steps)} steps")
    expect_error(lambda: placement.Solve(pb.SolveRequest(request_id="py-1", seed=2), timeout=120),
                 "ALREADY_EXISTS", "REQUEST_ID_REUSED")

    print("paging:")
    for i in range(2, 5):  # more plans: each supersedes the one before
        placement.Solve(pb.SolveRequest(request_id=f"py-{i}", deterministic=True, seed=i), timeout=120)
    pages, token = [], ""
    while True:
        page = placement.ListPlans(pb.ListPlansRequest(page_size=2, page_token=token))
        pages.append([p.plan_id for p in page.plans])
        token = page.next_page_token
        if not token:
            break
    listed = [i for p in pages for i in p]
    if len(pages) != 2 or listed != sorted(listed) or len(listed) != 4:
        fail(f"pages of two: {pages}")
    superseded = placement.ListPlans(pb.ListPlansRequest(states=[pb.PLAN_STATE_SUPERSEDED]))
    if len(superseded.plans) != 3:
        fail(f"three superseded plans, listed {[p.plan_id for p in superseded.plans]}")
    entities, token, n_pages = 0, "", 0
    while True:
        snap = inventory.GetInventory(pb.GetInventoryRequest(page_size=5, page_token=token))
        n_pages += 1
        entities += len(snap.sites) + len(snap.links) + len(snap.regions) + len(snap.workloads)
        token = snap.next_page_token
        if not token:
            break
    whole = inventory.GetInventory(pb.GetInventoryRequest())
    if entities != len(whole.sites) + len(whole.links) + len(whole.regions) + len(whole.workloads):
        fail(f"paged inventory holds {entities} entities")
    expect_error(lambda: placement.ListPlans(pb.ListPlansRequest(page_token="not-a-token")),
                 "INVALID_ARGUMENT", "INVALID_FIELD")
    print(f"  plans in pages of two: {pages}; inventory: {entities} entities in {n_pages} pages of 5")
    latest = max(listed)

    print("what-if:")
    a, b = sites[0].id, sites[1].id
    doc = (f"base: live\ntime_limit_s: 5\nscenarios:\n"
           f"  - name: {a}-outage\n    perturbations:\n      - site_outage: {{ site: {a} }}\n"
           f"  - name: {b}-heat\n    perturbations:\n      - heat_wave: {{ sites: [{b}], delta_c: 10 }}\n")
    results = list(placement.WhatIf(pb.WhatIfRequest(scenarios=doc), timeout=120))
    names = sorted(r.scenario for r in results)
    if len(results) != 3 or results[0].index != 0:
        fail(f"what-if streamed {names}")
    print(f"  {len(results)} results: {names}")
    expect_error(lambda: list(placement.WhatIf(pb.WhatIfRequest(scenarios="base: live\ngap: 2\n"))),
                 "INVALID_ARGUMENT", "INVALID_FIELD")

    print("ingest with an ack per batch, one batch resent:")
    now = time.time()
    readings = [pb.Reading(device_id=f"{site.id}/outside", site=site.id,
                           device_type=pb.DEVICE_TYPE_TEMPERATURE, placement=pb.DEVICE_PLACEMENT_OUTSIDE,
                           unit="C", value=21.0, timestamp_s=now) for site in sites]
    sent = [pb.IngestBatch(batch_id=bid, batch=pb.ReadingBatch(readings=readings))
            for bid in ("py-gw/1", "py-gw/2", "py-gw/1")]
    acks = list(telemetry.IngestAcked(iter(sent), timeout=60))
    if [a.batch_id for a in acks] != ["py-gw/1", "py-gw/2", "py-gw/1"]:
        fail(f"acks {[a.batch_id for a in acks]}")
    if acks[0].accepted != len(sites) or acks[0].duplicate or not acks[2].duplicate:
        fail(f"acks: {acks}")
    print(f"  {[(a.batch_id, a.accepted, a.duplicate) for a in acks]}")

    print("watch sites:")
    stream = rpc.TelemetryStub(reader).WatchSites(pb.WatchSitesRequest(interval_ms=100), timeout=30)
    seen = next(iter(stream))
    stream.cancel()
    if sorted(s.site for s in seen.sites) != sorted(s.id for s in sites):
        fail(f"WatchSites named {[s.site for s in seen.sites]}")
    print(f"  {len(seen.sites)} sites, e.g. {seen.sites[0].site}: IT {seen.sites[0].it_kw:.2f} kW")
    expect_error(lambda: next(iter(telemetry.WatchSites(pb.WatchSitesRequest(sites=["nowhere"])))),
                 "NOT_FOUND", "NOT_FOUND")

    print("approve twice, then watch; drop the watch and reopen it:")
    placement.ApprovePlan(pb.PlanRef(plan_id=latest))
    placement.ApprovePlan(pb.PlanRef(plan_id=latest))  # a retry: no error
    watch = placement.WatchPlan(pb.PlanRef(plan_id=latest), timeout=120)
    opening = next(iter(watch))
    watch.cancel()  # the client's network drops
    if not opening.HasField("view") or opening.view.summary.plan_id != latest:
        fail("the first event of a watch should carry the whole plan")
    seen = opening.summary.revision
    print(f"  first event: {pb.PlanState.Name(opening.summary.state)} at revision {seen}, "
          f"created {opening.summary.created_at.ToJsonString()}; resuming after it")
    final = None
    resumed = rpc.PlacementStub(reader).WatchPlan(
        pb.PlanRef(plan_id=latest, after_revision=seen), timeout=120)
    for event in resumed:
        if event.summary.revision < seen or (final is None and event.summary.revision == seen):
            fail(f"resumed after revision {seen}, got {event.summary.revision}")
        seen = event.summary.revision
        final = event.summary
    if final is None or final.state != pb.PLAN_STATE_SUCCEEDED:
        fail(f"the reopened watch ended at {final}")
    print(f"  plan {final.plan_id}: {pb.PlanState.Name(final.state)} at revision {final.revision}, "
          f"{final.succeeded}/{final.steps} steps, updated {final.updated_at.ToJsonString()}")
    print("contract holds")


if __name__ == "__main__":
    main()
