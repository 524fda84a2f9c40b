// gradient_magnitude: |grad(G_sigma * image)| — the `gaussian` op's smoothing
// (ITK DiscreteGaussianImageFilter) followed by central differences,
// (g[i+1] - g[i-1]) / 2 per axis, with the image extended by its edge voxels
// (zero-flux Neumann, as ITK's GradientMagnitudeImageFilter: (g[1] - g[0]) / 2
// at the first voxel). Cells read a halo of the Gaussian radius + 1.
#include <cmath>

#include "gaussian_derivative.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class GradientMagnitudeKernel final : public NodeKernel {
 public:
  GradientMagnitudeKernel(ImageInfo info, detail::GaussianSettings settings)
      : NodeKernel(std::move(info)), settings_(std::move(settings)) {
    for (size_t d = 0; d < settings_.sigma.size(); ++d)
      half_per_unit_.push_back(0.5 * detail::per_unit(settings_, static_cast<int>(d)));
  }

  std::string identity() const override { return detail::gaussian_identity(settings_); }

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::derivative_input_region(settings_, out_box, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (out_box.empty()) return;
    const Box box = detail::grow_clipped(out_box, std::vector<int64_t>(settings_.sigma.size(), 1),
                                         output().shape);
    const std::vector<float> g = detail::smooth_box(settings_, inputs[0], box);
    float* dst = out.mutable_as<float>();
    double sum = 0.0;
    detail::for_each_stencil(
        g, box, out_box,
        [&](int axis, double /*center*/, double minus, double plus) {
          const double d = half_per_unit_[static_cast<size_t>(axis)] * (plus - minus);
          sum += d * d;
        },
        [&] {
          *dst++ = static_cast<float>(std::sqrt(sum));
          sum = 0.0;
        });
  }

 private:
  detail::GaussianSettings settings_;
  std::vector<double> half_per_unit_;  // 1/2, or 1 / (2 spacing) when physical
};

class GradientMagnitudeOp final : public Op {
 public:
  std::string_view name() const override { return "gradient_magnitude"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Gradient magnitude of the Gaussian-smoothed image (the gaussian op, then central "
           "differences per voxel, the edge voxel repeated outside the image) of rank 1 to 3; "
           "output f32.";
  }
  std::vector<ParamSpec> params() const override { return detail::gaussian_param_specs(); }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto settings = detail::gaussian_settings(name(), params, in);
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<GradientMagnitudeKernel>(std::move(info), std::move(settings));
  }
};

}  // namespace

std::shared_ptr<const Op> make_gradient_magnitude_op() {
  return std::make_shared<GradientMagnitudeOp>();
}

}  // namespace cellflow::nodes
