#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (corpus/<target>/seed-*): small
valid inputs and a few edge cases, from zarr-python's codecs (numcodecs) and
the cache-format-1 test data. Run from anywhere with Debian's python3
(python3-numcodecs); the output is committed, so this runs only when the seeds
should change. Inputs that a fuzz run found are kept beside them (crash-*)."""
import glob
import gzip
import json
import os
import struct

import numcodecs
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


class Deterministic:
    def __init__(self, encode):
        self.encode = encode


def zarray(dtype, chunks, shape, compressor, fill=0, sep="/"):
    return json.dumps({"chunks": chunks, "compressor": compressor, "dimension_separator": sep,
                       "dtype": dtype, "fill_value": fill, "filters": None, "order": "C",
                       "shape": shape, "zarr_format": 2}, indent=2)


format1 = sorted(glob.glob(os.path.join(ROOT, "tests/data/cache_format1/*/")))[0]
with open(os.path.join(format1, ".zattrs")) as f:
    zattrs_text = f.read()
with open(os.path.join(format1, "0/.zarray")) as f:
    cache_zarray_text = f.read()
with open(os.path.join(format1, "0/0/0/0"), "rb") as f:
    format1_chunk = f.read()

# json: documents of every kind the parser meets, and edge cases.
for name, text in {
        "zattrs": zattrs_text, "zarray": cache_zarray_text,
        "scalars": '[null, true, false, 0, -0, 1.5e-3, -9223372036854775808, 18446744073709551616]',
        "strings": '{"a": "\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/", "b": "\xc3\xa9"}',
        "nested": "[" * 30 + "{}" + "]" * 30, "empty": "{}"}.items():
    put("json", name, text)
for path in sorted(glob.glob(os.path.join(ROOT, "examples/*.json"))):
    with open(path) as f:
        text = f.read()
    put("json", os.path.basename(path), text)
    put("graph", os.path.basename(path), text)
put("graph", "minimal", '{"cellflow": 1, "nodes": []}')
put("graph", "inputs", '{"cellflow": 1, "name": "g", "nodes": [{"id": "a", "op": "x", "params": '
    '{"n": [1, 2]}}, {"id": "b", "op": "y", "inputs": ["a", "a"]}], "outputs": ["b"]}')

# read_zarr: .zarray NUL chunk, for each codec, byte order and separator.
data = np.arange(16, dtype="<u2").reshape(4, 4)
codecs = {
    "none": (None, None),
    "blosc-lz4": ({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
                  numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1)),
    "blosc-zstd-bitshuffle": ({"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2,
                               "blocksize": 0},
                              numcodecs.Blosc(cname="zstd", clevel=3, shuffle=2)),
    "zstd": ({"id": "zstd", "level": 3}, numcodecs.Zstd(level=3)),
    "zlib": ({"id": "zlib", "level": 1}, numcodecs.Zlib(level=1)),
    # gzip.compress with mtime 0, unlike numcodecs.GZip: the same bytes every time.
    "gzip": ({"id": "gzip", "level": 1}, Deterministic(lambda b: gzip.compress(b, 1, mtime=0))),
}
for name, (spec, codec) in codecs.items():
    raw = data.tobytes()
    put("read_zarr", name, zarray("<u2", [4, 4], [6, 5], spec).encode() + b"\0" +
        (raw if codec is None else codec.encode(raw)))
big = data.astype(">f8")
put("read_zarr", "big-endian-f8", zarray(">f8", [4, 4], [4, 4], None, fill="NaN", sep=".").encode()
    + b"\0" + big.tobytes())
# Chunks whose element count overflows int64 (refused by parse_zarray).
put("read_zarr", "chunks-overflow", zarray("<u2", [2**32, 2**32], [10, 10], None).encode() + b"\0")
put("read_zarr", "bool", zarray("|b1", [3], [7], None, fill=True).encode() + b"\0" + b"\1\0\1")

# cache_chunk: a frame to seal (first byte even), a whole format-1 file (odd).
blosc = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1)
put("cache_chunk", "frame-u16", b"\0" + blosc.encode(data.tobytes()))
put("cache_chunk", "frame-empty", b"\0" + blosc.encode(b""))
put("cache_chunk", "format1-file", b"\1" + format1_chunk)

# cache_node: .zattrs NUL .zarray NUL frame (the format-1 chunk without its trailer).
put("cache_node", "format1-node", zattrs_text.encode() + b"\0" + cache_zarray_text.encode() +
    b"\0" + format1_chunk[:-16])


def table(columns, rows):
    out = b"CFLWTAB1" + struct.pack("<Q", len(columns))
    for c in columns:
        out += struct.pack("<Q", len(c)) + c.encode()
    out += struct.pack("<Q", len(rows))
    for r in rows:
        out += struct.pack("<%dd" % len(r), *r)
    return out


put("table", "two-rows", table(["label", "volume"], [[1, 27], [2, 8.5]]))
put("table", "no-rows", table(["label", "volume"], []))
put("table", "no-columns", table([], []))
put("table", "nan", table(["x"], [[float("nan")], [float("-inf")]]))
