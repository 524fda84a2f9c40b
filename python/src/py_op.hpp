// PyOp: an op whose cells are computed by a Python function (the
// @cellflow.op decorator builds one). Binding calls back into Python once per
// node to infer the output and halo; compute() takes the GIL only around the
// call of the function for one cell, so C++ ops of the same graph keep
// running on the other TBB threads meanwhile. Thread-safety: like every Op,
// bind() and compute() may be called concurrently.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "cellflow/graph/op.hpp"

namespace cellflow::python {

namespace py = pybind11;

/// A py::object that may be destroyed on any thread, with or without the GIL,
/// and after the interpreter has finalized (then it is leaked on purpose:
/// node images can outlive Python in process-wide tables).
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(py::object o) : obj_(std::move(o)) {}
  ~PyRef();
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  const py::object& get() const { return obj_; }

 private:
  py::object obj_;
};

/// The description a Python op is built from (python/cellflow/_ops.py).
struct PyOpSpec {
  std::string name;
  int version = 1;
  std::string doc;
  std::vector<ParamSpec> params;
  int min_inputs = 1;
  int max_inputs = 1;
  int max_retries = -1;
  double timeout_seconds = -1;
  /// bind(params: dict, inputs: list[dict(dtype, shape, cell_shape)]) ->
  /// dict(dtype, shape, cell_shape, halo: list per input of (before, after)
  /// per axis, identity: str, compute: callable(arrays, in_boxes, out_box, out),
  /// and optionally region: callable(input, (begin, end)) -> (begin, end), the
  /// input region of an output box for ops that change the grid; it replaces
  /// the halo and is called with the GIL taken, from any thread).
  py::object bind;
};

class PyOp : public Op {
 public:
  explicit PyOp(PyOpSpec spec);
  std::string_view name() const override { return name_; }
  int version() const override { return version_; }
  std::string_view doc() const override { return doc_; }
  std::vector<ParamSpec> params() const override { return params_; }
  int min_inputs() const override { return min_inputs_; }
  int max_inputs() const override { return max_inputs_; }
  int max_retries() const override { return max_retries_; }
  double timeout_seconds() const override { return timeout_; }
  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override;

 private:
  std::string name_;
  int version_;
  std::string doc_;
  std::vector<ParamSpec> params_;
  int min_inputs_;
  int max_inputs_;
  int max_retries_;
  double timeout_;
  std::shared_ptr<PyRef> bind_;
};

/// "float", "int[]", ... (param_type_name) -> ParamType; InvalidArgument otherwise.
ParamType parse_param_type(const std::string& name);

/// The formatted Python traceback of `e` (call with the GIL held).
std::string format_python_error(py::error_already_set& e);

}  // namespace cellflow::python
