#!/bin/sh
# Verify command of mandrill-chaos (mandrill-worker --verify-cmd), run for a
# delivery the broker marks in doubt:
#   chaos_verify.sh HISTORY_FILE MESSAGE_ID
# exits 0 when the history has an "end" line for MESSAGE_ID (an earlier
# restart of this request ran to its end: the host was restarted), 1
# otherwise (restart it). It stands for what a real verify command asks the
# host, e.g. "has it booted since the request was published?".
out="$1"; id="$2"
grep -q "^end $id " "$out" 2>/dev/null
