// The cellflow plugin that lets the `cellflow` program (run, graph, export,
// replay, worker) use Python ops: loaded like any plugin (--plugin or
// $CELLFLOW_PLUGIN_PATH), it starts an embedded Python interpreter, imports
// the cellflow package and the modules named by $CELLFLOW_PYTHON_MODULES
// (comma-separated; importing them runs their @cellflow.op decorators), and
// registers every Python op they define. Inside a Python process it refuses
// to load (PluginError): there, importing the module is all it takes. Thread-safety: the host
// calls the entry point once, from one thread; afterwards the GIL is free and
// Python ops take it per cell.
#include <dlfcn.h>
#include <fmt/format.h>
#include <pybind11/embed.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/plugins/plugin.hpp"

namespace py = pybind11;

namespace {

std::vector<std::string> module_names() {
  std::vector<std::string> names;
  const char* env = std::getenv("CELLFLOW_PYTHON_MODULES");
  if (env == nullptr) return names;
  std::string cur;
  for (const char* p = env;; ++p) {
    if (*p == ',' || *p == ':' || *p == '\0') {
      if (!cur.empty()) names.push_back(cur);
      cur.clear();
      if (*p == '\0') break;
    } else if (*p != ' ') {
      cur += *p;
    }
  }
  return names;
}

void register_python_ops(cellflow::Registry& registry) {
  if (Py_IsInitialized() != 0) {
    throw cellflow::PluginError(
        "inside a Python process Python ops need no plugin: import the module that defines "
        "them");
  }
  // The loader opened this plugin RTLD_LOCAL, and libpython with it; Python's
  // C extensions (numpy, scipy) expect its symbols in the global scope.
  if (dlopen(CELLFLOW_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) == nullptr &&
      dlopen(CELLFLOW_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    throw cellflow::PluginError(
        fmt::format("cannot load {} globally: {}", CELLFLOW_LIBPYTHON, dlerror()));
  }
  // No Python signal handlers: Ctrl-C keeps the program's own behaviour.
  Py_InitializeEx(0);
  std::string error;
  std::vector<std::shared_ptr<const cellflow::Op>> ops;
  try {
    py::module_ cellflow = py::module_::import("cellflow");
    for (const std::string& name : module_names()) py::module_::import(name.c_str());
    py::dict defined = cellflow.attr("python_ops")();
    py::object to_capsule = cellflow.attr("_cellflow").attr("_op_capsule");
    for (auto item : defined) {
      py::capsule c = to_capsule(item.second.attr("_handle"));
      ops.push_back(*static_cast<std::shared_ptr<const cellflow::Op>*>(
          PyCapsule_GetPointer(c.ptr(), "cellflow.Op")));
    }
  } catch (py::error_already_set& e) {
    error = e.what();
  }
  // From here on the GIL is taken per call (PyGILState), by any thread.
  PyEval_SaveThread();
  if (!error.empty()) {
    throw cellflow::PluginError(
        fmt::format("Python ops: importing cellflow and $CELLFLOW_PYTHON_MODULES failed "
                    "(is PYTHONPATH set?): {}",
                    error));
  }
  if (ops.empty()) {
    throw cellflow::PluginError(
        "no Python ops defined: set CELLFLOW_PYTHON_MODULES to the modules that define them "
        "(comma-separated, importable from PYTHONPATH)");
  }
  for (auto& op : ops) registry.add(std::move(op));
}

}  // namespace

CELLFLOW_PLUGIN(register_python_ops)
