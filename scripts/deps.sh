#!/usr/bin/env bash
# Installs what Mandrill needs to build, test and run, from Debian's packages.
# Safe to run again; does nothing when everything is there already.
set -euo pipefail
PACKAGES=(build-essential cmake pkg-config libzmq3-dev libczmq-dev libcjson-dev
          libcriterion-dev libsqlite3-dev libpq-dev sqlite3 postgresql clang libclang-rt-14-dev
          valgrind libmicrohttpd-dev prometheus python3-zmq)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
