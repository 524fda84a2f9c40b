// rescale: a linear map from an input range to an output range, clamped and
// converted to `dtype`. Without `in_range` it is a global op: prepare() scans
// every cell of the input for its min and max.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <optional>
#include <utility>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "global_range.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

using Range = std::pair<double, double>;  // [lo, hi]

class RescaleKernel final : public NodeKernel {
 public:
  RescaleKernel(ImageInfo info, std::optional<Range> in_range, Range out_range)
      : NodeKernel(std::move(info)), global_(!in_range), out_range_(out_range) {
    if (in_range) in_range_ = *in_range;
  }

  bool needs_prepare() const override { return global_; }

  void prepare(std::span<CachedCellImage* const> inputs) override {
    if (!global_) return;
    std::lock_guard lock(prepare_mu_);
    if (prepared_.load(std::memory_order_acquire)) return;
    const detail::ValueRange r = detail::image_value_range(*inputs[0]);
    // An image with no (non-NaN) voxels maps everything to out_range's low end.
    in_range_ = r.empty() ? Range{0.0, 0.0} : Range{r.lo, r.hi};
    prepared_.store(true, std::memory_order_release);
  }

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (global_ && !prepared_.load(std::memory_order_acquire)) {
      throw NodeError("rescale: the input's range is unknown: prepare() did not run");
    }
    // Plain variables, not structured bindings: the lambdas below capture them
    // (clang before 16 rejects capturing a binding).
    const double in_lo = in_range_.first;
    const double in_hi = in_range_.second;
    const double out_lo = out_range_.first;
    const double out_hi = out_range_.second;
    const double scale = in_hi > in_lo ? (out_hi - out_lo) / (in_hi - in_lo) : 0.0;
    const double clamp_lo = std::min(out_lo, out_hi);
    const double clamp_hi = std::max(out_lo, out_hi);
    const CellBuffer& in = inputs[0].data;
    const int64_t n = in.num_elements();
    dispatch_dtype(in.dtype(), [&](auto in_tag) {
      using In = typename decltype(in_tag)::type;
      dispatch_dtype(out.dtype(), [&](auto out_tag) {
        using Out = typename decltype(out_tag)::type;
        const In* src = in.as<In>();
        Out* dst = out.mutable_as<Out>();
        for (int64_t i = 0; i < n; ++i) {
          const double y = out_lo + (static_cast<double>(src[i]) - in_lo) * scale;
          dst[i] = saturate_cast<Out>(std::clamp(y, clamp_lo, clamp_hi));
        }
      });
    });
  }

 private:
  const bool global_;
  const Range out_range_;
  Range in_range_{0.0, 0.0};  // written once, before prepared_ (or in the constructor)
  std::atomic<bool> prepared_{false};
  std::mutex prepare_mu_;
};

Range get_range(const Params& params, std::string_view name) {
  const std::vector<double> v = params.get_floats(name);
  if (v.size() != 2) {
    throw InvalidArgument(
        fmt::format("param \"{}\" must be [lo, hi] (got {} values)", name, v.size()));
  }
  if (!std::isfinite(v[0]) || !std::isfinite(v[1])) {
    throw InvalidArgument(
        fmt::format("param \"{}\" must hold finite numbers (got [{}, {}])", name, v[0], v[1]));
  }
  return {v[0], v[1]};
}

class RescaleOp final : public Op {
 public:
  std::string_view name() const override { return "rescale"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Maps values linearly from in_range (default: the image's own min and max, a "
           "global pass over every cell) to out_range (default: the full range of an integer "
           "dtype, [0, 1] for floats), clamps, and converts to `dtype`.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"dtype", ParamType::kDType, Value(), "output element type", true},
        {"in_range", ParamType::kFloatList, Value(),
         "[lo, hi] input values mapped to out_range (lo < hi); default: the image's min, max"},
        {"out_range", ParamType::kFloatList, Value(),
         "[lo, hi] output values; default: the dtype's range for integers, [0, 1] for floats"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const DType dtype = params.get_dtype("dtype");
    std::optional<Range> in_range;
    if (params.has("in_range") && !params.get("in_range").is_null()) {
      in_range = get_range(params, "in_range");
      if (!(in_range->first < in_range->second)) {
        throw InvalidArgument(fmt::format("param \"in_range\" must have lo < hi (got [{}, {}])",
                                          in_range->first, in_range->second));
      }
    }
    Range out_range =
        dtype_is_float(dtype) ? Range{0.0, 1.0} : Range{dtype_min(dtype), dtype_max(dtype)};
    if (params.has("out_range") && !params.get("out_range").is_null()) {
      out_range = get_range(params, "out_range");
    }
    ImageInfo info{dtype, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<RescaleKernel>(std::move(info), in_range, out_range);
  }
};

}  // namespace

std::shared_ptr<const Op> make_rescale_op() { return std::make_shared<RescaleOp>(); }

}  // namespace cellflow::nodes
