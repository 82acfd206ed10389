#!/usr/bin/env bash
# Installs the dependencies, builds Mandrill and runs it on localhost: a
# broker, 3 workers (simulated restarts, SQLite in ./demo-data) and the mock
# publisher, all logging to this terminal. Ctrl-C stops everything
# gracefully, in order: the publisher, then the workers (they finish or
# nack what they hold), then the broker (it flushes its journal).
#
# Usage: scripts/demo.sh [WORKERS]
# The demo's state lives in ./demo-data (the broker's journal and the
# workers' SQLite database); delete it to start from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-3}
scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build/release -j "$(nproc)" --target mandrill-broker mandrill-worker mandrill-publish mandrill-ctl
BIN=build/release
DATA=demo-data
mkdir -p "$DATA"

broker="" pub="" workers=()
stopped=0
stop () {
    [ $stopped -eq 1 ] && return
    stopped=1
    trap - INT TERM
    echo
    echo "==== stopping: publisher, then workers, then the broker"
    if [ -n "$pub" ]; then kill -TERM "$pub" 2>/dev/null || true; wait "$pub" 2>/dev/null || true; fi
    for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$broker" ]; then kill -TERM "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    echo "==== stopped. Requests saved so far: $(sqlite3 "$DATA/mandrill.db" 'select count(*) from restarts' 2>/dev/null || echo '?') (in $DATA/mandrill.db)"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# Each program runs in its own session, so Ctrl-C reaches only this script,
# which then stops them in order instead of all at once.
# One configuration file for every program (see README: flags beat the
# environment, which beats the file); each reads its own section.
cat > "$DATA/mandrill.cfg" <<CONFIG
broker
    frontend = "tcp://127.0.0.1:5555"
    backend = "tcp://127.0.0.1:5556"
    events = "tcp://127.0.0.1:5557"
    data-dir = "$DATA/broker"
worker
    broker = "tcp://127.0.0.1:5556"
    db = "sqlite:$DATA/mandrill.db"
publish
    broker = "tcp://127.0.0.1:5555"
ctl
    broker = "tcp://127.0.0.1:5555"
    events = "tcp://127.0.0.1:5557"
CONFIG
export MANDRILL_BROKER_CONFIG="$DATA/mandrill.cfg" MANDRILL_WORKER_CONFIG="$DATA/mandrill.cfg" \
       MANDRILL_PUBLISH_CONFIG="$DATA/mandrill.cfg"
setsid "$BIN/broker/mandrill-broker" &
broker=$!
sleep 0.5
if ! kill -0 "$broker" 2>/dev/null; then
    broker=""
    echo "==== the broker did not start (see its message above; is port 5555-5557 in use?)"
    exit 2
fi
# Restarts take up to 3 s and leases are extended every second, so the log
# shows every step: consumed, saved, extended, restarted, acked.
for i in $(seq 1 "$WORKERS"); do
    setsid "$BIN/worker/mandrill-worker" --name "worker-$i" --restart-latency 3s --extend-every 1s &
    workers+=($!)
done
setsid "$BIN/cli/mandrill-publish" --mock &
pub=$!
echo "==== running: broker $broker, workers ${workers[*]}, publisher $pub. Ctrl-C to stop."
echo "==== in another terminal: $BIN/cli/mandrill-ctl --config $DATA/mandrill.cfg stats   (or tail)"
wait "$broker" || true
broker=""
echo "==== the broker exited"
