"""run_blockwise from Python, on the C++ engine: ROIs and fit modes, done
checks, retries with tracebacks, orphans, timeouts, conflict-free scheduling
and upstream tasks."""

import threading
import time

import numpy as np
import pytest
from scipy import ndimage

import cellflow
from cellflow import Roi, Task


def blocks_of(fit):
    t = Task("t", Roi([0], [30]), Roi([0], [14]), Roi([4], [6]), lambda b: None, fit=fit)
    return [(b.read_roi.begin + b.read_roi.end, b.write_roi.begin + b.write_roi.end)
            for b in t.blocks()]


def test_fit_modes_place_blocks_like_daisy():
    # The example of blockwise.hpp: total [0,30), read [0,14), write [4,10).
    valid = [((0, 14), (4, 10)), ((6, 20), (10, 16)), ((12, 26), (16, 22))]
    assert blocks_of("valid") == valid
    assert blocks_of("overhang") == valid + [((18, 32), (22, 28))]
    assert blocks_of("shrink") == valid + [((18, 30), (22, 26))]
    with pytest.raises(cellflow.InvalidArgument):
        blocks_of("sideways")


def test_a_blockwise_mean_filter_equals_scipy():
    rng = np.random.default_rng(0)
    src = rng.random((40, 36, 44)).astype(np.float32)
    out = np.full_like(src, np.nan)
    ctx = 2

    def process(block):
        r, w = block.read_roi, block.write_roi
        data = src[r.to_slices()]
        filtered = ndimage.uniform_filter(data, size=2 * ctx + 1, mode="nearest")
        local = tuple(slice(wb - rb, we - rb) for wb, we, rb in zip(w.begin, w.end, r.begin))
        out[w.to_slices()] = filtered[local]

    task = Task("mean", total_roi=Roi([0, 0, 0], src.shape),
                read_roi=Roi([0, 0, 0], [16 + 2 * ctx] * 3),
                write_roi=Roi([ctx] * 3, [16] * 3), process_function=process, fit="shrink",
                read_write_conflict=False, num_workers=2)
    report = cellflow.run_blockwise([task])
    assert report.ok, report
    # Total write ROI 36 x 32 x 40 in 16^3 blocks, shrunk at the upper ends: 3 x 2 x 3.
    assert report["mean"]["done"] == report["mean"]["blocks"] == 18
    want = ndimage.uniform_filter(src, size=2 * ctx + 1, mode="nearest")
    inner = (slice(ctx, -ctx),) * 3  # the total write ROI
    np.testing.assert_allclose(out[inner], want[inner], rtol=1e-5)
    assert np.isnan(out[:ctx]).all()  # outside the total write ROI: never written


def test_check_function_skips_done_blocks_and_confirms_new_ones():
    done = {0, 2}
    processed = []

    def process(b):
        processed.append(b.block_id)
        done.add(b.block_id)

    task = Task("c", Roi([0], [40]), Roi([0], [10]), Roi([0], [10]), process,
                check_function=lambda b: b.block_id in done)
    r = cellflow.run_blockwise(task)
    assert r.ok
    assert sorted(processed) == [1, 3]
    assert (r["c"]["skipped"], r["c"]["done"]) == (2, 2)


def test_a_pair_of_check_functions_and_a_per_worker_init():
    # daisy's (pre_check, post_check): the pre-check sees a done marker only;
    # the post-check verifies the output and refuses block 2's.
    marked, written, pre, post = {0}, set(), [], []
    inits = []

    def process(b):
        assert threading.get_ident() in inits, "a block ran before its thread's init"
        written.add(b.block_id)

    def init():
        inits.append(threading.get_ident())

    def pre_check(b):
        pre.append(b.block_id)
        return b.block_id in marked

    def post_check(b):
        post.append(b.block_id)
        return b.block_id in written and b.block_id != 2

    task = Task("p", Roi([0], [50]), Roi([0], [10]), Roi([0], [10]), process,
                check_function=(pre_check, post_check), init_callback_fn=init,
                read_write_conflict=False, max_retries=0, num_workers=2)
    r = cellflow.run_blockwise(task)
    assert (r["p"]["skipped"], r["p"]["done"], r["p"]["failed"]) == (1, 3, 1)
    assert sorted(pre) == [0, 1, 2, 3, 4]
    assert sorted(post) == [1, 2, 3, 4]
    assert "post_check" in r["p"]["failures"][0][2]
    assert 1 <= len(inits) <= 2 and len(set(inits)) == len(inits)  # once per thread
    with pytest.raises(ValueError, match="pair"):
        Task("q", Roi([0], [5]), Roi([0], [5]), Roi([0], [5]), process,
             check_function=(pre_check,)).blocks()


def test_retries_failures_tracebacks_and_orphans():
    attempts = {}
    lock = threading.Lock()

    def process(b):
        with lock:
            attempts[b.block_id] = attempts.get(b.block_id, 0) + 1
            n = attempts[b.block_id]
        if b.block_id == 1 and n == 1:
            raise RuntimeError("flaky once")
        if b.block_id == 3:
            raise KeyError("always broken")

    up = Task("up", Roi([0], [50]), Roi([0], [10]), Roi([0], [10]), process, max_retries=2,
              read_write_conflict=False)
    down = Task("down", Roi([0], [50]), Roi([0], [10]), Roi([0], [10]), lambda b: None,
                upstream_tasks=[up])
    r = cellflow.run_blockwise([down])  # upstream tasks run too
    assert not r.ok
    assert r["up"]["done"] == 4 and r["up"]["failed"] == 1
    assert attempts[1] == 2 and attempts[3] == 3  # retries applied
    assert r["up"]["retries"] == 1 + 2
    (block, n, error), = r["up"]["failures"]
    assert block.block_id == 3 and n == 3
    assert "Traceback (most recent call last)" in error and "KeyError: 'always broken'" in error
    assert __file__ in error
    assert r["down"]["orphaned"] == 1 and r["down"]["done"] == 4


def test_timeout_cancels_cooperative_blocks():
    def forever(b):
        while True:
            cellflow.check_cancelled()
            time.sleep(0.001)

    t = Task("slow", Roi([0], [10]), Roi([0], [10]), Roi([0], [10]), forever, timeout=0.1,
             max_retries=0)
    t0 = time.monotonic()
    r = cellflow.run_blockwise(t)
    assert time.monotonic() - t0 < 10
    assert r["slow"]["failed"] == 1
    assert "Cancelled" in r["slow"]["failures"][0][2]


def test_conflicting_blocks_never_run_together():
    active = []
    lock = threading.Lock()
    violations = []

    def overlaps(a, b):
        return all(max(x0, y0) < min(x1, y1)
                   for x0, x1, y0, y1 in zip(a.begin, a.end, b.begin, b.end))

    def process(b):
        with lock:
            for o in active:
                if overlaps(b.read_roi, o.write_roi) or overlaps(o.read_roi, b.write_roi):
                    violations.append((b.block_id, o.block_id))
            active.append(b)
        time.sleep(0.01)
        with lock:
            active.remove(b)

    t = Task("rw", Roi([0, 0], [64, 64]), Roi([0, 0], [12, 12]), Roi([2, 2], [8, 8]), process,
             read_write_conflict=True, num_workers=2)
    r = cellflow.run_blockwise(t)
    assert r.ok and r["rw"]["done"] == 49
    assert violations == []


def test_upstream_blocks_finish_before_their_readers():
    finished = {}
    lock = threading.Lock()

    def record(name):
        def process(b):
            time.sleep(0.002)
            with lock:
                finished[(name, b.block_id)] = time.monotonic()
        return process

    a = Task("a", Roi([0], [80]), Roi([0], [10]), Roi([0], [10]), record("a"),
             read_write_conflict=False)
    b = Task("b", Roi([0], [80]), Roi([0], [20]), Roi([5], [10]), record("b"),
             read_write_conflict=False, upstream_tasks=[a])
    r = cellflow.run_blockwise([b])
    assert r.ok
    for blk in b.blocks():
        for ablk in a.blocks():
            ra, wb = blk.read_roi, ablk.write_roi
            if max(ra.begin[0], wb.begin[0]) < min(ra.end[0], wb.end[0]):
                assert finished[("a", ablk.block_id)] <= finished[("b", blk.block_id)]


CTRL_C_CHILD = """
import threading
import time
import cellflow
from cellflow import Roi, Task

done = []
started = threading.Event()
lock = threading.Lock()

def process(b):
    with lock:
        if not started.is_set():
            started.set()
            print("started", flush=True)
    time.sleep(0.02)
    done.append(b.block_id)

t = Task("slow", Roi([0], [4000]), Roi([0], [10]), Roi([0], [10]), process,
         read_write_conflict=False, num_workers=2)
t0 = time.monotonic()
try:
    cellflow.run_blockwise(t)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", len(done), flush=True)
"""


def test_ctrl_c_stops_blockwise_tasks(tmp_path):
    import signal
    import subprocess
    import sys

    script = tmp_path / "child.py"
    script.write_text(CTRL_C_CHILD)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    time.sleep(0.3)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "interrupted" in out and "finished" not in out, out + err
    assert time.monotonic() - t0 < 3.0  # 400 blocks of 20 ms on 2 threads would take 4 s
    assert 0 < int(out.split()[-1]) < 400
