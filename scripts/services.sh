#!/usr/bin/env bash
# PostgreSQL and nats-server (with JetStream) on loopback, for the cluster
# tests and for trying cluster mode by hand. Installs both (and libfaketime,
# for the fault harness's clock skew) from Debian's packages when missing, starts them (idempotent: a running one is kept) and
# writes their addresses to target/services.env:
#   EDGEPLAN_TEST_PG=postgres://postgres@127.0.0.1:55432/postgres
#   EDGEPLAN_TEST_NATS=nats://127.0.0.1:54222
# `scripts/services.sh stop` stops both. Data lives under $SERVICES_DIR
# (default /tmp/edgeplan-services) and is thrown away by `stop`.
# `restart-pg` and `restart-nats` restart one of them in place (the fault
# harness's restarts); SERVICES_DIR, PG_PORT, NATS_PORT and ENV_FILE let a
# harness run servers of its own beside the shared ones.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${SERVICES_DIR:-/tmp/edgeplan-services}
PG_PORT=${PG_PORT:-55432}
NATS_PORT=${NATS_PORT:-54222}
ENV_FILE=${ENV_FILE:-target/services.env}

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
}

# PostgreSQL refuses to run as root: run it as its own user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
    local need=()
    [ -n "$(pg_bin)" ] || need+=(postgresql)
    command -v nats-server >/dev/null || need+=(nats-server)
    # The fault harness's clock skew (a replica's wall clock, preloaded).
    ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || need+=(libfaketime)
    if [ ${#need[@]} -gt 0 ]; then
        echo "services: installing ${need[*]} from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        sudo_ apt-get update -qq
        sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

start_pg() {
    local bin
    bin=$(pg_bin)
    mkdir -p "$DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres "$DIR" 2>/dev/null || true; chmod 755 "$DIR"; fi
    if [ ! -f "$DIR/pg/PG_VERSION" ]; then
        as_pg mkdir -p "$DIR/pg"
        as_pg "$bin/initdb" -D "$DIR/pg" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_pg "$bin/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; then
        # Enough connections for three replicas per test and tests side by side.
        as_pg "$bin/pg_ctl" -D "$DIR/pg" -l "$DIR/pg.log" -w start \
            -o "-p $PG_PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on" >/dev/null
    fi
    for _ in $(seq 1 50); do
        "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q && return
        sleep 0.2
    done
    echo "services: PostgreSQL did not come up; see $DIR/pg.log" >&2
    exit 1
}

start_nats() {
    mkdir -p "$DIR/nats"
    if [ -f "$DIR/nats.pid" ] && kill -0 "$(cat "$DIR/nats.pid")" 2>/dev/null; then
        return
    fi
    nohup nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/nats" \
        >"$DIR/nats.log" 2>&1 &
    echo $! >"$DIR/nats.pid"
    for _ in $(seq 1 50); do
        grep -q "Server is ready" "$DIR/nats.log" && return
        sleep 0.2
    done
    echo "services: nats-server did not come up; see $DIR/nats.log" >&2
    exit 1
}

stop() {
    local bin
    bin=$(pg_bin)
    if [ -n "$bin" ] && [ -f "$DIR/pg/PG_VERSION" ]; then
        as_pg "$bin/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    if [ -f "$DIR/nats.pid" ]; then kill "$(cat "$DIR/nats.pid")" 2>/dev/null || true; fi
    rm -rf "$DIR" "$ENV_FILE"
}

case "${1:-start}" in
start)
    install
    start_pg
    start_nats
    mkdir -p target
    {
        echo "EDGEPLAN_TEST_PG=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
        echo "EDGEPLAN_TEST_NATS=nats://127.0.0.1:$NATS_PORT"
    } >"$ENV_FILE"
    echo "services: PostgreSQL on 127.0.0.1:$PG_PORT, nats-server (JetStream) on 127.0.0.1:$NATS_PORT ($ENV_FILE)"
    ;;
stop) stop ;;
restart-pg)
    as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null
    start_pg
    ;;
restart-nats)
    kill "$(cat "$DIR/nats.pid")" 2>/dev/null || true
    while kill -0 "$(cat "$DIR/nats.pid")" 2>/dev/null; do sleep 0.05; done
    : >"$DIR/nats.log"
    start_nats
    ;;
*) echo "usage: $0 [start|stop|restart-pg|restart-nats]" >&2; exit 2 ;;
esac
