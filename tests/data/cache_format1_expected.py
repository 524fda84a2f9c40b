#!/usr/bin/python3
"""Writes cache_format1.expected.json: the node hashes of cache_format1.graph.json
(as `cellflow graph --hashes` prints them) and, for each node, a SHA-256 of its
data decoded by zarr-python / numcodecs alone (independently of cellflow), so that
a later cellflow that migrates or reads this format-1 cache can check it reads
back every byte exactly.

  build/bin/cellflow graph tests/data/cache_format1.graph.json --hashes > hashes.txt
  /usr/bin/python3 tests/data/cache_format1_expected.py tests/data/cache_format1 \
      hashes.txt COMMIT > tests/data/cache_format1.expected.json

Image nodes: sha256(zarr.open(<cache>/<hash>/0)[:].tobytes()) (C order, the
array's own little-endian dtype). Table nodes (no Zarr array; table/i/j/k files
are blosc frames of cellflow's serialized rows): sha256 of each cell's
blosc-decoded bytes.
"""
import hashlib
import json
import os
import sys

import numcodecs
import zarr


def main():
    cache, hashes_file, commit = sys.argv[1], sys.argv[2], sys.argv[3]
    nodes = {}
    with open(hashes_file) as f:
        for line in f:
            if not line.strip():
                continue
            node_id, node_hash = line.split()
            folder = os.path.join(cache, node_hash)
            with open(os.path.join(folder, ".zattrs")) as z:
                definition = json.load(z)["cellflow"]
            assert definition["hash"] == node_hash and definition["id"] == node_id, definition
            entry = {"hash": node_hash, "op": definition["op"]}
            if os.path.isdir(os.path.join(folder, "0")):
                arr = zarr.open(os.path.join(folder, "0"), mode="r")
                data = arr[:]
                entry.update({
                    "kind": "image",
                    "zarr_dtype": arr.dtype.str,
                    "shape": list(arr.shape),
                    "chunks": list(arr.chunks),
                    "cells": sum(1 for k in arr.store.keys() if not k.split("/")[-1].startswith(".")),
                    "sha256_decoded": hashlib.sha256(data.tobytes(order="C")).hexdigest(),
                    "min": data.min().item(),
                    "max": data.max().item(),
                })
            else:
                blosc = numcodecs.Blosc()
                table = os.path.join(folder, "table")
                cells = {}
                for root, _dirs, files in os.walk(table):
                    for name in files:
                        if name.startswith("."):
                            continue
                        path = os.path.join(root, name)
                        rel = os.path.relpath(path, table)
                        with open(path, "rb") as c:
                            decoded = bytes(blosc.decode(c.read()))
                        cells[rel] = {"decoded_bytes": len(decoded),
                                      "sha256_decoded": hashlib.sha256(decoded).hexdigest()}
                entry.update({"kind": "table", "cells": dict(sorted(cells.items()))})
            nodes[node_id] = entry
    out = {
        "about": "cache_format1/ as written by cellflow main at made_by_commit (cache format 1); "
                 "see README.txt",
        "made_by_commit": commit,
        "cache_format": 1,
        "graph": "cache_format1.graph.json",
        "zarr_python": zarr.__version__,
        "nodes": nodes,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
