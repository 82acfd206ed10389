#!/usr/bin/env bash
#   Rewrite the handshake seed corpus fuzz/corpus/handshake/: a real CURVE
#   client's greeting and HELLO, captured by fuzz_handshake itself (a
#   DEALER with a fresh key talks to a raw listener that answers as a
#   CURVE server), and variants of them: the signature alone, half a
#   HELLO, another mechanism, ZMTP 2, wrong command sizes, a box that does
#   not open, garbage or HTTP first, INITIATE out of order.
#
#   Usage: fuzz/make_handshake_corpus.sh [BUILD_DIR]
#     BUILD_DIR  clang build directory (default /tmp/mandrill-fuzz-build)
#   Exit codes: 0 written, 2 build error or clang missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
build_dir=${1:-/tmp/mandrill-fuzz-build}
command -v clang >/dev/null || { echo "make_handshake_corpus: clang not found" >&2; exit 2; }
cmake -S "$source_dir" -B "$build_dir" -DCMAKE_C_COMPILER=clang \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMANDRILL_FUZZ=ON -DMANDRILL_TESTS=OFF >/dev/null \
    || { echo "make_handshake_corpus: configure failed" >&2; exit 2; }
cmake --build "$build_dir" --target fuzz_handshake -j2 >/dev/null \
    || { echo "make_handshake_corpus: build failed" >&2; exit 2; }
dir="$here/corpus/handshake"
mkdir -p "$dir"
rm -f "$dir"/seed-*
#   -runs=0: only the initializer (which writes the seeds) and the seeds
FUZZ_HANDSHAKE_SEEDS="$dir" "$build_dir/fuzz/fuzz_handshake" -runs=0 "$dir" 2>/dev/null
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
