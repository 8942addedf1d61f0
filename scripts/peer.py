#!/usr/bin/env python3
"""Side by side: edgeplan against HiGHS and OR-Tools CP-SAT on the very same
model, at the same time budget.

For each size, `edgeplan gen` builds the instance and `edgeplan export
--format mps` writes the exact MILP edgeplan itself prices; HiGHS (highspy)
and CP-SAT (OR-Tools' model builder, every column integral: x, y are integer
and m, u take integer values at any optimum) solve that MPS file with the
size's time limit, and `edgeplan solve` solves the instance with the same
limit. Everyone is asked for the optimum: edgeplan with `--gap 0`, HiGHS
with `mip_rel_gap` 0 (its default 0.01 % would stop it early), CP-SAT by
default. Prints each objective and the ratio edgeplan / peer (below 1: edgeplan
is better). The peers run in a virtual environment of their own, so that
their protobuf does not clash with grpcio-tools':

    python3 -m venv .peer && .peer/bin/pip install highspy ortools
    .peer/bin/python scripts/peer.py [--sizes 5000x100:1,100000x1000:10]
    .peer/bin/python scripts/peer.py --suite quick [--times 1,10,60]

`--suite` takes the instances of `edgeplan bench --suite NAME` (families:
gen at several loads, gpu-tight, metro, rules; several seeds), each at its
own time limit or at every one of `--times`.

Build edgeplan first (`cargo build --release`); EDGEPLAN overrides the
binary's path.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

EDGEPLAN = os.environ.get("EDGEPLAN", "target/release/edgeplan")


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True)


def edgeplan_solve(instance, seconds):
    started = time.monotonic()
    out = run(EDGEPLAN, "solve", "--instance", instance, "--time-limit", str(seconds), "--gap", "0")
    report = json.loads(out.stdout)
    return report["objective"]["total"], time.monotonic() - started, report.get("unplaced_replicas")


def highs_solve(mps, seconds):
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(seconds))
    # edgeplan runs with --gap 0; HiGHS's default (a 0.01 % relative gap)
    # would let it stop early and lose by its own tolerance.
    h.setOptionValue("mip_rel_gap", 0.0)
    h.readModel(mps)
    started = time.monotonic()
    h.run()
    info = h.getInfo()
    feasible = info.primal_solution_status == 2
    # The MPS objective row carries the constant as a negated RHS; HiGHS
    # reports the objective with the offset included.
    return (info.objective_function_value if feasible else float("nan")), time.monotonic() - started


def cpsat_solve(mps, seconds):
    from ortools.linear_solver.python import model_builder as mb

    model = mb.ModelBuilder()
    model.import_from_mps_file(mps)
    for i in range(model.num_variables):
        v = model.var_from_index(i)
        v.is_integral = True
    solver = mb.ModelSolver("sat")
    solver.set_time_limit_in_seconds(float(seconds))
    solver.set_solver_specific_parameters("num_workers:2")
    started = time.monotonic()
    status = solver.solve(model)
    ok = status in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE)
    print(f"CP-SAT: {status} {solver.status_string}", file=sys.stderr)
    return (solver.objective_value if ok else float("nan")), time.monotonic() - started


def in_own_process(peer, mps, seconds):
    """highspy and OR-Tools each bundle a HiGHS; loaded together their symbols
    clash, so each peer solves in a Python process of its own."""
    out = run(sys.executable, __file__, "--peer", peer, "--mps", mps, "--seconds", str(seconds))
    objective, wall = out.stdout.strip().splitlines()[-1].split()[-2:]
    return float(objective), float(wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=["highs", "cpsat"], help=argparse.SUPPRESS)
    parser.add_argument("--mps", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="5000x100:1,100000x1000:10",
                        help="REPLICASxSITES:SECONDS, comma-separated")
    parser.add_argument("--seed", default="1")
    parser.add_argument("--load", default="0.7")
    parser.add_argument("--suite", help="the instances of `edgeplan bench --suite NAME`")
    parser.add_argument("--times", help="with --suite: these time limits (s), comma-separated")
    args = parser.parse_args()
    if args.peer:
        solve_mps = highs_solve if args.peer == "highs" else cpsat_solve
        print("\n", *solve_mps(args.mps, args.seconds))
        return
    # (family, replicas, sites, load, seed, seconds) per instance.
    if args.suite:
        listed = run(EDGEPLAN, "bench", "--suite", args.suite, "--list").stdout.split("\n")
        entries = [line.split() for line in listed if line.strip()]
    else:
        entries = []
        for item in args.sizes.split(","):
            size, seconds = item.split(":")
            replicas, sites = size.split("x")
            entries.append(["standard", replicas, sites, args.load, args.seed, seconds])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, replicas, sites, load, seed, seconds in entries:
            name = f"{family}-{replicas}x{sites}-load{load}-seed{seed}"
            inst = os.path.join(tmp, f"{name}.json")
            mps = os.path.join(tmp, f"{name}.mps")
            run(EDGEPLAN, "gen", "--family", family, "--sites", sites, "--replicas", replicas,
                "--seed", seed, "--load", load, "--out", inst)
            run(EDGEPLAN, "export", "--instance", inst, "--format", "mps", "--out", mps)
            for limit in (args.times.split(",") if args.times else [seconds]):
                ours, ours_s, unplaced = edgeplan_solve(inst, limit)
                highs, highs_s = in_own_process("highs", mps, limit)
                cpsat, cpsat_s = in_own_process("cpsat", mps, limit)
                rows.append((name, limit, ours, unplaced, highs, cpsat))
                print(f"{name} at {limit} s: edgeplan {ours:.4f} ({ours_s:.1f} s, {unplaced} unplaced), "
                      f"HiGHS {highs:.4f} ({highs_s:.1f} s), CP-SAT {cpsat:.4f} ({cpsat_s:.1f} s)",
                      file=sys.stderr)
    # Below 1: edgeplan is better; nan: the peer found no solution.
    print(f"{'instance':>40} {'limit_s':>7} {'edgeplan':>14} {'unplaced':>8} {'highs':>14} "
          f"{'cp_sat':>14} {'ours/highs':>10} {'ours/cpsat':>10}")
    for name, limit, ours, unplaced, highs, cpsat in rows:
        print(f"{name:>40} {limit:>7} {ours:>14.4f} {unplaced!s:>8} {highs:>14.4f} {cpsat:>14.4f} "
              f"{ours / highs:>10.4f} {ours / cpsat:>10.4f}")


if __name__ == "__main__":
    main()
