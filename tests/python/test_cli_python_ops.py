"""Graphs with Python ops run by the `cellflow` program, through the plugin
libcellflow_python_ops.so and $CELLFLOW_PYTHON_MODULES: the same hashes, the
same cache folders and the same values as in Python."""

import json
import os

import numpy as np
import pytest
import zarr

import cellflow
from conftest import cli_hashes, run_cli

PLUGIN = os.environ.get("CELLFLOW_PYTHON_OPS_PLUGIN")
pytestmark = pytest.mark.skipif(not PLUGIN, reason="CELLFLOW_PYTHON_OPS_PLUGIN not set")

OPS = """
    import cellflow
    from scipy import ndimage

    @cellflow.op(name="t.cli.smooth", params={"sigma": 1.5},
                 halo=lambda sigma: int(4 * sigma + 0.5))
    def smooth(x, sigma):
        return ndimage.gaussian_filter(x, sigma)
"""


def setup_graph(modules, cache, tmp_path):
    m = modules.write(OPS)
    g = cellflow.Graph("cli_py", cache=cache)
    g.add("raw", "synthetic.blobs", shape=[48, 48, 48], cell_shape=[16, 16, 16], dtype="f32",
          seed=2)
    g.add("s", m.smooth, ["raw"], sigma=1.5)
    g.add("m", "threshold", ["s"], above=0.5)
    path = tmp_path / "g.json"
    g.save(path)
    env = dict(os.environ)
    env["CELLFLOW_PYTHON_MODULES"] = m.__name__
    env["PYTHONPATH"] = os.pathsep.join([str(modules.folder), env.get("PYTHONPATH", "")])
    return g, path, env


def test_cli_runs_python_ops_with_python_hashes_and_cache(modules, cache, tmp_path):
    g, path, env = setup_graph(modules, cache, tmp_path)
    assert cli_hashes(path, env=env | {"CELLFLOW_PLUGIN_PATH": PLUGIN}) == g.hashes()

    # Python computes; the CLI finds every cell in the same folders.
    g.run()
    summary = tmp_path / "s.json"
    run_cli("run", path, "--cache", cache, "--plugin", PLUGIN, "--summary-json", summary, "-q",
            env=env)
    nodes = {n["id"]: n for n in json.loads(summary.read_text())["nodes"]}
    for id in ("raw", "s", "m"):
        assert nodes[id]["path"] == g[id].path
        assert nodes[id]["cells_computed"] == 0

    # The CLI computes from scratch elsewhere: the same values.
    other = tmp_path / "other"
    run_cli("run", path, "--cache", other, "--plugin", PLUGIN, "--summary-json", summary, "-q",
            env=env)
    nodes = {n["id"]: n for n in json.loads(summary.read_text())["nodes"]}
    assert nodes["s"]["cells_computed"] == 27
    stored = zarr.open(str(other / g.hashes()["s"] / "0"), mode="r")[...]
    np.testing.assert_array_equal(stored, np.asarray(g["s"]))


def test_cli_without_the_module_says_what_is_missing(modules, cache, tmp_path):
    g, path, env = setup_graph(modules, cache, tmp_path)
    env.pop("CELLFLOW_PYTHON_MODULES")
    p = run_cli("graph", path, "--hashes", "--plugin", PLUGIN, check=False, env=env)
    assert p.returncode == 2 and "CELLFLOW_PYTHON_MODULES" in p.stderr
    # The module loads, but the graph names an op it does not define.
    other = modules.write("""
        import cellflow

        @cellflow.op(name="t.cli.other")
        def other(x):
            return x
    """)
    env["CELLFLOW_PYTHON_MODULES"] = other.__name__
    p = run_cli("graph", path, "--hashes", "--plugin", PLUGIN, check=False, env=env)
    assert p.returncode == 2 and 'unknown op "t.cli.smooth"' in p.stderr
    env["CELLFLOW_PYTHON_MODULES"] = "no_such_module_here"
    p = run_cli("graph", path, "--hashes", "--plugin", PLUGIN, check=False, env=env)
    assert p.returncode == 2
    assert "no_such_module_here" in p.stderr and "PYTHONPATH" in p.stderr


def test_the_plugin_refuses_to_load_inside_python():
    before = {o["name"] for o in cellflow.ops()}
    with pytest.raises(cellflow.PluginError, match="import the module"):
        cellflow.load_plugin(PLUGIN)
    assert {o["name"] for o in cellflow.ops()} == before
