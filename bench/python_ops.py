#!/usr/bin/env python3
"""Python ops against Dask, and reading regions through Python against C++.

1. The same scipy.ndimage.gaussian_filter (sigma 2, truncate 4: an 8-voxel
   halo) over a 256^3 float32 volume, cell by cell, computed into one numpy
   array: as a cellflow Python op (Graph.run + np.asarray) and as Dask's
   map_overlap (threads scheduler), both with 2 threads, at 32^3 and 64^3
   cells. The input is in memory for both (cellflow: a materialized
   synthetic.blobs node; Dask: the same values as a numpy array). Each
   cellflow repetition gets a fresh node (a param changes its hash), so that
   every repetition computes every cell. For scale, the same scipy calls in
   a plain Python loop over the cells on one thread (no framework).
2. Reading a 64^3 region of a node whose cells are in memory: node[...]
   from Python (a new numpy array each time) against the same read_into()
   loop timed inside C++ (BuiltGraph.time_cpp_read), aligned to one 64^3
   cell and unaligned (8 cells); Python and C++ batches alternate.

Prints one line per measurement: median of --repeats runs and the ratio.
Run from the build tree: PYTHONPATH=build/python /usr/bin/python3 bench/python_ops.py
"""

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

import cellflow

SIGMA = 2.0
HALO = int(4 * SIGMA + 0.5)  # scipy's radius with truncate=4


@cellflow.op(name="bench.gaussian", params={"sigma": SIGMA, "rep": 0}, halo=HALO)
def gaussian(x, sigma, rep):
    return ndimage.gaussian_filter(x, sigma)


def median_time(fn, repeats):
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cells", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--read-repeats", type=int, default=200)
    args = ap.parse_args()

    import dask
    import dask.array as da

    n = args.size
    print(f"gaussian sigma {SIGMA} (halo {HALO}) on {n}^3 f32, {args.threads} threads, "
          f"median of {args.repeats}")
    cellflow.set_memory("4G")
    for c in args.cells:
        g = cellflow.Graph("bench", cache=None)
        raw = g.add("raw", "synthetic.blobs", shape=[n] * 3, cell_shape=[c] * 3, dtype="f32",
                    seed=1)
        g.run(threads=args.threads)
        src = np.asarray(raw)
        reference = ndimage.gaussian_filter(src, SIGMA)

        def run_cellflow(i, c=c, g=g):
            node = g.add(f"smooth{i}_{time.perf_counter_ns()}", "bench.gaussian", ["raw"],
                         sigma=SIGMA, rep=i + 1)
            g.run([node], threads=args.threads)
            return np.asarray(node)

        def run_dask(i, c=c, src=src):
            x = da.from_array(src, chunks=(c, c, c))
            y = x.map_overlap(ndimage.gaussian_filter, depth=HALO, boundary="none",
                              sigma=SIGMA, dtype=np.float32)
            return y.compute(scheduler="threads", num_workers=args.threads)

        def run_loop(i, c=c, src=src):
            # No framework: the same calls on the same regions, one thread.
            out = np.empty_like(src)
            for z in range(0, n, c):
                for y in range(0, n, c):
                    for x in range(0, n, c):
                        lo = [max(0, v - HALO) for v in (z, y, x)]
                        hi = [min(n, v + c + HALO) for v in (z, y, x)]
                        r = ndimage.gaussian_filter(src[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                                                    SIGMA)
                        out[z:z + c, y:y + c, x:x + c] = r[z - lo[0]:z - lo[0] + c,
                                                           y - lo[1]:y - lo[1] + c,
                                                           x - lo[2]:x - lo[2] + c]
            return out

        # Correctness first: all equal scipy on the whole volume.
        np.testing.assert_array_equal(run_cellflow(-1), reference)
        np.testing.assert_array_equal(run_dask(-1), reference)
        np.testing.assert_array_equal(run_loop(-1), reference)
        with dask.config.set(scheduler="threads"):
            # Interleaved, so that a change in the machine's load hits all three.
            all_cf, all_da, all_lp = [], [], []
            for i in range(args.repeats):
                all_cf.append(median_time(lambda _: run_cellflow(i), 1)[0])
                all_da.append(median_time(run_dask, 1)[0])
                all_lp.append(median_time(run_loop, 1)[0])
        t_cf, t_da, t_lp = (statistics.median(v) for v in (all_cf, all_da, all_lp))
        cells = (n // c) ** 3
        print(f"  {c}^3 cells ({cells}): cellflow {t_cf:.3f} s, dask map_overlap {t_da:.3f} s, "
              f"dask/cellflow {t_da / t_cf:.2f}x; plain loop, 1 thread {t_lp:.3f} s   "
              f"(runs: cellflow {', '.join(f'{t:.3f}' for t in all_cf)}; "
              f"dask {', '.join(f'{t:.3f}' for t in all_da)}; "
              f"loop {', '.join(f'{t:.3f}' for t in all_lp)})")

    # Region reads, all cells in memory.
    g = cellflow.Graph("read", cache=None)
    raw = g.add("raw", "synthetic.blobs", shape=[n] * 3, cell_shape=[64] * 3, dtype="f32", seed=2)
    g.run(threads=args.threads)
    built = g._build()
    print(f"reading a 64^3 f32 region of a {n}^3 node (64^3 cells, in memory), "
          f"median of {args.repeats * max(1, args.read_repeats // 20)} interleaved batches "
          "of 20 reads each")
    for label, lo in (("aligned, 1 cell", 64), ("unaligned, 8 cells", 40)):
        hi = lo + 64
        np.testing.assert_array_equal(raw[lo:hi, lo:hi, lo:hi], np.asarray(raw)[lo:hi, lo:hi, lo:hi])

        # Interleaved batches, so that load changes on a shared machine hit both.
        batch = 20
        py, cpp = [], []
        for _ in range(args.repeats * max(1, args.read_repeats // batch)):
            t0 = time.perf_counter()
            for _ in range(batch):
                raw[lo:hi, lo:hi, lo:hi]
            py.append((time.perf_counter() - t0) / batch)
            cpp.append(built.time_cpp_read("raw", [lo] * 3, [hi] * 3, batch))
        t_py, t_cpp = statistics.median(py), statistics.median(cpp)
        print(f"  {label}: python node[...] {t_py * 1e6:.1f} us, C++ read_into {t_cpp * 1e6:.1f} us, "
              f"python/C++ {t_py / t_cpp:.2f}x")


if __name__ == "__main__":
    main()
