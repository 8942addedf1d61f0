#!/usr/bin/env bash
# Behaviour unchanged? Runs two edgeplan binaries (before and after a
# refactor) on the same generated fleets and compares what they answer:
# the exported MILP byte for byte — or, where rows were only reordered,
# as the same set of lines (the same model: so HiGHS and CP-SAT, given it
# by scripts/peer.py, answer the same) — deterministic fast-path
# objectives, the migration plans, exact optima and deterministic `auto`
# solves.
#
#   scripts/same_answers.sh OLD_BINARY NEW_BINARY     (exit 1 on a difference)
set -euo pipefail
old=$1 new=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
diffs=0
objective() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["objective"]["total"], r["status"], r.get("unplaced_replicas"))'; }
for spec in "8 40 1 0.7" "8 40 2 0.9" "20 150 3 0.8" "40 400 4 0.8" "60 800 5 0.95" "100 2000 6 0.8"; do
  set -- $spec
  f=fleet-$1-$2-$3.json
  "$new" gen --sites "$1" --workloads "$2" --seed "$3" --load "$4" --out "$f" >/dev/null 2>&1
  for b in old new; do
    bin=${!b}
    "$bin" export --instance "$f" --format mps > "$b.mps" 2>/dev/null
    "$bin" solve --instance "$f" --deterministic --work 30000000 --method fast --plan-out "$b-plan.json" 2>/dev/null | objective > "$b.fast"
    "$bin" solve --instance "$f" --deterministic --work 20000000 --method auto 2>/dev/null | objective > "$b.auto"
  done
  for what in mps fast auto plan.json; do
    a=old.$what; b=new.$what
    [[ $what == plan.json ]] && { a=old-plan.json; b=new-plan.json; }
    if cmp -s "$a" "$b"; then
      r=same
    elif [[ $what == mps ]] && cmp -s <(sort "$a") <(sort "$b"); then
      r="same model, rows in another order"
    else
      r=DIFFERENT; diffs=$((diffs + 1))
    fi
    printf '%sx%s seed %s load %s: %-9s %s\n' "$1" "$2" "$3" "$4" "$what" "$r"
  done
  echo "  fast: $(cat new.fast) · auto: $(cat new.auto)"
done
for spec in "8 40 1 0.7" "8 40 2 0.9" "12 80 7 0.85"; do
  set -- $spec
  f=fleet-$1-$2-$3.json
  "$new" gen --sites "$1" --workloads "$2" --seed "$3" --load "$4" --out "$f" >/dev/null 2>&1
  o=$("$old" solve --instance "$f" --method exact --gap 0 2>/dev/null | objective)
  n=$("$new" solve --instance "$f" --method exact --gap 0 2>/dev/null | objective)
  [[ $o == "$n" ]] && r=same || { r=DIFFERENT; diffs=$((diffs + 1)); }
  echo "${1}x$2 seed $3 exact optimum: $r ($n)"
done
echo "$diffs difference(s)"
[[ $diffs == 0 ]]
