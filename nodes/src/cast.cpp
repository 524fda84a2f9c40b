// cast: converts an image to another dtype, rounding to nearest and saturating
// for integer outputs.
#include <cstring>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "convert.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class CastKernel final : public NodeKernel {
 public:
  using NodeKernel::NodeKernel;

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const CellBuffer& in = inputs[0].data;
    if (in.dtype() == out.dtype()) {
      std::memcpy(out.mutable_data(), in.data(), in.num_bytes());
      return;
    }
    const int64_t n = in.num_elements();
    dispatch_dtype(in.dtype(), [&](auto in_tag) {
      using In = typename decltype(in_tag)::type;
      dispatch_dtype(out.dtype(), [&](auto out_tag) {
        using Out = typename decltype(out_tag)::type;
        const In* src = in.as<In>();
        Out* dst = out.mutable_as<Out>();
        for (int64_t i = 0; i < n; ++i) dst[i] = detail::convert_value<Out>(src[i]);
      });
    });
  }
};

class CastOp final : public Op {
 public:
  std::string_view name() const override { return "cast"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Converts the image to `dtype`: values are kept, rounded to nearest (halves away "
           "from zero) and saturated to the type's range for integer types; NaN becomes 0.";
  }
  std::vector<ParamSpec> params() const override {
    return {{"dtype", ParamType::kDType, Value(), "output element type", true}};
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    ImageInfo info{params.get_dtype("dtype"), inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<CastKernel>(std::move(info));
  }
};

}  // namespace

std::shared_ptr<const Op> make_cast_op() { return std::make_shared<CastOp>(); }

}  // namespace cellflow::nodes
