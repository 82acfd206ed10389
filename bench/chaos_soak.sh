#!/usr/bin/env bash
# The chaos soak (issue 8 section 1): mandrill-chaos with every fault kind
# for 10 minutes, on 3 network namespaces when root can make them, then the
# table: faults by kind, requests published and PUBACKed, lost, dead
# letters, duplicate completed restarts by cause, recovery times (broker
# restart -> first delivery; worker kill -> its leases delivered again),
# the broker's peak RSS and each invariant's verdict.
#   bench/chaos_soak.sh [SECONDS [SEED [DURABILITY]]]    (default 600, random, batch)
# Environment: BUILD_DIR (default build), CHAOS_KNOWN_OPEN (default none:
# see chaos/README.md), CHAOS_OUT (history directory, default a new temp dir),
# CHAOS_VERIFY=1 (workers verify deliveries in doubt: chaos/chaos_verify.sh).
# Exit: the checker's (0 all hold, 1 a violation), 77 no python3-zmq.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"; seed="${2:-$RANDOM$RANDOM}"; durability="${3:-batch}"
py=/usr/bin/python3; [ -x "$py" ] || py=python3
"$py" -c 'import zmq' 2>/dev/null || { echo "python3-zmq missing (scripts/deps.sh)"; exit 77; }
hosts=0
if [ "$(id -u)" -eq 0 ] && ip netns add mchsoakprobe 2>/dev/null; then
    ip netns del mchsoakprobe; hosts=3
else
    echo "no network namespaces here (not root?): host faults left out"
fi
out="${CHAOS_OUT:-$(mktemp -d /tmp/mandrill-chaos-soak-XXXXXX)}"
"$py" chaos/mandrill-chaos run --seed "$seed" --duration "$seconds" --durability "$durability" \
    --hosts "$hosts" --workers 3 --publishers 3 --faults all --ack-deadline 5 \
    ${CHAOS_VERIFY:+--verify} --known-open "${CHAOS_KNOWN_OPEN-}" --bin-dir "${BUILD_DIR:-build}" \
    --timeout $((seconds + 600)) --out "$out"
rc=$?
echo
"$py" chaos/mandrill-chaos table "$out"
echo "history: $out"
exit $rc
