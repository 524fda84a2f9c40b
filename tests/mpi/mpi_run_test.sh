#!/usr/bin/env bash
# The same graph under `mpirun -np 2` and `-np 3` writes a cache byte-identical
# to a single-process run, and the ranks together compute each cell once.
# Usage: mpi_run_test.sh CELLFLOW_CLI GRAPH.json
set -euo pipefail
cli=$1
graph=$2
if ! command -v mpirun > /dev/null; then
  echo "mpirun not found (install openmpi-bin: scripts/setup.sh does)" >&2
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cellflow-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

"$cli" run "$graph" --cache "$work/single" --quiet --summary-json "$work/single.json"
for np in 2 3; do
  "${mpi[@]}" -np "$np" "$cli" run "$graph" --mpi --cache "$work/np$np" --quiet \
    --summary-json "$work/np$np.json" > "$work/np$np.log" 2>&1 || { cat "$work/np$np.log"; exit 1; }
  # Byte-identical caches (lock files are empty; markers and metadata equal).
  diff -r "$work/single" "$work/np$np" > "$work/diff.txt" || {
    echo "np=$np: cache differs from the single-process run:"; head -20 "$work/diff.txt"; exit 1; }
  # Each cell computed once in total, summed over ranks by rank 0's summary.
  /usr/bin/python3 - "$work/np$np.json" "$np" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for n in summary["nodes"]:
    if n["cells_computed"] != n["cells_total"]:
        sys.exit(f"np={sys.argv[2]}: node {n['id']}: {n['cells_computed']} cells computed for {n['cells_total']} cells")
print(f"np={sys.argv[2]}: every cell computed once across ranks; cache identical")
PY
done
# A sharded cache ($CELLFLOW_SHARD_CELLS): every complete image node is packed
# (zarr.json, no .zarray, no single cell file left).
if [ -n "${CELLFLOW_SHARD_CELLS:-}" ]; then
  /usr/bin/python3 - "$work/np3" <<'PY'
import json, os, sys
root = sys.argv[1]
assert json.load(open(os.path.join(root, "cellflow-cache.json")))["format"] == 3
packed = 0
for node in sorted(os.listdir(root)):
    array = os.path.join(root, node, "0")
    if len(node) != 32 or not os.path.isdir(array):
        continue
    if not os.path.exists(os.path.join(root, node, ".cellflow-complete")):
        continue
    names = os.listdir(array)
    if "zarr.json" not in names or ".zarray" in names or any(n.isdigit() for n in names):
        sys.exit(f"node {node} is complete but not packed: {sorted(names)}")
    packed += 1
if packed == 0:
    sys.exit("no packed image node")
print(f"sharded: {packed} image nodes packed")
PY
fi
