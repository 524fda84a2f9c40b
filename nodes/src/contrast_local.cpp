// contrast.local: contrast-limited local contrast normalization (in the spirit
// of CLAHE and the CLLCN filter used on EM volumes):
//   out = clamp((v - mean) / max(std, min_std), -clip, clip)
// with mean and std (population) over the box window of (2r+1)^D voxels
// around each voxel, clipped at the image edge. Window sums of v and v^2 come
// from separable running sums in double (O(1) per voxel and axis); the halo
// is exactly the radius. With `rescale`, [-clip, clip] maps to [0, 1].
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class LocalContrastKernel final : public NodeKernel {
 public:
  LocalContrastKernel(ImageInfo info, std::vector<int64_t> radius, double min_std, double clip,
                      bool rescale)
      : NodeKernel(std::move(info)),
        radius_(std::move(radius)),
        min_std_(min_std),
        clip_(clip),
        rescale_(rescale) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::grow_clipped(out_box, radius_, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      run(in.data.as<T>(), in.box, out_box, out.mutable_as<float>());
    });
  }

 private:
  template <class T>
  void run(const T* src, const Box& in_box, const Box& out_box, float* dst) const {
    const auto sums = detail::window_sums(src, in_box, out_box, radius_,
                                          [](T v) { return static_cast<double>(v); });
    const auto squares = detail::window_sums(src, in_box, out_box, radius_, [](T v) {
      const auto x = static_cast<double>(v);
      return x * x;
    });
    const auto counts = detail::window_counts(in_box, out_box, radius_);
    const Shape shape = out_box.shape();
    const Shape in_shape = in_box.shape();
    const int r = shape.rank();
    const auto& last = counts[static_cast<size_t>(r - 1)];
    detail::for_each_row(shape, [&](const Dims& row, int64_t offset) {
      double lead = 1.0;
      int64_t in_offset = 0;
      for (int d = 0; d < r; ++d) {
        const int64_t pos = out_box.begin()[d] - in_box.begin()[d] + row[d];
        in_offset = in_offset * in_shape[d] + pos;
        if (d < r - 1) {
          lead *= static_cast<double>(counts[static_cast<size_t>(d)][static_cast<size_t>(row[d])]);
        }
      }
      for (int64_t x = 0; x < shape[r - 1]; ++x) {
        const auto i = static_cast<size_t>(offset + x);
        const double n = lead * static_cast<double>(last[static_cast<size_t>(x)]);
        const double mean = sums[i] / n;
        const double var = std::max(0.0, squares[i] / n - mean * mean);
        const double z =
            (static_cast<double>(src[in_offset + x]) - mean) / std::max(std::sqrt(var), min_std_);
        const double c = std::clamp(z, -clip_, clip_);
        dst[offset + x] = static_cast<float>(rescale_ ? (c + clip_) / (2.0 * clip_) : c);
      }
    });
  }

  std::vector<int64_t> radius_;
  double min_std_;
  double clip_;
  bool rescale_;
};

class LocalContrastOp final : public Op {
 public:
  std::string_view name() const override { return "contrast.local"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Contrast-limited local contrast normalization: (v - local mean) / max(local std, "
           "min_std) over a box window of 2*radius+1 voxels per axis (clipped at the image "
           "edge), clamped to [-clip, clip] and optionally rescaled to [0, 1]; output f32.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"radius", ParamType::kIntOrList, Value(),
         "window half-width in voxels: one number, or one per axis (each >= 0)", true},
        {"min_std", ParamType::kFloat, Value(0.01),
         "smallest standard deviation divided by, in the input's units (> 0): limits the "
         "amplification of flat regions; set it near the noise level"},
        {"clip", ParamType::kFloat, Value(3.0),
         "normalized values are clamped to [-clip, clip] (> 0)"},
        {"rescale", ParamType::kBool, Value(false), "map [-clip, clip] linearly to [0, 1]"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto radius = detail::get_radius(params, "radius", in.shape.rank());
    const double min_std = params.get_float("min_std");
    if (!(min_std > 0.0) || !std::isfinite(min_std)) {
      throw InvalidArgument(fmt::format("param \"min_std\" must be > 0 (got {})", min_std));
    }
    const double clip = params.get_float("clip");
    if (!(clip > 0.0) || !std::isfinite(clip)) {
      throw InvalidArgument(fmt::format("param \"clip\" must be > 0 (got {})", clip));
    }
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<LocalContrastKernel>(std::move(info), std::move(radius), min_std, clip,
                                                 params.get_bool("rescale"));
  }
};

}  // namespace

std::shared_ptr<const Op> make_contrast_local_op() { return std::make_shared<LocalContrastOp>(); }

}  // namespace cellflow::nodes
