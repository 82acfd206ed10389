#!/usr/bin/env bash
# Runs the broker workloads W1 (and W1-k1), W2-max and W2-paced against a
# freshly started mandrill-broker per run and prints a markdown table of
# medians [min-max] over the repetitions. Optionally runs the peer brokers
# (PEERS_DIR/run_all.sh) in the same sitting for comparison.
#
#   bench/run.sh [--build DIR] [--reps 3] [--n 200000] [--n1 50000] [--k1]
#                [--dur 10] [--rate 10000] [--backlog 2000]
#                [--durability memory|none|batch|sync]
#                [--broker-args "--ack-deadline 30s"] [--out DIR] [--hosts N]
#                [--peers redis-aof,zmq] [--peers-install] [--curve]
#                [--workloads W1,W2-max,W2-paced]
#
# --workloads: run only these (default all; W1-k1 also needs --k1).
# --hosts N: the driver's requests name N hosts in turn instead of one (a
# restart policy leases one request per host at a time; see
# bench/policy_groups.sh for the policy-cost runs).
# --curve: generate a broker key and one client key (OUT/keys), run the
# broker with CURVE on every socket and the driver with that key as both
# publisher and worker: the same workloads, encrypted.
# --build: the CMake build directory holding broker/mandrill-broker and
# bench/mandrill_bench (default: $BUILD_DIR, else ./build).
# Ports are free ones on 127.0.0.1; every broker is stopped by its PID.
# Results: OUT/results.txt (one RESULT line per run), OUT/summary.md,
# broker logs in OUT/broker-*.log. A broker with a journal gets a fresh
# --data-dir under OUT for each run, removed after it. In batch and sync
# mode it also gets --metrics on a free port (unless --broker-args names
# one): its own fsync histogram, read at the end of each run, gives the
# fsync table (how fast the disk was while the run measured latency).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD_DIR:-$PWD/build}
REPS=3 N=200000 N1=50000 K1=0 DUR=10 RATE=10000 BACKLOG=2000
BROKER_ARGS="" PEERS="" PEERS_INSTALL=0 DURABILITY= CURVE=0 WORKLOADS=W1,W1-k1,W2-max,W2-paced
OUT=""
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --n) N=$2; shift ;;
    --n1) N1=$2; shift ;;
    --k1) K1=1 ;;
    --dur) DUR=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --backlog) BACKLOG=$2; shift ;;
    --broker-args) BROKER_ARGS=$2; shift ;;
    --hosts) HOSTS=$2; shift ;;
    --durability) DURABILITY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --peers) PEERS=$2; shift ;;
    --peers-install) PEERS_INSTALL=1 ;;
    --curve) CURVE=1 ;;
    --workloads) WORKLOADS=$2; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 1 ;;
    esac
    shift
done
BROKER=$BUILD/broker/mandrill-broker
BENCH=$BUILD/bench/mandrill_bench
for f in "$BROKER" "$BENCH"; do
    [ -x "$f" ] || { echo "run.sh: $f not built (cmake --build $BUILD --target mandrill-broker mandrill_bench)" >&2; exit 1; }
done
OUT=${OUT:-/tmp/mandrill-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: >"$RESULTS"
HAS_JOURNAL=0
"$BROKER" --help 2>&1 | grep -q -- --data-dir && HAS_JOURNAL=1
[ -n "$DURABILITY" ] && BROKER_ARGS="--durability $DURABILITY $BROKER_ARGS"
# --curve: every socket CurveZMQ; the driver's one key is publisher and worker.
BENCH_ARGS=()
[ -n "${HOSTS:-}" ] && BENCH_ARGS+=(--hosts "$HOSTS")
if [ "$CURVE" = 1 ]; then
    CTL=$BUILD/cli/mandrill-ctl
    KEYS=$OUT/keys
    mkdir -p "$KEYS/publishers" "$KEYS/workers"
    "$CTL" keygen broker --dir "$KEYS" >/dev/null && "$CTL" keygen bench --dir "$KEYS" >/dev/null ||
        { echo "run.sh: $CTL keygen failed" >&2; exit 1; }
    cp "$KEYS/bench.key" "$KEYS/publishers/" && cp "$KEYS/bench.key" "$KEYS/workers/"
    BROKER_ARGS="--curve-cert $KEYS/broker.key_secret --publishers $KEYS/publishers --workers $KEYS/workers $BROKER_ARGS"
    BENCH_ARGS+=(--curve-cert "$KEYS/bench.key_secret" --broker-cert "$KEYS/broker.key")
fi

BPID=
cleanup() {
    if [ -n "$BPID" ]; then kill "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() { # prints four free TCP ports on 127.0.0.1
    python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_broker() { # label
    read -r PF PB PE PM <<<"$(free_ports)"
    local data=()
    DATA= METRICS=
    if [ "$HAS_JOURNAL" = 1 ]; then
        DATA=$OUT/data-$1
        rm -rf "$DATA"
        data=(--data-dir "$DATA")
        # Not when nothing waits for an fsync (memory, none), nor when
        # --broker-args names its own --metrics (then no fsync table)
        case " $BROKER_ARGS " in
        *" --metrics "* | *" --metrics="* | *" --durability none "* | *" --durability=none "* | \
        *" --durability memory "* | *" --durability=memory "*) ;;
        *) METRICS=127.0.0.1:$PM; data+=(--metrics "$METRICS") ;;
        esac
    fi
    # shellcheck disable=SC2086
    "$BROKER" --frontend "tcp://127.0.0.1:$PF" --backend "tcp://127.0.0.1:$PB" \
        --events "tcp://127.0.0.1:$PE" "${data[@]}" $BROKER_ARGS >"$OUT/broker-$1.log" 2>&1 &
    BPID=$!
    local i
    for i in $(seq 100); do
        port_open "$PF" && port_open "$PB" && return 0
        kill -0 "$BPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "run.sh: broker failed to start, see $OUT/broker-$1.log" >&2
    exit 1
}
stop_broker() {
    kill "$BPID" 2>/dev/null
    wait "$BPID" 2>/dev/null
    BPID=
    [ -n "$DATA" ] && rm -rf "$DATA"
}
wanted() { case ",$WORKLOADS," in *",$1,"*) return 0 ;; esac; return 1; }
# The broker's journal fsyncs over the run just ended, from its /metrics
# histogram: one FSYNC line in results.txt (none without a journal, nor
# with durability memory or none, which fsync nothing on the way).
fsync_figures() { # workload milliseconds
    [ -n "$METRICS" ] || return 0
    python3 - "$METRICS" "$1" "$2" >>"$RESULTS" 2>>"$OUT/fsync-errors.log" <<'EOF'
import sys, urllib.request
addr, workload, seconds = sys.argv[1], sys.argv[2], max(float(sys.argv[3]), 1.0) / 1e3
text = urllib.request.urlopen("http://%s/metrics" % addr, timeout=5).read().decode()
name = "mandrill_broker_journal_fsync_duration_seconds"
buckets = []
for line in text.splitlines():
    if line.startswith(name + "_bucket{"):
        le = line.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
buckets.sort()
n = buckets[-1][1] if buckets else 0
if n == 0:
    sys.exit(0)
def bound(q):   # the smallest bucket bound holding the q quantile, in ms
    for le, count in buckets:
        if count >= q * n:
            return "inf" if le == float("inf") else "%g" % (le * 1e3)
def share_over(ms):
    for le, count in buckets:
        if abs(le * 1e3 - ms) < 1e-9:
            return "%.2f" % (100.0 * (n - count) / n)
    return "nan"
print("FSYNC workload=%s n=%d per_s=%.0f p50_le_ms=%s p99_le_ms=%s p999_le_ms=%s over_1ms_pct=%s "
      "over_2.5ms_pct=%s"
      % (workload, n, n / seconds, bound(0.5), bound(0.99), bound(0.999), share_over(1), share_over(2.5)))
EOF
}
bench() { # label args...
    local label=$1
    shift
    wanted "${label%-rep*}" || return 0
    start_broker "$label"
    local began
    began=$(date +%s%N)
    timeout 300 "$BENCH" "$@" "${BENCH_ARGS[@]}" --frontend "tcp://127.0.0.1:$PF" --backend "tcp://127.0.0.1:$PB" \
        --broker-pid "$BPID" >>"$RESULTS" 2>"$OUT/bench-$label.log"
    local rc=$?
    fsync_figures "${label%-rep*}" $((($(date +%s%N) - began) / 1000000))
    stop_broker
    # Other load on the machine skews everything: keep the load average with each run.
    echo "LOAD $label $(cat /proc/loadavg)" >>"$OUT/load.txt"
    printf '  %-16s exit %d  %s\n' "$label" "$rc" "$(grep -v '^$' "$OUT/bench-$label.log" | tail -1)"
}

echo "== mandrill broker bench: $OUT"
{
    echo "date: $(date -Is)"
    echo "host: $(nproc) cpus, $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo), $(uname -r)"
    echo "broker: $BROKER $BROKER_ARGS (journal: $([ "$HAS_JOURNAL" = 1 ] && echo "yes, fresh --data-dir per run" || echo no))"
    echo "params: REPS=$REPS N=$N N1=$N1 K1=$K1 DUR=$DUR RATE=$RATE BACKLOG=$BACKLOG"
} | tee "$OUT/env.txt"
# Repetitions interleaved across workloads, as the peers' driver does.
for rep in $(seq "$REPS"); do
    echo "== repetition $rep/$REPS"
    bench "W1-rep$rep" w1 --n "$N" --pbatch 500 --credit 100 --consumers 2
    [ "$K1" = 1 ] && bench "W1-k1-rep$rep" w1 --n "$N1" --pbatch 500 --credit 1 --consumers 2
    bench "W2-max-rep$rep" w2 --duration "$DUR" --backlog "$BACKLOG" --pbatch 500 --credit 100 --consumers 2
    bench "W2-paced-rep$rep" w2 --duration "$DUR" --rate "$RATE" --pbatch 500 --credit 100 --consumers 2
done

python3 - "$RESULTS" <<'EOF' | tee "$OUT/summary.md"
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT"):
        d = dict(t.split("=", 1) for t in line.split()[1:])
        rows.setdefault(d["workload"], []).append(d)

def cell(runs, key, scale=1.0, fmt="{:.2f}"):
    vals = [float(r[key]) * scale for r in runs if r.get(key) not in (None, "nan", "-nan")]
    if not vals:
        return "-"
    def f(v):
        if abs(v) >= 1e6: return "{:.2f}M".format(v / 1e6)
        if abs(v) >= 1e4: return "{:.1f}k".format(v / 1e3)
        return fmt.format(v)
    return "{} [{}–{}]".format(f(statistics.median(vals)), f(min(vals)), f(max(vals)))

def ok(runs):
    return "{}/{}".format(sum(r.get("ok") == "1" for r in runs), len(runs))

print("Cells: median [min–max] over repetitions; msgs/s unless noted.\n")
print("## W1 publish-then-drain (2 consumers)\n")
print("| workload | publish | drain (lease+ack) | combined N/(Tpub+Tdrain) | broker CPU µs/msg pub / drain / all | broker peak RSS MB | runs ok |")
print("|---|---|---|---|---|---|---|")
for w in ("W1", "W1-k1"):
    r = rows.get(w)
    if r:
        print("| {} | {} | {} | {} | {} / {} / {} | {} | {} |".format(
            w, cell(r, "pub_rate", fmt="{:.0f}"), cell(r, "drain_rate", fmt="{:.0f}"), cell(r, "combined", fmt="{:.0f}"),
            cell(r, "cpu_us_pub"), cell(r, "cpu_us_drain"), cell(r, "cpu_us"),
            cell(r, "hwm_kb", 1 / 1024, "{:.1f}"), ok(r)))
print("\n## W2 steady stream (producer + 2 consumers)\n")
print("Latency = publish timestamp -> ACKED reply at the consumer, over messages published from t0+1 s to the producer's end.\n")
print("| workload | acked msgs/s | published msgs/s | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU µs/msg | broker cores | broker peak RSS MB | runs ok |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in ("W2-max", "W2-paced"):
    r = rows.get(w)
    if r:
        print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            w, cell(r, "acked_rate", fmt="{:.0f}"), cell(r, "pub_rate", fmt="{:.0f}"), cell(r, "p50_ms", fmt="{:.3f}"),
            cell(r, "p99_ms", fmt="{:.3f}"), cell(r, "p999_ms", fmt="{:.3f}"),
            cell(r, "max_ms", fmt="{:.3f}"), cell(r, "cpu_us"), cell(r, "cores"),
            cell(r, "hwm_kb", 1 / 1024, "{:.1f}"), ok(r)))
fs = {}
for line in open(sys.argv[1]):
    if line.startswith("FSYNC"):
        d = dict(t.split("=", 1) for t in line.split()[1:])
        fs.setdefault(d["workload"], []).append(d)
if fs:
    print("\n## The journal's fsyncs during each run (the broker's /metrics histogram)\n")
    print("Quantiles are bucket bounds (0.1, 0.25, 0.5, 1, 2.5, 5, 10 ms ...), one per repetition: "
          "\"1\" means at most 1 ms. A W2 request waits for two fsyncs in turn (its PUBLISH, "
          "then its ACK), each of them after the one already in flight. The histogram also counts "
          "the snapshot's and the directory's fsyncs, which no request waits for; fsyncs/s is over "
          "the whole run, start and drain included.\n")
    print("| workload | fsyncs/s | p50 ≤ ms | p99 ≤ ms | p99.9 ≤ ms | over 1 ms % | over 2.5 ms % |")
    print("|---|---|---|---|---|---|---|")
    for w in ("W1", "W1-k1", "W2-max", "W2-paced"):
        r = fs.get(w)
        if r:
            def each(key):
                return " / ".join(x[key] for x in r)
            print("| {} | {} | {} | {} | {} | {} | {} |".format(
                w, cell(r, "per_s", fmt="{:.0f}"), each("p50_le_ms"), each("p99_le_ms"),
                each("p999_le_ms"), cell(r, "over_1ms_pct"), cell(r, "over_2.5ms_pct")))
EOF

if [ -n "$PEERS" ]; then
    echo
    echo "== peers ($PEERS) in the same sitting, via $PEERS_DIR/run_all.sh"
    extra=(--skip-install)
    [ "$PEERS_INSTALL" = 1 ] && extra=()
    # The peers' directory may be read-only; run_all.sh then works in PEERS_WORK.
    PEERS_WORK=${PEERS_WORK:-/tmp/mandrill-peers} "$PEERS_DIR/run_all.sh" "${extra[@]}" \
        --only "$PEERS" --reps "$REPS" --n "$N" --n1 "$N1" --dur "$DUR" --rate "$RATE" \
        --backlog "$BACKLOG" 2>&1 | tee "$OUT/peers.log"
fi
