#!/usr/bin/env bash
# `cmake --install` puts a working cellflow package under the prefix: installs
# the build into a temporary prefix, then imports the package from there (not
# from the build tree) and computes a region through the installed libraries.
# Usage: installed_package.sh BUILD_DIR PYTHON SITE_DIR_RELATIVE_TO_PREFIX
set -euo pipefail
build=$1
python=$2
site=$3
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > "$prefix/install.log"
cd "$prefix"
PYTHONPATH="$prefix/$site" "$python" - "$prefix" <<'PY'
import sys
import numpy as np
import cellflow
prefix = sys.argv[1]
assert cellflow.__file__.startswith(prefix), cellflow.__file__
g = cellflow.Graph("installed", cache=None)
raw = g.add("raw", "synthetic.blobs", shape=[16, 16], cell_shape=[8, 8], dtype="f32", seed=1)
s = g.add("s", "gaussian", [raw], sigma=1.0)
a = s[2:10, 3]
assert a.shape == (8,) and np.isfinite(a).all()
print("ok", cellflow.__file__)
PY

# The installed program runs a graph with a Python op through the installed plugin.
mkdir -p "$prefix/mods"
cat > "$prefix/mods/installed_ops.py" <<'PY'
import cellflow

@cellflow.op(name="installed.double")
def double(x):
    return 2 * x
PY
cat > "$prefix/g.json" <<'JSON'
{"cellflow": 1, "name": "installed", "nodes": [
  {"id": "raw", "op": "synthetic.blobs",
   "params": {"shape": [16, 16], "cell_shape": [8, 8], "dtype": "f32"}},
  {"id": "d", "op": "installed.double", "inputs": ["raw"]}]}
JSON
plugin=$(ls "$prefix/$site"/cellflow/libcellflow_python_ops.so)
PYTHONPATH="$prefix/$site:$prefix/mods" CELLFLOW_PYTHON_MODULES=installed_ops \
  "$prefix/bin/cellflow" run "$prefix/g.json" --cache "$prefix/cache" --plugin "$plugin" -q
echo "ok: cellflow run with a Python op"
