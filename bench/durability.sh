#!/usr/bin/env bash
# Two measurements of the broker's journal (issue: bounded disk, fast recovery):
#   1. recovery: publish N requests (nobody consumes them), kill -9 the
#      broker, start it again on the same data dir, and time how long it
#      takes until it answers STATS, with the journal's own recovery figure;
#   2. disk: publish and drain N requests (W1 of mandrill_bench), and report
#      the data dir's size at the end, against the bytes published.
# Usage: bench/durability.sh [--build DIR] [--n 1000000] [--durability batch]
# Everything runs on free 127.0.0.1 ports; processes are stopped by PID;
# the data dirs live under a temporary directory that is removed at the end.
set -euo pipefail
BUILD=${BUILD_DIR:-$PWD/build}
N=1000000
MODE=batch
while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=$2; shift ;;
        --n) N=$2; shift ;;
        --durability) MODE=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
    shift
done
BROKER=$BUILD/broker/mandrill-broker
PUBLISH=$BUILD/cli/mandrill-publish
CTL=$BUILD/cli/mandrill-ctl
BENCH=$BUILD/bench/mandrill_bench
for p in "$BROKER" "$PUBLISH" "$CTL" "$BENCH"; do
    [ -x "$p" ] || { echo "missing $p (build first)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/mandrill-durability.XXXXXX)
pid=""
cleanup () { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port () { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
F=$(free_port); K=$(free_port); E=$(free_port)
FRONT=tcp://127.0.0.1:$F; BACK=tcp://127.0.0.1:$K
start_broker () {
    "$BROKER" --frontend "$FRONT" --backend "$BACK" --events "tcp://127.0.0.1:$E" \
        --data-dir "$1" --durability "$MODE" --log-level info 2>> "$WORK/broker.log" &
    pid=$!
}
wait_ready () {
    local until=$((SECONDS + 120))
    while ! "$CTL" --broker "$FRONT" --timeout 1s stats > /dev/null 2>&1; do
        [ $SECONDS -lt $until ] || { echo "broker not ready" >&2; exit 1; }
        sleep 0.01
    done
}

echo "== recovery of $N pending requests ($MODE)"
start_broker "$WORK/recovery"
wait_ready
"$PUBLISH" --broker "$FRONT" --mock --count "$N" --rate 10000000 --batch 1000 --publishers 2 -q
echo "published: $("$CTL" --broker "$FRONT" --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ready"], "ready,", d["journal"]["disk_bytes"], "journal bytes")')"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
start=$(date +%s.%N)
start_broker "$WORK/recovery"
wait_ready
end=$(date +%s.%N)
echo "restart to first STATS answer: $(python3 -c "print(f'{$end - $start:.2f}')") s"
grep "recovered" "$WORK/broker.log" | tail -1 | sed 's/.*journal: /journal: /'
echo "broker RSS after recovery: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""

echo "== disk after $N published and acked ($MODE)"
start_broker "$WORK/disk"
wait_ready
rc=0
"$BENCH" w1 --n "$N" --frontend "$FRONT" --backend "$BACK" --broker-pid "$pid" > "$WORK/w1.log" 2>&1 || rc=$?
grep "^W1:" "$WORK/w1.log" || true
[ $rc -eq 0 ] || { echo "mandrill_bench exited $rc:"; tail -5 "$WORK/w1.log"; }
echo "journal while running: $("$CTL" --broker "$FRONT" --json stats | python3 -c 'import json,sys; j=json.load(sys.stdin)["journal"]; print(j["disk_bytes"], "bytes in", j["files"], "files,", j["compactions"], "compactions")')"
echo "data dir while running: $(du -sh "$WORK/disk" | cut -f1)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
echo "data dir after a clean stop: $(du -sh "$WORK/disk" | cut -f1)"
