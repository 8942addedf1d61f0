#!/usr/bin/env bash
# Coverage-guided fuzzing of edgeplan's input surfaces with cargo-fuzz
# (libFuzzer): instance files, what-if scenario files, telemetry batches and
# the plan executor's state machine (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Installs cargo-fuzz if missing, brings cmake and libclang for HiGHS the
# way `make deps` does, builds every target (fuzz/target, its own target
# dir), runs each for SECONDS_PER_TARGET and prints the executions run.
# Exits non-zero if any target crashes (a panic), times out or runs out of
# memory; the input is left in fuzz/artifacts/<target>/. Inputs that once
# crashed are kept in fuzz/regressions/<target>/ and replayed on every run.
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: all four)
#   FUZZ_SANITIZER  none (default) or address; a sanitizer needs nightly
#                   flags, which RUSTC_BOOTSTRAP=1 unlocks on stable
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (25)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
secs=${1:-60}
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || usage
targets=${FUZZ_TARGETS:-instance scenario telemetry_batch execution}
sanitizer=${FUZZ_SANITIZER:-none}
timeout=${FUZZ_TIMEOUT:-25}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The fuzz crate builds in fuzz/target, never in a shared target dir.
unset CARGO_TARGET_DIR

# cargo-fuzz itself.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# What the build needs: a C++ compiler (libFuzzer, HiGHS), cmake and
# libclang (HiGHS and its bindgen). scripts/deps.sh brings the last two,
# from Debian as root, else from PyPI, as `make deps` does.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz: installing g++ from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq g++ >/dev/null
  else
    echo "fuzz: a C++ compiler (g++) is needed" >&2
    exit 1
  fi
fi
# deps.sh brings cmake and libclang if missing and writes where PyPI's
# wheels put them (off PATH) to target/deps.env.
./scripts/deps.sh
set -a; . ./target/deps.env; set +a

# --dev: fuzz/Cargo.toml's dev profile (opt-level 1, overflow checks and
# debug assertions on); cargo-fuzz's release mode would compile the whole
# stack with one codegen unit per crate, far slower on two cores.
flags=(--dev --sanitizer "$sanitizer")
if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
  # Cargo caches rustc's answers; one from a run without RUSTC_BOOTSTRAP
  # would refuse -Zsanitizer again.
  rm -f fuzz/target/.rustc_info.json
fi

echo "fuzz: building the targets (cargo fuzz build ${flags[*]})" >&2
t0=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "fuzz: built in $(($(date +%s) - t0)) s" >&2

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
limits=(-timeout="$timeout" -rss_limit_mb=2048 -malloc_limit_mb=2048)

# What a failed libFuzzer run found, from its log.
verdict() {
  if grep -q "ERROR: libFuzzer: timeout" "$1"; then
    echo TIMEOUT
  elif grep -q "out-of-memory" "$1"; then
    echo OOM
  elif grep -q "ERROR: libFuzzer: deadly signal\|panicked at" "$1"; then
    echo CRASH
  else
    echo FAILED
  fi
}
explain() {
  grep -m1 -A1 "panicked at" "$1" >&2 || grep -m2 "ERROR: libFuzzer" "$1" >&2 || tail -n 30 "$1" >&2
}

failed=0
summary=()
for t in $targets; do
  mkdir -p "fuzz/artifacts/$t"
  # Inputs that crashed before: replayed first, on their own, so that a
  # bug still open fails the run without keeping the target from fuzzing.
  regressions=
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    log=$logs/$t.regressions.log
    n=$(ls -A "fuzz/regressions/$t" | wc -l)
    if (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$root/fuzz/regressions/$t" -- \
      -runs=0 "${limits[@]}") >"$log" 2>&1; then
      regressions="regressions: $n pass"
    else
      failed=1
      regressions="regressions: $(verdict "$log") (log: $log)"
      echo "fuzz: $t: an input of fuzz/regressions/$t fails again:" >&2
      explain "$log"
    fi
  fi

  work=fuzz/target/corpus/$t # what the run adds; the seeds stay as they are
  mkdir -p "$work"
  extra=()
  if [ -f "fuzz/dict/$t.dict" ]; then
    extra+=(-dict="$root/fuzz/dict/$t.dict")
  fi
  before=$(ls "fuzz/artifacts/$t" | sort)
  log=$logs/$t.log
  echo "fuzz: $t for ${secs}s (log: $log)" >&2
  set +e
  (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$root/$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$secs" "${limits[@]}" -print_final_stats=1 "${extra[@]}") >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  new=$(comm -13 <(echo "$before") <(ls "fuzz/artifacts/$t" | sort) | sed "s|^|fuzz/artifacts/$t/|" | tr '\n' ' ')
  if [ "$rc" = 0 ]; then
    result=ok
  else
    failed=1
    result=$(verdict "$log")
    echo "fuzz: $t: $result; input: ${new:-see $log}" >&2
    explain "$log"
  fi
  summary+=("$(printf '%-16s %-8s %10s executions  %s %s' "$t" "$result" "${execs:-?}" "$new" "$regressions")")
done

echo
printf '%s\n' "${summary[@]}"
if [ "$failed" != 0 ]; then
  echo "fuzz: FAILED (reproduce: cd fuzz && cargo fuzz run ${flags[*]} TARGET FILE)" >&2
  exit 1
fi
echo "fuzz: no crash, timeout or OOM in ${secs}s per target"
