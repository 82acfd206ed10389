#!/usr/bin/env bash
# Runs every Mandrill test: the release build's suite (ctest), the same suite
# built with AddressSanitizer + UndefinedBehaviorSanitizer, the unit tests
# under valgrind, short fuzzing runs of the protocol decoder, the journal
# reader and the CURVE handshake, and the docker compose stack brought up for real
# (scripts/compose-test.sh: its own dockerd, images, 3 workers on PostgreSQL).
# Usage: scripts/test.sh [--quick]   (--quick: release suite only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
JOBS=$(nproc)
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

step () { echo; echo "==== $*"; }

step "release build"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build/release -j "$JOBS"
step "release tests"
(cd build/release && ctest --output-on-failure)
[ $QUICK -eq 1 ] && exit 0

step "sanitizer build (ASan + UBSan)"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DMANDRILL_SANITIZE=ON > /dev/null
cmake --build build/sanitize -j "$JOBS"
step "sanitizer tests"
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure)

step "valgrind (unit tests and the in-process broker tests)"
for t in build/release/tests/test_mdl_* build/release/tests/test_mmp_* build/release/tests/test_brk_* \
         build/release/tests/test_cli_* build/release/tests/test_wrk_job build/release/tests/test_wrk_jobs; do
    [ -x "$t" ] || continue
    echo "-- $t"
    # Criterion runs each test in a child process, whose exit code it keeps
    # to itself: judge by valgrind's own report instead.
    log=$(mktemp)
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --trace-children=yes --trace-children-skip='*/promtool' "$t" --jobs 1 > /dev/null 2> "$log" || { cat "$log"; exit 1; }
    if grep -q '^==[0-9]*== ' "$log"; then cat "$log"; echo "valgrind found errors in $t"; exit 1; fi
    rm -f "$log"
done
echo "valgrind: clean"

if [ -x fuzz/run.sh ]; then
    step "fuzzing the decoder (60 s), the journal reader (30 s) and the CURVE handshake (30 s)"
    fuzz/run.sh 60 build/fuzz
    fuzz/run.sh 30 build/fuzz fuzz_journal
    fuzz/run.sh 30 build/fuzz fuzz_handshake
fi
if [ -x scripts/compose-test.sh ]; then
    step "docker compose: the real stack (engine, images, 3 workers on PostgreSQL)"
    scripts/compose-test.sh
fi
echo
echo "All test stages passed."
