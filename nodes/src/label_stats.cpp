// label.stats: a table with one row per object of a label image: label,
// voxel count, centroid, bounding box and, given an intensity image, the
// mean, min and max intensity over the object. Each cell produces partial
// rows for the labels it contains (counts, coordinate and intensity sums,
// boxes, min/max); merge_rows() adds up the rows of one label across cells,
// in cell order (deterministic), then turns sums into means.
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

/// Axis suffixes of column names: x / y, x / z, y, x; 0..rank-1 beyond 3-D.
std::vector<std::string> axis_names(int rank) {
  if (rank <= 3) {
    static const char* const kZyx[] = {"z", "y", "x"};
    return {kZyx + (3 - rank), kZyx + 3};
  }
  std::vector<std::string> out;
  for (int d = 0; d < rank; ++d) out.push_back(std::to_string(d));
  return out;
}

/// Column layout shared by partial (per cell) and merged rows: label, count,
/// then per axis a sum (partial) or centroid (merged), bbox begins, bbox
/// ends, then sum (partial) or mean (merged), min and max intensity.
struct Layout {
  int rank = 0;
  bool intensity = false;
  size_t label() const { return 0; }
  size_t count() const { return 1; }
  size_t center(int d) const { return 2 + static_cast<size_t>(d); }
  size_t begin(int d) const { return 2 + static_cast<size_t>(rank + d); }
  size_t end(int d) const { return 2 + static_cast<size_t>(2 * rank + d); }
  size_t sum_i() const { return 2 + static_cast<size_t>(3 * rank); }
  size_t min_i() const { return sum_i() + 1; }
  size_t max_i() const { return sum_i() + 2; }
  size_t size() const { return sum_i() + (intensity ? 3 : 0); }

  std::vector<std::string> columns(bool merged) const {
    const std::vector<std::string> ax = axis_names(rank);
    std::vector<std::string> c = {"label", "voxel_count"};
    for (const auto& a : ax) c.push_back((merged ? "centroid_" : "sum_") + a);
    for (const auto& a : ax) c.push_back("bbox_begin_" + a);
    for (const auto& a : ax) c.push_back("bbox_end_" + a);
    if (intensity) {
      c.push_back(merged ? "mean_intensity" : "sum_intensity");
      c.push_back("min_intensity");
      c.push_back("max_intensity");
    }
    return c;
  }
};

class LabelStatsKernel final : public NodeKernel {
 public:
  LabelStatsKernel(ImageInfo info, bool intensity)
      : NodeKernel(std::move(info)), layout_{output().shape.rank(), intensity} {}

  std::vector<std::string> table_columns() const override {
    return layout_.columns(/*merged=*/true);
  }

  Table compute_rows(const Box& out_box, std::span<const InputRegion> inputs) const override {
    const CellBuffer& labels = inputs[0].data;
    return dispatch_dtype(labels.dtype(), [&](auto tag) -> Table {
      using L = typename decltype(tag)::type;
      if constexpr (std::is_floating_point_v<L>) {
        throw NodeError("label.stats: the label image must have an integer dtype");
      } else if (!layout_.intensity) {
        return rows<L, uint8_t>(out_box, labels.as<L>(), nullptr);
      } else {
        const CellBuffer& in = inputs[1].data;
        return dispatch_dtype(in.dtype(), [&](auto itag) {
          using I = typename decltype(itag)::type;
          return rows<L, I>(out_box, labels.as<L>(), in.as<I>());
        });
      }
    });
  }

  Table merge_rows(std::vector<Table> parts) const override {
    const Layout& lay = layout_;
    const int r = lay.rank;
    const size_t width = lay.size();
    std::vector<const double*> all;
    for (const Table& t : parts) {
      if (t.num_rows() == 0) continue;
      if (t.num_columns() != width) {
        throw CorruptionError(fmt::format("label.stats: a cell's rows have {} columns, not {}",
                                          t.num_columns(), width));
      }
      for (size_t i = 0; i < t.num_rows(); ++i) all.push_back(t.row(i).data());
    }
    // Stable: rows of one label stay in cell order, so sums are deterministic.
    std::stable_sort(all.begin(), all.end(),
                     [](const double* a, const double* b) { return a[0] < b[0]; });
    Table out(lay.columns(/*merged=*/true));
    std::vector<double> acc(width);
    for (size_t i = 0; i < all.size();) {
      std::copy(all[i], all[i] + width, acc.begin());
      size_t j = i + 1;
      for (; j < all.size() && all[j][0] == acc[0]; ++j) {
        const double* p = all[j];
        acc[lay.count()] += p[lay.count()];
        for (int d = 0; d < r; ++d) {
          acc[lay.center(d)] += p[lay.center(d)];
          acc[lay.begin(d)] = std::min(acc[lay.begin(d)], p[lay.begin(d)]);
          acc[lay.end(d)] = std::max(acc[lay.end(d)], p[lay.end(d)]);
        }
        if (lay.intensity) {
          acc[lay.sum_i()] += p[lay.sum_i()];
          acc[lay.min_i()] = std::min(acc[lay.min_i()], p[lay.min_i()]);
          acc[lay.max_i()] = std::max(acc[lay.max_i()], p[lay.max_i()]);
        }
      }
      const double n = acc[lay.count()];
      for (int d = 0; d < r; ++d) acc[lay.center(d)] /= n;
      if (lay.intensity) acc[lay.sum_i()] /= n;
      out.add_row(acc);
      i = j;
    }
    return out;
  }

 private:
  struct Acc {
    double label = 0;
    int64_t count = 0;
    double sum[kMaxRank] = {};
    int64_t lo[kMaxRank];
    int64_t hi[kMaxRank];  // inclusive while accumulating
    double sum_i = 0;
    double min_i = std::numeric_limits<double>::infinity();
    double max_i = -std::numeric_limits<double>::infinity();
  };

  template <class L, class I>
  Table rows(const Box& box, const L* labels, const I* intensity) const {
    const int r = box.rank();
    const Shape shape = box.shape();
    const int64_t len = shape[r - 1];
    std::vector<Acc> accs;
    std::unordered_map<L, size_t> index;
    detail::for_each_row(shape, [&](const Dims& row, int64_t offset) {
      const L* p = labels + offset;
      for (int64_t x = 0; x < len;) {
        const L l = p[x];
        int64_t x1 = x + 1;
        while (x1 < len && p[x1] == l) ++x1;
        if (l != L{0}) {
          auto [it, added] = index.try_emplace(l, accs.size());
          if (added) {
            Acc a;
            a.label = static_cast<double>(l);
            for (int d = 0; d < r; ++d) {
              a.lo[d] = std::numeric_limits<int64_t>::max();
              a.hi[d] = std::numeric_limits<int64_t>::min();
            }
            accs.push_back(a);
          }
          Acc& a = accs[it->second];
          const int64_t n = x1 - x;
          a.count += n;
          for (int d = 0; d < r - 1; ++d) {
            const int64_t g = box.begin()[d] + row[d];
            a.sum[d] += static_cast<double>(g * n);
            a.lo[d] = std::min(a.lo[d], g);
            a.hi[d] = std::max(a.hi[d], g);
          }
          const int64_t g0 = box.begin()[r - 1] + x;
          const int64_t g1 = box.begin()[r - 1] + x1 - 1;
          a.sum[r - 1] += static_cast<double>((g0 + g1) * n / 2);
          a.lo[r - 1] = std::min(a.lo[r - 1], g0);
          a.hi[r - 1] = std::max(a.hi[r - 1], g1);
          if (intensity != nullptr) {
            const I* v = intensity + offset;
            for (int64_t k = x; k < x1; ++k) {
              const auto f = static_cast<double>(v[k]);
              a.sum_i += f;
              a.min_i = std::min(a.min_i, f);
              a.max_i = std::max(a.max_i, f);
            }
          }
        }
        x = x1;
      }
    });
    std::sort(accs.begin(), accs.end(),
              [](const Acc& a, const Acc& b) { return a.label < b.label; });
    Table out(layout_.columns(/*merged=*/false));
    std::vector<double> row(layout_.size());
    for (const Acc& a : accs) {
      row[layout_.label()] = a.label;
      row[layout_.count()] = static_cast<double>(a.count);
      for (int d = 0; d < r; ++d) {
        row[layout_.center(d)] = a.sum[d];
        row[layout_.begin(d)] = static_cast<double>(a.lo[d]);
        row[layout_.end(d)] = static_cast<double>(a.hi[d] + 1);
      }
      if (layout_.intensity) {
        row[layout_.sum_i()] = a.sum_i;
        row[layout_.min_i()] = a.min_i;
        row[layout_.max_i()] = a.max_i;
      }
      out.add_row(row);
    }
    return out;
  }

  Layout layout_;
};

class LabelStatsOp final : public Op {
 public:
  std::string_view name() const override { return "label.stats"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "A table with one row per object of an integer label image (label 0 is background): "
           "label, voxel_count, centroid_<axis> (mean voxel index), bbox_begin_<axis> and "
           "bbox_end_<axis> (half-open), and with a second input (an intensity image of the "
           "same shape) mean_intensity, min_intensity and max_intensity; rows sorted by label.";
  }
  std::vector<ParamSpec> params() const override { return {}; }
  int min_inputs() const override { return 1; }
  int max_inputs() const override { return 2; }

  std::unique_ptr<NodeKernel> bind(const Params& /*params*/,
                                   std::span<const ImageInfo> inputs) const override {
    if (inputs.empty() || inputs.size() > 2) {
      throw InvalidArgument(fmt::format(
          "op \"label.stats\" takes 1 or 2 inputs (labels, intensity) (got {})", inputs.size()));
    }
    const ImageInfo& labels = inputs[0];
    if (dtype_is_float(labels.dtype)) {
      throw InvalidArgument(
          fmt::format("op \"label.stats\" needs an integer label image as its first input (got {})",
                      dtype_name(labels.dtype)));
    }
    if (inputs.size() == 2 && !(inputs[1].shape == labels.shape)) {
      throw InvalidArgument(fmt::format(
          "op \"label.stats\": the intensity image's shape {} is not the label image's {}",
          inputs[1].shape.str(), labels.shape.str()));
    }
    // A table cell's payload is its serialized rows, a u8 buffer (the memory
    // cache checks the dtype even though ImageInfo says tables do not use it).
    ImageInfo info{DType::kU8, labels.shape, labels.cell_shape, OutputKind::kTable};
    return std::make_unique<LabelStatsKernel>(std::move(info), inputs.size() == 2);
  }
};

}  // namespace

std::shared_ptr<const Op> make_label_stats_op() { return std::make_shared<LabelStatsOp>(); }

}  // namespace cellflow::nodes
