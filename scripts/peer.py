#!/usr/bin/env python3
"""Side by side: edgeplan against HiGHS and OR-Tools CP-SAT on the very same
model, at the same time budget.

For each size, `edgeplan gen` builds the instance and `edgeplan export
--format mps` writes the exact MILP edgeplan itself prices; HiGHS (highspy)
and CP-SAT (OR-Tools' model builder, every column integral: x, y are integer
and m, u take integer values at any optimum) solve that MPS file with the
size's time limit, and `edgeplan solve` solves the instance with the same
limit. Prints each objective and the ratio edgeplan / peer (below 1: edgeplan
is better). The peers run in a virtual environment of their own, so that
their protobuf does not clash with grpcio-tools':

    python3 -m venv .peer && .peer/bin/pip install highspy ortools
    .peer/bin/python scripts/peer.py [--sizes 5000x100:1,100000x1000:10]

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
    return report["objective"]["total"], time.monotonic() - started


def highs_solve(mps, seconds):
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(seconds))
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
    args = parser.parse_args()
    if args.peer:
        solve_mps = highs_solve if args.peer == "highs" else cpsat_solve
        print("\n", *solve_mps(args.mps, args.seconds))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.sizes.split(","):
            size, seconds = item.split(":")
            replicas, sites = size.split("x")
            inst = os.path.join(tmp, f"{size}.json")
            mps = os.path.join(tmp, f"{size}.mps")
            run(EDGEPLAN, "gen", "--sites", sites, "--replicas", replicas, "--seed", args.seed,
                "--load", args.load, "--out", inst)
            run(EDGEPLAN, "export", "--instance", inst, "--format", "mps", "--out", mps)
            ours, ours_s = edgeplan_solve(inst, seconds)
            highs, highs_s = in_own_process("highs", mps, seconds)
            cpsat, cpsat_s = in_own_process("cpsat", mps, seconds)
            rows.append((size, seconds, ours, ours_s, highs, highs_s, cpsat, cpsat_s))
            print(f"{size}: edgeplan {ours:.4f} ({ours_s:.1f} s), HiGHS {highs:.4f} ({highs_s:.1f} s), "
                  f"CP-SAT {cpsat:.4f} ({cpsat_s:.1f} s)", file=sys.stderr)
    print(f"{'size':>12} {'limit_s':>7} {'edgeplan':>12} {'highs':>12} {'cp_sat':>12} "
          f"{'ours/highs':>10} {'ours/cpsat':>10}")
    for size, seconds, ours, _, highs, _, cpsat, _ in rows:
        print(f"{size:>12} {seconds:>7} {ours:>12.4f} {highs:>12.4f} {cpsat:>12.4f} "
              f"{ours / highs:>10.4f} {ours / cpsat:>10.4f}")


if __name__ == "__main__":
    main()
