#!/bin/sh
# Restart command of mandrill-chaos, for mandrill-worker in exec mode:
#   chaos_restart.sh HISTORY_FILE WORKER MESSAGE_ID HOSTNAME [fast]
# appends "start MESSAGE_ID HOSTNAME WORKER T_NS", waits 0.1 to 0.5 s (chosen
# by the id's first hex digit, so a replay waits alike; not at all with
# "fast", for floods), then appends
# "end MESSAGE_ID HOSTNAME WORKER T_NS" and exits 0. T_NS is the realtime
# clock in nanoseconds (date +%s%N), the one clock of every chaos history.
# Each line is one short O_APPEND write, so lines of concurrent restarts
# never interleave, and the lines outlive a kill -9 of the worker. A start
# without its end means the restart itself was killed.
out="$1"; worker="$2"; id="$3"; host="$4"
echo "start $id $host $worker $(date +%s%N)" >> "$out"
first="${id%"${id#?}"}"
[ "${5:-}" = "fast" ] && first=fast
case "$first" in
    fast)  ;;
    [0-4]) sleep 0.1 ;;
    [5-9]) sleep 0.3 ;;
    *)     sleep 0.5 ;;
esac
echo "end $id $host $worker $(date +%s%N)" >> "$out"
exit 0
