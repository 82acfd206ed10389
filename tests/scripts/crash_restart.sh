#!/bin/sh
# Restart command of the crash tests (tests/test_e2e_crash.c), for
# mandrill-worker in exec mode:
#   crash_restart.sh OUT_FILE MESSAGE_ID
# appends "MESSAGE_ID\n" to OUT_FILE in one short O_APPEND write, so lines
# from concurrent restarts never interleave, and exits 0. The file is the
# record of which restarts completed and how often, which survives a
# kill -9 of the worker that ran it.
echo "$2" >> "$1"
