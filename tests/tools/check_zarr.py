"""Checks a cellflow cache with zarr-python 2.x (run by zarr_python_test.cpp).

usage: check_zarr.py MANIFEST.json

The manifest lists, per node, its hash, op, dtype, shape, cell shape and a raw
file holding what the C++ API returned for the whole node (C order). Every
node's <cache>/<hash>/0 must open in zarr-python and hold exactly those bytes,
and <cache>/<hash> must be an OME-NGFF 0.4 group. Prints OK or the problems and
exits non-zero.
"""
import json
import os
import sys

import numpy as np
import zarr


def check_node(cache, node, problems):
    where = "node %s (%s)" % (node["id"], node["hash"])
    group_path = os.path.join(cache, node["hash"])
    arr = zarr.open(os.path.join(group_path, "0"), mode="r")
    shape = tuple(node["shape"])
    chunks = tuple(node["cell_shape"])
    expected = np.fromfile(node["raw"], dtype=np.dtype(node["zarr_dtype"])).reshape(shape)
    if arr.shape != shape:
        problems.append("%s: shape %s, expected %s" % (where, arr.shape, shape))
        return
    if arr.chunks != chunks:
        problems.append("%s: chunks %s, expected %s" % (where, arr.chunks, chunks))
    if arr.dtype != expected.dtype:
        problems.append("%s: dtype %s, expected %s" % (where, arr.dtype, expected.dtype))
        return
    data = arr[...]
    if data.tobytes() != expected.tobytes():
        diff = np.argwhere(data != expected)
        problems.append("%s: data differ at %d voxels, first %s" % (where, len(diff), diff[:1].tolist()))
    # A region crossing cells, including edge cells.
    region = tuple(slice(s // 3, s) for s in shape)
    if arr[region].tobytes() != expected[region].tobytes():
        problems.append("%s: region %s differs" % (where, region))
    # Every chunk file is there (every cell is written, even all-zero ones).
    # (zarr 2.x's nchunks_initialized does not look into nested "/" folders.)
    files = 0
    for _, _, names in os.walk(os.path.join(group_path, "0")):
        files += sum(1 for f in names if not f.startswith("."))
    if files != arr.nchunks:
        problems.append("%s: %d of %d chunk files present" % (where, files, arr.nchunks))

    group = zarr.open_group(group_path, mode="r")
    attrs = group.attrs.asdict()
    ms = attrs.get("multiscales")
    if not ms or not isinstance(ms, list):
        problems.append("%s: .zattrs has no NGFF multiscales" % where)
    else:
        m = ms[0]
        if m.get("version") != "0.4":
            problems.append("%s: multiscales version %r" % (where, m.get("version")))
        if len(m.get("axes", [])) != len(shape):
            problems.append("%s: %d axes for rank %d" % (where, len(m.get("axes", [])), len(shape)))
        paths = [d.get("path") for d in m.get("datasets", [])]
        if paths != ["0"]:
            problems.append("%s: datasets %r" % (where, paths))
        if group["0"].shape != shape:
            problems.append("%s: group['0'] has shape %s" % (where, group["0"].shape))
    cf = attrs.get("cellflow")
    if not isinstance(cf, dict) or cf.get("op") != node["op"]:
        problems.append("%s: .zattrs 'cellflow' definition missing or wrong: %r" % (where, cf))


def main():
    manifest = json.load(open(sys.argv[1]))
    problems = []
    for node in manifest["nodes"]:
        try:
            check_node(manifest["cache"], node, problems)
        except Exception as e:  # report and go on with the other nodes
            problems.append("node %s: %s: %s" % (node["id"], type(e).__name__, e))
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("OK %d nodes" % len(manifest["nodes"]))


if __name__ == "__main__":
    main()
