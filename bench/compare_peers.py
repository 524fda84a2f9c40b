#!/usr/bin/python3
"""cellflow against its peers (Dask + scipy + zarr, joblib.Memory), side by side.

  /usr/bin/python3 bench/compare_peers.py                 # A64 A32 B C, median of 3
  /usr/bin/python3 bench/compare_peers.py -n 5 --only A64 B
  /usr/bin/python3 bench/compare_peers.py --only B --persist outputs   # B's intermediates in memory only
  /usr/bin/python3 bench/compare_peers.py --bench         # also cellflow-bench (in-process figures,
                                                          # A_/B_ratio_vs_floor on A64's input)

Every comparison runs both sides in this invocation, interleaved run by run
(warm-up pair first, then N timed pairs, alternating which side goes first),
each run a fresh process timed from outside with os.wait4 exactly like the
peers' runbench.py (wall, CPU = user + sys, peak RSS), and prints medians with
min-max and the ratio peer / cellflow of the medians (> 1: cellflow faster).
Before each run the previous output of that side is renamed aside (removed
between comparisons; class Aside says why) and everything written back (sync):

  A64  Gaussian sigma 2, zarr (64^3 chunks, blosc lz4) -> zarr: the peers'
       wl_a_dask_gauss.py (dask map_overlap + scipy, 2 threads) against
       `cellflow run` of read.zarr -> gaussian with an empty cache (every cell
       persisted: the cache is OME-Zarr, so the result is a Zarr array on disk)
  A32  the same with 32^3 chunks (and 32^3 cells)
  B    gaussian -> Otsu -> labels -> 64^3 heatmap of object counts and
       foreground fraction: wl_b_pipeline.py --engine dask against cellflow's
       read.zarr -> gaussian -> otsu -> label -> region.count + region.density
       (cellflow's labels are globally consistent, dask's are per 64^3 block)
  C    a fully cached re-run of B: wl_c_joblib.py --phase run (warm, after one
       untimed cold run) in both joblib styles (chain: parameters as keys;
       data: arrays as arguments) against `cellflow run` of B's graph on a
       complete cache

The machine is not checked for idleness unless --quiet-wait is given (it then
waits for < 0.15 busy cores before each run, as runbench.py --quiet-wait
does); every run's foreign load (other processes' CPU during the run, from
/proc/stat, in cores) is printed so that numbers from a loaded machine are
labelled as such. Inputs come from the peers' gen_volume.py (generated into
$PEERS_ROOT/data, default /tmp/peers/data, when missing; the sha256 is
checked); cellflow's graphs and caches go to $PEERS_ROOT/cellflow.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
SIGMA = 2.0


def peers_dir(arg):
    for d in [arg, os.environ.get("PEERS_DIR"), os.path.join(REPO, "..", "shared", "bench", "peers"),
              "/work/shared/bench/peers"]:
        if d and os.path.exists(os.path.join(d, "runbench.py")):
            return os.path.abspath(d)
    sys.exit("compare_peers: cannot find the peers' scripts (runbench.py); pass --peers DIR")


class Timer:
    """Whole-process runs timed like the peers' runbench.py (imported from there)."""

    def __init__(self, peers, quiet_wait):
        sys.path.insert(0, peers)
        import runbench  # noqa: E402  the peers' own fork/exec + os.wait4 accounting

        self.rb = runbench
        self.peers = peers
        self.quiet_wait = quiet_wait

    def run(self, cmd, prepare=None):
        if prepare:
            prepare()
        # What earlier runs wrote goes to disk now, not by the kernel's
        # flusher in the middle of this run.
        os.sync()
        if self.quiet_wait:
            subprocess.run([PYTHON, os.path.join(self.peers, "wait_quiet.py")], check=False)
        b0, _ = self.rb.stat_busy_s()
        wall, rc, ru, out = self.rb.run_rusage(cmd)
        b1, _ = self.rb.stat_busy_s()
        cpu = ru.ru_utime + ru.ru_stime
        if rc != 0:
            sys.exit(f"compare_peers: command failed (exit {rc}): {' '.join(cmd)}\n{out[-2000:]}")
        return dict(wall_s=wall, cpu_s=cpu, peak_rss_mib=ru.ru_maxrss / 1024,
                    foreign_cores=max(0.0, (b1 - b0) - cpu) / wall, out=out)


def summary(runs, key):
    v = [r[key] for r in runs]
    return statistics.median(v), min(v), max(v)


def fmt_side(name, runs):
    w, c, m, f = (summary(runs, k) for k in ("wall_s", "cpu_s", "peak_rss_mib", "foreign_cores"))
    return (f"  {name:<22} wall {w[0]:7.3f} s ({w[1]:.3f}-{w[2]:.3f})  cpu {c[0]:7.3f} s  "
            f"peak {m[0]:6.0f} MiB  foreign load {f[0]:.2f} cores ({f[1]:.2f}-{f[2]:.2f})")


def paired(timer, n, warmup, sides):
    """sides: [(name, cmd, prepare)]; runs them interleaved, alternating the order."""
    runs = {name: [] for name, _, _ in sides}
    for i in range(warmup + n):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for name, cmd, prepare in order:
            r = timer.run(cmd, prepare)
            tag = "warm-up" if i < warmup else f"run {i - warmup + 1}"
            print(f"    {tag:<8} {name:<22} wall {r['wall_s']:.3f} s  cpu {r['cpu_s']:.3f} s  "
                  f"foreign {r['foreign_cores']:.2f}", file=sys.stderr, flush=True)
            if i >= warmup:
                runs[name].append(r)
    return runs


# ---- inputs --------------------------------------------------------------------

def ensure_inputs(peers, size, chunks, root):
    data = os.path.join(root, "data")
    tag = f"{size}x{size}x{size}_f32"
    missing = [c for c in chunks if not os.path.exists(os.path.join(data, f"vol_{tag}_c{c}_lz4.zarr"))]
    if missing or not os.path.exists(os.path.join(data, f"vol_{tag}.json")):
        print(f"generating the peers' {size}^3 volume (gen_volume.py)...", file=sys.stderr, flush=True)
        subprocess.run([PYTHON, os.path.join(peers, "gen_volume.py"), "--size", str(size), "--chunks",
                        *map(str, chunks), "--codecs", "lz4"], check=True)
    meta = json.load(open(os.path.join(data, f"vol_{tag}.json")))
    h = hashlib.sha256()
    with open(os.path.join(data, f"vol_{tag}.raw"), "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    if h.hexdigest() != meta["sha256_raw"]:
        sys.exit(f"compare_peers: {tag}.raw does not match its sha256; regenerate with gen_volume.py --force")
    return {c: os.path.join(data, f"vol_{tag}_c{c}_lz4.zarr") for c in chunks}


def write_graph(path, zarr_path, nodes, outputs):
    graph = {"cellflow": 1, "name": os.path.splitext(os.path.basename(path))[0],
             "nodes": [{"id": "raw", "op": "read.zarr", "params": {"path": zarr_path}}] + nodes,
             "outputs": outputs}
    with open(path, "w") as f:
        json.dump(graph, f, indent=1)
    return path


def gaussian_params(engine):
    return {"sigma": SIGMA, **({"engine": engine} if engine else {})}


def gaussian_graph(workdir, name, zarr_path, engine=None):
    return write_graph(os.path.join(workdir, f"{name}.json"), zarr_path,
                       [{"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": gaussian_params(engine)}],
                       ["smooth"])


def folder_bytes(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def pipeline_graph(workdir, zarr_path, region=64, engine=None, persist="all"):
    # persist "outputs": the intermediates are kept in memory only ("persist":
    # false), as Dask keeps them; "all": every node's cells go to the cache.
    keep = {} if persist == "all" else {"persist": False}
    return write_graph(os.path.join(workdir, "B.json"), zarr_path, [
        {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": gaussian_params(engine), **keep},
        {"id": "mask", "op": "otsu", "inputs": ["smooth"], **keep},
        {"id": "labels", "op": "label", "inputs": ["mask"], **keep},
        {"id": "counts", "op": "region.count", "inputs": ["labels"], "params": {"region": [region] * 3}},
        {"id": "density", "op": "region.density", "inputs": ["mask"], "params": {"region": [region] * 3}},
    ], ["counts", "density"])


class Aside:
    """Makes room for a run's output by renaming the previous one into a trash
    folder (same file system); the trash is removed between comparisons, where
    the next comparison's warm-up pair absorbs the cost.

    Deleting the previous output right before a run would make the run pay
    for the deletion: ext4 skips inodes freed in the last seconds when it
    allocates new ones, so with thousands just freed every file the run
    creates scans past them (a perf profile of a cold cellflow A32 run at
    512^3 after deleting the previous cache had 37 % of its samples in the
    kernel's recently_deleted; its system time varied 2-3.6 s). Waiting a few
    seconds after the deletion instead made runs slower and noisier on this
    VM, whose idle pages are reclaimed (kdamond) and refaulted. A user's run
    meets neither. Both sides get the same treatment (Dask's output store is
    moved aside before its script would delete it itself)."""

    def __init__(self, folder):
        self.folder = folder
        self.count = 0
        self.empty()

    def __call__(self, path):
        def prepare():
            if os.path.lexists(path):
                os.makedirs(self.folder, exist_ok=True)
                self.count += 1
                moved = os.path.join(self.folder, str(self.count))
                os.rename(path, moved)
                # Written back, then out of the page cache: kept outputs must
                # not fill memory (on this VM later runs then fault in memory
                # the host has not backed: cellflow's A64 at 512^3 went 1.1 ->
                # 1.5 -> 1.7 s over three runs without this).
                os.sync()
                for folder, _, files in os.walk(moved):
                    for name in files:
                        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                        try:
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        finally:
                            os.close(fd)
        return prepare

    def empty(self):
        shutil.rmtree(self.folder, ignore_errors=True)
        os.sync()


def node_summary(summary_json, node):
    for n in json.load(open(summary_json))["nodes"]:
        if n["id"] == node:
            return n
    return None


def snapshot(cellflow, folder):
    """Copies the programs and the build's shared libraries, so that a rebuild
    while the comparison runs (a shared build tree) cannot break or change it.
    The build's RUNPATH yields to LD_LIBRARY_PATH, which points at the copy."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    bin_dir = os.path.dirname(os.path.abspath(cellflow))
    lib_dir = os.path.join(os.path.dirname(bin_dir), "lib")
    for name in os.listdir(lib_dir):
        if ".so" in name:
            shutil.copy2(os.path.join(lib_dir, name), folder)
    for prog in (os.path.basename(cellflow), "cellflow-bench"):
        if os.path.exists(os.path.join(bin_dir, prog)):
            shutil.copy2(os.path.join(bin_dir, prog), folder)
    os.environ["LD_LIBRARY_PATH"] = folder + (":" + os.environ["LD_LIBRARY_PATH"]
                                              if os.environ.get("LD_LIBRARY_PATH") else "")
    return os.path.join(folder, os.path.basename(cellflow))


# ---- main ----------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="timed runs per side (median of N)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=["A64", "A32", "B", "C"], choices=["A64", "A32", "B", "C"])
    ap.add_argument("--bench", action="store_true", help="also run cellflow-bench (in-process figures)")
    ap.add_argument("--engine", choices=["native", "fast"], default=None,
                    help="the gaussian's engine in cellflow's graphs (default: the op's, native)")
    ap.add_argument("--persist", choices=["all", "outputs"], default="all",
                    help="B's intermediates (smooth, mask, labels): persisted to the cache (all, the "
                         "default of every node) or kept in memory only as Dask keeps them (outputs)")
    ap.add_argument("--cellflow", default=os.path.join(REPO, "build", "bin", "cellflow"))
    ap.add_argument("--peers", default=None, help="the peers' scripts (default ../shared/bench/peers)")
    ap.add_argument("--quiet-wait", action="store_true", help="wait for an idle machine before each run")
    ap.add_argument("--log", default=None, help="append one JSON line with every run to this file")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run the build's programs in place instead of a copy taken at start")
    a = ap.parse_args()

    peers = peers_dir(a.peers)
    root = os.environ.get("PEERS_ROOT", "/tmp/peers")
    work = os.path.join(root, "cellflow")
    os.makedirs(work, exist_ok=True)
    if not os.access(a.cellflow, os.X_OK):
        sys.exit(f"compare_peers: {a.cellflow} is not built (cmake --build build --target cellflow_cli)")
    if not a.no_snapshot:
        a.cellflow = snapshot(a.cellflow, os.path.join(work, "snapshot"))
    timer = Timer(peers, a.quiet_wait)
    aside = Aside(os.path.join(work, "trash"))
    dask_out = os.path.join(root, "out")  # where the peers' scripts write (common.OUT)
    chunks = sorted({64} | ({32} if "A32" in a.only else set()), reverse=True)
    inputs = ensure_inputs(peers, a.size, chunks, root)
    size, thr = str(a.size), str(a.threads)
    cf = lambda graph, cache, *more: [a.cellflow, "run", graph, "--cache", cache, "--threads", thr, "-q",
                                      *more]  # noqa: E731

    load = open("/proc/loadavg").read().split()[:3]
    print(f"compare_peers: {a.size}^3 f32, {a.threads} threads, median of {a.n} (+{a.warmup} warm-up), "
          f"{os.cpu_count()} cores, load average {' '.join(load)} at start"
          f"{'' if a.quiet_wait else ' (no idle-machine gate: see the foreign load of each side)'}")
    results, ratios = {}, {}

    def report(key, runs, peer, ours, label):
        print(fmt_side(peer, runs[peer]))
        print(fmt_side(ours, runs[ours]))
        ratio = summary(runs[peer], "wall_s")[0] / summary(runs[ours], "wall_s")[0]
        ratios[label] = ratio
        print(f"{label}={ratio:.2f}", flush=True)
        # CPU time (user + sys) is far less sensitive to other load than wall
        # time: on a busy machine it is the steadier of the two.
        cpu_label = label.replace("_ratio_", "_cpu_ratio_")
        ratios[cpu_label] = summary(runs[peer], "cpu_s")[0] / summary(runs[ours], "cpu_s")[0]
        print(f"{cpu_label}={ratios[cpu_label]:.2f}", flush=True)
        results[key] = {k: [{kk: vv for kk, vv in r.items() if kk != "out"} for r in v] for k, v in runs.items()}

    for chunk in (64, 32):
        key = f"A{chunk}"
        if key not in a.only:
            continue
        print(f"\n== {key}: Gaussian sigma {SIGMA:g}, zarr {chunk}^3 chunks (lz4) -> zarr", flush=True)
        graph = gaussian_graph(work, key, inputs[chunk], a.engine)
        cache = os.path.join(work, f"cache_{key}")
        runs = paired(timer, a.n, a.warmup, [
            ("dask map_overlap", [PYTHON, os.path.join(peers, "wl_a_dask_gauss.py"), "--size", size,
                                  "--chunk", str(chunk), "--codec", "lz4", "--workers", thr],
             aside(os.path.join(dask_out, f"A_gauss_{size}x{size}x{size}_f32_c{chunk}_lz4.zarr"))),
            ("cellflow run", cf(graph, cache), aside(cache)),
        ])
        aside.empty()
        report(key, runs, "dask map_overlap", "cellflow run", f"{key}_ratio_dask_over_cellflow")
        # What a cold run leaves on disk: the output only, no copy of the input.
        shutil.rmtree(cache, ignore_errors=True)
        summary_json = os.path.join(work, f"{key}_summary.json")
        subprocess.run(cf(graph, cache, "--summary-json", summary_json), check=True)
        smooth = node_summary(summary_json, "smooth")
        out_bytes = folder_bytes(smooth["path"]) if smooth else 0
        cache_bytes, input_bytes = folder_bytes(cache), folder_bytes(inputs[chunk])
        print(f"  cache after a cold run: {cache_bytes / 2**20:.1f} MiB (output node {out_bytes / 2**20:.1f} "
              f"MiB; input {input_bytes / 2**20:.1f} MiB, not copied)")
        ratios[f"{key}_cache_bytes_over_output"] = cache_bytes / max(1, out_bytes)

    if "B" in a.only or "C" in a.only:
        graph = pipeline_graph(work, inputs[64], engine=a.engine, persist=a.persist)
        cache = os.path.join(work, "cache_B")
    if "B" in a.only:
        print("\n== B: gaussian -> Otsu -> labels -> 64^3 heatmap (counts, foreground fraction)"
              f"{'' if a.persist == 'all' else '; intermediates in memory only'}", flush=True)
        runs = paired(timer, a.n, a.warmup, [
            ("dask pipeline", [PYTHON, os.path.join(peers, "wl_b_pipeline.py"), "--size", size, "--engine",
                               "dask", "--chunk", "64", "--threshold", "otsu", "--workers", thr], None),
            ("cellflow run", cf(graph, cache), aside(cache)),
        ])
        aside.empty()
        report("B", runs, "dask pipeline", "cellflow run", "B_ratio_dask_over_cellflow")
        dask_line = json.loads(runs["dask pipeline"][-1]["out"].strip().splitlines()[-1])
        print(f"  dask: threshold {dask_line.get('threshold')}, sum of region counts "
              f"{dask_line.get('sum_counts')} (labels per 64^3 block)")
    if "C" in a.only:
        print("\n== C: fully cached re-run of B", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
        summary_json = os.path.join(work, "B_summary.json")
        subprocess.run(cf(graph, cache, "--summary-json", summary_json), check=True)  # untimed cold run
        joblib = os.path.join(peers, "wl_c_joblib.py")
        sides = [("cellflow run (cached)", cf(graph, cache), None)]
        for style in ("chain", "data"):
            subprocess.run([PYTHON, joblib, "--size", size, "--phase", "run", "--clear", "--style", style,
                            "--threshold", "otsu", "--workers", thr], check=True, stdout=subprocess.DEVNULL)
            sides.append((f"joblib warm ({style})", [PYTHON, joblib, "--size", size, "--phase", "run",
                                                     "--style", style, "--threshold", "otsu", "--workers", thr],
                          None))
        runs = paired(timer, a.n, a.warmup, sides)
        for style in ("chain", "data"):
            report(f"C_{style}", {k: runs[k] for k in (f"joblib warm ({style})", "cellflow run (cached)")},
                   f"joblib warm ({style})", "cellflow run (cached)", f"C_{style}_ratio_joblib_over_cellflow")
        counts = node_summary(summary_json, "counts")
        if counts:
            try:
                import numpy as np
                import zarr
                z = zarr.open(os.path.join(counts["path"], "0"), mode="r")
                print(f"  cellflow: sum of region counts {int(np.asarray(z[...]).sum())} "
                      f"(distinct global labels per 64^3 block; read back with zarr-python)")
            except Exception as e:  # noqa: BLE001  the check is informative only
                print(f"  cellflow: could not read the counts with zarr-python: {e}")

    if a.bench:
        bench = os.path.join(os.path.dirname(a.cellflow), "cellflow-bench")
        print("\n== cellflow-bench (in process: kernel, bare cells, framework cost per cell, floor)", flush=True)
        # The floor's workloads A and B read A64's input.
        out = subprocess.run([bench, "--size", size, "--threads", thr, "--reps", str(a.n), "--zarr", inputs[64]],
                             check=True, capture_output=True, text=True).stdout
        print(out, end="")
        for line in out.splitlines():
            k, _, v = line.partition("=")
            if k in ("native_ratio_vs_bare_cells", "native_speedup_vs_itk_whole_image", "framework_us_per_cell",
                     "A_ratio_vs_floor", "B_ratio_vs_floor"):
                ratios[k] = float(v)

    print("\n== summary (peer / cellflow, medians of whole processes, wall and CPU; > 1: cellflow faster;"
          " *_vs_floor: cellflow CPU / its floor, 1 = at the floor)")
    for k, v in ratios.items():
        print(f"{k}={v:.2f}")
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(dict(time=time.strftime("%Y-%m-%dT%H:%M:%S"), size=a.size, threads=a.threads,
                                    n=a.n, ratios=ratios, runs=results)) + "\n")


if __name__ == "__main__":
    main()
