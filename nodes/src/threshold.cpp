// threshold: a u8 mask, 1 where the input lies above `above` and/or below
// `below` (strictly), 0 elsewhere.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class ThresholdKernel final : public NodeKernel {
 public:
  // A missing bound is -inf / +inf, so one test covers the three cases.
  ThresholdKernel(ImageInfo info, double above, double below)
      : NodeKernel(std::move(info)), above_(above), below_(below) {}

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const CellBuffer& in = inputs[0].data;
    uint8_t* dst = out.mutable_as<uint8_t>();
    const int64_t n = in.num_elements();
    dispatch_dtype(in.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.as<T>();
      for (int64_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(src[i]);
        dst[i] = static_cast<uint8_t>(v > above_ && v < below_);
      }
    });
  }

 private:
  double above_;
  double below_;
};

class ThresholdOp final : public Op {
 public:
  std::string_view name() const override { return "threshold"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Binary mask (u8 0/1): 1 where value > above, value < below, or both when both "
           "are given (above < value < below).";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"above", ParamType::kFloat, Value(), "voxels strictly above this value are set"},
        {"below", ParamType::kFloat, Value(), "voxels strictly below this value are set"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const bool has_above = params.has("above") && !params.get("above").is_null();
    const bool has_below = params.has("below") && !params.get("below").is_null();
    if (!has_above && !has_below) {
      throw InvalidArgument("param \"above\" or \"below\" is required (give one or both)");
    }
    double above = -std::numeric_limits<double>::infinity();
    double below = std::numeric_limits<double>::infinity();
    if (has_above) {
      above = params.get_float("above");
      if (std::isnan(above)) throw InvalidArgument("param \"above\" must be a number (got NaN)");
    }
    if (has_below) {
      below = params.get_float("below");
      if (std::isnan(below)) throw InvalidArgument("param \"below\" must be a number (got NaN)");
    }
    if (has_above && has_below && !(above < below)) {
      throw InvalidArgument(fmt::format(
          "param \"above\" must be < param \"below\" (got above {} and below {})", above, below));
    }
    ImageInfo info{DType::kU8, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<ThresholdKernel>(std::move(info), above, below);
  }
};

}  // namespace

std::shared_ptr<const Op> make_threshold_op() { return std::make_shared<ThresholdOp>(); }

}  // namespace cellflow::nodes
