// mean: the average over a box window of (2r+1)^D voxels clipped to the image
// (voxels outside the image are not counted), from separable running sums in
// double: O(1) per voxel and axis whatever the radius.
#include <fmt/format.h>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class MeanKernel final : public NodeKernel {
 public:
  MeanKernel(ImageInfo info, std::vector<int64_t> radius)
      : NodeKernel(std::move(info)), radius_(std::move(radius)) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::grow_clipped(out_box, radius_, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    const std::vector<double> sums = dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      return detail::window_sums(in.data.as<T>(), in.box, out_box, radius_,
                                 [](T v) { return static_cast<double>(v); });
    });
    const auto counts = detail::window_counts(in.box, out_box, radius_);
    const Shape shape = out_box.shape();
    const int r = shape.rank();
    const auto& last = counts[static_cast<size_t>(r - 1)];
    float* dst = out.mutable_as<float>();
    detail::for_each_row(shape, [&](const Dims& row, int64_t offset) {
      double lead = 1.0;
      for (int d = 0; d < r - 1; ++d) {
        lead *= static_cast<double>(counts[static_cast<size_t>(d)][static_cast<size_t>(row[d])]);
      }
      for (int64_t x = 0; x < shape[r - 1]; ++x) {
        const double n = lead * static_cast<double>(last[static_cast<size_t>(x)]);
        dst[offset + x] = static_cast<float>(sums[static_cast<size_t>(offset + x)] / n);
      }
    });
  }

 private:
  std::vector<int64_t> radius_;
};

class MeanOp final : public Op {
 public:
  std::string_view name() const override { return "mean"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Mean over a box window of 2*radius+1 voxels per axis, clipped at the image edge "
           "(edge voxels average the voxels the window holds); output f32.";
  }
  std::vector<ParamSpec> params() const override {
    return {{"radius", ParamType::kIntOrList, Value(1),
             "window half-width in voxels: one number, or one per axis (each >= 0)"}};
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    auto radius = detail::get_radius(params, "radius", in.shape.rank());
    ImageInfo info{DType::kF32, in.shape, in.cell_shape};
    return std::make_unique<MeanKernel>(std::move(info), std::move(radius));
  }
};

}  // namespace

std::shared_ptr<const Op> make_mean_op() { return std::make_shared<MeanOp>(); }

}  // namespace cellflow::nodes
