"""Writes N5 datasets with zarr-python's N5Store / N5FSStore for read_n5_test.cpp.

usage: make_n5_datasets.py OUT_DIR            the datasets to read
       make_n5_datasets.py OUT_DIR errors     damaged or unreadable datasets

Read cases: two datasets per compression (raw, gzip, gzip with useZlib, zstd,
blosc with two codecs), every dtype among them, 2-D to 4-D shapes that the blocks do not divide, missing blocks,
and a dataset whose edge blocks are rewritten the way N5's own writers store
them (only the in-bounds part; zarr-python pads them). Beside each dataset a
raw file holds the values zarr-python reads back, in native (little-endian) C
order. Prints a JSON manifest on stdout: a list of {name, path, raw, dtype,
shape, chunks}.

Error cases: a dict name -> {path, file}: `file` is what the error must name.
"""
import gzip
import json
import os
import struct
import sys

import numcodecs
import numpy as np
import zarr

COMPRESSORS = {
    "raw": None,
    "gzip": numcodecs.GZip(level=5),
    "zlib": numcodecs.Zlib(level=5),  # N5: gzip with "useZlib": true
    "zstd": numcodecs.Zstd(level=3),
    "blosc-lz4": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
    "blosc-zstd": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
}
DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"]
CELLFLOW = {"u1": "u8", "u2": "u16", "u4": "u32", "u8": "u64", "i1": "i8", "i2": "i16",
            "i4": "i32", "i8": "i64", "f4": "f32", "f8": "f64"}
SHAPE = (13, 17, 10)
CHUNKS = (5, 8, 4)


def values(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def create(container, name, shape, chunks, dtype, compressor, fs_store=False):
    store = zarr.N5FSStore(container) if fs_store else zarr.N5Store(container)
    return zarr.create(shape=shape, chunks=chunks, dtype=dtype, compressor=compressor,
                       store=store, path=name, fill_value=0, overwrite=True)


def record(out, cases, container, name, arr):
    """Writes the raw file of what zarr-python reads from the dataset."""
    expected = zarr.open(zarr.N5Store(container), mode="r", path=name)[...]
    raw = os.path.join(out, name + ".raw")
    np.ascontiguousarray(expected.astype(expected.dtype.newbyteorder("="))).tofile(raw)
    cases.append({"name": name, "path": os.path.join(container, name), "raw": raw,
                  "dtype": CELLFLOW[expected.dtype.str[1:]], "shape": list(arr.shape),
                  "chunks": list(arr.chunks)})


def block_files(path):
    """Every block file of the dataset at `path` (relative paths of digits only)."""
    for root, _, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), path)
            if all(p.isdigit() for p in rel.split(os.sep)):
                yield rel


def truncate_edge_blocks(path, data, chunks, compression):
    """Rewrites the edge blocks of a dataset holding `data` as N5's own writers
    store them: the header gives the in-bounds size, the payload only that part."""
    for rel in block_files(path):
        grid = [int(p) for p in rel.split(os.sep)][::-1]  # C order
        lo = [g * c for g, c in zip(grid, chunks)]
        part = data[tuple(slice(l, l + c) for l, c in zip(lo, chunks))]
        if part.shape == tuple(chunks):
            continue
        header = struct.pack(">HH", 0, part.ndim) + b"".join(
            struct.pack(">I", s) for s in part.shape[::-1])
        payload = np.ascontiguousarray(part.astype(part.dtype.newbyteorder(">"))).tobytes()
        if compression == "gzip":
            payload = gzip.compress(payload)
        with open(os.path.join(path, rel), "wb") as f:
            f.write(header + payload)


def read_cases(out):
    container = os.path.join(out, "data.n5")
    cases = []
    seed = 0
    for cname, compressor in COMPRESSORS.items():
        for i in range(2):
            dtype = DTYPES[seed % len(DTYPES)]
            seed += 1
            name = "%s-%s" % (cname, dtype)
            data = values(dtype, SHAPE, seed)
            # Every other dataset through N5FSStore (the fsspec store).
            arr = create(container, name, SHAPE, CHUNKS, dtype, compressor, fs_store=i == 1)
            arr[...] = data
            record(out, cases, container, name, arr)
    # Other ranks.
    for name, shape, chunks, dtype in [("rank2-u2", (37, 21), (16, 8), "u2"),
                                       ("rank4-f4", (3, 5, 9, 7), (2, 2, 4, 3), "f4"),
                                       ("one-block-i2", (4, 6, 5), (4, 6, 5), "i2")]:
        seed += 1
        arr = create(container, name, shape, chunks, dtype, COMPRESSORS["zstd"])
        arr[...] = values(dtype, shape, seed)
        record(out, cases, container, name, arr)
    # Only some blocks written: the others read as 0.
    seed += 1
    arr = create(container, "missing-blocks-i2", SHAPE, CHUNKS, "i2", COMPRESSORS["gzip"])
    data = values("i2", SHAPE, seed)
    arr[0:5, 0:8, :] = data[0:5, 0:8, :]
    arr[10:13, 8:17, 4:8] = data[10:13, 8:17, 4:8]
    record(out, cases, container, "missing-blocks-i2", arr)
    # Edge blocks holding only their in-bounds part (zarr-python reads them too).
    for compression, dtype in [("raw", "u2"), ("gzip", "f8")]:
        seed += 1
        name = "short-edges-%s-%s" % (compression, dtype)
        arr = create(container, name, SHAPE, CHUNKS, dtype, COMPRESSORS[compression])
        data = values(dtype, SHAPE, seed)
        arr[...] = data
        truncate_edge_blocks(os.path.join(container, name), data, CHUNKS, compression)
        assert np.array_equal(zarr.open(zarr.N5Store(container), mode="r", path=name)[...], data)
        record(out, cases, container, name, arr)
    json.dump(cases, sys.stdout)


def error_cases(out):
    container = os.path.join(out, "bad.n5")
    cases = {}

    def dataset(name, compressor=None, dtype="u2"):
        arr = create(container, name, (6, 7), (3, 4), dtype, compressor)
        arr[...] = np.arange(42, dtype=dtype).reshape(6, 7)
        return os.path.join(container, name)

    def edit(path, rel, fn):
        with open(os.path.join(path, rel), "rb") as f:
            data = f.read()
        with open(os.path.join(path, rel), "wb") as f:
            f.write(fn(data))

    # Block files are <i0>/<i1>, fastest axis first: "1/0" is C-order block (0, 1).
    p = dataset("truncated-gzip", COMPRESSORS["gzip"])
    edit(p, "1/0", lambda d: d[: len(d) // 2])
    cases["truncated-gzip"] = {"path": p, "file": os.path.join(p, "1", "0")}
    p = dataset("truncated-raw")
    edit(p, "0/1", lambda d: d[:-2])
    cases["truncated-raw"] = {"path": p, "file": os.path.join(p, "0", "1")}
    p = dataset("raw-extra-bytes")
    edit(p, "0/0", lambda d: d + b"\0\0")
    cases["raw-extra-bytes"] = {"path": p, "file": os.path.join(p, "0", "0")}
    p = dataset("header-rank")
    edit(p, "0/0", lambda d: d[:2] + struct.pack(">H", 3) + d[4:])
    cases["header-rank"] = {"path": p, "file": os.path.join(p, "0", "0")}
    p = dataset("header-size")
    edit(p, "0/0", lambda d: d[:4] + struct.pack(">I", 3) + d[8:])
    cases["header-size"] = {"path": p, "file": os.path.join(p, "0", "0")}
    p = dataset("header-mode")
    edit(p, "1/1", lambda d: struct.pack(">H", 2) + d[2:])
    cases["header-mode"] = {"path": p, "file": os.path.join(p, "1", "1")}
    p = dataset("header-only")
    edit(p, "1/1", lambda d: d[:6])
    cases["header-only"] = {"path": p, "file": os.path.join(p, "1", "1")}
    p = dataset("no-attributes")
    os.remove(os.path.join(p, "attributes.json"))
    cases["no-attributes"] = {"path": p, "file": os.path.join(p, "attributes.json")}
    p = dataset("bad-datatype")
    with open(os.path.join(p, "attributes.json")) as f:
        attrs = json.load(f)
    attrs["dataType"] = "complex64"
    with open(os.path.join(p, "attributes.json"), "w") as f:
        json.dump(attrs, f)
    cases["bad-datatype"] = {"path": p, "file": os.path.join(p, "attributes.json")}
    p = dataset("bzip2", numcodecs.BZ2(level=5))
    cases["bzip2"] = {"path": p, "file": os.path.join(p, "attributes.json")}
    p = dataset("bad-json")
    with open(os.path.join(p, "attributes.json"), "w") as f:
        f.write('{"dimensions": [7, 6], "blockSize": [4, 3],')
    cases["bad-json"] = {"path": p, "file": os.path.join(p, "attributes.json")}
    cases["group"] = {"path": container, "file": os.path.join(container, "attributes.json")}
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "errors":
        error_cases(sys.argv[1])
    else:
        read_cases(sys.argv[1])
