"""Python functions as ops: results equal the function on the whole image,
hashing by source (an edit recomputes the node and its descendants only),
tracebacks in errors, sources, dtype rules and validation."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

import cellflow
from conftest import blobs_graph

SMOOTH = """
    import cellflow
    from scipy import ndimage

    @cellflow.op(name="{name}", params={{"sigma": 2.0}},
                 halo=lambda sigma: int(4 * sigma + 0.5))
    def smooth(x, sigma):
        return ndimage.gaussian_filter(x, sigma){edit}
"""


def test_python_op_equals_the_function_on_the_whole_image(modules):
    m = modules.write(SMOOTH.format(name="t.smooth.whole", edit=""))
    g = blobs_graph(None, shape=(48, 40, 56), cell=(16, 16, 16), seed=7)
    s = g.add("s", m.smooth, ["raw"], sigma=2.0)
    g.run(threads=2)
    raw = np.asarray(g["raw"])
    want = ndimage.gaussian_filter(raw, 2.0)
    np.testing.assert_array_equal(np.asarray(s), want)
    # Without the halo the cells' borders differ: the halo is what makes it equal.
    m2 = modules.write(SMOOTH.format(name="t.smooth.nohalo", edit="").replace(
        "halo=lambda sigma: int(4 * sigma + 0.5)", "halo=0"))
    h = g.add("h", m2.smooth, ["raw"], sigma=2.0)
    assert not np.array_equal(np.asarray(h), want)
    # Lazily: a region reads the same values.
    np.testing.assert_array_equal(s[10:30, 5, ::2], want[10:30, 5, ::2])
    # The decorated function is still the function.
    np.testing.assert_array_equal(m.smooth(raw, sigma=2.0), want)


def chain(cache, op_name):
    g = blobs_graph(cache, shape=(32, 32, 32), cell=(16, 16, 16), seed=9)
    g.add("a", "gaussian", ["raw"], sigma=1.0)
    g.add("b", "threshold", ["raw"], above=0.5)
    g.add("p", op_name, ["a"], sigma=1.0)
    g.add("d", "threshold", ["p"], above=0.4)
    g.outputs = ["b", "d"]
    return g


def test_edited_source_recomputes_the_node_and_its_descendants_only(modules, cache):
    modules.write(SMOOTH.format(name="t.smooth.edit", edit=""))
    g1 = chain(cache, "t.smooth.edit")
    h1 = g1.hashes()
    r1 = g1.run()
    assert all(r1.computed(n) == 8 for n in ("raw", "a", "b", "p", "d"))
    p1 = np.asarray(g1["p"])

    # Same source again (another module, same function text): same hashes,
    # nothing recomputed.
    modules.write(SMOOTH.format(name="t.smooth.edit", edit=""))
    g2 = chain(cache, "t.smooth.edit")
    assert g2.hashes() == h1
    assert all(g2.run().computed(n) == 0 for n in h1)

    # Edited source: p and d change, nothing else.
    modules.write(SMOOTH.format(name="t.smooth.edit", edit=" * 0.5"))
    g3 = chain(cache, "t.smooth.edit")
    h3 = g3.hashes()
    assert {n for n in h1 if h1[n] != h3[n]} == {"p", "d"}
    r3 = g3.run()
    assert r3.computed("p") == 8 and r3.computed("d") == 8
    for n in ("raw", "a", "b"):
        assert r3.computed(n) == 0
    np.testing.assert_allclose(np.asarray(g3["p"]), 0.5 * p1, rtol=1e-6)
    # A graph always uses the latest definition of a Python op name.
    assert g1.hashes() == h3

    # A version bump changes the hash too.
    modules.write(SMOOTH.format(name="t.smooth.edit", edit=" * 0.5").replace(
        '@cellflow.op(name="t.smooth.edit",', '@cellflow.op(name="t.smooth.edit", version=2,'))
    assert chain(cache, "t.smooth.edit").hashes()["p"] not in (h1["p"], h3["p"])


def test_a_raising_op_reports_its_traceback(modules):
    m = modules.write("""
        import cellflow

        def helper(v):
            raise ZeroDivisionError(f"cannot divide {v}")

        @cellflow.op(name="t.raises")
        def raises(x):
            return helper(x.shape[0])
    """)
    g = blobs_graph(None, shape=(16, 16), cell=(8, 8))
    g.add("r", "t.raises", ["raw"])
    with pytest.raises(cellflow.NodeError) as e:
        g.run(threads=1)
    msg = str(e.value)
    assert 'node "r"' in msg and "cell (" in msg
    assert "Traceback (most recent call last)" in msg
    assert m.__file__ in msg
    assert "in helper" in msg and "in raises" in msg
    assert "ZeroDivisionError: cannot divide 8" in msg
    # Reading a region raises the same way.
    with pytest.raises(cellflow.NodeError, match="ZeroDivisionError"):
        g["r"][0:4, 0:4]


def test_python_ops_overlap_on_the_executor(modules):
    m = modules.write("""
        import threading
        import time
        import cellflow

        lock = threading.Lock()
        active = [0]
        most = [0]

        @cellflow.op(name="t.sleepy")
        def sleepy(x):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.1)  # releases the GIL, as numpy and scipy kernels may
            with lock:
                active[0] -= 1
            return x + 1
    """)
    g = blobs_graph(None, shape=(32, 16), cell=(8, 8))
    g.add("s", "t.sleepy", ["raw"])
    g.run(threads=2)
    # The GIL is not held across the call's C++ side: two calls were in flight at once.
    assert m.most[0] == 2
    np.testing.assert_array_equal(np.asarray(g["s"]), np.asarray(g["raw"]) + 1)


def test_source_op_with_output_rule_and_box(modules):
    m = modules.write("""
        import numpy as np
        import cellflow

        @cellflow.op(name="t.ramp", inputs=0, params={"shape": [10, 12], "scale": 1},
                     output=lambda shape, scale: {"dtype": "i32", "shape": shape,
                                                  "cell_shape": [4, 5]})
        def ramp(shape, scale, box):
            yy, xx = np.meshgrid(np.arange(box[0].start, box[0].stop),
                                 np.arange(box[1].start, box[1].stop), indexing="ij")
            return (yy * 100 + xx) * scale
    """)
    g = cellflow.Graph("src", cache=None)
    r = g.add("r", m.ramp, shape=[10, 12], scale=3)
    assert r.shape == (10, 12) and r.dtype == np.int32 and r.cell_shape == (4, 5)
    yy, xx = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    np.testing.assert_array_equal(np.asarray(r), (yy * 100 + xx) * 3)


def test_dtype_rule_and_validation(modules):
    m = modules.write("""
        import cellflow

        @cellflow.op(name="t.tou8", dtype="u8", params={"above": 0.5})
        def tou8(x, above):
            return x > above

        @cellflow.op(name="t.badshape")
        def badshape(x):
            return x[:1]
    """)
    g = blobs_graph(None, shape=(16, 16), cell=(8, 8))
    t = g.add("t", m.tou8, ["raw"], above=0.25)
    assert t.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(t), (np.asarray(g["raw"]) > 0.25).astype(np.uint8))
    with pytest.raises(cellflow.InvalidArgument, match="above"):
        g.add("t2", "t.tou8", ["raw"], above="high")
    with pytest.raises(cellflow.InvalidArgument, match="nope"):
        g.add("t3", "t.tou8", ["raw"], nope=1)
    with pytest.raises(cellflow.GraphError):
        g.add("t4", "t.tou8", [])
    b = g.add("b", "t.badshape", ["raw"])
    with pytest.raises(cellflow.NodeError, match=r"returned an array of shape \(1, 8\)"):
        np.asarray(b)
    with pytest.raises(cellflow.InvalidArgument, match="taken"):
        cellflow.op(name="gaussian")(lambda x: x)
    assert {"t.tou8", "t.badshape"} <= {o["name"] for o in cellflow.ops()}
    desc = next(o for o in cellflow.ops() if o["name"] == "t.tou8")
    assert desc["params"][0]["name"] == "above" and desc["params"][0]["type"] == "float"


CHILD = """
import sys
sys.path.insert(0, {folder!r})
import cellflow
import {module}
g = cellflow.Graph("x", cache={cache!r})
g.add("raw", "synthetic.blobs", shape=[32, 32], cell_shape=[16, 16], dtype="f32")
g.add("s", "t.smooth.proc", ["raw"], sigma=1.0)
r = g.run()
print(g["s"].hash, r.computed("s"), g["s"].path)
"""


def test_python_nodes_are_shared_across_processes(modules, cache):
    m = modules.write(SMOOTH.format(name="t.smooth.proc", edit=""))
    script = CHILD.format(folder=str(modules.folder), module=m.__name__, cache=str(cache))
    outs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for o in outs:
        assert o.returncode == 0, o.stderr
    (h1, c1, p1), (h2, c2, p2) = (o.stdout.split() for o in outs)
    assert h1 == h2 and p1 == p2
    assert (c1, c2) == ("4", "0")  # the second process found the first one's cells


def test_halo_and_output_rules_get_the_params_they_name(modules):
    m = modules.write("""
        import numpy as np
        import cellflow
        from scipy import ndimage

        @cellflow.op(name="t.rules", params={"size": 3, "scale": 2.0, "as_f64": False},
                     halo=lambda size: size // 2,
                     output=lambda infos, as_f64: {"dtype": "f64" if as_f64 else "f32"})
        def rules(x, size, scale, as_f64):
            return ndimage.uniform_filter(x, size, mode="nearest") * scale
    """)
    g = blobs_graph(None, shape=(24, 20), cell=(8, 8), seed=3)
    a = g.add("a", m.rules, ["raw"], size=5, scale=3.0)
    b = g.add("b", m.rules, ["raw"], size=5, scale=3.0, as_f64=True)
    assert a.dtype == np.float32 and b.dtype == np.float64
    raw = np.asarray(g["raw"])
    np.testing.assert_allclose(np.asarray(a), ndimage.uniform_filter(raw, 5, mode="nearest") * 3,
                               rtol=1e-6)


def test_region_rule_for_ops_that_change_the_grid(modules):
    m = modules.write("""
        import cellflow

        @cellflow.op(name="t.down2", params={"factor": 2},
                     output=lambda infos, factor: {
                         "shape": [n // factor for n in infos[0]["shape"]],
                         "cell_shape": [5, 5]},
                     region=lambda box, factor: tuple(
                         slice(s.start * factor, s.stop * factor) for s in box))
        def down(x, factor):
            h, w = x.shape[0] // factor, x.shape[1] // factor
            return x.reshape(h, factor, w, factor).mean(axis=(1, 3))

        @cellflow.op(name="t.badregion", output=lambda infos: {"shape": [4, 4],
                                                               "cell_shape": [2, 2]},
                     region=lambda box: 1 / 0)
        def bad(x):
            return x[:2, :2]
    """)
    g = blobs_graph(None, shape=(30, 40), cell=(8, 8), seed=13)
    d = g.add("d", m.down, ["raw"], factor=2)
    assert d.shape == (15, 20) and d.cell_shape == (5, 5)
    raw = np.asarray(g["raw"])
    want = raw.reshape(15, 2, 20, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.asarray(d), want, rtol=1e-6)
    np.testing.assert_allclose(d[3:9, 11:17], want[3:9, 11:17], rtol=1e-6)
    # Only the input cells under the output cell were computed for one cell.
    g2 = blobs_graph(None, shape=(32, 32), cell=(8, 8), seed=14)
    d2 = g2.add("d", "t.down2", ["raw"])
    d2[0:5, 0:5]
    assert g2["raw"].stats()["computed"] == 4  # input [0,10) x [0,10): 2 x 2 cells
    with pytest.raises(ValueError, match="halo or region"):
        cellflow.op(name="t.both", halo=1, region=lambda box: box)(lambda x: x)
    b = g.add("b", m.bad, ["raw"])
    with pytest.raises(cellflow.NodeError, match="ZeroDivisionError"):
        np.asarray(b)
