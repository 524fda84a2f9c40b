"""Writes Zarr v3 arrays for read_zarr_test.cpp, for the codecs zarrita cannot
encode (gzip, crc32c, sharding_indexed) and for fill values and chunk key
encodings: chunks are encoded here with numpy and numcodecs, a CRC-32C of our
own (checked against the standard check value), and a hand-written zarr.json.

usage: make_zarr_v3_arrays.py OUT_DIR [errors]

Without "errors": one array per case, each beside a raw file holding the
expected values (native little-endian, C order); prints a JSON manifest.
With "errors": damaged or unreadable arrays; prints {name: {path, file}} where
file is the file the error must name.
"""
import json
import os
import struct
import sys

import numcodecs
import numpy as np

from make_zarr_arrays import SHAPE, values  # the same 13x17x10 test values as for v2

NO_CHUNK = 2**64 - 1


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)

SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
           "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
V3_TYPES = {"bool": "|b1", "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
            "int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8", "float32": "f4",
            "float64": "f8"}
CELLFLOW = {"bool": "u8", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
            "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "float32": "f32",
            "float64": "f64"}


def codec(name, **config):
    return {"name": name, "configuration": config} if config else {"name": name}


def encode(arr, codecs, fill):
    """Encodes one chunk (a numpy array of the chunk's shape) with a codec chain."""
    data = arr
    for c in codecs:
        name, cfg = c["name"], c.get("configuration", {})
        if name == "transpose":
            data = np.ascontiguousarray(data.transpose(cfg["order"]))
        elif name == "bytes":
            order = ">" if cfg.get("endian") == "big" else "<"
            data = np.ascontiguousarray(data).astype(data.dtype.newbyteorder(order)).tobytes()
        elif name == "sharding_indexed":
            data = encode_shard(data, cfg, fill)
        elif name == "blosc":
            data = numcodecs.Blosc(cname=cfg["cname"], clevel=cfg["clevel"],
                                   shuffle=SHUFFLE[cfg["shuffle"]]).encode(data)
        elif name == "zstd":
            data = numcodecs.Zstd(level=cfg["level"]).encode(data)
        elif name == "gzip":
            data = numcodecs.GZip(level=cfg["level"]).encode(data)
        elif name == "crc32c":
            data = bytes(data) + struct.pack("<I", crc32c(bytes(data)))
        else:
            raise ValueError(name)
    return bytes(data)


def encode_shard(shard, cfg, fill):
    inner = cfg["chunk_shape"]
    per = [s // i for s, i in zip(shard.shape, inner)]
    body, index = b"", []
    for pos in np.ndindex(*per):
        sl = tuple(slice(p * i, (p + 1) * i) for p, i in zip(pos, inner))
        block = shard[sl]
        if np.all(block == fill) or (np.isnan(fill) and np.all(np.isnan(block))):
            index += [NO_CHUNK, NO_CHUNK]  # an all-fill inner chunk is not stored
            continue
        enc = encode(block, cfg["codecs"], fill)
        index += [len(body), len(enc)]
        body += enc
    index_arr = np.array(index, dtype="u8").reshape(per + [2])
    index_bytes = encode(index_arr, cfg["index_codecs"], fill)
    if cfg.get("index_location", "end") == "start":
        shift = len(index_bytes)
        index = [v if v == NO_CHUNK else v + (shift if k % 2 == 0 else 0)
                 for k, v in enumerate(index)]
        index_arr = np.array(index, dtype="u8").reshape(per + [2])
        return encode(index_arr, cfg["index_codecs"], fill) + body
    return body + index_bytes


def key(idx, encoding):
    sep = encoding.get("configuration", {}).get("separator",
                                                "." if encoding["name"] == "v2" else "/")
    parts = [str(i) for i in idx]
    return sep.join(parts) if encoding["name"] == "v2" else sep.join(["c"] + parts)


def write_array(path, data, chunks, codecs, fill, fill_json, data_type,
                encoding=None, skip=lambda idx: False):
    """Writes `data` as a v3 array; returns the values a reader must see."""
    encoding = encoding or {"name": "default", "configuration": {"separator": "/"}}
    os.makedirs(path, exist_ok=True)
    meta = {"zarr_format": 3, "node_type": "array", "shape": list(data.shape),
            "data_type": data_type,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": encoding, "fill_value": fill_json, "codecs": codecs,
            "attributes": {}}
    with open(os.path.join(path, "zarr.json"), "w") as f:
        json.dump(meta, f, indent=2)
    expected = data.copy()
    grid = [-(-s // c) for s, c in zip(data.shape, chunks)]
    for idx in np.ndindex(*grid):
        sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, data.shape))
        if skip(idx):
            expected[sl] = fill
            continue
        full = np.full(chunks, fill, dtype=data.dtype)
        full[tuple(slice(0, s.stop - s.start) for s in sl)] = data[sl]
        name = os.path.join(path, key(idx, encoding))
        os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "wb") as f:
            f.write(encode(full, codecs, fill))
    return expected


LE, BE = codec("bytes", endian="little"), codec("bytes", endian="big")
CRC = codec("crc32c")


def sharding(inner, codecs, index_codecs=(LE, CRC), location="end"):
    return codec("sharding_indexed", chunk_shape=list(inner), codecs=list(codecs),
                 index_codecs=list(index_codecs), index_location=location)


def cases():
    """(name, data_type, chunks, codecs, fill, fill_json, encoding, skip)"""
    blosc = codec("blosc", cname="lz4", clevel=5, shuffle="shuffle", typesize=4, blocksize=0)
    every_other = lambda idx: sum(idx) % 2 == 1  # noqa: E731
    return [
        ("gzip-u16", "uint16", (5, 8, 4), [LE, codec("gzip", level=5)], 0, 0, None, None),
        ("crc32c-i32-be", "int32", (5, 8, 4), [BE, CRC], 0, 0, None, None),
        ("zstd-crc32c-f64", "float64", (5, 8, 4), [LE, codec("zstd", level=3), CRC], 0, 0,
         None, None),
        ("blosc-crc32c-u32", "uint32", (5, 8, 4), [LE, blosc, CRC], 0, 0, None, None),
        ("bool-gzip", "bool", (5, 8, 4), [codec("bytes"), codec("gzip", level=1)], False, False,
         None, None),
        ("dot-keys-nan-hex", "float32", (5, 8, 4), [LE, codec("zstd", level=1)],
         np.float32("nan"), "0x7fc00000", {"name": "default", "configuration": {"separator": "."}},
         every_other),
        ("v2-keys-inf", "float64", (5, 8, 4), [LE], np.inf, "Infinity", {"name": "v2"},
         every_other),
        ("shard-end-zstd", "uint16", (10, 16, 8), [sharding((5, 8, 4), [LE, codec("zstd", level=3)])],
         0, 0, None, None),
        ("shard-start-gzip-crc-be", "int16", (10, 16, 8),
         [sharding((5, 8, 4), [BE, codec("gzip", level=6), CRC], location="start")], -7, -7,
         None, lambda idx: idx == (1, 0, 1)),
        ("shard-v2-keys-no-index-crc", "float32", (13, 17, 10),
         [sharding((13, 17, 5), [LE, blosc, CRC], index_codecs=[BE])], 0.5, 0.5,
         {"name": "v2", "configuration": {"separator": "/"}}, None),
        ("shard-nested", "uint16", (10, 16, 8),
         [sharding((10, 8, 8), [sharding((5, 8, 4), [LE, codec("zstd", level=2)])])], 0, 0,
         None, None),
        ("shard-inner-transpose", "int64", (10, 16, 8),
         [sharding((5, 8, 4), [codec("transpose", order=[1, 2, 0]), BE, CRC])], 0, 0, None,
         None),
    ]


# What zarrita 0.7.5 reads otherwise than the spec says (the tests cross-check
# every other case with it): a hex fill value ("0x7fc00000", the bit pattern)
# is taken as the number 2143289344, and the shard index is always read from
# the end of the shard (index_location "start" is ignored); and it does not
# know sharding_indexed as an inner codec (nested sharding).
ZARRITA_CANNOT = {"dot-keys-nan-hex", "shard-start-gzip-crc-be", "shard-nested"}


def main():
    out = sys.argv[1]
    manifest = []
    for seed, (name, dt, chunks, codecs, fill, fill_json, enc, skip) in enumerate(cases()):
        data = values(V3_TYPES[dt], seed)
        if name.startswith("shard-start"):
            data[0:5, 0:8, 0:4] = fill  # an inner chunk of fill values: not stored
        path = os.path.join(out, name + ".zarr")
        expected = write_array(path, data, chunks, codecs, fill, fill_json, dt, enc,
                               skip or (lambda idx: False))
        raw = os.path.join(out, name + ".raw")
        expected.astype(expected.dtype.newbyteorder("<")).tofile(raw)
        manifest.append({"name": name, "path": path, "raw": raw, "dtype": CELLFLOW[dt],
                         "zarrita": name not in ZARRITA_CANNOT})
    json.dump(manifest, sys.stdout)


def errors():
    out = sys.argv[1]
    found = {}
    data = values("u2", 1)

    def add(name, codecs, chunks=(5, 8, 4), damage=None, meta=None):
        path = os.path.join(out, name + ".zarr")
        write_array(path, data, chunks, codecs, 0, 0, "uint16")
        victim = os.path.join(path, "c", "0", "0", "0")
        if damage:
            with open(victim, "rb") as f:
                blob = bytearray(f.read())
            blob = damage(blob)
            with open(victim, "wb") as f:
                f.write(bytes(blob))
        if meta is not None:  # replaces zarr.json: meta(its JSON) -> new text
            victim = os.path.join(path, "zarr.json")
            with open(victim) as f:
                text = meta(json.load(f))
            with open(victim, "w") as f:
                f.write(text)
        found[name] = {"path": path, "file": victim}

    def flip(blob):
        blob[3] ^= 0x40
        return blob

    def huge_offset(blob):  # index at the end, no crc: entry 0's offset
        n = (2 * 2 * 2) * 16
        blob[len(blob) - n:len(blob) - n + 8] = struct.pack("<Q", 1 << 40)
        return blob

    add("bad-crc32c", [LE, CRC], damage=flip)
    shard = [sharding((5, 8, 4), [LE, codec("zstd", level=3)])]
    add("truncated-shard", shard, chunks=(10, 16, 8), damage=lambda b: b[:100])
    add("half-shard", shard, chunks=(10, 16, 8), damage=lambda b: b[: len(b) // 2])
    add("index-out-of-range", [sharding((5, 8, 4), [LE], index_codecs=[LE])], chunks=(10, 16, 8),
        damage=huge_offset)
    add("short-chunk", [LE], damage=lambda b: b[:-2])
    add("unknown-codec", [LE], meta=lambda m: json.dumps({**m, "codecs": [LE, codec("lz5")]}))
    add("bad-json", [LE], meta=lambda m: json.dumps(m)[:60])
    json.dump(found, sys.stdout)


if __name__ == "__main__":
    errors() if len(sys.argv) > 2 and sys.argv[2] == "errors" else main()
