// mask: keeps the image where the mask (second input, any dtype) is non-zero
// and writes `value` (converted to the image's dtype: rounded, saturated)
// elsewhere. Both inputs must have the same shape.
#include <fmt/format.h>

#include <cmath>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class MaskKernel final : public NodeKernel {
 public:
  MaskKernel(ImageInfo info, double value) : NodeKernel(std::move(info)), value_(value) {}

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const CellBuffer& image = inputs[0].data;
    const CellBuffer& mask = inputs[1].data;
    const int64_t n = image.num_elements();
    // The mask as 0/1 bytes first, so that the dtype pair needs no nested dispatch.
    std::vector<uint8_t> keep(static_cast<size_t>(n));
    dispatch_dtype(mask.dtype(), [&](auto tag) {
      using M = typename decltype(tag)::type;
      const M* m = mask.as<M>();
      for (int64_t i = 0; i < n; ++i) keep[static_cast<size_t>(i)] = m[i] != M{0};
    });
    dispatch_dtype(image.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T fill = saturate_cast<T>(value_);
      const T* src = image.as<T>();
      T* dst = out.mutable_as<T>();
      for (int64_t i = 0; i < n; ++i) dst[i] = keep[static_cast<size_t>(i)] ? src[i] : fill;
    });
  }

 private:
  double value_;
};

class MaskOp final : public Op {
 public:
  std::string_view name() const override { return "mask"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Keeps the image (first input) where the mask (second input, same shape) is "
           "non-zero and sets `value` elsewhere; same dtype as the image.";
  }
  std::vector<ParamSpec> params() const override {
    return {{"value", ParamType::kFloat, Value(0.0),
             "value of the voxels where the mask is 0 (rounded and saturated for integer "
             "images)"}};
  }
  int min_inputs() const override { return 2; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 2);
    if (!(inputs[0].shape == inputs[1].shape)) {
      throw InvalidArgument(fmt::format(
          "input 1 (the mask) has shape {} but input 0 (the image) has shape {}: op \"mask\" "
          "needs both of the same shape",
          inputs[1].shape.str(), inputs[0].shape.str()));
    }
    const double value = params.get_float("value");
    if (std::isnan(value) && !dtype_is_float(inputs[0].dtype)) {
      throw InvalidArgument(fmt::format("param \"value\" is NaN, which a {} image cannot hold",
                                        dtype_name(inputs[0].dtype)));
    }
    ImageInfo info{inputs[0].dtype, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<MaskKernel>(std::move(info), value);
  }
};

}  // namespace

std::shared_ptr<const Op> make_mask_op() { return std::make_shared<MaskOp>(); }

}  // namespace cellflow::nodes
