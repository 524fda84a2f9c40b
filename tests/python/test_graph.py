"""Graphs from Python: building, JSON load/save, validation errors, hashes
equal to `cellflow graph --hashes`, the op registry and plugins."""

import json
import os

import pytest

import cellflow
from conftest import blobs_graph, cli_hashes, run_cli

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "cell_density.json")


def build_density(cache=None):
    g = cellflow.Graph("cell_density", cache=cache)
    g.add("raw", "synthetic.blobs", shape=[256, 256, 256], cell_shape=[64, 64, 64],
          dtype="f32", seed=1)
    g.add("smooth", "gaussian", ["raw"], sigma=2.0)
    g.add("mask", "otsu", ["smooth"])
    g.add("labels", "label", ["mask"])
    g.add("counts", "region.count", ["labels"], region=[64, 64, 64])
    g.add("density", "region.density", ["mask"], region=[64, 64, 64])
    g.add("objects", "label.stats", ["labels", "smooth"])
    g.outputs = ["counts", "density", "objects"]
    return g


def test_python_built_graph_has_the_cli_hashes_of_its_json(tmp_path):
    g = build_density()
    path = tmp_path / "g.json"
    g.save(path)
    assert cli_hashes(path) == g.hashes()
    # The example file, written by a person, describes the same graph.
    assert cli_hashes(EXAMPLE) == g.hashes()
    assert cellflow.load(EXAMPLE, cache=None).hashes() == g.hashes()


def test_json_twice_gives_the_same_hashes_and_bytes(tmp_path):
    a = cellflow.load(EXAMPLE, cache=None)
    text = a.to_json()
    b = cellflow.Graph.from_json(text, cache=None)
    assert b.to_json() == text  # save -> load -> save is byte-identical
    assert a.hashes() == b.hashes()
    path = tmp_path / "again.json"
    b.save(path)
    assert path.read_text() == text
    assert cli_hashes(path) == b.hashes()
    assert json.loads(text)["outputs"] == ["counts", "density", "objects"]


def test_persist_round_trips_is_not_hashed_and_keeps_nodes_out_of_the_cache(tmp_path):
    cache = tmp_path / "cache"
    g = cellflow.Graph("p", cache=str(cache))
    g.add("raw", "synthetic.blobs", shape=[32, 32, 32], cell_shape=[16, 16, 16], seed=3,
          persist=False)
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    text = g.to_json()
    assert json.loads(text)["nodes"][0]["persist"] is False
    assert "persist" not in json.loads(text)["nodes"][1]
    again = cellflow.Graph.from_json(text, cache=None)
    assert again.to_json() == text
    path = tmp_path / "p.json"
    g.save(path)
    assert cli_hashes(path) == g.hashes()  # the choice is not part of any hash
    stored = cellflow.Graph("p", cache=None)
    stored.add("raw", "synthetic.blobs", shape=[32, 32, 32], cell_shape=[16, 16, 16], seed=3)
    stored.add("smooth", "gaussian", ["raw"], sigma=1.0)
    assert stored.hashes() == g.hashes()
    report = g.run(["smooth"], threads=2)
    assert report.nodes["raw"]["persisted"] is False
    assert report.nodes["smooth"]["persisted"] is True
    folders = {p.name for p in cache.iterdir() if p.is_dir()}
    assert g.hashes()["smooth"] in folders
    assert g.hashes()["raw"] not in folders
    with pytest.raises(cellflow.InvalidArgument, match="persist"):
        cellflow.Graph.from_dict({"nodes": [{"id": "a", "op": "synthetic.blobs",
                                             "persist": "no"}]}, cache=None)


def test_param_change_changes_hashes_downstream_only():
    g = build_density()
    before = g.hashes()
    h = cellflow.Graph.from_json(g.to_json().replace('"sigma": 2.0', '"sigma": 3.0'), cache=None)
    after = h.hashes()
    assert after["raw"] == before["raw"]
    for node in ("smooth", "mask", "labels", "counts", "density", "objects"):
        assert after[node] != before[node]


def invalid_graph(tmp_path, nodes):
    d = {"name": "bad", "nodes": nodes, "outputs": []}
    g = cellflow.Graph.from_dict(d, cache=None, validate=False)
    path = tmp_path / "bad.json"
    g.save(path)
    return g, path


RAW = {"id": "raw", "op": "synthetic.blobs",
       "params": {"shape": [32, 32], "cell_shape": [16, 16], "dtype": "f32"}}


@pytest.mark.parametrize("nodes, error, words", [
    ([RAW, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": -1}}],
     cellflow.InvalidArgument, ['node "s"', "sigma"]),
    ([RAW, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": "big"}}],
     cellflow.InvalidArgument, ['node "s"', "sigma"]),
    ([RAW, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigmaa": 1.0}}],
     cellflow.InvalidArgument, ['node "s"', "sigmaa"]),
    ([RAW, {"id": "s", "op": "no.such.op", "inputs": ["raw"], "params": {}}],
     cellflow.GraphError, ['node "s"', "no.such.op"]),
    ([RAW, {"id": "s", "op": "gaussian", "inputs": ["nope"], "params": {}}],
     cellflow.GraphError, ['node "s"', "nope"]),
    ([{"id": "a", "op": "gaussian", "inputs": ["b"], "params": {}},
      {"id": "b", "op": "gaussian", "inputs": ["a"], "params": {}}],
     cellflow.GraphError, ["cycle"]),
    ([RAW, RAW], cellflow.GraphError, ['"raw"']),
])
def test_validation_errors_match_the_cli(tmp_path, nodes, error, words):
    g, path = invalid_graph(tmp_path, nodes)
    with pytest.raises(error) as e:
        g.validate()
    assert isinstance(e.value, cellflow.Error)
    for w in words:
        assert w in str(e.value)
    p = run_cli("graph", path, "--hashes", check=False)
    assert p.returncode == 2
    # The same message as the CLI's, whose source is the file path instead of
    # the Python graph's name.
    cli_message = p.stderr.strip().removeprefix("cellflow: error: ")
    py_message = str(e.value).replace("\n", " ")
    assert cli_message.split(": ", 1)[1] == py_message.split(": ", 1)[1]


def test_add_validates_at_once_and_leaves_the_graph_unchanged():
    g = blobs_graph(None)
    with pytest.raises(cellflow.InvalidArgument, match="sigma"):
        g.add("s", "gaussian", ["raw"], sigma=-2.0)
    with pytest.raises(cellflow.GraphError, match="unknown op"):
        g.add("s", "gausian", ["raw"])
    assert g.node_ids == ["raw"]
    with pytest.raises(cellflow.Error):
        g.outputs = ["missing"]
    assert g.outputs == []
    s = g.add("s", "gaussian", ["raw"], sigma=1.0)
    assert s.id == "s" and g.node_ids == ["raw", "s"]


def test_exception_hierarchy():
    for cls in (cellflow.InvalidArgument, cellflow.GraphError, cellflow.IoError,
                cellflow.CorruptionError, cellflow.PluginError, cellflow.NodeError,
                cellflow.Cancelled):
        assert issubclass(cls, cellflow.Error)
    assert issubclass(cellflow.Error, Exception)
    with pytest.raises(cellflow.IoError):
        cellflow.load("/nonexistent/graph.json")
    with pytest.raises(cellflow.GraphError):
        cellflow.Graph.from_json("{not json", cache=None)


def test_ops_lists_the_cli_registry():
    listed = {o["name"]: o for o in cellflow.ops()}
    cli = {o["name"]: o for o in json.loads(run_cli("ops", "--json").stdout)["ops"]}
    assert set(cli) <= set(listed)
    for name, o in cli.items():
        assert listed[name]["version"] == o["version"]
        assert [p["name"] for p in listed[name]["params"]] == [p["name"] for p in o["params"]]
        assert [p["type"] for p in listed[name]["params"]] == [p["type"] for p in o["params"]]
    assert listed["gaussian"]["min_inputs"] == 1


@pytest.mark.skipif("CELLFLOW_EXAMPLE_PLUGIN" not in os.environ, reason="example plugin not built")
def test_plugins_load_and_hash_like_the_cli(tmp_path):
    plugin = os.environ["CELLFLOW_EXAMPLE_PLUGIN"]
    names = cellflow.load_plugin(plugin)
    assert "example.invert" in names
    assert cellflow.load_plugin(plugin) == names  # a second load is a no-op
    assert "example.invert" in {o["name"] for o in cellflow.ops()}
    g = blobs_graph(None, shape=(32, 32), cell=(16, 16))
    inv = g.add("inv", "example.invert", ["raw"], max=2.0)
    path = tmp_path / "p.json"
    g.save(path)
    assert dict(line.split() for line in run_cli(
        "graph", path, "--hashes", "--plugin", plugin).stdout.splitlines()) == g.hashes()
    import numpy as np
    assert np.allclose(np.asarray(inv), 2.0 - np.asarray(g["raw"]))
    with pytest.raises(cellflow.PluginError):
        cellflow.load_plugin(tmp_path / "missing.so")


def test_strict_code_hashes_match_the_cli(tmp_path, monkeypatch):
    g = build_density()
    path = tmp_path / "g.json"
    g.save(path)
    strict = cellflow.Graph.from_json(g.to_json(), cache=None)
    strict.strict_code = True
    hashes = strict.hashes()
    assert hashes != g.hashes()
    out = run_cli("graph", path, "--hashes", "--strict-code").stdout
    assert dict(line.split() for line in out.splitlines()) == hashes
    monkeypatch.setenv("CELLFLOW_STRICT_CODE", "1")  # what --strict-code sets for workers
    assert cellflow.Graph.from_json(g.to_json(), cache=None).hashes() == hashes
