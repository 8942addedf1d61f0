#!/usr/bin/env python3
"""A provisioner in Python, written from the proto's `Provisioner` contract:
edgeplan calls Execute once per plan step, may repeat a call (a retry
after a timeout or an error, or after edgeplan restarts), and a repeated
idempotency key must never run the step twice — it gets the first
outcome, waiting for it while the step still runs.

This one "executes" a step by waiting its expected duration (times
--speed), keeps a journal (one JSON line per real execution, read back at
start so idempotency survives its own restarts), and can misbehave the way
real ones do: answer UNAVAILABLE before executing every Nth call
(--unavailable-every), or fail steps (--fail-workloads, --fail-all).

It is fenced, as the contract asks: it keeps the highest fencing token
seen (in `<journal>.fence`, so a restart keeps it) and refuses a call or a
Fence with a lower one with FAILED_PRECONDITION, without running anything.

    python3 clients/python/provisioner.py --listen 127.0.0.1:50052 --journal steps.jsonl

It prints `listening on HOST:PORT` once serving. Needs grpcio and grpcio-tools.
"""

import argparse
import json
import os
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from happy_path import load_stubs  # noqa: E402


class Journal:
    """Real executions by idempotency key, on disk before the answer."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.done = {}  # key -> (outcome, message)
        self.running = {}  # key -> threading.Event
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    e = json.loads(line)
                    self.done[e["key"]] = (e["outcome"], e["message"])

    def claim(self, key):
        """('done', outcome) | ('wait', event) | ('run', None)."""
        with self.lock:
            if key in self.done:
                return "done", self.done[key]
            if key in self.running:
                return "wait", self.running[key]
            self.running[key] = threading.Event()
            return "run", None

    def record(self, key, entry, outcome, message):
        with self.lock:
            with open(self.path, "a") as f:
                f.write(json.dumps(dict(entry, key=key, outcome=outcome, message=message)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.done[key] = (outcome, message)
            self.running.pop(key).set()


class Fence:
    """The highest fencing token seen, on disk before it is admitted."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.highest = int(open(path).read().strip() or 0) if os.path.exists(path) else 0

    def admit(self, token):
        """None if admitted, else why not."""
        with self.lock:
            if token < self.highest:
                return f"fenced: fencing token {token} is lower than {self.highest} already seen"
            if token > self.highest:
                with open(self.path, "w") as f:
                    f.write(str(token))
                    f.flush()
                    os.fsync(f.fileno())
                self.highest = token
            return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:50052")
    ap.add_argument("--journal", required=True)
    ap.add_argument("--speed", type=float, default=1.0, help="multiplier on expected durations")
    ap.add_argument("--unavailable-every", type=int, default=0,
                    help="answer UNAVAILABLE, without executing, to every Nth call")
    ap.add_argument("--fail-workloads", default="", help="comma-separated: their steps fail")
    ap.add_argument("--fail-all", action="store_true")
    ap.add_argument("--proto-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "proto"))
    args = ap.parse_args()

    import grpc

    pb, rpc = load_stubs(os.path.abspath(args.proto_dir))
    journal = Journal(args.journal)
    fence = Fence(args.journal + ".fence")
    failing = {w for w in args.fail_workloads.split(",") if w}
    calls = {"n": 0}
    calls_lock = threading.Lock()

    class Provisioner(rpc.ProvisionerServicer):
        def Execute(self, request, context):
            with calls_lock:
                calls["n"] += 1
                n = calls["n"]
            if args.unavailable_every and n % args.unavailable_every == 0:
                context.abort(grpc.StatusCode.UNAVAILABLE, "python provisioner: busy, try again")
            key = request.idempotency_key
            if not key:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key: required")
            refused = fence.admit(request.fencing_token)
            if refused:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, refused)
            state, found = journal.claim(key)
            if state == "wait":  # a repeat while the first call still runs
                found.wait()
                state, found = journal.claim(key)
            if state == "done":
                outcome, message = found
                return pb.StepResult(idempotency_key=key, outcome=outcome, message=message,
                                     duplicate=True)
            time.sleep(max(0.0, request.expected_duration_s * args.speed))
            if args.fail_all or request.workload in failing:
                outcome, message = pb.OUTCOME_FAILED, "python provisioner: refused by configuration"
            else:
                kind = pb.StepKind.Name(request.kind)
                outcome = pb.OUTCOME_SUCCEEDED
                message = f"python provisioner: {kind} {request.workload} {request.from_site}->{request.to_site}"
            entry = {"plan": request.plan_id, "step": request.step_id, "workload": request.workload,
                     "kind": pb.StepKind.Name(request.kind), "from": request.from_site,
                     "to": request.to_site}
            journal.record(key, entry, outcome, message)
            return pb.StepResult(idempotency_key=key, outcome=outcome, message=message)

        def Fence(self, request, context):
            refused = fence.admit(request.fencing_token)
            if refused:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, refused)
            return pb.FenceReply(highest=fence.highest)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    rpc.add_ProvisionerServicer_to_server(Provisioner(), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
