"""cellflow from Python: lazily evaluated, cached, cell-wise N-D image pipelines.

A thin layer over the C++ library (the compiled module ``cellflow._cellflow``):

* :class:`Graph` builds, loads, saves, validates and runs pipelines (the same
  JSON graphs and node hashes as the ``cellflow`` program);
* a :class:`Node` is a lazy array: ``node[10:20, :, 5]`` computes only the
  cells it touches and returns numpy; ``node.to_dask()`` is a Dask array whose
  chunks are the cells;
* :func:`op` turns a Python function of numpy arrays into an op;
* :func:`run_blockwise` runs daisy-style blockwise tasks on the C++ engine.
"""

from . import _cellflow
from ._cellflow import (
    Cancelled,
    CorruptionError,
    Error,
    GraphError,
    InvalidArgument,
    IoError,
    NodeError,
    PluginError,
    check_cancelled,
)
from ._blockwise import Block, BlockwiseReport, Roi, Task, run_blockwise
from ._graph import Graph, Node, RunReport, load
from ._ops import Param, PythonOp, op, python_ops
from ._progress import TerminalProgress

__version__ = "0.1.0"

__all__ = [
    "Block", "BlockwiseReport", "Cancelled", "CorruptionError", "Error", "Graph",
    "GraphError", "InvalidArgument", "IoError", "Node", "NodeError", "Param",
    "PluginError", "PythonOp", "Roi", "RunReport", "Task", "TerminalProgress",
    "check_cancelled", "load", "load_plugin", "op", "ops", "python_ops",
    "run_blockwise", "set_memory", "memory_budget", "clear_memory",
]


def ops():
    """Every op a graph can use: built-ins, loaded plugins and Python ops.

    A list of dicts (name, version, doc, min_inputs, max_inputs (-1: no
    limit), params: list of dicts name, type, default, doc, required), sorted
    by name, like ``cellflow ops --json``.
    """
    listed = list(_cellflow.builtin_ops())
    listed += [o._handle.describe() for o in python_ops().values()]
    return sorted(listed, key=lambda d: d["name"])


def load_plugin(path):
    """Loads a plugin library (as ``cellflow --plugin``); returns its op names.

    Raises PluginError (missing file, ABI mismatch, an op name already taken...).
    Loading the same file again is a no-op.
    """
    import os

    _, names = _cellflow.load_plugin(os.fspath(path))
    return list(names)


def load_plugins_from_env():
    """Loads the plugins of $CELLFLOW_PLUGIN_PATH (as the ``cellflow`` program
    does at start); returns the op names they registered."""
    names = []
    for _, ops_ in _cellflow.load_plugins_from_env():
        names += list(ops_)
    return names


def set_memory(size):
    """Sets the process-wide in-memory cell cache budget: bytes, or "512M", "2G"
    (the CLI's --memory)."""
    _cellflow.set_memory_budget(size)


def memory_budget():
    """The in-memory cell cache budget in bytes."""
    return _cellflow.memory_budget()


def clear_memory():
    """Drops every cell held in memory that nobody holds (cells persisted in the
    cache are read back from disk when needed again)."""
    _cellflow.clear_memory()
