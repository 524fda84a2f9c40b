#include "py_op.hpp"

#include <fmt/format.h>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/cancel.hpp"
#include "common.hpp"

namespace cellflow::python {

PyRef::~PyRef() {
  if (!obj_) return;
  if (Py_IsInitialized() != 0 && _Py_IsFinalizing() == 0) {
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  } else {
    obj_.release();  // the interpreter is gone: leak rather than crash
  }
}

ParamType parse_param_type(const std::string& name) {
  for (ParamType t : {ParamType::kBool, ParamType::kInt, ParamType::kFloat, ParamType::kString,
                      ParamType::kDType, ParamType::kIntList, ParamType::kFloatList,
                      ParamType::kFloatOrList, ParamType::kIntOrList}) {
    if (param_type_name(t) == name) return t;
  }
  throw InvalidArgument(
      fmt::format("unknown param type \"{}\" (use bool, int, float, string, dtype, int[], float[], "
                  "float|float[], int|int[])",
                  name));
}

std::string format_python_error(py::error_already_set& e) {
  try {
    py::object tb = py::module_::import("traceback");
    py::list lines = tb.attr("format_exception")(e.type(), e.value(), e.trace());
    std::string text;
    for (auto l : lines) text += l.cast<std::string>();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  } catch (const py::error_already_set&) {
    return e.what();
  }
}

namespace {

class PyKernel : public NodeKernel {
 public:
  PyKernel(ImageInfo out, std::string op, std::vector<Dims> before, std::vector<Dims> after,
           std::string identity, py::object compute, py::object region)
      : NodeKernel(std::move(out)),
        op_(std::move(op)),
        before_(std::move(before)),
        after_(std::move(after)),
        identity_(std::move(identity)),
        compute_(std::make_shared<PyRef>(std::move(compute))),
        region_(region.is_none() ? nullptr : std::make_shared<PyRef>(std::move(region))) {}

  Box input_region(size_t input, const Box& out_box, const ImageInfo& info) const override {
    const Box extent = Box::from_shape(info.shape);
    if (!region_) return out_box.grow(before_[input], after_[input]).intersect(extent);
    // A region rule (ops that change the grid): region(input, (begin, end)) -> (begin, end).
    py::gil_scoped_acquire gil;
    try {
      py::tuple r = region_->get()(
          input, py::make_tuple(dims_tuple(out_box.begin()), dims_tuple(out_box.end())));
      const Box box(dims_from(r[0], "region"), dims_from(r[1], "region"));
      if (box.rank() != extent.rank())
        throw NodeError(
            fmt::format("Python op \"{}\": region rule returned rank {} for a rank-{} input", op_,
                        box.rank(), extent.rank()));
      return box.intersect(extent);
    } catch (py::error_already_set& e) {
      throw NodeError(
          fmt::format("Python op \"{}\": region rule raised:\n{}", op_, format_python_error(e)));
    }
  }

  std::string identity() const override { return identity_; }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (interrupt_requested().load()) throw Cancelled("interrupted (KeyboardInterrupt)");
    check_cancelled();
    py::gil_scoped_acquire gil;
    try {
      py::list arrays;
      py::list boxes;
      for (const InputRegion& in : inputs) {
        arrays.append(view_of(in.data));
        boxes.append(py::make_tuple(dims_tuple(in.box.begin()), dims_tuple(in.box.end())));
      }
      py::array out_view = writable_view_of(out);
      compute_->get()(arrays, boxes,
                      py::make_tuple(dims_tuple(out_box.begin()), dims_tuple(out_box.end())),
                      out_view);
    } catch (py::error_already_set& e) {
      throw NodeError(fmt::format("Python op \"{}\" raised:\n{}", op_, format_python_error(e)));
    }
  }

 private:
  std::string op_;
  std::vector<Dims> before_;
  std::vector<Dims> after_;
  std::string identity_;
  std::shared_ptr<PyRef> compute_;
  std::shared_ptr<PyRef> region_;  // null: the halo rule
};

}  // namespace

PyOp::PyOp(PyOpSpec spec)
    : name_(std::move(spec.name)),
      version_(spec.version),
      doc_(std::move(spec.doc)),
      params_(std::move(spec.params)),
      min_inputs_(spec.min_inputs),
      max_inputs_(spec.max_inputs),
      max_retries_(spec.max_retries),
      timeout_(spec.timeout_seconds),
      bind_(std::make_shared<PyRef>(std::move(spec.bind))) {}

std::unique_ptr<NodeKernel> PyOp::bind(const Params& params,
                                       std::span<const ImageInfo> inputs) const {
  py::gil_scoped_acquire gil;
  try {
    py::list infos;
    for (const ImageInfo& in : inputs) {
      py::dict d;
      d["dtype"] = std::string(dtype_name(in.dtype));
      d["shape"] = dims_tuple(in.shape);
      d["cell_shape"] = dims_tuple(in.cell_shape);
      d["table"] = in.kind == OutputKind::kTable;
      infos.append(d);
    }
    py::dict r = bind_->get()(from_value(params.value()), infos);
    ImageInfo out;
    out.dtype = dtype_from_object(r["dtype"]);
    out.shape = dims_from(r["shape"], "shape");
    out.cell_shape = dims_from(r["cell_shape"], "cell_shape");
    std::vector<Dims> before;
    std::vector<Dims> after;
    for (auto h : r["halo"]) {
      auto pair = h.cast<py::tuple>();
      before.push_back(dims_from(pair[0], "halo"));
      after.push_back(dims_from(pair[1], "halo"));
    }
    if (before.size() != inputs.size())
      throw InvalidArgument(fmt::format("Python op \"{}\": bind returned {} halos for {} inputs",
                                        name_, before.size(), inputs.size()));
    return std::make_unique<PyKernel>(
        std::move(out), name_, std::move(before), std::move(after),
        r["identity"].cast<std::string>(), py::reinterpret_borrow<py::object>(r["compute"]),
        r.contains("region") ? py::reinterpret_borrow<py::object>(r["region"])
                             : py::object(py::none()));
  } catch (py::error_already_set& e) {
    // Validation errors raised by the Python side keep their message.
    if (e.matches(PyExc_ValueError) || e.matches(PyExc_TypeError))
      throw InvalidArgument(py::str(e.value()).cast<std::string>());
    throw InvalidArgument(
        fmt::format("Python op \"{}\": binding failed:\n{}", name_, format_python_error(e)));
  }
}

}  // namespace cellflow::python
