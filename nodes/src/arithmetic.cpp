// add / subtract / multiply / divide: voxel-wise arithmetic on two images of
// the same shape, or on one image and the param `scalar` (image OP scalar).
//
// Integer results of add/subtract/multiply on integer operands are computed
// exactly (128-bit) and saturated to the output dtype; everything else is
// computed in double and converted (floats to integers: rounded to nearest,
// saturated, NaN -> 0). Division by zero gives 0 (also 0 / 0), whatever the
// dtypes. Kernels run over chunks of a few thousand voxels converted to one
// compute type, so each dtype is compiled once per role, not once per triple.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

__extension__ using Int128 = __int128;
__extension__ using UInt128 = unsigned __int128;
// (std::numeric_limits is not specialized for __int128 in strict ISO mode.)
constexpr Int128 kInt128Max = static_cast<Int128>(~UInt128{0} >> 1);
constexpr Int128 kInt128Min = -kInt128Max - 1;

enum class Arithmetic { kAdd, kSubtract, kMultiply, kDivide };

std::string_view arithmetic_name(Arithmetic a) {
  switch (a) {
    case Arithmetic::kAdd:
      return "add";
    case Arithmetic::kSubtract:
      return "subtract";
    case Arithmetic::kMultiply:
      return "multiply";
    case Arithmetic::kDivide:
      return "divide";
  }
  return "";
}

constexpr int64_t kChunk = 4096;

/// Elements [begin, begin + n) of `buf`, converted to C.
template <class C>
void load(const CellBuffer& buf, int64_t begin, int64_t n, C* dst) {
  dispatch_dtype(buf.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = buf.as<T>() + begin;
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<C>(src[i]);
  });
}

template <class Out>
Out saturate_int128(Int128 v) {
  if constexpr (std::is_floating_point_v<Out>) {
    return static_cast<Out>(v);
  } else {
    if (v < static_cast<Int128>(std::numeric_limits<Out>::lowest())) {
      return std::numeric_limits<Out>::lowest();
    }
    if (v > static_cast<Int128>(std::numeric_limits<Out>::max())) {
      return std::numeric_limits<Out>::max();
    }
    return static_cast<Out>(v);
  }
}

template <class C>
void store(const C* src, int64_t begin, int64_t n, CellBuffer& out) {
  dispatch_dtype(out.dtype(), [&](auto tag) {
    using Out = typename decltype(tag)::type;
    Out* dst = out.mutable_as<Out>() + begin;
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<C, Int128>) {
        dst[i] = saturate_int128<Out>(src[i]);
      } else {
        dst[i] = saturate_cast<Out>(src[i]);
      }
    }
  });
}

Int128 saturated(bool overflow, Int128 exact, bool negative) {
  if (!overflow) return exact;
  return negative ? kInt128Min : kInt128Max;
}

/// a[i] = a[i] OP b[i].
template <class C>
void apply(Arithmetic op, C* a, const C* b, int64_t n) {
  switch (op) {
    case Arithmetic::kAdd:
      for (int64_t i = 0; i < n; ++i) a[i] = a[i] + b[i];
      return;
    case Arithmetic::kSubtract:
      for (int64_t i = 0; i < n; ++i) a[i] = a[i] - b[i];
      return;
    case Arithmetic::kMultiply:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<C, Int128>) {
          // 64-bit operands cannot overflow 128 bits, except u64 * u64.
          Int128 r = 0;
          const bool overflow = __builtin_mul_overflow(a[i], b[i], &r);
          a[i] = saturated(overflow, r, (a[i] < 0) != (b[i] < 0));
        } else {
          a[i] = a[i] * b[i];
        }
      }
      return;
    case Arithmetic::kDivide:
      for (int64_t i = 0; i < n; ++i) a[i] = b[i] == C{0} ? C{0} : a[i] / b[i];
      return;
  }
}

class ArithmeticKernel final : public NodeKernel {
 public:
  ArithmeticKernel(ImageInfo info, Arithmetic op, std::optional<double> scalar, bool exact_int)
      : NodeKernel(std::move(info)), op_(op), scalar_(scalar), exact_int_(exact_int) {}

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (exact_int_) {
      run<Int128>(inputs, out);
    } else {
      run<double>(inputs, out);
    }
  }

 private:
  template <class C>
  void run(std::span<const InputRegion> inputs, CellBuffer& out) const {
    std::vector<C> a(static_cast<size_t>(kChunk));
    std::vector<C> b(static_cast<size_t>(kChunk), scalar_ ? static_cast<C>(*scalar_) : C{0});
    const int64_t total = out.num_elements();
    for (int64_t begin = 0; begin < total; begin += kChunk) {
      const int64_t n = std::min(kChunk, total - begin);
      load(inputs[0].data, begin, n, a.data());
      if (!scalar_) load(inputs[1].data, begin, n, b.data());
      apply(op_, a.data(), b.data(), n);
      store(a.data(), begin, n, out);
    }
  }

  Arithmetic op_;
  std::optional<double> scalar_;
  bool exact_int_;
};

/// numpy-like promotion of two integer dtypes: the wider type, and a signed
/// type wide enough for both when the signedness differs (i64 at most).
DType promote_integers(DType a, DType b) {
  if (a == b) return a;
  if (dtype_is_signed(a) == dtype_is_signed(b)) return dtype_size(a) >= dtype_size(b) ? a : b;
  const DType s = dtype_is_signed(a) ? a : b;
  const DType u = dtype_is_signed(a) ? b : a;
  const size_t bytes = std::max(dtype_size(s), 2 * dtype_size(u));
  switch (bytes) {
    case 1:
      return DType::kI8;
    case 2:
      return DType::kI16;
    case 4:
      return DType::kI32;
    default:
      return DType::kI64;
  }
}

class ArithmeticOp final : public Op {
 public:
  explicit ArithmeticOp(Arithmetic op) : op_(op) {}
  std::string_view name() const override { return arithmetic_name(op_); }
  int version() const override { return 1; }
  std::string_view doc() const override {
    switch (op_) {
      case Arithmetic::kAdd:
        return "Voxel-wise a + b of two images of the same shape, or image + scalar.";
      case Arithmetic::kSubtract:
        return "Voxel-wise a - b of two images of the same shape, or image - scalar.";
      case Arithmetic::kMultiply:
        return "Voxel-wise a * b of two images of the same shape, or image * scalar.";
      case Arithmetic::kDivide:
        return "Voxel-wise a / b of two images of the same shape, or image / scalar; division "
               "by zero gives 0.";
    }
    return "";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"scalar", ParamType::kFloat, Value(),
         "the second operand when the op has one input image (then required)"},
        {"dtype", ParamType::kDType, Value(),
         "output element type; default: f32 if an input is float, the scalar is not an "
         "integer or the op is divide, else the (promoted) integer input dtype. Integer "
         "results saturate."},
    };
  }
  int min_inputs() const override { return 1; }
  int max_inputs() const override { return 2; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    if (inputs.empty() || inputs.size() > 2) {
      throw InvalidArgument(
          fmt::format("op \"{}\" takes 1 or 2 inputs (got {})", name(), inputs.size()));
    }
    const bool has_scalar = params.has("scalar");
    std::optional<double> scalar;
    if (inputs.size() == 1) {
      if (!has_scalar) {
        throw InvalidArgument(fmt::format(
            "param \"scalar\" is required when op \"{}\" has one input (or give two inputs)",
            name()));
      }
      scalar = params.get_float("scalar");
      if (std::isnan(*scalar)) {
        throw InvalidArgument("param \"scalar\" must be a number (got NaN)");
      }
    } else {
      if (has_scalar) {
        throw InvalidArgument(fmt::format(
            "param \"scalar\" must not be given when op \"{}\" has two inputs", name()));
      }
      if (!(inputs[0].shape == inputs[1].shape)) {
        throw InvalidArgument(fmt::format(
            "input 1 has shape {} but input 0 has shape {}: op \"{}\" needs two images of the "
            "same shape",
            inputs[1].shape.str(), inputs[0].shape.str(), name()));
      }
    }

    bool any_float = false;
    for (const auto& in : inputs) any_float = any_float || dtype_is_float(in.dtype);
    const bool integral_scalar =
        !scalar ||
        (std::isfinite(*scalar) && std::trunc(*scalar) == *scalar && std::abs(*scalar) <= 9.2e18);
    DType dtype = DType::kF32;
    if (params.has("dtype")) {
      dtype = params.get_dtype("dtype");
    } else if (!any_float && integral_scalar && op_ != Arithmetic::kDivide) {
      dtype =
          inputs.size() == 2 ? promote_integers(inputs[0].dtype, inputs[1].dtype) : inputs[0].dtype;
    }
    const bool exact_int =
        !any_float && integral_scalar && !dtype_is_float(dtype) && op_ != Arithmetic::kDivide;
    ImageInfo info{dtype, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<ArithmeticKernel>(std::move(info), op_, scalar, exact_int);
  }

 private:
  Arithmetic op_;
};

}  // namespace

std::shared_ptr<const Op> make_add_op() { return std::make_shared<ArithmeticOp>(Arithmetic::kAdd); }
std::shared_ptr<const Op> make_subtract_op() {
  return std::make_shared<ArithmeticOp>(Arithmetic::kSubtract);
}
std::shared_ptr<const Op> make_multiply_op() {
  return std::make_shared<ArithmeticOp>(Arithmetic::kMultiply);
}
std::shared_ptr<const Op> make_divide_op() {
  return std::make_shared<ArithmeticOp>(Arithmetic::kDivide);
}

}  // namespace cellflow::nodes
