// An example cellflow plugin with one op, example.invert: max - value, in the
// input's dtype (rounded and saturated for integers). It is an ordinary op:
// hashed, cached, scheduled and serialized like the built-in ones.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/plugins/plugin.hpp"

namespace {

using namespace cellflow;

class InvertKernel final : public NodeKernel {
 public:
  InvertKernel(ImageInfo info, double max) : NodeKernel(std::move(info)), max_(max) {}

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const CellBuffer& in = inputs[0].data;
    const int64_t n = in.num_elements();
    dispatch_dtype(in.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.as<T>();
      T* dst = out.mutable_as<T>();
      for (int64_t i = 0; i < n; ++i) dst[i] = saturate_cast<T>(max_ - static_cast<double>(src[i]));
    });
  }

 private:
  double max_;
};

class InvertOp final : public Op {
 public:
  std::string_view name() const override { return "example.invert"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Example plugin op: max - value, in the input's dtype (integers rounded and "
           "saturated).";
  }
  std::vector<ParamSpec> params() const override {
    return {{"max", ParamType::kFloat, Value(1.0), "the value that maps to 0"}};
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    if (inputs.size() != 1) throw InvalidArgument("op \"example.invert\" takes 1 input");
    if (inputs[0].kind != OutputKind::kImage)
      throw InvalidArgument("example.invert needs an image input, not a table");
    const double max = params.get_float("max");
    if (!std::isfinite(max)) throw InvalidArgument("param \"max\" must be a finite number");
    return std::make_unique<InvertKernel>(inputs[0], max);
  }
};

void register_ops(cellflow::Registry& registry) { registry.add(std::make_shared<InvertOp>()); }

}  // namespace

CELLFLOW_PLUGIN(register_ops)
