#!/usr/bin/env bash
# Readings per second through NATS JetStream into the replicas' state, with
# 1, 2 and 3 replicas on one PostgreSQL database (release build):
#   scripts/bus-throughput.sh [MESSAGES] [READINGS_PER_MESSAGE]
# Each run: a fresh database and stream, N `edgeplan serve` replicas, then
# `edgeplan publish --server` publishes the messages and waits until the
# first replica's state holds every reading; its last line is the rate end
# to end (first publish → last reading applied).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-2000}
BATCH=${2:-1000}
scripts/services.sh start >/dev/null
set -a; . target/services.env; set +a
cargo build --release --quiet
BIN=target/release/edgeplan
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
for N in 1 2 3; do
    TAG="bench$$n$N"
    DB="edgeplan_$TAG"
    psql -q "$EDGEPLAN_TEST_PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    URL="${EDGEPLAN_TEST_PG%/*}/$DB"
    cat >"$WORK/serve-$N.yaml" <<EOF
telemetry:
  late_window_s: 1000000
nats:
  url: $EDGEPLAN_TEST_NATS
  stream: EDGEPLAN_$TAG
  subject_prefix: $TAG.telemetry
EOF
    PIDS=()
    for i in $(seq 1 "$N"); do
        EDGEPLAN_LOG=edgeplan=warn $BIN serve --listen "127.0.0.1:$((56100 + i))" \
            --data-dir "$WORK/d$N-$i" --config "$WORK/serve-$N.yaml" --store "$URL" \
            --replica-id "r$i" 2>"$WORK/r$N-$i.log" &
        PIDS+=($!)
    done
    sleep 2
    echo "== $N replica(s)"
    $BIN publish --nats "$EDGEPLAN_TEST_NATS" --stream "EDGEPLAN_$TAG" \
        --subject-prefix "$TAG.telemetry" --server http://127.0.0.1:56101 \
        --sites 100 --messages "$MESSAGES" --batch "$BATCH" --wait 600 >/dev/null
    kill "${PIDS[@]}"
    wait "${PIDS[@]}" 2>/dev/null || true
    psql -q "$EDGEPLAN_TEST_PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
done
