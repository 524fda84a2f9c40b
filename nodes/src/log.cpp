// log: the Laplacian of Gaussian — the `gaussian` op's smoothing (ITK
// DiscreteGaussianImageFilter) followed by the 2*D+1-point discrete Laplacian,
// sum_d (g[i+1] + g[i-1] - 2 g[i]), with the image extended by its edge voxels
// (zero-flux Neumann, as itk::LaplacianImageFilter). With `normalize`, each
// axis's second difference is multiplied by sigma_d^2 (scale normalization:
// sigma^2 * Laplacian for an isotropic sigma). Cells read a halo of the
// Gaussian radius + 1.
#include "gaussian_derivative.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class LaplacianOfGaussianKernel final : public NodeKernel {
 public:
  LaplacianOfGaussianKernel(ImageInfo info, detail::GaussianSettings settings, bool normalize)
      : NodeKernel(std::move(info)), settings_(std::move(settings)) {
    for (size_t d = 0; d < settings_.sigma.size(); ++d) {
      const double s = settings_.sigma[d];
      const double u = detail::per_unit(settings_, static_cast<int>(d));
      weight_.push_back((normalize ? s * s : 1.0) * u * u);
    }
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
        [&](int axis, double center, double minus, double plus) {
          sum += weight_[static_cast<size_t>(axis)] * (plus + minus - 2.0 * center);
        },
        [&] {
          *dst++ = static_cast<float>(sum);
          sum = 0.0;
        });
  }

 private:
  detail::GaussianSettings settings_;
  // per axis: 1, or sigma^2 when normalized, per physical unit^2 when physical
  std::vector<double> weight_;
};

class LaplacianOfGaussianOp final : public Op {
 public:
  std::string_view name() const override { return "log"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Laplacian of Gaussian: the gaussian op, then the discrete Laplacian (2*D+1-point "
           "stencil, the edge voxel repeated outside the image) of an image of rank 1 to 3, "
           "optionally scale-normalized by sigma^2; output f32.";
  }
  std::vector<ParamSpec> params() const override {
    auto specs = detail::gaussian_param_specs();
    specs.push_back({"normalize", ParamType::kBool, Value(false),
                     "multiply the second difference along each axis by sigma^2 on that axis "
                     "(scale-normalized LoG)"});
    return specs;
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto settings = detail::gaussian_settings(name(), params, in);
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<LaplacianOfGaussianKernel>(std::move(info), std::move(settings),
                                                       params.get_bool("normalize"));
  }
};

}  // namespace

std::shared_ptr<const Op> make_log_op() { return std::make_shared<LaplacianOfGaussianOp>(); }

}  // namespace cellflow::nodes
