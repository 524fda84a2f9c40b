#!/usr/bin/env bash
# Builds (scripts/setup.sh) and runs the whole test suite; the exit status is
# the suite's. Works from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j2 --timeout 600
