#!/usr/bin/env bash
# Builds (scripts/setup.sh) and runs the whole test suite, then the fuzz
# targets for a bounded time each (scripts/fuzz.sh, build-fuzz/;
# CELLFLOW_FUZZ_SECONDS per target, default 60); the exit status is the
# suite's. Works from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j2 --timeout 600
bash scripts/fuzz.sh
