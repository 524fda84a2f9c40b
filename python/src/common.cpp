#include "common.hpp"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "cellflow/cache/error.hpp"

namespace cellflow::python {

py::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::kU8:
      return py::dtype::of<uint8_t>();
    case DType::kU16:
      return py::dtype::of<uint16_t>();
    case DType::kU32:
      return py::dtype::of<uint32_t>();
    case DType::kU64:
      return py::dtype::of<uint64_t>();
    case DType::kI8:
      return py::dtype::of<int8_t>();
    case DType::kI16:
      return py::dtype::of<int16_t>();
    case DType::kI32:
      return py::dtype::of<int32_t>();
    case DType::kI64:
      return py::dtype::of<int64_t>();
    case DType::kF32:
      return py::dtype::of<float>();
    case DType::kF64:
      return py::dtype::of<double>();
  }
  throw py::type_error("unknown cellflow dtype");
}

DType dtype_from_numpy(const py::dtype& d) {
  const auto fail = [&] {
    return py::type_error("cellflow has no element type for numpy dtype " +
                          py::str(py::handle(d)).cast<std::string>() +
                          " (supported: u8 u16 u32 u64 i8 i16 i32 i64 f32 f64)");
  };
  if (d.kind() == 'b') return DType::kU8;  // numpy bool: one byte, 0 or 1
  // numpy's dtype.str is the Zarr v2 spelling ("<u2", "|u1"); a big-endian
  // array has none (cellflow's buffers are native, little-endian here).
  if (const auto t = parse_zarr_dtype(d.attr("str").cast<std::string>())) return *t;
  throw fail();
}

DType dtype_from_object(const py::handle& o) {
  if (py::isinstance<py::str>(o)) {
    const auto name = o.cast<std::string>();
    if (auto t = parse_dtype(name)) return *t;
  }
  try {
    return dtype_from_numpy(py::dtype::from_args(py::reinterpret_borrow<py::object>(o)));
  } catch (const py::error_already_set&) {
    throw py::type_error("not a dtype: " + py::repr(o).cast<std::string>() +
                         " (use \"u8\" .. \"f64\" or a numpy dtype)");
  }
}

Value to_value(const py::handle& o, const std::string& what) {
  if (o.is_none()) return Value();
  if (py::isinstance<py::bool_>(o)) return Value(o.cast<bool>());
  if (py::isinstance<py::int_>(o)) return Value(o.cast<int64_t>());
  if (py::isinstance<py::float_>(o)) return Value(o.cast<double>());
  if (py::isinstance<py::str>(o)) return Value(o.cast<std::string>());
  if (py::isinstance<py::dict>(o)) {
    Value v = Value::object();
    for (auto item : o.cast<py::dict>()) {
      if (!py::isinstance<py::str>(item.first))
        throw py::type_error(what + ": dict keys must be strings");
      const auto key = item.first.cast<std::string>();
      v.set(key, to_value(item.second, what + "." + key));
    }
    return v;
  }
  if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o)) {
    Value v = Value::array();
    for (auto item : o) v.as_array().push_back(to_value(item, what));
    return v;
  }
  if (py::isinstance<py::array>(o)) return to_value(o.attr("tolist")(), what);
  // numpy scalars (np.int64, np.float32, np.bool_) and the like.
  if (py::hasattr(o, "item") && py::hasattr(o, "dtype")) return to_value(o.attr("item")(), what);
  if (py::hasattr(o, "__fspath__"))
    return Value(py::str(o.attr("__fspath__")()).cast<std::string>());
  throw py::type_error(what + ": cannot be stored in a graph: " + py::repr(o).cast<std::string>() +
                       " (use None, bool, int, float, str, lists and dicts)");
}

py::object from_value(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNull:
      return py::none();
    case Value::Kind::kBool:
      return py::bool_(v.as_bool());
    case Value::Kind::kInt:
      return py::int_(v.as_int());
    case Value::Kind::kFloat:
      return py::float_(v.as_double());
    case Value::Kind::kString:
      return py::str(v.as_string());
    case Value::Kind::kArray: {
      py::list l;
      for (const Value& x : v.as_array()) l.append(from_value(x));
      return l;
    }
    case Value::Kind::kObject: {
      py::dict d;
      for (const auto& [k, x] : v.as_object()) d[py::str(k)] = from_value(x);
      return d;
    }
  }
  return py::none();
}

Dims dims_from(const py::handle& seq, const std::string& what) {
  std::vector<int64_t> v;
  try {
    for (auto x : seq) v.push_back(py::int_(py::reinterpret_borrow<py::object>(x)).cast<int64_t>());
  } catch (const py::error_already_set&) {
    throw py::type_error(what + ": expected a sequence of integers, got " +
                         py::repr(seq).cast<std::string>());
  }
  if (v.empty() || v.size() > 5) throw py::value_error(what + ": rank must be 1 to 5");
  return Dims::from(v);
}

py::tuple dims_tuple(const Dims& d) {
  py::tuple t(static_cast<size_t>(d.rank()));
  for (int i = 0; i < d.rank(); ++i) t[static_cast<size_t>(i)] = py::int_(d[i]);
  return t;
}

namespace {

std::vector<py::ssize_t> c_strides(const Shape& shape, size_t item) {
  std::vector<py::ssize_t> s(static_cast<size_t>(shape.rank()));
  auto acc = static_cast<py::ssize_t>(item);
  for (int i = shape.rank() - 1; i >= 0; --i) {
    s[static_cast<size_t>(i)] = acc;
    acc *= shape[i];
  }
  return s;
}

std::vector<py::ssize_t> shape_vector(const Shape& shape) {
  return std::vector<py::ssize_t>(shape.begin(), shape.end());
}

}  // namespace

py::array view_of(const CellBuffer& buffer) {
  auto* keep = new CellBuffer(buffer);
  py::capsule owner(keep, [](void* p) { delete static_cast<CellBuffer*>(p); });
  py::array a(numpy_dtype(buffer.dtype()), shape_vector(buffer.shape()),
              c_strides(buffer.shape(), dtype_size(buffer.dtype())), buffer.data(), owner);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return a;
}

py::array owning_array(CellBuffer buffer) {
  auto* keep = new CellBuffer(std::move(buffer));
  py::capsule owner(keep, [](void* p) { delete static_cast<CellBuffer*>(p); });
  return py::array(numpy_dtype(keep->dtype()), shape_vector(keep->shape()),
                   c_strides(keep->shape(), dtype_size(keep->dtype())), keep->mutable_data(),
                   owner);
}

py::array writable_view_of(CellBuffer& buffer) {
  // A no-op base: the array does not own the memory, and numpy does not copy.
  py::capsule none(buffer.mutable_data(), [](void*) {});
  return py::array(numpy_dtype(buffer.dtype()), shape_vector(buffer.shape()),
                   c_strides(buffer.shape(), dtype_size(buffer.dtype())), buffer.mutable_data(),
                   none);
}

std::atomic<bool>& interrupt_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

void run_released(const std::function<void()>& work, const std::function<void()>& on_interrupt,
                  const std::function<void()>& on_tick, int poll_ms) {
  std::optional<py::error_already_set> py_error;  // destroyed with the GIL held
  std::exception_ptr error;
  {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    py::gil_scoped_release release;
    std::thread worker([&] {
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard lock(mu);
      done = true;
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    while (!done) {
      cv.wait_for(lock, std::chrono::milliseconds(poll_ms));
      if (done) break;
      lock.unlock();
      {
        py::gil_scoped_acquire acquire;
        if (!py_error) {
          if (PyErr_CheckSignals() != 0) {
            py_error.emplace();  // takes the KeyboardInterrupt (or a handler's exception)
            interrupt_requested().store(true);
            if (on_interrupt) on_interrupt();
          } else if (on_tick) {
            try {
              on_tick();
            } catch (py::error_already_set& e) {
              // A failing progress callback stops the run like Ctrl-C does.
              py_error.emplace(std::move(e));
              interrupt_requested().store(true);
              if (on_interrupt) on_interrupt();
            }
          }
        }
      }
      lock.lock();
    }
    lock.unlock();
    worker.join();
  }
  interrupt_requested().store(false);
  if (py_error) throw std::move(*py_error);
  if (on_tick) on_tick();  // the final state
  if (error) std::rethrow_exception(error);
}

}  // namespace cellflow::python
