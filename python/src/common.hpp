// Shared helpers of the cellflow Python module (_cellflow): conversions
// between cellflow values and Python objects, numpy views of cell buffers,
// and running C++ work with the GIL released while Ctrl-C stays responsive.
// Thread-safety: functions taking or returning py::object need the GIL;
// run_released() must be called with the GIL held and releases it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <functional>
#include <string>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/graph/value.hpp"

namespace cellflow::python {

namespace py = pybind11;

/// numpy dtype of a cellflow DType, and back (TypeError if numpy's has no twin).
py::dtype numpy_dtype(DType t);
DType dtype_from_numpy(const py::dtype& d);
/// A DType from "f32", "float32", np.float32 or np.dtype; TypeError otherwise.
DType dtype_from_object(const py::handle& o);

/// Python object (None, bool, int, float, str, list/tuple, dict, numpy
/// scalars) -> Value, and back. TypeError naming `what` for anything else.
Value to_value(const py::handle& o, const std::string& what = "value");
py::object from_value(const Value& v);

Dims dims_from(const py::handle& seq, const std::string& what);
py::tuple dims_tuple(const Dims& d);

/// A read-only numpy view of `buffer` that keeps it alive (no copy).
py::array view_of(const CellBuffer& buffer);
/// A writable numpy array owning `buffer` (which nobody else may hold): the
/// memory goes back to cellflow's buffer pool when the array is freed, so
/// repeated reads reuse warm pages instead of faulting in fresh ones.
py::array owning_array(CellBuffer buffer);
/// A writable numpy view of `buffer`; the caller keeps `buffer` alive while
/// the view is used (compute() writes the output cell through it).
py::array writable_view_of(CellBuffer& buffer);

/// Set while a Ctrl-C is being handled: Python ops and blockwise process
/// functions throw Cancelled instead of starting new Python work.
std::atomic<bool>& interrupt_requested();

/// Runs `work` on a separate thread with the GIL released; meanwhile this
/// (the calling, usually main) thread wakes every `poll_ms`, takes the GIL,
/// runs pending signal handlers (PyErr_CheckSignals) and `on_tick`. On a
/// signal handler's exception (KeyboardInterrupt) it calls `on_interrupt`,
/// sets interrupt_requested(), waits for `work` to end and rethrows the
/// Python exception; otherwise it rethrows whatever `work` threw.
/// REQUIRES: the GIL is held.
void run_released(const std::function<void()>& work, const std::function<void()>& on_interrupt,
                  const std::function<void()>& on_tick = {}, int poll_ms = 100);

}  // namespace cellflow::python
