"""Writes Zarr v2 arrays with zarr-python for read_zarr_test.cpp.

usage: make_zarr_arrays.py OUT_DIR

One array per case (compressor x separator x dtype, big-endian types, a bool
array, an array with missing chunks and a fill_value), a shape that the chunks
do not divide, and beside each array a raw file holding the expected values
in native (little-endian) C order. Prints a JSON manifest on stdout.
"""
import json
import os
import sys

import numcodecs
import numpy as np
import zarr

SHAPE = (13, 17, 10)
CHUNKS = (5, 8, 4)

COMPRESSORS = {
    "blosc-lz4": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
    "blosc-zstd": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
    "blosc-zlib": numcodecs.Blosc(cname="zlib", clevel=3, shuffle=numcodecs.Blosc.NOSHUFFLE),
    "zstd": numcodecs.Zstd(level=3),
    "zlib": numcodecs.Zlib(level=6),
    "gzip": numcodecs.GZip(level=6),
    "none": None,
}
DTYPES = ["<u1", "<u2", "<i4", "<f4", "<f8"]
CELLFLOW = {"u1": "u8", "u2": "u16", "u4": "u32", "u8": "u64", "i1": "i8", "i2": "i16",
            "i4": "i32", "i8": "i64", "f4": "f32", "f8": "f64", "b1": "u8"}


def values(dtype, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(SHAPE) * 100).astype(dt)
    if dt.kind == "b":
        return rng.random(SHAPE) > 0.5
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=SHAPE, endpoint=True, dtype=dt.newbyteorder("="))


def main():
    out = sys.argv[1]
    cases = []

    def add(name, data, compressor, separator, fill_value=0, write=None):
        path = os.path.join(out, name + ".zarr")
        arr = zarr.open(zarr.DirectoryStore(path, dimension_separator=separator), mode="w",
                        shape=SHAPE, chunks=CHUNKS, dtype=data.dtype, compressor=compressor,
                        fill_value=fill_value)
        if write is None:
            arr[...] = data
            expected = data
        else:
            write(arr, data)
            expected = arr[...]
        raw = os.path.join(out, name + ".raw")
        native = expected.dtype.newbyteorder("=") if expected.dtype.kind != "b" else np.uint8
        np.ascontiguousarray(expected.astype(native)).tofile(raw)
        kind = expected.dtype.str[1:]
        cases.append({"name": name, "path": path, "raw": raw, "dtype": CELLFLOW[kind],
                      "shape": list(SHAPE)})

    seed = 0
    for cname, compressor in COMPRESSORS.items():
        for separator in (".", "/"):
            dtype = DTYPES[seed % len(DTYPES)]
            seed += 1
            add("%s-%s-%s" % (cname, "dot" if separator == "." else "slash", dtype[1:]),
                values(dtype, seed), compressor, separator)
    # Every dtype once with blosc-lz4, and big-endian ones with zstd and none.
    for dtype in ["|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8", "<f4", "<f8"]:
        seed += 1
        add("dtype-%s" % dtype[1:], values(dtype, seed), COMPRESSORS["blosc-lz4"], "/")
    for dtype in [">u2", ">i4", ">f8"]:
        seed += 1
        add("big-zstd-%s" % dtype[1:], values(dtype, seed), COMPRESSORS["zstd"], ".")
        add("big-none-%s" % dtype[1:], values(dtype, seed), None, "/")
    seed += 1
    add("bool", values("|b1", seed), COMPRESSORS["zlib"], ".", fill_value=False)

    # Only some chunks written: the others read as fill_value.
    def partial(arr, data):
        arr[0:5, 0:8, :] = data[0:5, 0:8, :]
        arr[10:13, 8:17, 4:8] = data[10:13, 8:17, 4:8]
    seed += 1
    add("missing-chunks-i2", values("<i2", seed), COMPRESSORS["gzip"], "/", fill_value=-7,
        write=partial)
    seed += 1
    add("missing-chunks-f4-nan", values("<f4", seed), COMPRESSORS["blosc-lz4"], ".",
        fill_value=float("nan"), write=partial)
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
