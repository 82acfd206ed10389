#!/usr/bin/env bash
# Writes a restart-policy file of N groups (default 1000) to FILE (default
# /tmp/mandrill-policy-N.cfg) for measuring the policy's cost on the bench:
# groups g1 .. g(N-1) match hostnames the bench never uses
# (nomatch-K-*.example.org), the last one, "cattle", matches the bench's
# cattle-* hosts with a cap no run reaches. Every new target is then
# matched against all N globs, the worst case of a policy this size.
#
#   bench/policy_groups.sh [N] [FILE]
#   bench/run.sh --durability memory --hosts 1000000 --broker-args "--policy FILE"
# (--hosts at least the run's N, 200000 for W1: a host named twice coalesces
# under the policy, and W1 then waits for acks that never come.)
set -eu
N=${1:-1000}
FILE=${2:-/tmp/mandrill-policy-$N.cfg}
{
    echo "#   $N groups, only the last matches the bench's hosts"
    echo "groups"
    for i in $(seq 1 $((N - 1))); do
        echo "    g$i"
        echo "        match = \"nomatch-$i-*.example.org\""
        echo "        max = 1"
    done
    echo "    cattle"
    echo "        match = \"cattle-*\""
    echo "        max = 1000000"
} > "$FILE"
echo "$FILE"
