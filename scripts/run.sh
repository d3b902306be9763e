#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and starts
# the service on the embedded SQLite store (data in $FRAPI_DATA_DIR,
# default ./data).  Extra arguments go to `frapi serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
make -s -j"$(nproc)" all
exec ./build/frapi serve "$@"
