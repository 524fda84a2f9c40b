"""Nodes as lazy arrays: numpy basic indexing equals the C++ program's output
of the same region, only the touched cells are computed, Dask arrays whose
chunks are the cells, and tables."""

import csv

import numpy as np
import pytest
import zarr

import cellflow
from conftest import blobs_graph, run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A graph, and its "smooth" node as written by `cellflow export` (C++)."""
    tmp = tmp_path_factory.mktemp("arrays")
    g = cellflow.Graph("arrays", cache=tmp / "cache")
    g.add("raw", "synthetic.blobs", shape=[40, 50, 30], cell_shape=[16, 16, 16], dtype="f32",
          seed=3)
    g.add("smooth", "gaussian", ["raw"], sigma=1.5)
    g.add("mask", "threshold", ["smooth"], above=0.5)
    path = tmp / "g.json"
    g.save(path)
    run_cli("export", path, "smooth", "--to", tmp / "smooth.zarr", "--cache", tmp / "cli-cache")
    ref = zarr.open(str(tmp / "smooth.zarr"), mode="r")[...]
    # A fresh Python graph on another cache: nothing computed yet.
    py = cellflow.Graph.from_json(g.to_json(), cache=tmp / "py-cache")
    return py, ref, tmp


KEYS = [
    (slice(10, 20), slice(None), 5),
    (Ellipsis, 7),
    (0,),
    (-1, -2, -3),
    (slice(3, 37, 4), slice(None, None, -3), slice(2, 29)),
    (slice(None, None, -1), 0, Ellipsis),
    (slice(5, 5), slice(None), slice(None)),
    (slice(-10, None), slice(16, 32), slice(0, 16)),
    (Ellipsis,),
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
def test_indexing_equals_the_cpp_export(exported, key):
    py, ref, _ = exported
    got = py["smooth"][key]
    want = ref[key]
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_asarray_and_metadata(exported):
    py, ref, _ = exported
    node = py["smooth"]
    assert node.shape == (40, 50, 30) and node.ndim == 3 and node.dtype == np.float32
    assert node.cell_shape == (16, 16, 16)
    assert node.chunks == ((16, 16, 8), (16, 16, 16, 2), (16, 14))
    np.testing.assert_array_equal(np.asarray(node), ref)
    np.testing.assert_array_equal(np.asarray(node, dtype=np.float64), ref.astype(np.float64))
    assert np.asarray(py["mask"]).dtype == np.dtype(py["mask"].dtype)


def test_index_errors(exported):
    py, _, _ = exported
    node = py["smooth"]
    with pytest.raises(IndexError):
        node[40]
    with pytest.raises(IndexError):
        node[0, 0, 0, 0]
    with pytest.raises(TypeError):
        node[[1, 2, 3]]
    with pytest.raises(KeyError):
        py["nope"]


def test_a_region_computes_only_the_cells_it_touches(tmp_path):
    g = blobs_graph(None, shape=(64, 64, 64), cell=(16, 16, 16), seed=11)
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    a = g["smooth"][2:10, 3:9, 20:30]  # inside one cell (0, 0, 1)
    assert a.shape == (8, 6, 10)
    assert g["smooth"].stats()["computed"] == 1
    # The raw cells under that cell and its halo, not all 64.
    assert g["raw"].stats()["computed"] < 64
    g["smooth"][0:16, 0:16, 0:16]  # one more cell
    assert g["smooth"].stats()["computed"] == 2


def test_to_dask_chunks_are_cells_and_sums_match(exported):
    py, ref, _ = exported
    node = py["smooth"]
    d = node.to_dask()
    assert d.chunks == node.chunks
    assert d.dtype == np.float32 and d.shape == node.shape
    np.testing.assert_allclose(float(d.sum(dtype=np.float64).compute()),
                               float(ref.sum(dtype=np.float64)), rtol=1e-12)
    np.testing.assert_array_equal(d[5:30, ::3, 7].compute(), ref[5:30, ::3, 7])
    # Any dask-aware computation works on it.
    import dask.array as da

    m = da.map_blocks(lambda b: b * 2, d, dtype=d.dtype)
    np.testing.assert_array_equal(m.compute(scheduler="threads"), ref * 2)


def test_to_dask_reads_through_the_cache(tmp_path):
    g = blobs_graph(tmp_path / "c", shape=(32, 32, 32), cell=(16, 16, 16), seed=4)
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    g.run()
    fresh = cellflow.Graph.from_json(g.to_json(), cache=tmp_path / "c")
    # Counters are per process (graphs share node images): compare deltas.
    before = fresh["smooth"].stats()
    cellflow.clear_memory()
    total = fresh["smooth"].to_dask().sum(dtype=np.float64).compute()
    after = fresh["smooth"].stats()
    assert after["computed"] == before["computed"]
    assert after["loaded"] - before["loaded"] == 8  # read back from the cache folder
    assert total == pytest.approx(float(np.asarray(g["smooth"]).sum(dtype=np.float64)))


def test_cells_are_read_only_views(exported):
    py, ref, _ = exported
    c = py["smooth"].cell((1, 2, 1))
    np.testing.assert_array_equal(c, ref[16:32, 32:48, 16:30])
    assert not c.flags.writeable


def test_tables_as_structured_arrays(tmp_path):
    g = cellflow.Graph("t", cache=tmp_path / "cache")
    g.add("raw", "synthetic.blobs", shape=[48, 48, 48], cell_shape=[16, 16, 16], dtype="f32",
          seed=1)
    g.add("smooth", "gaussian", ["raw"], sigma=2.0)
    g.add("mask", "otsu", ["smooth"])
    g.add("labels", "label", ["mask"])
    g.add("objects", "label.stats", ["labels", "smooth"])
    path = tmp_path / "t.json"
    g.save(path)
    run_cli("export", path, "objects", "--to", tmp_path / "objects.csv", "--cache",
            tmp_path / "cli")
    with open(tmp_path / "objects.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], np.array(rows[1:], dtype=np.float64)
    t = g["objects"].table()
    assert list(t.dtype.names) == header
    assert len(t) == len(body) > 0
    for i, name in enumerate(header):
        np.testing.assert_allclose(t[name], body[:, i], rtol=1e-9)
    assert g["objects"].is_table
    with pytest.raises(cellflow.InvalidArgument):
        g["objects"][0]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            g["objects"].to_pandas()
    else:
        df = g["objects"].to_pandas()
        assert list(df.columns) == header and len(df) == len(body)


def test_cells_in_memory_survive_edits_of_the_graph():
    g = blobs_graph(None, shape=(32, 32), cell=(16, 16), seed=21)
    g["raw"][0:4, 0:4]
    assert g["raw"].stats()["computed"] == 1
    g.add("s", "gaussian", ["raw"], sigma=1.0)  # rebuilds the C++ graph
    g["raw"][0:4, 0:4]
    s = g["raw"].stats()
    assert s["computed"] == 1 and s["memory_hits"] == 1


def test_physical_space_and_labels():
    g = cellflow.Graph("space")
    g.add("raw", "synthetic.blobs", shape=[8, 12, 10], cell_shape=[4, 6, 5], count=3,
          spacing=[2.0, 0.5, 0.25], origin=[1.0, 0.0, -3.0], unit="micrometer")
    g.add("mask", "threshold", ["raw"], above=0.5)
    g.add("cells", "label", ["mask"])
    g.add("half", "downsample", ["cells"], factors=2, method="mode")
    raw, half = g["raw"], g["half"]
    assert raw.spacing == (2.0, 0.5, 0.25)
    assert raw.origin == (1.0, 0.0, -3.0)
    assert raw.units == ("micrometer",) * 3
    assert raw.axis_names == ("z", "y", "x")
    assert g["mask"].spacing == raw.spacing and not g["mask"].is_labels
    assert g["cells"].is_labels and half.is_labels
    # Blocks of 2: spacing doubles, the origin moves to the first block's centre.
    assert half.spacing == (4.0, 1.0, 0.5)
    assert half.origin == (2.0, 0.25, -2.875)
