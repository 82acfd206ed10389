#!/usr/bin/env bash
# compose-test.sh: brings docker-compose.yml up for real and checks it.
#
# Starts a private Docker engine (its own data root, socket and pid file in a
# temporary directory; no iptables, no bridge), makes a debian:12 base image
# with debootstrap (cached as a tarball in $CACHE, so a second run skips it),
# builds mandrill:latest from the Dockerfile and a PostgreSQL stand-in tagged
# postgres:15 from docker/postgres, and brings the stack up with 3 workers.
# All containers use host networking through an override file written here,
# with the service names mapped to 127.0.0.1 and free ports, so no traffic
# goes anywhere but 127.0.0.1. It checks that the mock publisher's requests
# flow, publishes N more, waits until the broker (mandrill-ctl stats through
# the frontend) has acked every request published, checks that each is saved
# once in the worker's database (PostgreSQL through psql, or SQLite, as the
# compose file's --db says) by 3 distinct worker names, that the ctl tool
# profile runs, and that the broker and workers stop gracefully (exit 0).
# Then it takes everything down, stops the engine by its PID and deletes its
# data root, also on failure or Ctrl-C.
#
# Usage: scripts/compose-test.sh [N]      (N requests, default 1000; root)
# Environment: MANDRILL_COMPOSE_CACHE (default /var/cache/mandrill-compose),
#   MANDRILL_COMPOSE_REFRESH=1 makes the base image again,
#   MANDRILL_COMPOSE_KEEP=1 leaves the temporary directory for a post-mortem
#   (the engine is stopped all the same),
#   MANDRILL_COMPOSE_ENGINE=unix:///PATH/docker.sock runs the checks on an
#   engine you started and keep (no dockerd of its own, no image builds when
#   mandrill:latest and postgres:15 are there already; the stack and its
#   volumes are still removed).
# Exit codes: 0 every check passed; 1 a check or a step failed (the message
# says which, followed by the services' last log lines); 2 bad usage.
# Cost: about 8 minutes on 2 cores on the first run (debootstrap ~2.5 min,
# image builds ~4 min), less once the base image is cached; a few GB of disk
# while it runs (vfs copies every layer), freed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-1000}
WORKERS=3
CACHE=${MANDRILL_COMPOSE_CACHE:-/var/cache/mandrill-compose}
BASE_TAR="$CACHE/debian-12-minbase.tar"
T0=$(date +%s)

say () { echo "compose-test: [$(( $(date +%s) - T0 ))s] $*"; }
fail () {
    echo "compose-test: FAIL: $*" >&2
    FAILED=1
    exit 1
}
case "$N" in ''|*[!0-9]*) echo "usage: $0 [N]  (N: number of requests)" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] || { echo "usage: $0 [N]  (N >= 1)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || fail "must run as root (it starts dockerd and runs debootstrap)"

# --- what it needs -----------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || fail "apt-get update"
    timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null || fail "apt-get install ${need[*]}"
fi
# Debian's client, which matches Debian's dockerd (another docker may come first in PATH).
DOCKER=/usr/bin/docker

# --- the private engine and the clean-up -------------------------------------
mkdir -p /var/tmp
D=$(mktemp -d /var/tmp/mandrill-compose.XXXXXX)
export DOCKER_HOST="${MANDRILL_COMPOSE_ENGINE:-unix://$D/docker.sock}"
PROJECT="mct$$"
OVR="$D/docker-compose.override-test.yml"
DC=(docker-compose --ansi never -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$OVR")
DPID=""
UP=""
FAILED=""

cleanup () {
    local rc=$?
    set +e
    if [ -n "$UP" ]; then
        if [ -n "$FAILED" ] || [ "$rc" -ne 0 ]; then
            echo "compose-test: last log lines of the services:" >&2
            timeout 60 "${DC[@]}" logs --no-color --tail 25 >&2 2>&1
        fi
        timeout 180 "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 \
            || echo "compose-test: warning: docker-compose down failed" >&2
    fi
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        local cpid=""
        [ -f "$D/exec/containerd/containerd.pid" ] && cpid=$(cat "$D/exec/containerd/containerd.pid")
        kill -TERM "$DPID"
        for _ in $(seq 1 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$DPID" 2>/dev/null; then
            echo "compose-test: dockerd $DPID did not stop in 30 s; killing it" >&2
            kill -KILL "$DPID"
        fi
        wait "$DPID" 2>/dev/null
        # dockerd stops the containerd it started; make sure of it, by PID.
        if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then
            kill -TERM "$cpid"; sleep 1; kill -0 "$cpid" 2>/dev/null && kill -KILL "$cpid"
        fi
    fi
    if [ "$rc" -ne 0 ] && [ -f "$D/dockerd.log" ]; then
        echo "compose-test: last lines of dockerd's log:" >&2
        tail -n 15 "$D/dockerd.log" >&2
    fi
    # Anything still mounted below $D (container mounts the engine left).
    grep -o " $D/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m"; done
    if [ -n "${MANDRILL_COMPOSE_KEEP:-}" ]; then
        echo "compose-test: kept $D" >&2
    else
        rm -rf "$D"
    fi
    if [ "$rc" -eq 0 ]; then
        say "OK"
    else
        echo "compose-test: FAILED (exit $rc) after $(( $(date +%s) - T0 ))s" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'FAILED=1; exit 1' INT TERM

# --- the engine ------------------------------------------------------------------
start_engine () {
    say "starting dockerd in $D"
    dockerd --iptables=false --bridge=none --storage-driver=vfs --data-root="$D/root" \
        --exec-root="$D/exec" --host="$DOCKER_HOST" --pidfile="$D/docker.pid" --log-level=warn \
        >"$D/dockerd.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 120); do
        "$DOCKER" version >/dev/null 2>&1 && return 0
        kill -0 "$DPID" 2>/dev/null || fail "dockerd exited at start (log below)"
        sleep 0.5
    done
    fail "dockerd did not answer within 60 s"
}

# --- the base image (cached) and the two images -------------------------------------
make_base () {
    mkdir -p "$CACHE"
    (
        flock -w 900 9 || fail "another run holds $CACHE/lock for 15 minutes"
        if [ ! -s "$BASE_TAR" ] || [ -n "${MANDRILL_COMPOSE_REFRESH:-}" ]; then
            say "debootstrap bookworm (minbase) into $D/rootfs; cached as $BASE_TAR"
            timeout 900 debootstrap --variant=minbase bookworm "$D/rootfs" http://deb.debian.org/debian \
                >"$D/debootstrap.log" 2>&1 || { tail -n 20 "$D/debootstrap.log" >&2; fail "debootstrap"; }
            tar -C "$D/rootfs" -c . >"$BASE_TAR.tmp" && mv "$BASE_TAR.tmp" "$BASE_TAR" \
                || fail "tar of the rootfs"
            rm -rf "$D/rootfs"
        fi
    ) 9>"$CACHE/lock" || exit 1
    say "importing debian:12 from $BASE_TAR"
    timeout 300 "$DOCKER" import "$BASE_TAR" debian:12 >/dev/null || fail "docker import"
}
build_images () {
    say "building mandrill:latest and the postgres:15 stand-in (logs in $D/build-*.log)"
    timeout 1200 "$DOCKER" build --network host -t mandrill:latest "$ROOT" \
        >"$D/build-mandrill.log" 2>&1 &
    local b1=$!
    timeout 900 "$DOCKER" build --network host -t postgres:15 "$ROOT/docker/postgres" \
        >"$D/build-postgres.log" 2>&1 &
    local b2=$!
    wait "$b1" || { tail -n 30 "$D/build-mandrill.log" >&2; wait "$b2"; fail "docker build of mandrill:latest"; }
    wait "$b2" || { tail -n 30 "$D/build-postgres.log" >&2; fail "docker build of the postgres:15 stand-in"; }
    say "images built"
}

if [ -n "${MANDRILL_COMPOSE_ENGINE:-}" ]; then
    say "using the engine at $DOCKER_HOST"
    "$DOCKER" version >/dev/null 2>&1 || fail "no engine answers at $DOCKER_HOST"
    if "$DOCKER" image inspect mandrill:latest postgres:15 >/dev/null 2>&1; then
        say "mandrill:latest and postgres:15 are there: no builds"
    else
        make_base
        build_images
    fi
else
    start_engine
    make_base
    build_images
fi

# --- the override: host networking on 127.0.0.1 and free ports ----------------
read -r FRONTEND BACKEND EVENTS PGPORT < <(python3 -c '
import socket
s = [socket.socket () for _ in range (4)]
for x in s: x.bind (("127.0.0.1", 0))
print (*[x.getsockname () [1] for x in s])')
export MANDRILL_BIND=127.0.0.1 MANDRILL_FRONTEND_PORT=$FRONTEND MANDRILL_BACKEND_PORT=$BACKEND \
       MANDRILL_EVENTS_PORT=$EVENTS MANDRILL_PG_PORT=$PGPORT \
       MANDRILL_PG_PASSWORD="ct-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
{
    echo 'version: "3.8"'
    echo '# Written by scripts/compose-test.sh: every service on the host network,'
    echo '# service names resolved to 127.0.0.1.'
    echo 'x-local: &local'
    echo '  network_mode: host'
    echo '  extra_hosts: ["broker:127.0.0.1", "postgres:127.0.0.1"]'
    echo 'services:'
    echo '  postgres:'
    echo '    <<: *local'
    echo '    command: ["postgres", "-c", "listen_addresses=127.0.0.1"]'
    for s in broker worker publisher ctl; do
        echo "  $s:"
        echo '    <<: *local'
    done
} >"$OVR"
"${DC[@]}" config >"$D/merged.yml" 2>"$D/config.err" || { cat "$D/config.err" >&2; fail "docker-compose config"; }
# Published ports mean nothing on the host network and docker-compose refuses
# them there, but an override cannot delete list entries: run the merged file
# with the ports taken out.
python3 -c '
import sys, yaml
c = yaml.safe_load (open (sys.argv [1]))
for s in c ["services"].values ():
    s.pop ("ports", None)
    s ["network_mode"] = "host"     # also for services the override does not name (keys)
    s.pop ("networks", None)
yaml.safe_dump (c, open (sys.argv [2], "w"), sort_keys = False)' "$D/merged.yml" "$D/config.yml" \
    || fail "cannot write the host-network compose file"
DC=(docker-compose --ansi never -p "$PROJECT" -f "$D/config.yml")
DB_URL=$(python3 -c '
import sys, yaml
c = yaml.safe_load (open (sys.argv [1]))
cmd = c ["services"] ["worker"] ["command"]
print (cmd [cmd.index ("--db") + 1] if "--db" in cmd else "sqlite:./mandrill.db")' "$D/config.yml") \
    || fail "cannot read the worker's --db from the compose file"
case "$DB_URL" in
    postgres://*|postgresql://*) DB_KIND=postgresql ;;
    sqlite:*) DB_KIND=sqlite; SQLITE_PATH=${DB_URL#sqlite:} ;;
    *) fail "the worker's --db '$DB_URL' is neither sqlite: nor postgresql:" ;;
esac
# A compose file with a keys service runs over CURVE: the checks then use the
# operator's and the publisher's keys from the keys volume (docker/mandrill-keys.sh).
CTL_KEYS=(); PUB_KEYS=(); SECURITY=insecure
if python3 -c 'import sys, yaml; sys.exit (0 if "keys" in yaml.safe_load (open (sys.argv [1])) ["services"] else 1)' \
    "$D/config.yml"; then
    CTL_KEYS=(--curve-cert /keys/operator.key_secret --broker-cert /keys/broker.key)
    PUB_KEYS=(--curve-cert /keys/publisher.key_secret --broker-cert /keys/broker.key)
    SECURITY=CURVE
fi
say "ports: frontend $FRONTEND, backend $BACKEND, events $EVENTS, postgres $PGPORT; worker db: $DB_KIND; $SECURITY"

# --- up --------------------------------------------------------------------------
say "docker-compose up with $WORKERS workers"
UP=1
timeout 300 "${DC[@]}" up -d --no-build --scale worker=$WORKERS >"$D/up.log" 2>&1 \
    || { cat "$D/up.log" >&2; fail "docker-compose up"; }

# The broker's STATS as one JSON line, through the frontend (mandrill-ctl in
# the broker's container: no new container per poll).
stats () {
    timeout 20 "${DC[@]}" exec -T broker mandrill-ctl --broker "tcp://127.0.0.1:$FRONTEND" "${CTL_KEYS[@]}" \
        --timeout 3s --json stats 2>/dev/null
}
# field NAME < json: prints the field (empty when missing).
field () { python3 -c 'import json,sys; print (json.load (sys.stdin).get (sys.argv [1], ""))' "$1"; }
# wait_until SECONDS WHAT COMMAND...: polls COMMAND once a second until it succeeds.
wait_until () {
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within $limit s"
        sleep 1
    done
}
workers_joined () {
    local s; s=$(stats) || return 1
    [ "$(field workers <<<"$s")" = "$WORKERS" ]
}
mock_acked () {
    local s; s=$(stats) || return 1
    [ "$(field acked <<<"$s")" -ge 1 ] 2>/dev/null
}
all_acked () {
    local s; s=$(stats) || return 1
    LAST_STATS=$s
    local p a f r d
    p=$(field published <<<"$s"); a=$(field acked <<<"$s"); f=$(field in_flight <<<"$s")
    r=$(field ready <<<"$s"); d=$(field delayed <<<"$s")
    [ -n "$p" ] && [ "$p" -ge $(( P0 + N )) ] && [ "$a" = "$p" ] && [ "$f" = 0 ] && [ "$r" = 0 ] \
        && [ "${d:-0}" = 0 ]
}
# db_query SQL: one line "a|b" from the worker's database.
db_query () {
    if [ "$DB_KIND" = postgresql ]; then
        timeout 30 "${DC[@]}" exec -T postgres psql -X -q -At -U mandrill -d mandrill -c "$1"
    else
        timeout 30 "${DC[@]}" exec -T --index=1 worker sqlite3 "$SQLITE_PATH" "$1"
    fi
}

wait_until 90 "$WORKERS workers joined the broker" workers_joined
say "$WORKERS workers joined; waiting for the mock publisher's first ack"
wait_until 90 "a request of the mock publisher acked" mock_acked
timeout 60 "${DC[@]}" stop publisher >/dev/null 2>&1 || fail "docker-compose stop publisher"
P0=$(stats | field published) || fail "no STATS from the broker"
say "mock publisher stopped after $P0 requests; publishing $N more"

T_PUB=$(date +%s.%N)
timeout 300 "${DC[@]}" run --rm --no-deps -T publisher mandrill-publish \
    --broker "tcp://broker:$FRONTEND" "${PUB_KEYS[@]}" --mock --count "$N" --rate 2000 \
    >"$D/publish.log" 2>&1 \
    || { tail -n 20 "$D/publish.log" >&2; fail "mandrill-publish of $N requests (not all confirmed)"; }
wait_until 300 "every published request acked (last STATS: ${LAST_STATS:-none})" all_acked
T_ACK=$(date +%s.%N)
TOTAL=$(field published <<<"$LAST_STATS")
say "broker: published $TOTAL, acked $(field acked <<<"$LAST_STATS"), in flight 0, ready 0"

ROW=$(db_query "SELECT count(*), count(DISTINCT message_id), count(DISTINCT worker) FROM restarts") \
    || fail "cannot query the $DB_KIND database"
IFS='|' read -r ROWS IDS NAMES <<<"$ROW"
[ "$ROWS" = "$TOTAL" ] || fail "$DB_KIND holds $ROWS rows; the broker acked $TOTAL"
[ "$IDS" = "$TOTAL" ] || fail "$DB_KIND holds $IDS distinct message ids; expected $TOTAL"
[ "$NAMES" = "$WORKERS" ] || fail "$DB_KIND rows name $NAMES distinct workers; expected $WORKERS"
WORKER_NAMES=$(db_query "SELECT worker, count(*) FROM restarts GROUP BY worker ORDER BY worker" \
    | tr '\n' ' ')
say "$DB_KIND: $ROWS rows, one per request, saved by $NAMES workers: $WORKER_NAMES"
# Informational: the outcome is written after the save and may trail the ack.
OUTCOMES=$(db_query "SELECT count(*) FROM restarts WHERE restart_outcome IS NOT NULL") || OUTCOMES="?"

CTL_OUT=$(timeout 120 "${DC[@]}" run --rm -T ctl stats 2>"$D/ctl.err") || { cat "$D/ctl.err" >&2; fail "ctl stats (tools profile)"; }

say "stopping the stack (SIGTERM; workers drain)"
timeout 120 "${DC[@]}" stop >/dev/null 2>&1 || fail "docker-compose stop"
BAD=""
for s in broker worker; do
    for id in $("${DC[@]}" ps -q "$s"); do
        code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$id")
        [ "$code" = 0 ] || BAD="$BAD $s:$("$DOCKER" inspect -f '{{.Name}}' "$id")=exit$code"
    done
done
[ -z "$BAD" ] || fail "not a graceful stop:$BAD"

echo "---- compose-test report ----"
echo "stack:     broker, postgres, $WORKERS workers, mock publisher (host network, 127.0.0.1, $SECURITY)"
echo "published: $TOTAL (mock publisher $P0, then mandrill-publish $N); all acked"
python3 -c 'import sys; print ("latency:   %d requests published and all acked in %.1f s" % (int (sys.argv [1]), float (sys.argv [3]) - float (sys.argv [2])))' \
    "$N" "$T_PUB" "$T_ACK"
echo "database:  $DB_KIND, $ROWS rows, $NAMES distinct worker names, $OUTCOMES restart outcomes recorded"
echo "workers:   $WORKER_NAMES"
echo "ctl stats (tools profile):"
sed 's/^/    /' <<<"$CTL_OUT"
echo "shutdown:  broker and workers exited 0"
echo "elapsed:   $(( $(date +%s) - T0 )) s"
