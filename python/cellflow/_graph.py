"""Graphs and nodes: the Python face of cellflow::Graph."""

import os

import numpy as np

from . import _cellflow
from ._ops import _generation, python_ops

_DEFAULT = object()


def _cache_root(cache):
    """The cache folder the CLI would use: --cache, else $CELLFLOW_CACHE, else
    ./cellflow-cache, made absolute now; None keeps everything in memory."""
    if cache is None:
        return None
    if cache is _DEFAULT:
        cache = _cellflow.default_cache_root()
    return os.path.normpath(os.path.abspath(os.fspath(cache)))


class Graph:
    """A pipeline: nodes (id, op, inputs, params) and outputs.

    ``cache`` is the cache folder nodes persist to (default: the ``cellflow``
    program's: $CELLFLOW_CACHE, else ./cellflow-cache); ``None`` keeps cells in
    memory only. ``strict_code`` (default: $CELLFLOW_STRICT_CODE, as set by
    ``cellflow --strict-code``) adds each op library's build-id to the hashes.
    Every change is validated at once, with the same errors as
    the C++ library (cellflow.GraphError, cellflow.InvalidArgument...).
    """

    def __init__(self, name="", cache=_DEFAULT, strict_code=None):
        self._version = 0  # bumped by every change: the built graph's key
        self._name = name
        self._nodes = []
        self._outputs = []
        self._cache = _cache_root(cache)
        if strict_code is None:  # as the cellflow program: --strict-code sets this variable
            v = os.environ.get("CELLFLOW_STRICT_CODE", "")
            strict_code = v not in ("", "0")
        self._strict_code = bool(strict_code)
        self._source = ""
        self._base_dir = ""
        self._built = None
        self._built_key = None

    # ---- loading and saving -------------------------------------------
    @classmethod
    def from_dict(cls, d, cache=_DEFAULT, validate=True):
        g = cls(d.get("name", ""), cache=cache)
        g._nodes = [
            {"id": n["id"], "op": n["op"], "inputs": list(n.get("inputs", [])),
             "params": dict(n.get("params", {})),
             **({"persist": n["persist"]} if n.get("persist") is not None else {})}
            for n in d["nodes"]
        ]
        g._outputs = list(d.get("outputs", []))
        g._source = d.get("source", "")
        g._base_dir = d.get("base_dir", "")
        g._version += 1
        if validate:
            g.validate()
        return g

    @classmethod
    def from_json(cls, text, cache=_DEFAULT, source="<graph>", validate=True):
        """Parses the JSON form (GraphError naming the field on bad structure)."""
        return cls.from_dict(_cellflow.parse_graph(text, source), cache, validate)

    @classmethod
    def load(cls, path, cache=_DEFAULT, validate=True):
        """Reads a graph file (relative paths in params follow the file, as in
        ``cellflow run``)."""
        return cls.from_dict(_cellflow.load_graph_file(os.fspath(path)), cache, validate)

    def _changed(self):
        self._version += 1

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        self._name = value
        self._changed()

    @property
    def source(self):
        """Where the graph was read from ("" when built in Python): error messages name it."""
        return self._source

    @property
    def base_dir(self):
        """The folder relative paths in params are taken from first (a loaded
        file's folder); "" means the current directory."""
        return self._base_dir

    @property
    def strict_code(self):
        return self._strict_code

    @strict_code.setter
    def strict_code(self, value):
        self._strict_code = bool(value)
        self._changed()

    def to_dict(self):
        return {"name": self.name, "nodes": [dict(n) for n in self._nodes],
                "outputs": list(self._outputs), "source": self.source,
                "base_dir": self.base_dir}

    def to_json(self):
        """The JSON form, byte for byte what the C++ save_graph() writes."""
        return _cellflow.save_graph(self.to_dict())

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    # ---- building -----------------------------------------------------
    def add(self, id, op, inputs=(), /, *, persist=None, **params):
        """Adds node ``id`` computing ``op`` (a name, or a function decorated
        with @cellflow.op) from ``inputs`` (ids or Nodes) with ``params``;
        returns the Node. ``persist`` (True/False; None: the op's default —
        sources that read your files are not copied into the cache, everything
        else is) is the graph JSON's "persist", not part of the hash. Invalid
        nodes raise and leave the graph unchanged."""
        if isinstance(inputs, (str, Node)):
            inputs = [inputs]
        node = {
            "id": id,
            "op": op if isinstance(op, str) else op.name,
            "inputs": [i.id if isinstance(i, Node) else i for i in inputs],
            "params": params,
        }
        if persist is not None:
            node["persist"] = bool(persist)
        self._nodes.append(node)
        self._changed()
        try:
            self.validate()
        except BaseException:
            self._nodes.pop()
            self._changed()
            raise
        return Node(self, id)

    @property
    def outputs(self):
        """The nodes ``run()`` computes by default (empty: the sinks)."""
        return list(self._outputs)

    @outputs.setter
    def outputs(self, ids):
        old = self._outputs
        self._outputs = [i.id if isinstance(i, Node) else i for i in ids]
        self._changed()
        try:
            self.validate()
        except BaseException:
            self._outputs = old
            self._changed()
            raise

    @property
    def cache(self):
        """The cache folder (absolute), or None when cells live in memory only."""
        return self._cache

    @cache.setter
    def cache(self, value):
        self._cache = _cache_root(value)
        self._changed()

    @property
    def node_ids(self):
        return [n["id"] for n in self._nodes]

    def __contains__(self, id):
        return id in self.node_ids

    def __getitem__(self, id):
        if id not in self.node_ids:
            raise KeyError(f"{id!r} is not a node of the graph (nodes: {', '.join(self.node_ids)})")
        return Node(self, id)

    def __iter__(self):
        return (Node(self, i) for i in self.node_ids)

    def __len__(self):
        return len(self._nodes)

    def __repr__(self):
        return f"<cellflow.Graph {self.name!r}: {len(self)} nodes, cache {self._cache}>"

    def _build(self):
        """The built C++ graph, rebuilt when the definition, the cache or a
        Python op changed."""
        key = (self._version, _generation())
        if self._built is None or self._built_key != key:
            ops = [o._handle for o in python_ops().values()]
            self._built = _cellflow.BuiltGraph(self.to_dict(), self._cache, ops, self.strict_code,
                                               self._built)
            self._built_key = key
        return self._built

    def validate(self):
        """Checks everything the C++ Graph::build checks (ops, params, inputs,
        cycles, shapes and dtypes); raises GraphError / InvalidArgument."""
        self._build()
        return self

    def hashes(self):
        """{id: hash} as ``cellflow graph --hashes`` prints them."""
        return dict(self._build().hashes())

    def to_dot(self):
        return self._build().to_dot()

    # ---- running ------------------------------------------------------
    def run(self, outputs=None, *, threads=0, memory=None, max_retries=0, timeout=0.0,
            progress=None, progress_interval=0.2):
        """Computes ``outputs`` (ids or Nodes; default: the graph's outputs) as
        ``cellflow run`` does, persisting every node to the cache.

        threads: worker threads (0 = all cores); memory: the in-memory cache
        budget ("2G"); max_retries / timeout: per cell (an op's own policy
        wins); progress: a callable receiving a list of per-node dicts (id,
        total, scheduled, done, computed, retries, failed) every
        ``progress_interval`` seconds and at the end, or True for a terminal
        display. The GIL is released while C++ works; Ctrl-C stops the run and
        raises KeyboardInterrupt. Returns a RunReport.
        """
        if memory is not None:
            _cellflow.set_memory_budget(memory)
        if outputs is None:
            outputs = []
        elif isinstance(outputs, (str, Node)):
            outputs = [outputs]
        ids = [o.id if isinstance(o, Node) else o for o in outputs]
        for i in ids:
            if i not in self:
                raise _cellflow.InvalidArgument(
                    f"output \"{i}\" is not a node of the graph (nodes: {', '.join(self.node_ids)})")
        built = self._build()
        display = None
        callback = progress
        if progress is True:
            from ._progress import TerminalProgress

            display = callback = TerminalProgress()
        elif progress is False:
            callback = None
        try:
            report = built.run(ids, int(threads), int(max_retries), float(timeout), callback,
                               max(1, int(progress_interval * 1000)))
        finally:
            if display is not None:
                display.close()
        return RunReport(report)


def load(path, cache=_DEFAULT):
    """Loads a JSON graph file: ``cellflow.load("pipeline.json")``."""
    return Graph.load(path, cache=cache)


class RunReport(dict):
    """What run() did: ``report["nodes"][id]`` has cells_total, cells_computed,
    cells_loaded, cells_corrupt, retries, seconds, complete and hash;
    ``report["wall_seconds"]``."""

    @property
    def nodes(self):
        return self["nodes"]

    @property
    def wall_seconds(self):
        return self["wall_seconds"]

    def computed(self, id):
        return self["nodes"][id]["cells_computed"] if id in self["nodes"] else 0


def _normalize_key(key, shape):
    """numpy basic indexing -> (begin, end) of the region to read and the index
    to apply to it (None: the region as it is)."""
    ndim = len(shape)
    if type(key) is tuple and len(key) == ndim and all(
            type(k) is slice and k.step is None for k in key):
        # The common case, kept cheap: a box.
        begin, end = [], []
        for k, n in zip(key, shape):
            b, e, _ = k.indices(n)
            begin.append(b)
            end.append(max(b, e))
        return begin, end, None
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    if len(key) > ndim:
        raise IndexError(f"too many indices: node is {ndim}-dimensional, {len(key)} were indexed")
    key = key + (slice(None),) * (ndim - len(key))
    begin, end, local = [], [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            k = int(k)
            if k < 0:
                k += n
            if not 0 <= k < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            begin.append(k)
            end.append(k + 1)
            local.append(0)
        elif isinstance(k, slice):
            r = range(*k.indices(n))
            if len(r) == 0:
                begin.append(0)
                end.append(0)
                local.append(slice(None))
                continue
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            begin.append(lo)
            end.append(hi)
            if r.step == 1:
                local.append(slice(None))
            else:
                stop = r[-1] - lo + (1 if r.step > 0 else -1)
                local.append(slice(r[0] - lo, stop if stop >= 0 else None, r.step))
        else:
            raise TypeError(
                "cellflow nodes take integers, slices and '...' as indices (basic indexing); "
                f"got {type(k).__name__}: read a region first, then index the numpy array")
    return begin, end, tuple(local)


class _CellReader:
    """A Dask task function: one cell of a built node, as a read-only array
    sharing the cached buffer."""

    def __init__(self, built, id):
        self.built = built
        self.id = id

    def __call__(self, index):
        return self.built.cell(self.id, index)


class Node:
    """A node of a graph as a lazy N-D array (or a table).

    ``shape``, ``dtype``, ``chunks`` (the cells, Dask style) describe it without
    computing anything; indexing computes only the cells the region touches.
    """

    def __init__(self, graph, id):
        self.graph = graph
        self.id = id
        self._cached = (None, None)

    def _info(self):
        built = self.graph._build()
        if self._cached[0] is not built:
            self._cached = (built, built.info(self.id))
        return self._cached[1]

    @property
    def hash(self):
        return self._info()["hash"]

    @property
    def op(self):
        return self._info()["op"]

    @property
    def path(self):
        """The node's folder in the cache (None for a memory-only graph)."""
        return self._info()["path"]

    @property
    def definition(self):
        """What the node's .zattrs["cellflow"] stores."""
        return self._info()["definition"]

    @property
    def is_table(self):
        return self._info()["table"]

    @property
    def shape(self):
        return tuple(self._info()["shape"])

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def dtype(self):
        return np.dtype(_NUMPY[self._info()["dtype"]])

    @property
    def cell_shape(self):
        return tuple(self._info()["cell_shape"])

    @property
    def spacing(self):
        """Physical size of a voxel per axis (1.0 where the source says nothing)."""
        return tuple(self._info()["spacing"])

    @property
    def origin(self):
        """Physical position of the first voxel's centre per axis."""
        return tuple(self._info()["origin"])

    @property
    def units(self):
        """Unit of spacing and origin per axis ("" when unknown)."""
        return tuple(self._info()["units"])

    @property
    def axis_names(self):
        return tuple(self._info()["axis_names"])

    @property
    def is_labels(self):
        """Whether the voxels are object labels (exported as OME-NGFF labels)."""
        return self._info()["labels"]

    @property
    def chunks(self):
        """Per axis, the sizes of the cells along it (edge cells are smaller)."""
        out = []
        for n, c in zip(self.shape, self.cell_shape):
            out.append(tuple(min(c, n - s) for s in range(0, n, c)))
        return tuple(out)

    @property
    def num_cells(self):
        return tuple(len(c) for c in self.chunks)

    def __repr__(self):
        i = self._info()
        if i["table"]:
            return f"<cellflow.Node {self.id!r} op={i['op']} table>"
        return (f"<cellflow.Node {self.id!r} op={i['op']} shape={tuple(i['shape'])} "
                f"dtype={i['dtype']} cells={tuple(i['cell_shape'])}>")

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        info = self._info()
        a = self._cached[0].getitem(self.id, key)  # a box: handled in C++
        if a is not None:
            return a
        begin, end, local = _normalize_key(key, info["shape"])
        a = self._cached[0].read(self.id, begin, end)
        if local is None or all(isinstance(k, slice) and k == slice(None) for k in local):
            return a
        return a[local]

    def read(self, begin, end):
        """The region [begin, end) as a new numpy array."""
        return self.graph._build().read(self.id, list(begin), list(end))

    def __array__(self, dtype=None):
        a = self.graph._build().read(self.id, [0] * self.ndim, list(self.shape))
        return a if dtype is None else a.astype(dtype, copy=False)

    def to_numpy(self):
        return np.asarray(self)

    def cell(self, index):
        """Cell ``index`` (a tuple) as a read-only array sharing the cached buffer."""
        return self.graph._build().cell(self.id, list(index))

    def stats(self):
        """Counters of this process: cells computed, loaded from the cache, served
        from memory, found corrupt."""
        return self.graph._build().stats(self.id)

    def run(self, **kwargs):
        """Computes every cell of this node (Graph.run(outputs=[self])."""
        return self.graph.run([self.id], **kwargs)

    def to_dask(self):
        """A Dask array whose chunks are the node's cells; each chunk is read
        through the cell cache (memory, then disk, else computed)."""
        import dask.array as da

        built = self.graph._build()
        info = built.info(self.id)
        if info["table"]:
            raise TypeError(f"node {self.id!r} is a table: use .table() or .to_pandas()")
        name = f"cellflow-{info['hash']}"
        reader = _CellReader(built, self.id)
        chunks = self.chunks
        dsk = {(name,) + idx: (reader, idx) for idx in np.ndindex(*[len(c) for c in chunks])}
        return da.Array(dsk, name, chunks, dtype=self.dtype)

    def table(self):
        """A table node's rows as a numpy structured array (one float64 field
        per column)."""
        columns, values = self.graph._build().table(self.id)
        out = np.zeros(values.shape[0], dtype=[(c, "f8") for c in columns])
        for i, c in enumerate(columns):
            out[c] = values[:, i]
        return out

    def to_pandas(self):
        """A table node as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        columns, values = self.graph._build().table(self.id)
        return pd.DataFrame(values, columns=list(columns))


_NUMPY = {"u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64", "i8": "int8",
          "i16": "int16", "i32": "int32", "i64": "int64", "f32": "float32", "f64": "float64"}
