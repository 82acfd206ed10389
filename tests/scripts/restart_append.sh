#!/bin/sh
# Test restart command for mandrill-worker in exec mode:
#   restart_append.sh OUT_FILE HOSTNAME MESSAGE_ID [DELAY_SECONDS [EXIT_STATUS]]
# waits DELAY_SECONDS (default 0), then appends "HOSTNAME MESSAGE_ID" to
# OUT_FILE (one short write, so concurrent appends do not interleave) and
# exits with EXIT_STATUS (default 0). The file is the record of which
# restarts completed, and how often.
out="$1"; host="$2"; id="$3"; delay="${4:-0}"; status="${5:-0}"
if [ "$delay" != "0" ]; then sleep "$delay"; fi
if [ "$status" = "0" ]; then echo "$host $id" >> "$out"; fi
exit "$status"
