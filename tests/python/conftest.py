"""Shared fixtures of the Python suite: the built `cellflow` program (the
reference the package is checked against), fresh cache folders, and importable
modules written on the fly (for Python ops whose source a test edits)."""

import importlib
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

import cellflow

CLI = os.environ.get("CELLFLOW_CLI", "cellflow")


def run_cli(*args, check=True, env=None, timeout=120):
    """Runs the cellflow program; returns the CompletedProcess (text)."""
    p = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"cellflow {' '.join(map(str, args))} failed ({p.returncode}):\n"
                             f"{p.stdout}\n{p.stderr}")
    return p


def cli_hashes(graph_file, env=None):
    out = run_cli("graph", graph_file, "--hashes", env=env).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


class ModuleWriter:
    """Writes Python source files into a folder on sys.path and imports them
    under fresh module names (so that inspect.getsource sees each version)."""

    def __init__(self, folder):
        self.folder = folder
        folder.mkdir(exist_ok=True)
        sys.path.insert(0, str(folder))

    def write(self, source, name=None):
        name = name or "mod_" + uuid.uuid4().hex[:12]
        (self.folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    def close(self):
        sys.path.remove(str(self.folder))


@pytest.fixture
def modules(tmp_path):
    w = ModuleWriter(tmp_path / "mods")
    yield w
    w.close()


def blobs_graph(cache, shape=(64, 64, 64), cell=(32, 32, 32), name="g", seed=1):
    g = cellflow.Graph(name, cache=cache)
    g.add("raw", "synthetic.blobs", shape=list(shape), cell_shape=list(cell), dtype="f32",
          seed=seed)
    return g
