#!/bin/sh
# Test restart command for the in-doubt end-to-end test:
#   doubt_restart.sh RECORD MESSAGE_ID SECONDS
# appends "start MESSAGE_ID MS" (MS: the clock in milliseconds), sleeps
# SECONDS, then appends "end MESSAGE_ID MS". A worker killed meanwhile
# leaves it running as an orphan, which still writes its end line.
out="$1"; id="$2"; delay="$3"
echo "start $id $(date +%s%3N)" >> "$out"
sleep "$delay"
echo "end $id $(date +%s%3N)" >> "$out"
exit 0
