#!/bin/sh
# Test verify command for the in-doubt end-to-end test:
#   doubt_verify.sh RECORD MESSAGE_ID
# exits 0 (the host was restarted) when RECORD has an end line for it.
grep -q "^end $2 " "$1"
