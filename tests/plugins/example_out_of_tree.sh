#!/usr/bin/env bash
# Installs the build into a temporary prefix, builds plugins/example against
# it with find_package(cellflow) (as a plugin author would, outside the tree),
# then runs a graph that uses its op, example.invert, with the installed CLI
# and --plugin, and checks the values with zarr-python.
#
#   example_out_of_tree.sh BUILD_DIR SOURCE_DIR [PYTHON]
set -euo pipefail
build_dir=$1
src_dir=$2
python=${3:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/cellflow-plugin.XXXXXX")
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
test -f "$work/prefix/include/cellflow/plugins/plugin.hpp"

# A copy of the example, so nothing of the source tree is used but its files.
cp -r "$src_dir/plugins/example" "$work/example"
generator=()
if command -v ninja > /dev/null; then generator=(-G Ninja); fi
cmake -S "$work/example" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
plugin="$work/build/libcellflow_example.so"
test -f "$plugin"

cellflow="$work/prefix/bin/cellflow"
ops=$("$cellflow" ops --plugin "$plugin")
grep -q "^example.invert (version 1" <<< "$ops" || { echo "example.invert is not listed"; exit 1; }

cat > "$work/graph.json" <<'JSON'
{
  "cellflow": 1,
  "name": "plugin_example",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [20, 24, 28], "cell_shape": [8, 8, 8], "dtype": "f32", "seed": 4, "count": 8}},
    {"id": "inverted", "op": "example.invert", "inputs": ["raw"], "params": {"max": 1.5}}
  ],
  "outputs": ["inverted"]
}
JSON
"$cellflow" run "$work/graph.json" --plugin "$plugin" --cache "$work/cache" --quiet \
  --summary-json "$work/summary.json"

"$python" - "$work/summary.json" <<'PY'
import json, sys
import numpy as np, zarr
nodes = {n["id"]: n for n in json.load(open(sys.argv[1]))["nodes"]}
raw = zarr.open(nodes["raw"]["path"] + "/0", mode="r")[...]
inv = zarr.open(nodes["inverted"]["path"] + "/0", mode="r")[...]
expected = (1.5 - raw.astype(np.float64)).astype(np.float32)
assert inv.dtype == np.float32, inv.dtype
assert inv.shape == (20, 24, 28), inv.shape
assert np.array_equal(inv, expected), np.abs(inv - expected).max()
assert raw.std() > 0.05, "the input is not a real image"
print("inverted values ok:", inv.shape, float(inv.min()), float(inv.max()))
PY
echo "example plugin ok"
