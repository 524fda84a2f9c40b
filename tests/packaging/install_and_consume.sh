#!/usr/bin/env bash
# Installs the built tree into a temporary prefix, then configures, builds and
# runs tests/packaging/consumer against it with find_package(cellflow).
set -euo pipefail
build_dir=$1
src_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cellflow-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
test -x "$work/prefix/bin/cellflow"
test -f "$work/prefix/include/cellflow/cellflow.hpp"
cmake -S "$src_dir/consumer" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/build/consumer"
# Not `ops | grep -q`: grep's early exit would SIGPIPE the CLI under pipefail.
"$work/prefix/bin/cellflow" ops > "$work/ops.txt"
grep -q gaussian "$work/ops.txt"
echo "packaging ok"
