#!/usr/bin/env bash
# `cellflow blockwise` under `mpirun -np 3`: the ranks share the blocks of one
# task, each block processed once in total (a post-check logs every block it
# confirms), the output equals a single-process run byte for byte, rank 0's
# report counts every block; a block whose post-check fails is reported failed
# once, with its error, and every rank exits 1.
# Usage: mpi_blockwise_test.sh CELLFLOW_CLI
set -euo pipefail
cli=$1
if ! command -v mpirun > /dev/null; then
  echo "mpirun not found (install openmpi-bin: scripts/setup.sh does)" >&2
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cellflow-mpi-bw.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

/usr/bin/python3 - "$work/in.zarr" <<'PY'
import sys, numpy as np, zarr
rng = np.random.default_rng(5)
z = zarr.open(sys.argv[1], mode="w", shape=(45, 61), chunks=(16, 16), dtype="f4")
z[:] = rng.random((45, 61), dtype=np.float32) * 100
PY

task() {  # task NAME POST_CHECK_CONDITION MAX_RETRIES
  cat > "$work/$1.json" <<JSON
{
  "name": "$1",
  "inputs": {"raw": {"zarr": "in.zarr"}},
  "read_roi": {"offset": [0, 0], "shape": [14, 14]},
  "write_roi": {"offset": [5, 5], "shape": [4, 4]},
  "fit": "shrink",
  "read_write_conflict": true,
  "max_retries": $3,
  "process": {"op": "gaussian", "params": {"sigma": 1.0}},
  "output": {"zarr": "$1.zarr"},
  "check": "output",
  "post_check": {"command": ["sh", "-c",
    "echo \$CELLFLOW_BLOCK_ID >> \"\$CELLFLOW_TASK_DIR/$1.post\"; $2"]}
}
JSON
}

task single true 1
"$cli" blockwise "$work/single.json" --threads 2 --quiet --report-json "$work/single.report"

task shared true 1
"${mpi[@]}" -np 3 "$cli" blockwise "$work/shared.json" --threads 1 --quiet \
  --report-json "$work/shared.report" > "$work/shared.log" 2>&1 || { cat "$work/shared.log"; exit 1; }

# No retries: a retry's pre-check would find the chunk the failed attempt wrote.
task failing 'test $CELLFLOW_BLOCK_ID != 9' 0
rc=0
"${mpi[@]}" -np 3 "$cli" blockwise "$work/failing.json" --threads 1 --quiet \
  --report-json "$work/failing.report" > "$work/failing.log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then cat "$work/failing.log"; echo "a failed block gave exit 0"; exit 1; fi

/usr/bin/python3 - "$work" <<'PY'
import filecmp, json, os, sys
work = sys.argv[1]
single = json.load(open(f"{work}/single.report"))
shared = json.load(open(f"{work}/shared.report"))
n = single["blocks"]
assert n == 9 * 13 and single["done"] == n, single  # ceil(35/4) x ceil(51/4), shrink
assert shared["done"] == n and shared["failed"] == 0 and shared["orphaned"] == 0, shared
assert sorted(shared["done_blocks"]) == list(range(n)), shared
# Each block processed (and post-checked) once across the three ranks.
ids = [int(x) for x in open(f"{work}/shared.post").read().split()]
assert sorted(ids) == list(range(n)), f"{len(ids)} post-checks for {n} blocks"
# The same chunks, byte for byte (the ranks' coordination files aside).
def chunks(d):
    return sorted(f for f in os.listdir(d) if not f.startswith(".cellflow"))
a, b = f"{work}/single.zarr", f"{work}/shared.zarr"
assert chunks(a) == chunks(b), (chunks(a)[:5], chunks(b)[:5])
for name in chunks(a):
    if os.path.isdir(os.path.join(a, name)):
        cmp = filecmp.dircmp(os.path.join(a, name), os.path.join(b, name))
        assert not cmp.diff_files and not cmp.left_only and not cmp.right_only, name
    else:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
failing = json.load(open(f"{work}/failing.report"))
assert [f["block"] for f in failing["failed_blocks"]] == [9], failing["failed_blocks"]
err = failing["failed_blocks"][0]["error"]
assert "post_check() says the block is not done" in err, err
assert failing["failed"] == 1
assert failing["done"] + failing["orphaned"] == n - 1, failing
# Block 9 was tried once in total, not once per rank.
tries = [int(x) for x in open(f"{work}/failing.post").read().split()].count(9)
assert tries == 1, f"block 9 post-checked {tries} times"
print(f"np=3: {n} blocks, each processed once; output identical; a failed block reported once")
PY
