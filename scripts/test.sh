#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything
# and runs the whole test suite (tests/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
make -s -j"$(nproc)" all unit
exec ./tests/run.sh
