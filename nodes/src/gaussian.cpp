// gaussian: ITK's DiscreteGaussianImageFilter computed cell by cell, by ITK
// itself (engine "itk", the reference) or by the native separable kernel of
// gaussian_native.cpp (engine "native", the default: the same result, bit for
// bit, several times faster). Each cell reads its box grown by the exact
// kernel radius (clipped to the image), so the result equals the filter run
// on the whole image, borders included.
#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class GaussianKernel final : public NodeKernel {
 public:
  GaussianKernel(ImageInfo info, std::vector<double> sigma, std::vector<int64_t> radius,
                 double max_error, int max_width, bool native)
      : NodeKernel(std::move(info)),
        sigma_(std::move(sigma)),
        radius_(std::move(radius)),
        max_error_(max_error),
        max_width_(max_width),
        native_(native) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return out_box.grow(Dims::from(radius_)).intersect(Box::from_shape(input_info.shape));
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
    if (native_) {
      gaussian_filter_region_native(in, in_box, out, out_box, sigma_, max_error_, max_width_);
    } else {
      gaussian_filter_region(in, in_box, out, out_box, sigma_, max_error_, max_width_);
    }
  }

  std::vector<double> sigma_;  // array axis order
  std::vector<int64_t> radius_;
  double max_error_;
  int max_width_;
  bool native_;
};

class GaussianOp final : public Op {
 public:
  std::string_view name() const override { return "gaussian"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Discrete Gaussian smoothing (ITK DiscreteGaussianImageFilter's kernel and "
           "zero-flux Neumann boundaries, no image spacing) of an image of rank 1 to 3; output "
           "f32, same shape and cells as the input.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"sigma", ParamType::kFloatOrList, Value(),
         "standard deviation in voxels: one number, or one per axis (0: no smoothing on that "
         "axis)",
         true},
        {"max_error", ParamType::kFloat, Value(1e-4),
         "largest weight of the Gaussian the truncated kernel may miss, in (0, 1)"},
        {"max_kernel_width", ParamType::kInt, Value(128),
         "largest kernel half-width ITK may build; a sigma that needs more is an error"},
        // No default value: a graph that does not name an engine keeps the
        // hash it had before engines existed (both give the same result).
        {"engine", ParamType::kString, Value(),
         "\"native\" (default when absent: cellflow's separable kernel, ITK's result bit for "
         "bit, several times faster) or \"itk\" (ITK's DiscreteGaussianImageFilter itself, "
         "the reference)"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    const int rank = in.shape.rank();
    if (rank < 1 || rank > 3) {
      throw InvalidArgument(
          fmt::format("op \"gaussian\" supports images of rank 1 to 3 (got rank {})", rank));
    }
    std::vector<double> sigma = params.get_floats_per_axis("sigma", rank);
    for (double s : sigma) {
      if (!(s >= 0.0) || !std::isfinite(s)) {
        throw InvalidArgument(fmt::format("param \"sigma\" must be >= 0 (got {})", s));
      }
    }
    const double max_error = params.get_float("max_error");
    if (!(max_error > 0.0 && max_error < 1.0)) {
      throw InvalidArgument(
          fmt::format("param \"max_error\" must be in (0, 1) (got {})", max_error));
    }
    const int64_t max_width = params.get_int("max_kernel_width");
    if (max_width < 1 || max_width > 100000) {
      throw InvalidArgument(
          fmt::format("param \"max_kernel_width\" must be in [1, 100000] (got {})", max_width));
    }
    std::vector<int64_t> radius;
    try {
      radius = gaussian_radius(sigma, max_error, static_cast<int>(max_width));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("param \"sigma\": {}", e.message()));
    }
    for (size_t d = 0; d < radius.size(); ++d) {
      // ITK truncates a kernel that reaches max_width and warns on every
      // filter run (so on every cell); refuse instead. Beyond sigma ~10 at
      // max_error 1e-4 ITK's Bessel sums lose precision and its kernels grow
      // to ~50 sigma, so this is where large sigmas end up.
      if (radius[d] >= max_width) {
        throw InvalidArgument(fmt::format(
            "param \"sigma\" ({}) needs a kernel wider than max_kernel_width {} at max_error {} "
            "(ITK's discrete Gaussian loses precision above sigma ~10); raise max_kernel_width "
            "or max_error, or smooth a downsampled image",
            sigma[d], max_width, max_error));
      }
    }
    bool native = true;
    if (params.has("engine")) {
      const std::string& engine = params.get_string("engine");
      if (engine != "native" && engine != "itk") {
        throw InvalidArgument(
            fmt::format("param \"engine\" must be \"native\" or \"itk\" (got \"{}\")", engine));
      }
      native = engine == "native";
    }
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<GaussianKernel>(std::move(info), std::move(sigma), std::move(radius),
                                            max_error, static_cast<int>(max_width), native);
  }
};

}  // namespace

std::shared_ptr<const Op> make_gaussian_op() { return std::make_shared<GaussianOp>(); }

}  // namespace cellflow::nodes
