"""References for cellflow ops from scipy.ndimage and numpy (Debian's python3).

Usage: scipy_reference.py MANIFEST.json

The manifest names raw little-endian arrays written by
tests/nodes/scipy_reference_test.cpp: the inputs ("raw" f32 blobs, "mask" u8
0/1, "labels") and, per case, an op's output (or, for tables, its CSV). Each
case is recomputed here with scipy/numpy, independently of cellflow's code,
and compared: "ok NAME" or "FAIL NAME: why" (numbers only) per case; exit 1 if
any case failed.
"""

import csv
import json
import sys

import numpy as np
from scipy import ndimage

DTYPES = {"u8": "u1", "u16": "<u2", "u32": "<u4", "u64": "<u8", "i8": "i1", "i16": "<i2",
          "i32": "<i4", "i64": "<i8", "f32": "<f4", "f64": "<f8"}


def load(entry, shape):
    return np.fromfile(entry["file"], dtype=DTYPES[entry["dtype"]]).reshape(shape)


def radii(value, rank):
    return [value] * rank if isinstance(value, int) else list(value)


def ball(r):
    """The offsets o with sum((o_d / (r_d + 0.5))^2) <= 1, as a footprint."""
    grids = np.meshgrid(*[np.arange(-x, x + 1) for x in r], indexing="ij")
    return sum((g / (x + 0.5)) ** 2 for g, x in zip(grids, r)) <= 1


def box_sums(a, r):
    """Sum over the box window clipped at the edge (zero padding)."""
    return ndimage.correlate(a, np.ones([2 * x + 1 for x in r]), mode="constant", cval=0.0)


def blocks(shape, factors):
    """Slices of each block of `factors`, edge blocks clipped, in C order."""
    counts = [-(-s // f) for s, f in zip(shape, factors)]
    for index in np.ndindex(*counts):
        yield index, tuple(slice(i * f, min((i + 1) * f, s))
                           for i, f, s in zip(index, factors, shape))


def reference(case, inputs, shape):
    op, p = case["op"], case["params"]
    a = inputs[case["input"]]
    rank = a.ndim
    if op == "median":
        return ndimage.median_filter(a, size=[2 * x + 1 for x in radii(p["radius"], rank)],
                                     mode="nearest")
    if op in ("min", "max"):
        r = radii(p["radius"], rank)
        footprint = ball(r) if p.get("shape", "ball") == "ball" else np.ones(
            [2 * x + 1 for x in r], bool)
        # Nearest extension repeats edge voxels, which the clipped window holds
        # already (a ball or box shrinks toward its centre on every axis).
        f = ndimage.minimum_filter if op == "min" else ndimage.maximum_filter
        return f(a, footprint=footprint, mode="nearest")
    if op == "mean":
        r = radii(p["radius"], rank)
        return box_sums(a.astype(np.float64), r) / box_sums(np.ones(a.shape), r)
    if op in ("dilate", "erode", "open", "close"):
        s = ball(radii(p["radius"], rank))
        fg = a == p.get("foreground", 1.0)
        dil = lambda x: ndimage.binary_dilation(x, structure=s, border_value=0)  # noqa: E731
        ero = lambda x: ndimage.binary_erosion(x, structure=s, border_value=1)  # noqa: E731
        out = {"dilate": dil, "erode": ero, "open": lambda x: dil(ero(x)),
               "close": lambda x: ero(dil(x))}[op](fg)
        return out.astype(np.uint8)
    if op == "region.count":
        f = radii(p["region"], rank)
        out = np.zeros([-(-s // x) for s, x in zip(shape, f)], np.uint32)
        for index, sl in blocks(shape, f):
            block = a[sl]
            out[index] = len(np.unique(block[block != 0]))
        return out
    if op == "downsample":
        f = radii(p["factors"], rank)
        method = p.get("method", "mean")
        out = np.zeros([-(-s // x) for s, x in zip(shape, f)],
                       np.float64 if method == "mean" else a.dtype)
        for index, sl in blocks(shape, f):
            block = a[sl]
            if method == "mean":
                out[index] = block.astype(np.float64).mean()
            elif method == "max":
                out[index] = block.max()
            else:  # mode: the most frequent value, ties to the smallest
                values, counts = np.unique(block, return_counts=True)
                out[index] = values[np.argmax(counts)]
        return out
    raise ValueError(f"no reference for op {op}")


def label_stats(labels, intensity):
    """{column: values per label 1..N} from scipy.ndimage."""
    index = np.unique(labels[labels != 0])
    ones = np.ones(labels.shape)
    axes = ["z", "y", "x"][-labels.ndim:]
    cols = {"label": index.astype(float),
            "voxel_count": ndimage.sum(ones, labels, index)}
    centres = np.array(ndimage.center_of_mass(ones, labels, index)).reshape(len(index), -1)
    boxes = ndimage.find_objects(labels)
    for d, ax in enumerate(axes):
        cols[f"centroid_{ax}"] = centres[:, d]
        cols[f"bbox_begin_{ax}"] = np.array([boxes[i - 1][d].start for i in index], float)
        cols[f"bbox_end_{ax}"] = np.array([boxes[i - 1][d].stop for i in index], float)
    cols["mean_intensity"] = ndimage.mean(intensity.astype(np.float64), labels, index)
    cols["min_intensity"] = ndimage.minimum(intensity.astype(np.float64), labels, index)
    cols["max_intensity"] = ndimage.maximum(intensity.astype(np.float64), labels, index)
    return cols


def compare(name, got, want, rtol):
    if got.shape != want.shape:
        return f"shape {got.shape} is not the reference's {want.shape}"
    if rtol == 0:
        bad = np.count_nonzero(got != want)
        return f"{bad} of {got.size} voxels differ" if bad else None
    scale = np.max(np.abs(want)) + 1e-30
    err = np.max(np.abs(got.astype(np.float64) - want) / scale)
    return f"largest relative difference {err:.3g} > {rtol}" if err > rtol else None


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        manifest = json.load(f)
    shape = tuple(manifest["shape"])
    inputs = {k: load(v, shape) for k, v in manifest["inputs"].items()}
    failed = 0
    for case in manifest["cases"]:
        name = case["name"]
        try:
            if case["op"] == "label.stats":
                with open(case["file"], encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
                want = label_stats(inputs["labels"], inputs["raw"])
                why = None
                if len(rows) != len(want["label"]):
                    why = f"{len(rows)} rows, the reference has {len(want['label'])}"
                for column, values in want.items():
                    if why is not None:
                        break
                    if column not in rows[0]:
                        why = f"no column {column}"
                        break
                    got = np.array([float(r[column]) for r in rows])
                    why = compare(name, got, np.asarray(values, float), 1e-6)
                    if why:
                        why = f"column {column}: {why}"
            else:
                got = np.fromfile(case["file"], dtype=DTYPES[case["dtype"]]).reshape(
                    case["shape"])
                want = reference(case, inputs, shape)
                why = compare(name, got, want, case.get("rtol", 0))
        except Exception as e:  # a reference that cannot run is a failure too
            why = f"{type(e).__name__}: {e}"
        if why:
            failed += 1
            print(f"FAIL {name}: {why}")
        else:
            print(f"ok {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
