"""Python functions as cellflow ops (the @cellflow.op decorator)."""

import hashlib
import inspect
import threading

import numpy as np

from . import _cellflow

_lock = threading.Lock()
_registry = {}  # name -> PythonOp (the latest definition wins)
_gen = [0]


def _generation():
    return _gen[0]


def python_ops():
    """{name: PythonOp} of the Python ops defined in this process."""
    with _lock:
        return dict(_registry)


class Param:
    """A declared param of a Python op: ``type`` is one of bool, int, float,
    string, dtype, int[], float[], float|float[], int|int[] (as ``cellflow ops``
    prints them)."""

    def __init__(self, type, default=None, doc="", required=False):
        self.type = type
        self.default = default
        self.doc = doc
        self.required = required


def _infer_type(name, value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            return "int[]"
        return "float[]"
    raise TypeError(f"param {name!r}: cannot infer its type from default {value!r}; "
                    "declare it with cellflow.Param(type, default)")


def _source_identity(fn):
    try:
        src = inspect.getsource(fn)
        kind = "source"
    except (OSError, TypeError):
        # No source file (an interactive definition): fall back to the code.
        import marshal

        src = marshal.dumps(fn.__code__)
        kind = "code"
    if isinstance(src, str):
        src = src.encode()
    return f"python {kind} sha256:{hashlib.sha256(src).hexdigest()[:32]}"


def _call_with(fn, params, *args):
    """fn(*args, **the params it names) (all of them if it takes **kwargs)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(*args, **params)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return fn(*args, **params)
    return fn(*args, **{k: v for k, v in params.items() if k in sig.parameters})


def _per_axis(value, rank, what):
    if isinstance(value, (int, np.integer)):
        return [int(value)] * rank
    v = [int(x) for x in value]
    if len(v) != rank:
        raise ValueError(f"{what}: {len(v)} values for a rank-{rank} image")
    return v


class PythonOp:
    """An op computed by a Python function; made by @cellflow.op. Calling it
    calls the function itself."""

    def __init__(self, fn, name, version, params, dtype, output, halo, inputs, doc,
                 max_retries, timeout, region=None):
        self.fn = fn
        self.name = name
        self.version = int(version)
        self.halo = halo
        self.region = region
        if region is not None and halo != 0:
            raise ValueError(f"Python op {name!r}: give either halo or region, not both")
        self.dtype = dtype
        self.output = output
        self.identity = _source_identity(fn)
        sig = inspect.signature(fn)
        self._wants_box = "box" in sig.parameters
        if isinstance(inputs, int):
            lo = hi = inputs
        else:
            lo, hi = inputs
        self.min_inputs, self.max_inputs = lo, hi
        specs = []
        for pname, p in (params or {}).items():
            if not isinstance(p, Param):
                p = Param(_infer_type(pname, p), p)
            if isinstance(p.default, tuple):
                p.default = list(p.default)
            specs.append({"name": pname, "type": p.type, "default": p.default, "doc": p.doc,
                          "required": p.required})
        self.params = specs
        self._handle = _cellflow.make_py_op({
            "name": name, "version": self.version, "doc": doc or (fn.__doc__ or "").strip(),
            "params": specs, "min_inputs": lo, "max_inputs": hi,
            "max_retries": int(max_retries), "timeout": float(timeout),
            "bind": self._bind,
        })
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"<cellflow.PythonOp {self.name!r} version {self.version}>"

    # Called by the C++ PyOp when a graph using the op is built.
    def _bind(self, params, infos):
        name = self.name
        for i, info in enumerate(infos):
            if info["table"]:
                raise ValueError(f"Python op {name!r}: input {i} is a table; Python ops take images")
        if infos:
            first = infos[0]
            for i, info in enumerate(infos[1:] if self.region is None else [], 1):
                if tuple(info["shape"]) != tuple(first["shape"]):
                    raise ValueError(
                        f"Python op {name!r}: input {i} has shape {tuple(info['shape'])}, "
                        f"input 0 has {tuple(first['shape'])} (inputs must have one shape)")
            out = {"dtype": first["dtype"], "shape": tuple(first["shape"]),
                   "cell_shape": tuple(first["cell_shape"])}
        else:
            out = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype if isinstance(self.dtype, str) else np.dtype(self.dtype).name
        if self.output is not None:
            out.update(_call_with(self.output, params, infos) if infos
                       else _call_with(self.output, params))
        for key in ("dtype", "shape", "cell_shape"):
            if key not in out:
                raise ValueError(f"Python op {name!r} has no inputs: its output rule must give "
                                 f"dtype, shape and cell_shape (missing {key})")
        if not isinstance(out["dtype"], str):
            out["dtype"] = np.dtype(out["dtype"]).name
        if (self.region is None and infos
                and tuple(out["shape"]) != tuple(infos[0]["shape"])):
            raise ValueError(f"Python op {name!r}: output shape {tuple(out['shape'])} differs "
                             f"from its input's {tuple(infos[0]['shape'])}: an op that changes "
                             "the grid needs a region rule (region=)")
        rank = len(out["shape"])
        if self.region is None:
            halo = _call_with(self.halo, params) if callable(self.halo) else self.halo
            h = _per_axis(halo, rank, f"Python op {name!r}: halo")
            if any(x < 0 for x in h):
                raise ValueError(f"Python op {name!r}: halo must be >= 0 (got {h})")
            out["halo"] = [(h, h) for _ in infos]
        else:
            out["halo"] = [([0] * len(i["shape"]), [0] * len(i["shape"])) for i in infos]
            out["region"] = self._make_region(dict(params))
        out["identity"] = self.identity
        out["compute"] = self._make_compute(dict(params), np.dtype(_np_name(out["dtype"])))
        return out

    def _make_region(self, params):
        rule = self.region
        wants_input = "input" in inspect.signature(rule).parameters

        def region(input, out_box):
            box = tuple(slice(b, e) for b, e in zip(*out_box))
            kwargs = dict(params, input=input) if wants_input else params
            r = _call_with(rule, kwargs, box)
            return ([s.start for s in r], [s.stop for s in r])

        return region

    def _make_compute(self, params, out_dtype):
        fn = self.fn
        name = self.name
        wants_box = self._wants_box
        may_crop = self.region is None

        def compute(arrays, in_boxes, out_box, out):
            kwargs = params
            if wants_box:
                kwargs = dict(params)
                kwargs["box"] = tuple(slice(b, e) for b, e in zip(*out_box))
            r = np.asarray(fn(*arrays, **kwargs))
            if r.shape != out.shape:
                if may_crop and arrays and r.shape == arrays[0].shape:
                    origin = in_boxes[0][0]
                    r = r[tuple(slice(b - o, e - o)
                                for b, e, o in zip(out_box[0], out_box[1], origin))]
                else:
                    want = f"{out.shape} (the cell)"
                    if arrays and may_crop:
                        want += f" or {arrays[0].shape} (the cell with its halo)"
                    raise ValueError(
                        f"Python op {name!r} returned an array of shape {r.shape}; expected {want}")
            out[...] = r

        return compute


_NP = {"u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64", "i8": "int8",
       "i16": "int16", "i32": "int32", "i64": "int64", "f32": "float32", "f64": "float64"}


def _np_name(d):
    return _NP.get(d, d)


def op(name=None, *, version=1, params=None, dtype=None, output=None, halo=0, inputs=1,
       doc=None, max_retries=-1, timeout=-1.0, region=None):
    """Turns ``fn(*input_arrays, **params) -> array`` into a cellflow op.

    name: the op's name in graphs (default: the function's name).
    version: bump it when the output changes for the same source code.
    params: {name: default} (type inferred) or {name: cellflow.Param(...)}.
    dtype: the output element type (default: the first input's).
    output: overrides the output's dtype, shape or cells (sources must give
        all three; a new shape needs ``region``):
        ``output(infos, **params) -> dict(dtype=, shape=, cell_shape=)``
        (``output(**params)`` for sources; it gets the params it names).
    halo: context per side in voxels (an int, one per axis, or a function of
        the params it names): each call gets the cell grown by it (clipped at the image
        border) and returns either that region's result or the cell's.
    region: for ops whose output grid differs from their input's (set its
        shape and cells with ``output``): ``region(box, **params)`` returns the
        input region (a tuple of slices) an output box (a tuple of slices)
        needs, clipped to the input afterwards; with a parameter named
        ``input`` it also gets the input's index. It replaces ``halo``; the
        function must then return exactly the cell.
    inputs: the number of inputs, or (min, max).
    max_retries / timeout: the op's own failure policy (-1: the run's).

    The function is called once per cell, on cellflow's threads, holding the
    GIL only for the call. If it has a parameter named ``box`` it receives the
    cell's region as a tuple of slices. Its identity in node hashes is its
    name, version and source code: editing it recomputes its nodes and their
    descendants only.
    """

    def wrap(fn):
        o = PythonOp(fn, name or fn.__name__, version, params, dtype, output, halo, inputs,
                     doc, max_retries, timeout, region)
        for builtin in _cellflow.builtin_ops():
            if builtin["name"] == o.name:
                raise _cellflow.InvalidArgument(
                    f"Python op {o.name!r}: the name is taken by a built-in or plugin op")
        with _lock:
            _registry[o.name] = o
            _gen[0] += 1
        return o

    if callable(name) and not isinstance(name, str):
        fn, name = name, None
        return wrap(fn)
    return wrap
