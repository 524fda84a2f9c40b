// clip: clamps every voxel to [min, max] (either bound may be left out), in
// the input's dtype. For an integer dtype the bounds are rounded inwards
// (min up, max down) and saturated to the type's range; NaN stays NaN.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class ClipKernel final : public NodeKernel {
 public:
  // Bounds in double, already rounded inwards for integer dtypes; saturate_cast
  // maps them exactly (and 2^63, 2^64 to the 64-bit maxima).
  ClipKernel(ImageInfo info, double lo, double hi)
      : NodeKernel(std::move(info)), lo_(lo), hi_(hi) {}

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const CellBuffer& in = inputs[0].data;
    const int64_t n = in.num_elements();
    dispatch_dtype(in.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T lo = saturate_cast<T>(lo_);
      const T hi = saturate_cast<T>(hi_);
      const T* src = in.as<T>();
      T* dst = out.mutable_as<T>();
      for (int64_t i = 0; i < n; ++i) {
        const T v = src[i];
        dst[i] = v < lo ? lo : (v > hi ? hi : v);
      }
    });
  }

 private:
  double lo_;
  double hi_;
};

class ClipOp final : public Op {
 public:
  std::string_view name() const override { return "clip"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Clamps every voxel to [min, max] (give one bound or both), keeping the input's "
           "dtype; NaN stays NaN.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"min", ParamType::kFloat, Value(), "smaller values become min (integers: rounded up)"},
        {"max", ParamType::kFloat, Value(), "larger values become max (integers: rounded down)"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const DType dtype = inputs[0].dtype;
    const bool has_min = params.has("min");
    const bool has_max = params.has("max");
    if (!has_min && !has_max) {
      throw InvalidArgument("param \"min\" or \"max\" is required (give one or both)");
    }
    double lo = -std::numeric_limits<double>::infinity();
    double hi = std::numeric_limits<double>::infinity();
    if (has_min) {
      lo = params.get_float("min");
      if (std::isnan(lo)) throw InvalidArgument("param \"min\" must be a number (got NaN)");
    }
    if (has_max) {
      hi = params.get_float("max");
      if (std::isnan(hi)) throw InvalidArgument("param \"max\" must be a number (got NaN)");
    }
    if (lo > hi) {
      throw InvalidArgument(
          fmt::format("param \"min\" must be <= param \"max\" (got min {} and max {})", lo, hi));
    }
    if (dtype_is_float(dtype)) {
      // Infinite bounds are exact in both float types.
      lo = dtype == DType::kF32 ? static_cast<double>(static_cast<float>(lo)) : lo;
      hi = dtype == DType::kF32 ? static_cast<double>(static_cast<float>(hi)) : hi;
    } else {
      const double tmin = dtype_min(dtype);
      const double tmax = dtype_max(dtype);
      lo = std::clamp(std::ceil(lo), tmin, tmax);
      hi = std::clamp(std::floor(hi), tmin, tmax);
      if (lo > hi) {
        throw InvalidArgument(fmt::format("no {} value lies in [min, max] = [{}, {}]",
                                          dtype_name(dtype),
                                          params.has("min") ? params.get_float("min") : lo,
                                          params.has("max") ? params.get_float("max") : hi));
      }
    }
    ImageInfo info{dtype, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<ClipKernel>(std::move(info), lo, hi);
  }
};

}  // namespace

std::shared_ptr<const Op> make_clip_op() { return std::make_shared<ClipOp>(); }

}  // namespace cellflow::nodes
