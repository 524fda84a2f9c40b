// region.count: the number of distinct non-zero labels in each block of
// `region` voxels of a label image, a coarse u32 image of shape
// ceil(shape / region) (the object-count heatmap). An object spanning several
// blocks counts once in each.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

/// Sorts and deduplicates `v`.
template <class T>
void make_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

class RegionCountKernel final : public NodeKernel {
 public:
  RegionCountKernel(ImageInfo info, Dims region, Shape input_shape)
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

    // Per axis: input position -> output position within this cell.
    const auto to_out = detail::block_positions(in.box, out_box, region_);

    uint32_t* dst = out.mutable_as<uint32_t>();
    const auto& last_map = to_out[static_cast<size_t>(r - 1)];
    const int64_t in_len = in_shape[r - 1];
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.data.as<T>();
      // The labels seen in each output block; deduplicated whenever a block's
      // list doubles, so memory stays near the number of distinct labels.
      std::vector<std::vector<T>> seen(static_cast<size_t>(out_box.volume()));
      std::vector<size_t> compact(seen.size(), 0);
      detail::for_each_row(in_shape, [&](const Dims& row, int64_t offset) {
        int64_t out_row = 0;
        for (int d = 0; d < r - 1; ++d) {
          out_row =
              out_row * out_shape[d] + to_out[static_cast<size_t>(d)][static_cast<size_t>(row[d])];
        }
        out_row *= out_shape[r - 1];
        const T* p = src + offset;
        T last = T{0};
        int64_t last_block = -1;
        for (int64_t x = 0; x < in_len; ++x) {
          const T v = p[x];
          const int64_t block = out_row + last_map[static_cast<size_t>(x)];
          if (v == T{0} || (v == last && block == last_block)) continue;
          last = v;
          last_block = block;
          auto& s = seen[static_cast<size_t>(block)];
          s.push_back(v);
          if (s.size() >= 2 * compact[static_cast<size_t>(block)] + 1024) {
            make_unique(s);
            compact[static_cast<size_t>(block)] = s.size();
          }
        }
      });
      for (size_t b = 0; b < seen.size(); ++b) {
        make_unique(seen[b]);
        dst[b] = static_cast<uint32_t>(seen[b].size());
      }
    });
  }

 private:
  Dims region_;
  Shape input_shape_;
};

class RegionCountOp final : public Op {
 public:
  std::string_view name() const override { return "region.count"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Number of distinct non-zero labels in each block of `region` voxels of an integer "
           "label image: a u32 image of shape ceil(shape / region); an object spanning several "
           "blocks counts once in each.";
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
    if (dtype_is_float(in.dtype)) {
      throw InvalidArgument(fmt::format("op \"region.count\" needs an integer label image (got {})",
                                        dtype_name(in.dtype)));
    }
    const int r = in.shape.rank();
    const std::vector<int64_t> region = params.get_ints_per_axis("region", r);
    for (int64_t v : region) {
      if (v < 1) throw InvalidArgument(fmt::format("param \"region\" must be >= 1 (got {})", v));
    }
    ImageInfo info;
    info.dtype = DType::kU32;
    info.space = detail::block_space(in.space, region);
    info.shape = Shape(r);
    for (int d = 0; d < r; ++d) {
      const int64_t k = region[static_cast<size_t>(d)];
      info.shape[d] = (in.shape[d] + k - 1) / k;
    }
    info.cell_shape = detail::block_cell_shape(params, in.cell_shape, region, info.shape);
    return std::make_unique<RegionCountKernel>(std::move(info), Dims::from(region), in.shape);
  }
};

}  // namespace

std::shared_ptr<const Op> make_region_count_op() { return std::make_shared<RegionCountOp>(); }

}  // namespace cellflow::nodes
