// downsample: reduces each block of `factors` voxels to one voxel — "mean" for
// intensities (f32), "mode" for labels (the most frequent value, ties to the
// smallest), "max" for masks (NaN ignored unless the block is all NaN). The
// output has shape ceil(shape / factors); blocks at the far edge reduce the
// voxels they hold. Blocks never straddle output cells, so cells are exact.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

enum class Reduction { kMean, kMode, kMax };

/// The most frequent value of `v` (sorted in place), ties to the smallest; all
/// NaNs count as one value, ordered after every number.
template <class T>
T mode_of(std::vector<T>& v) {
  if constexpr (std::is_floating_point_v<T>) {
    std::sort(v.begin(), v.end(), [](T a, T b) { return a < b || (a == a && b != b); });
  } else {
    std::sort(v.begin(), v.end());
  }
  const auto same = [](T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return a == b || (a != a && b != b);
    } else {
      return a == b;
    }
  };
  T best = v[0];
  size_t best_count = 0;
  for (size_t i = 0; i < v.size();) {
    size_t j = i + 1;
    while (j < v.size() && same(v[j], v[i])) ++j;
    if (j - i > best_count) {
      best = v[i];
      best_count = j - i;
    }
    i = j;
  }
  return best;
}

class DownsampleKernel final : public NodeKernel {
 public:
  DownsampleKernel(ImageInfo info, Dims factors, Shape input_shape, Reduction method)
      : NodeKernel(std::move(info)),
        factors_(factors),
        input_shape_(input_shape),
        method_(method) {}

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& /*input_info*/) const override {
    return detail::block_input_region(out_box, factors_, input_shape_);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    dispatch_dtype(in.data.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      run<T>(in, out_box, out);
    });
  }

 private:
  template <class T>
  void run(const InputRegion& in, const Box& out_box, CellBuffer& out) const {
    const int r = out_box.rank();
    const int last = r - 1;
    const Shape in_shape = in.box.shape();
    const T* src = in.data.as<T>();
    std::vector<T> values;
    int64_t o = 0;
    for_each_index(out_box, [&](const Dims& g) {
      // The block of g, relative to the input region; gathered row by row.
      Dims begin(r);
      Dims end(r);
      for (int d = 0; d < r; ++d) {
        begin[d] = g[d] * factors_[d] - in.box.begin()[d];
        end[d] = std::min((g[d] + 1) * factors_[d], input_shape_[d]) - in.box.begin()[d];
      }
      const int64_t len = end[last] - begin[last];
      Dims rows_end = end;
      rows_end[last] = begin[last] + 1;
      values.clear();
      for_each_index(Box(begin, rows_end), [&](const Dims& row) {
        const T* p = src + detail::linear_offset(in_shape, row);
        values.insert(values.end(), p, p + len);
      });
      switch (method_) {
        case Reduction::kMean: {
          double sum = 0.0;
          for (T v : values) sum += static_cast<double>(v);
          out.mutable_as<float>()[o] = static_cast<float>(sum / static_cast<double>(values.size()));
          break;
        }
        case Reduction::kMode:
          out.mutable_as<T>()[o] = mode_of(values);
          break;
        case Reduction::kMax: {
          T m = values[0];
          for (T v : values) m = detail::PickMax{}(m, v);
          out.mutable_as<T>()[o] = m;
          break;
        }
      }
      ++o;
    });
  }

  Dims factors_;
  Shape input_shape_;
  Reduction method_;
};

class DownsampleOp final : public Op {
 public:
  std::string_view name() const override { return "downsample"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Reduces each block of `factors` voxels to one: method \"mean\" (intensities, f32), "
           "\"mode\" (labels: most frequent value, ties to the smallest) or \"max\" (masks); "
           "output shape ceil(shape / factors), edge blocks use the voxels they hold.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"factors", ParamType::kIntOrList, Value(),
         "block size in voxels: one number, or one per axis (each >= 1)", true},
        {"method", ParamType::kString, Value("mean"),
         "\"mean\" (output f32), \"mode\" or \"max\" (output: the input's dtype)"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    const int r = in.shape.rank();
    const std::vector<int64_t> factors = params.get_ints_per_axis("factors", r);
    for (int64_t v : factors) {
      if (v < 1) throw InvalidArgument(fmt::format("param \"factors\" must be >= 1 (got {})", v));
    }
    const std::string& m = params.get_string("method");
    Reduction method = Reduction::kMean;
    if (m == "mode") {
      method = Reduction::kMode;
    } else if (m == "max") {
      method = Reduction::kMax;
    } else if (m != "mean") {
      throw InvalidArgument(
          fmt::format("param \"method\" must be \"mean\", \"mode\" or \"max\" (got \"{}\")", m));
    }
    ImageInfo info;
    info.dtype = method == Reduction::kMean ? DType::kF32 : in.dtype;
    info.space = detail::block_space(in.space, factors);
    info.labels = in.labels && method != Reduction::kMean;
    info.shape = Shape(r);
    info.cell_shape = Shape(r);
    for (int d = 0; d < r; ++d) {
      const int64_t k = factors[static_cast<size_t>(d)];
      info.shape[d] = (in.shape[d] + k - 1) / k;
      info.cell_shape[d] = std::max<int64_t>(1, in.cell_shape[d] / k);
    }
    return std::make_unique<DownsampleKernel>(std::move(info), Dims::from(factors), in.shape,
                                              method);
  }
};

}  // namespace

std::shared_ptr<const Op> make_downsample_op() { return std::make_shared<DownsampleOp>(); }

}  // namespace cellflow::nodes
