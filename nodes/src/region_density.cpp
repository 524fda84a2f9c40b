// region.density: the mean of the input over each block of `region` voxels, a
// coarse f32 image of shape ceil(shape / region). Edge blocks average the
// voxels they have.
#include <fmt/format.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

class RegionDensityKernel final : public NodeKernel {
 public:
  RegionDensityKernel(ImageInfo info, Dims region, Shape input_shape)
      : NodeKernel(std::move(info)), region_(region), input_shape_(input_shape) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& /*input_info*/) const override {
    return detail::block_input_region(out_box, region_, input_shape_);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    const int r = out_box.rank();
    const Shape out_shape = out_box.shape();
    const Shape in_shape = in.box.shape();

    // Per axis: input position -> output position within this cell, and the
    // number of input voxels each output position covers.
    const auto to_out = detail::block_positions(in.box, out_box, region_);
    std::vector<std::vector<int64_t>> count(static_cast<size_t>(r));
    for (int d = 0; d < r; ++d) {
      auto& c = count[static_cast<size_t>(d)];
      c.resize(static_cast<size_t>(out_shape[d]));
      for (int64_t o = 0; o < out_shape[d]; ++o) {
        const int64_t g = out_box.begin()[d] + o;
        c[static_cast<size_t>(o)] =
            std::min((g + 1) * region_[d], input_shape_[d]) - g * region_[d];
      }
    }

    std::vector<double> sums(static_cast<size_t>(out_box.volume()), 0.0);
    const auto& last_map = to_out[static_cast<size_t>(r - 1)];
    const int64_t in_len = in_shape[r - 1];
    // A row's voxels map to output positions in runs (one per region along
    // the last axis): [begin, end) of the row and the output position.
    struct Run {
      int64_t begin, end, out;
    };
    std::vector<Run> runs;
    for (int64_t x = 0; x < in_len; ++x) {
      const int64_t o = last_map[static_cast<size_t>(x)];
      if (runs.empty() || runs.back().out != o) runs.push_back(Run{x, x, o});
      runs.back().end = x + 1;
    }
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.data.as<T>();
      detail::for_each_row(in_shape, [&](const Dims& row, int64_t offset) {
        int64_t out_row = 0;
        for (int d = 0; d < r - 1; ++d) {
          out_row =
              out_row * out_shape[d] + to_out[static_cast<size_t>(d)][static_cast<size_t>(row[d])];
        }
        out_row *= out_shape[r - 1];
        double* s = sums.data() + out_row;
        const T* p = src + offset;
        for (const Run& run : runs) {
          if constexpr (std::is_integral_v<T> && sizeof(T) <= 4) {
            // Integers sum exactly in any order: a vectorizable int64 sum
            // (a run of 2^31 voxels of 2^32 cannot overflow it).
            int64_t acc = 0;
            for (int64_t x = run.begin; x < run.end; ++x) acc += static_cast<int64_t>(p[x]);
            s[run.out] += static_cast<double>(acc);
          } else {
            double acc = s[run.out];
            for (int64_t x = run.begin; x < run.end; ++x) acc += static_cast<double>(p[x]);
            s[run.out] = acc;
          }
        }
      });
    });

    float* dst = out.mutable_as<float>();
    const auto& last_count = count[static_cast<size_t>(r - 1)];
    const int64_t out_len = out_shape[r - 1];
    detail::for_each_row(out_shape, [&](const Dims& row, int64_t offset) {
      double c = 1.0;
      for (int d = 0; d < r - 1; ++d) {
        c *= static_cast<double>(count[static_cast<size_t>(d)][static_cast<size_t>(row[d])]);
      }
      for (int64_t x = 0; x < out_len; ++x) {
        const double n = c * static_cast<double>(last_count[static_cast<size_t>(x)]);
        dst[offset + x] = static_cast<float>(sums[static_cast<size_t>(offset + x)] / n);
      }
    });
  }

 private:
  Dims region_;
  Shape input_shape_;
};

class RegionDensityOp final : public Op {
 public:
  std::string_view name() const override { return "region.density"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Mean of the input over each block of `region` voxels: an f32 image of shape "
           "ceil(shape / region); blocks at the edge average the voxels they contain (the "
           "fraction of set voxels, for a 0/1 mask).";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"region", ParamType::kIntOrList, Value(),
         "block size in voxels: one number, or one per axis (each >= 1)", true},
        detail::block_cell_shape_param(),
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    const int r = in.shape.rank();
    const std::vector<int64_t> region = params.get_ints_per_axis("region", r);
    for (int64_t v : region) {
      if (v < 1) throw InvalidArgument(fmt::format("param \"region\" must be >= 1 (got {})", v));
    }
    ImageInfo info;
    info.dtype = DType::kF32;
    info.space = detail::block_space(in.space, region);
    info.shape = Shape(r);
    for (int d = 0; d < r; ++d) {
      const int64_t k = region[static_cast<size_t>(d)];
      info.shape[d] = (in.shape[d] + k - 1) / k;
    }
    info.cell_shape = detail::block_cell_shape(params, in.cell_shape, region, info.shape);
    return std::make_unique<RegionDensityKernel>(std::move(info), Dims::from(region), in.shape);
  }
};

}  // namespace

std::shared_ptr<const Op> make_region_density_op() { return std::make_shared<RegionDensityOp>(); }

}  // namespace cellflow::nodes
