#!/usr/bin/env bash
#   Build the libFuzzer target with clang and run it for a bounded time.
#
#   Usage: fuzz/run.sh SECONDS [BUILD_DIR] [TARGET]
#     SECONDS    how long to fuzz (libFuzzer -max_total_time)
#     BUILD_DIR  clang build directory (default /tmp/mandrill-fuzz-build)
#     TARGET     fuzz_mmp (default), fuzz_journal (its seed corpus is
#                written by the target itself, from real journals) or
#                fuzz_handshake (seeds in fuzz/corpus/handshake, made by
#                fuzz/make_handshake_corpus.sh)
#
#   The seed corpus (fuzz/corpus) is copied to a scratch directory so the
#   tree is never modified; new inputs found are discarded afterwards.
#   Exit codes: 0 clean run, 1 a crash / leak / sanitizer report (the
#   reproducer is kept and its path printed), 2 usage or build error.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
    echo "usage: $0 SECONDS [BUILD_DIR] [TARGET]" >&2
    exit 2
fi
seconds=$1
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
build_dir=${2:-/tmp/mandrill-fuzz-build}
target=${3:-fuzz_mmp}
[[ "$target" == fuzz_mmp || "$target" == fuzz_journal || "$target" == fuzz_handshake ]] \
    || { echo "fuzz: unknown target $target" >&2; exit 2; }

if ! command -v clang >/dev/null; then
    echo "fuzz: clang not found" >&2
    exit 2
fi
cmake -S "$source_dir" -B "$build_dir" -DCMAKE_C_COMPILER=clang \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMANDRILL_FUZZ=ON -DMANDRILL_TESTS=OFF >/dev/null \
    || { echo "fuzz: configure failed" >&2; exit 2; }
cmake --build "$build_dir" --target "$target" -j2 >/dev/null \
    || { echo "fuzz: build failed" >&2; exit 2; }

work=$(mktemp -d /tmp/mandrill-fuzz-run.XXXXXX)
mkdir -p "$work/corpus" "$work/artifacts"
set +e
if [[ "$target" == fuzz_journal ]]; then
    FUZZ_JOURNAL_SEEDS="$work/corpus" "$build_dir/fuzz/fuzz_journal" -runs=0 "$work/corpus" \
        2>/dev/null
    extra=()
elif [[ "$target" == fuzz_handshake ]]; then
    cp "$here"/corpus/handshake/* "$work/corpus/"
    extra=()
else
    find "$here/corpus" -maxdepth 1 -type f -exec cp {} "$work/corpus/" \;
    extra=(-dict="$here/mmp.dict")
fi
"$build_dir/fuzz/$target" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 "${extra[@]}" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" 2>"$work/fuzz.log"
status=$?
set -e

tail -n 15 "$work/fuzz.log"
if [[ $status -ne 0 ]] || compgen -G "$work/artifacts/*" >/dev/null; then
    #   What the target itself said before it stopped, and the first report
    grep -m 5 -E "^fuzz_[a-z]+: |ERROR: |^SUMMARY" "$work/fuzz.log" >&2 || true
    echo "fuzz: FAILED (exit $status); log and reproducer kept in $work" >&2
    exit 1
fi
rm -rf "$work"
echo "fuzz: clean after ${seconds}s"
