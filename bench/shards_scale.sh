#!/usr/bin/env bash
# Scale of sharded nodes (README, "Sharded nodes"): one run of
# bench/graphs/shards_scale.json (a 262,144-cell node, u8 1024^3 in 16^3
# cells, and a 4,096-cell node, 256x256x250) into an unsharded cache and into
# a sharded one (512 cells per shard), then `cache ls`, `cache verify` and
# `cache gc` on each; prints time per cell of each node, the tools' times and
# the files per node.
# Usage: bench/shards_scale.sh CELLFLOW_CLI WORKDIR
set -euo pipefail
cli=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
graph=$here/graphs/shards_scale.json
mkdir -p "$work"
secs() { /usr/bin/python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.2f}")' "$1"; }
for mode in unsharded sharded; do
  cache=$work/$mode
  rm -rf "$cache"
  if [ "$mode" = sharded ]; then export CELLFLOW_SHARD_CELLS=512; else unset CELLFLOW_SHARD_CELLS; fi
  t=$(date +%s.%N)
  "$cli" run "$graph" --cache "$cache" --quiet --summary-json "$work/$mode.json"
  echo "$mode: run wall $(secs "$t") s"
  unset CELLFLOW_SHARD_CELLS
  /usr/bin/python3 - "$work/$mode.json" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
for n in s["nodes"]:
    files = sum(len(f) for _, _, f in os.walk(n["path"]))
    print(f'  node {n["id"]}: {n["cells_total"]} cells, {n["seconds"]:.2f} s of cell time, '
          f'{1e6 * n["seconds"] / n["cells_total"]:.0f} us/cell, {files} files')
PY
  for cmd in "ls" "verify" "gc --older-than 3650"; do
    t=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$cli" cache $cmd --cache "$cache" > "$work/$mode.${cmd%% *}.out"
    echo "  cache $cmd: $(secs "$t") s"
  done
done
