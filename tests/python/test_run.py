"""Running graphs from Python with the CLI's options: cache, threads,
memory, outputs, retries, timeout, progress; Ctrl-C; and one cache shared
with `cellflow run`."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cellflow
from conftest import blobs_graph, run_cli


def test_run_persists_and_a_second_run_computes_nothing(cache):
    g = blobs_graph(cache)
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    r = g.run()
    assert r.nodes["smooth"]["cells_computed"] == 8
    assert r.nodes["smooth"]["complete"]
    assert os.path.isdir(os.path.join(str(cache), g.hashes()["smooth"], "0"))
    again = cellflow.Graph.from_json(g.to_json(), cache=cache).run()
    assert again.nodes["smooth"]["cells_computed"] == 0


def test_outputs_limit_the_run(cache):
    g = blobs_graph(cache)
    g.add("a", "gaussian", ["raw"], sigma=1.0)
    g.add("b", "threshold", ["raw"], above=0.5)
    r = g.run(outputs=["a"])
    assert set(r.nodes) == {"raw", "a"}
    assert r.nodes["a"]["cells_computed"] == 8
    with pytest.raises(cellflow.InvalidArgument, match="nope"):
        g.run(outputs=["nope"])


def test_python_and_cli_share_one_cache_folder(tmp_path, cache):
    g = blobs_graph(cache)
    g.add("smooth", "gaussian", ["raw"], sigma=1.5)
    g.outputs = ["smooth"]
    path = tmp_path / "g.json"
    g.save(path)
    g.run()
    summary = tmp_path / "s.json"
    run_cli("run", path, "--cache", cache, "--summary-json", summary, "-q")
    s = {n["id"]: n for n in json.loads(summary.read_text())["nodes"]}
    assert s["smooth"]["path"] == g["smooth"].path
    assert s["smooth"]["cells_computed"] == 0  # the CLI found Python's cells

    # And the other way: the CLI computes, Python only loads.
    other = tmp_path / "other"
    run_cli("run", path, "--cache", other, "-q")
    h = cellflow.Graph.from_json(g.to_json(), cache=other)
    r = h.run()
    assert r.nodes["smooth"]["cells_computed"] == 0
    np.testing.assert_array_equal(np.asarray(h["smooth"]), np.asarray(g["smooth"]))
    assert h["smooth"].stats()["computed"] == 0


def test_progress_callback_sees_every_cell(cache):
    g = blobs_graph(cache, cell=(16, 16, 16))
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    seen = []
    r = g.run(progress=seen.append, progress_interval=0.01)
    assert seen, "the callback was never called"
    last = {n["id"]: n for n in seen[-1]}
    assert last["smooth"]["done"] == last["smooth"]["scheduled"] == 64
    assert last["smooth"]["computed"] == 64
    assert r.nodes["smooth"]["cells_computed"] == 64


def test_progress_true_draws_a_terminal_line(cache, capsys):
    g = blobs_graph(cache, cell=(16, 16, 16))
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)
    g.run(progress=True, progress_interval=0.01)
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\r")[-1]
    assert last.startswith("cellflow: 128/128 cells (100%), 128 computed"), err
    assert err.endswith("\n")


def test_a_raising_progress_callback_stops_the_run(cache):
    g = blobs_graph(cache, cell=(8, 8, 8))
    g.add("smooth", "gaussian", ["raw"], sigma=1.0)

    def cb(nodes):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        g.run(progress=cb, progress_interval=0.001, threads=1)


def test_memory_option_sets_the_budget(cache):
    g = blobs_graph(cache)
    g.run(memory="64M")
    assert cellflow.memory_budget() == 64 * 1024 * 1024
    cellflow.set_memory("2G")
    assert cellflow.memory_budget() == 2 * 1024 ** 3
    with pytest.raises(cellflow.InvalidArgument):
        cellflow.set_memory("lots")


def test_threads_bound_the_workers(cache, modules):
    m = modules.write("""
        import threading
        import cellflow

        seen = set()

        @cellflow.op(name="test.run.who")
        def who(x):
            seen.add(threading.get_ident())
            return x
    """)
    g = blobs_graph(None, cell=(8, 8, 8))
    g.add("w", "test.run.who", ["raw"])
    g.run(threads=1)
    assert len(m.seen) == 1
    m.seen.clear()
    g2 = blobs_graph(None, cell=(8, 8, 8), seed=2)
    g2.add("w", "test.run.who", ["raw"])
    g2.run(threads=2)
    assert 1 <= len(m.seen) <= 2


def test_retries_apply_to_python_ops(modules):
    m = modules.write("""
        import cellflow

        attempts = {}

        @cellflow.op(name="test.run.flaky")
        def flaky(x, box):
            key = tuple((s.start, s.stop) for s in box)
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] == 1:
                raise ValueError("first attempt fails")
            return x * 2
    """)
    g = blobs_graph(None, shape=(32, 32), cell=(16, 16))
    g.add("f", "test.run.flaky", ["raw"])
    with pytest.raises(cellflow.NodeError, match="first attempt fails"):
        g.run(max_retries=0)
    m.attempts.clear()
    g2 = blobs_graph(None, shape=(32, 32), cell=(16, 16), seed=5)
    g2.add("f", "test.run.flaky", ["raw"])
    r = g2.run(max_retries=1)
    assert r.nodes["f"]["retries"] == 4
    assert all(n == 2 for n in m.attempts.values()) and len(m.attempts) == 4
    np.testing.assert_array_equal(np.asarray(g2["f"]), 2 * np.asarray(g2["raw"]))


def test_timeout_cancels_a_cooperative_python_op(modules):
    modules.write("""
        import time
        import cellflow

        @cellflow.op(name="test.run.forever")
        def forever(x):
            while True:
                cellflow.check_cancelled()
                time.sleep(0.001)
    """)
    g = blobs_graph(None, shape=(16, 16), cell=(16, 16))
    g.add("f", "test.run.forever", ["raw"])
    t0 = time.monotonic()
    with pytest.raises(cellflow.NodeError) as e:
        g.run(timeout=0.2)
    assert time.monotonic() - t0 < 10
    assert "Cancelled" in str(e.value)


CTRL_C_CHILD = textwrap.dedent("""
    import sys, time
    import cellflow

    @cellflow.op(name="slow")
    def slow(x):
        time.sleep(0.02)
        return x

    g = cellflow.Graph("slow", cache=sys.argv[1])
    g.add("raw", "synthetic.blobs", shape=[64, 64, 64], cell_shape=[8, 8, 8], dtype="f32")
    g.add("s", "slow", ["raw"])
    started = []

    def progress(nodes):
        if not started:
            started.append(1)
            print("started", flush=True)

    t0 = time.monotonic()
    try:
        g.run(threads=2, progress=progress, progress_interval=0.01)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", round(time.monotonic() - t0, 2), flush=True)
        # The cache is usable afterwards: what was committed stays.
        print("path", g["s"].hash, flush=True)
""")


def test_ctrl_c_stops_the_run_cleanly(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CTRL_C_CHILD)
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "started", line + p.stderr.read()
    time.sleep(0.3)
    t_signal = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    stopped_after = time.monotonic() - t_signal
    assert p.returncode == 0, err
    assert "interrupted" in out, out + err
    assert "finished" not in out
    # 512 cells at 20 ms on 2 threads would take ~5 s; the run stopped soon
    # after the signal.
    assert stopped_after < 2.0, (stopped_after, out, err)
    # Cells committed before Ctrl-C are in the cache; the rest are not.
    node = next(l.split()[1] for l in out.splitlines() if l.startswith("path "))
    committed = [f for f in (tmp_path / "cache" / node / "0").rglob("*")
                 if f.is_file() and not f.name.startswith(".")]
    assert 0 < len(committed) < 512, len(committed)
