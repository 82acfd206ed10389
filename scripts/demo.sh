#!/usr/bin/env bash
# Installs the dependencies, builds Mandrill and runs it on localhost: a
# broker, 3 workers (simulated restarts, SQLite in ./demo-data) and the mock
# publisher. Ctrl-C stops everything gracefully (workers finish or nack what
# they hold, then the broker stops).
# Usage: scripts/demo.sh [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-3}
scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build/release -j "$(nproc)" --target mandrill-broker mandrill-worker mandrill-publish mandrill-ctl
BIN=build/release
DATA=demo-data
mkdir -p "$DATA"

pids=()
stop () {
    trap - INT TERM
    echo
    echo "==== stopping: publisher, then workers, then the broker"
    [ -n "${pub:-}" ] && kill -TERM "$pub" 2>/dev/null && wait "$pub" 2>/dev/null || true
    for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
    kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
    echo "==== stopped. Saved requests: $(sqlite3 "$DATA/mandrill.db" 'select count(*) from restarts' 2>/dev/null || echo '?') in $DATA/mandrill.db"
    exit 0
}
trap stop INT TERM

"$BIN/broker/mandrill-broker" --frontend tcp://127.0.0.1:5555 --backend tcp://127.0.0.1:5556 \
    --events tcp://127.0.0.1:5557 --data-dir "$DATA/broker" &
broker=$!
sleep 0.3
workers=()
for i in $(seq 1 "$WORKERS"); do
    "$BIN/worker/mandrill-worker" --broker tcp://127.0.0.1:5556 --name "worker-$i" \
        --db "sqlite:$DATA/mandrill.db" &
    workers+=($!)
done
"$BIN/cli/mandrill-publish" --broker tcp://127.0.0.1:5555 --mock &
pub=$!
echo "==== running: broker $broker, workers ${workers[*]}, publisher $pub. Ctrl-C to stop."
echo "==== in another terminal: $BIN/cli/mandrill-ctl stats   or   $BIN/cli/mandrill-ctl tail"
wait "$broker"
