// gaussian: ITK's DiscreteGaussianImageFilter computed cell by cell, by ITK
// itself (engine "itk", the reference), by the native separable kernel of
// gaussian_native.cpp (engine "native", the default: the same result, bit for
// bit, several times faster) or by its float twin in gaussian_fast.cpp
// (engine "fast": the same filter within float rounding, faster again). Each
// cell reads its box grown by the exact kernel radius (clipped to the image),
// so the result equals the filter run on the whole image, borders included.
#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "gaussian_derivative.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

enum class Engine { kNative, kFast, kItk };

class GaussianKernel final : public NodeKernel {
 public:
  GaussianKernel(ImageInfo info, detail::GaussianSettings settings, Engine engine)
      : NodeKernel(std::move(info)), settings_(std::move(settings)), engine_(engine) {}

  std::string identity() const override { return detail::gaussian_identity(settings_); }

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::grow_clipped(out_box, settings_.radius, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    float* dst = out.mutable_as<float>();
    if (in.data.dtype() == DType::kF32) {
      filter(in.data.as<float>(), in.box, dst, out_box);
      return;
    }
    std::vector<float> converted(static_cast<size_t>(in.data.num_elements()));
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.data.as<T>();
      for (size_t i = 0; i < converted.size(); ++i) converted[i] = static_cast<float>(src[i]);
    });
    filter(converted.data(), in.box, dst, out_box);
  }

 private:
  void filter(const float* in, const Box& in_box, float* out, const Box& out_box) const {
    const detail::GaussianSettings& s = settings_;
    switch (engine_) {
      case Engine::kNative:
        gaussian_filter_region_native(in, in_box, out, out_box, s.sigma, s.max_error, s.max_width,
                                      s.spacing);
        return;
      case Engine::kFast:
        gaussian_filter_region_fast(in, in_box, out, out_box, s.sigma, s.max_error, s.max_width,
                                    s.spacing);
        return;
      case Engine::kItk:
        gaussian_filter_region(in, in_box, out, out_box, s.sigma, s.max_error, s.max_width, 1,
                               s.spacing);
        return;
    }
  }

  detail::GaussianSettings settings_;
  Engine engine_;
};

class GaussianOp final : public Op {
 public:
  std::string_view name() const override { return "gaussian"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Discrete Gaussian smoothing (ITK DiscreteGaussianImageFilter's kernel and "
           "zero-flux Neumann boundaries; sigma in voxels, or in physical units as ITK with "
           "image spacing on) of an image of rank 1 to 3; output f32, same shape and cells as "
           "the input.";
  }
  std::vector<ParamSpec> params() const override {
    std::vector<ParamSpec> specs = detail::gaussian_param_specs();
    // No default value: a graph that does not name an engine keeps the
    // hash it had before engines existed (native gives ITK's result).
    specs.push_back({"engine", ParamType::kString, Value(),
                     "\"native\" (default when absent: cellflow's separable kernel, ITK's result "
                     "bit for bit, several times faster), \"fast\" (the same kernel summed in "
                     "float: within 1e-5 * max(1, max |result|) of native, faster again) or "
                     "\"itk\" (ITK's DiscreteGaussianImageFilter itself, the reference)"});
    return specs;
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    detail::GaussianSettings settings = detail::gaussian_settings(name(), params, in);
    Engine engine = Engine::kNative;
    if (params.has("engine")) {
      const std::string& engine_name = params.get_string("engine");
      if (engine_name == "fast") {
        engine = Engine::kFast;
      } else if (engine_name == "itk") {
        engine = Engine::kItk;
      } else if (engine_name != "native") {
        throw InvalidArgument(fmt::format(
            "param \"engine\" must be \"native\", \"fast\" or \"itk\" (got \"{}\")", engine_name));
      }
    }
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<GaussianKernel>(std::move(info), std::move(settings), engine);
  }
};

}  // namespace

std::shared_ptr<const Op> make_gaussian_op() { return std::make_shared<GaussianOp>(); }

}  // namespace cellflow::nodes
