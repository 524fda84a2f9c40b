// otsu, region.count and label.stats against brute-force references computed
// here on the whole image, for cell shapes that do and do not divide it; the
// label.stats table is cached (a second graph over the same cache computes
// nothing) and exported by the CLI as CSV.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/otsu.hpp"
#include "nodes/volume_source.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

/// Reads node `id` of `def` whole (memory only).
CellBuffer read_node(const GraphDef& def, const std::string& id) {
  const auto reg = test::make_volume_registry();
  const Graph g = Graph::build(def, *reg);
  auto img = g.image(id);
  return img->read(img->grid().bounds());
}

using test::to_doubles;

template <class T>
CellBuffer make_buffer(const Shape& shape, const std::vector<double>& values) {
  CellBuffer b = CellBuffer::allocate(dtype_of<T>(), shape);
  for (size_t i = 0; i < values.size(); ++i) b.mutable_as<T>()[i] = static_cast<T>(values[i]);
  return b;
}

/// Two noisy populations (background ~ 10, objects ~ 60) plus a few outliers.
std::vector<double> bimodal_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const double u = static_cast<double>(rng() % 100000) / 100000.0;
    x = (rng() % 3 == 0 ? 60.0 : 10.0) + 25.0 * (u - 0.5);
  }
  v[5] = -40.0;
  v[17] = 140.0;
  return v;
}

// ---- otsu ---------------------------------------------------------------------

/// Otsu's threshold written out as skimage.filters.threshold_otsu does it in
/// numpy: np.histogram's edges (float32 for float32 data), bin by search in
/// the edges, centers, cumulative weights and means, argmax of the
/// between-class variance.
double reference_otsu(const std::vector<double>& values, int bins, bool f32) {
  const double lo = *std::min_element(values.begin(), values.end());
  const double hi = *std::max_element(values.begin(), values.end());
  if (lo == hi) return lo;
  std::vector<double> edges(static_cast<size_t>(bins) + 1);
  for (int i = 0; i <= bins; ++i) {
    double e = i == bins ? hi : i * ((hi - lo) / bins) + lo;
    if (f32) e = static_cast<float>(e);
    edges[static_cast<size_t>(i)] = e;
  }
  std::vector<double> hist(static_cast<size_t>(bins), 0.0);
  for (const double v : values) {
    // The last i with edges[i] <= v, the last bin closed on the right.
    auto it = std::upper_bound(edges.begin(), edges.end(), v);
    auto i = static_cast<size_t>(it - edges.begin()) - 1;
    hist[std::min(i, static_cast<size_t>(bins) - 1)] += 1;
  }
  std::vector<double> centers(static_cast<size_t>(bins));
  for (size_t i = 0; i < centers.size(); ++i) {
    centers[i] = f32 ? static_cast<double>(
                           (static_cast<float>(edges[i]) + static_cast<float>(edges[i + 1])) / 2.0f)
                     : (edges[i] + edges[i + 1]) / 2.0;
  }
  const size_t n = centers.size();
  std::vector<double> w1(n), w2(n), m1(n), m2(n);
  double cw = 0, cs = 0;
  for (size_t i = 0; i < n; ++i) {
    cw += hist[i];
    cs += hist[i] * centers[i];
    w1[i] = cw;
    m1[i] = cs / cw;
  }
  cw = 0;
  cs = 0;
  for (size_t i = n; i-- > 0;) {
    cw += hist[i];
    cs += hist[i] * centers[i];
    w2[i] = cw;
    m2[i] = cs / cw;
  }
  size_t best = 0;
  double best_v = -1;
  for (size_t i = 0; i + 1 < n; ++i) {
    const double v = w1[i] * w2[i + 1] * (m1[i] - m2[i + 1]) * (m1[i] - m2[i + 1]);
    if (v > best_v) {
      best_v = v;
      best = i;
    }
  }
  return centers[best];
}

TEST(Otsu, ThresholdFormulaPicksTheFirstBestSplit) {
  // Two equal modes with empty bins between them: every split in the gap has
  // the same variance; skimage (np.argmax) takes the first.
  const std::vector<int64_t> counts = {10, 10, 0, 0, 10, 10};
  const std::vector<double> centers = {0, 1, 2, 3, 4, 5};
  EXPECT_EQ(nodes::otsu_threshold(counts, centers), 1.0);
  const std::vector<int64_t> skewed = {1, 50, 2, 3, 40, 1};
  EXPECT_EQ(nodes::otsu_threshold(skewed, centers), 2.0);
  EXPECT_THROW(nodes::otsu_threshold(std::vector<int64_t>{5}, std::vector<double>{1.0}),
               InvalidArgument);
}

TEST(Otsu, MaskIsWholeImageOtsuWhateverTheCellShape) {
  const Shape shape{21, 17, 19};
  const std::vector<double> values = bimodal_values(shape.product(), 4u);
  struct Case {
    DType dtype;
    int bins;
  };
  for (const Case c : {Case{DType::kF32, 256}, Case{DType::kF64, 17}, Case{DType::kI16, 256},
                       Case{DType::kU8, 40}}) {
    std::vector<double> v = values;
    if (c.dtype == DType::kU8) {
      for (double& x : v) x = std::clamp(std::round(x + 40.0), 0.0, 255.0);
    } else if (c.dtype == DType::kI16) {
      for (double& x : v) x = std::round(x * 10.0);
    }
    const CellBuffer data = dispatch_dtype(
        c.dtype, [&](auto tag) { return make_buffer<typename decltype(tag)::type>(shape, v); });
    const std::vector<double> stored = to_doubles(data);
    const double t = reference_otsu(stored, c.bins, c.dtype == DType::kF32);
    const std::string key = test::Volumes::global().add("otsu", data);
    int64_t above = 0;
    for (const double x : stored) above += x > t ? 1 : 0;
    ASSERT_GT(above, shape.product() / 5) << "the test data should be bimodal";
    ASSERT_LT(above, shape.product() / 2);
    for (const Shape& cells : {Shape{21, 17, 19}, Shape{5, 6, 7}, Shape{4, 17, 3}}) {
      GraphDef def;
      def.add("raw", "test.volume", {}, test::volume_params(key, cells));
      def.add("mask", "otsu", {"raw"}, Value(Value::Object{{"bins", int64_t{c.bins}}}));
      const CellBuffer mask = read_node(def, "mask");
      ASSERT_EQ(mask.dtype(), DType::kU8);
      int64_t wrong = 0;
      for (size_t i = 0; i < stored.size(); ++i) {
        wrong += mask.as<uint8_t>()[i] != (stored[i] > t ? 1 : 0) ? 1 : 0;
      }
      EXPECT_EQ(wrong, 0) << dtype_name(c.dtype) << ", " << c.bins << " bins, threshold " << t
                          << ", cells " << cells.str();
    }
  }
}

TEST(Otsu, HelpersAgreeWithTheReference) {
  const std::vector<double> v = bimodal_values(5000, 9u);
  const double lo = *std::min_element(v.begin(), v.end());
  const double hi = *std::max_element(v.begin(), v.end());
  const std::vector<double> edges = nodes::histogram_edges(lo, hi, 64, /*single_precision=*/false);
  std::vector<int64_t> counts(64, 0);
  for (const double x : v) ++counts[static_cast<size_t>(nodes::histogram_bin(edges, x))];
  const double t = nodes::otsu_threshold(counts, nodes::histogram_centers(edges, false));
  EXPECT_EQ(t, reference_otsu(v, 64, false));
}

// The histogram of smooth data (long runs of voxels in one bin, values exactly
// on edges, runs that step back and forth across an edge, NaN inside a run)
// counts every voxel in the bin a search in the edges gives it.
TEST(Otsu, HistogramOfSmoothRunsMatchesASearchInTheEdges) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // 37 bins: counted in four interleaved sets; 5,000: in place.
  for (const int bins : {37, 5000})
    for (const DType dtype : {DType::kF32, DType::kF64, DType::kI16, DType::kU8}) {
      const bool f32 = dtype == DType::kF32;
      const bool integer = !dtype_is_float(dtype);
      const double lo = integer ? 0.0 : -1.5;
      const double hi = integer ? 200.0 : 7.25;
      const std::vector<double> edges = nodes::histogram_edges(lo, hi, bins, f32);
      std::vector<double> v;
      for (int i = 0; i <= 3000; ++i) v.push_back(lo + (hi - lo) * i / 3000.0);  // a ramp
      for (int k = 0; k <= bins; ++k) {  // runs on each edge and a step either side of it
        const double e = edges[static_cast<size_t>(k)];
        // The neighbouring values of the data's own type (floats for f32).
        const auto next = [&](double toward) {
          return f32 ? static_cast<double>(
                           std::nextafter(static_cast<float>(e), static_cast<float>(toward)))
                     : std::nextafter(e, toward);
        };
        for (int j = 0; j < 5; ++j) v.push_back(e);
        v.push_back(next(-1e30));
        v.push_back(e);
        v.push_back(next(1e30));
        v.push_back(e);
        for (int j = 0; j < 9; ++j) v.push_back(next(-1e30));  // a run just below the edge
      }
      if (!integer) {
        v.insert(v.begin() + 1500, 3, nan);
        v.push_back(nan);
      }
      for (int i = 3000; i >= 0; i -= 7) v.push_back(lo + (hi - lo) * i / 3000.0);  // back down
      for (double& x : v) {
        if (integer) x = std::clamp(std::round(x), lo, hi);
      }
      const CellBuffer data = dispatch_dtype(dtype, [&](auto tag) {
        return make_buffer<typename decltype(tag)::type>(Shape{static_cast<int64_t>(v.size())}, v);
      });
      std::vector<int64_t> counts(static_cast<size_t>(bins), 0);
      nodes::add_to_histogram(data, edges, counts);
      std::vector<int64_t> expected(static_cast<size_t>(bins), 0);
      for (const double x : to_doubles(data)) {
        if (std::isnan(x)) continue;
        // The last edge <= x, clamped to the bins (the last bin closed on the right).
        const auto above = std::upper_bound(edges.begin(), edges.end(), x) - edges.begin();
        ++expected[static_cast<size_t>(std::clamp<int64_t>(above - 1, 0, bins - 1))];
      }
      EXPECT_EQ(counts, expected) << dtype_name(dtype) << ", " << bins << " bins";
    }
}

// The image's own range skips NaN, also when whole cells hold nothing else,
// and keeps infinities out of nothing: here the range is [-3, 5].
TEST(Rescale, OwnRangeIgnoresNaNEvenInAllNaNCells) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> v(42);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i % 7) - 1.0;  // -1..5
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) v[static_cast<size_t>(r * 7 + c)] = nan;  // the first 4x4 cell
  }
  v[40] = -3.0;
  v[20] = nan;
  const std::string key = test::Volumes::global().add("nan", make_buffer<float>(Shape{6, 7}, v));
  GraphDef def;
  def.add("raw", "test.volume", {}, test::volume_params(key, Shape{4, 4}));
  def.add("unit", "rescale", {"raw"}, Value(Value::Object{{"dtype", "f32"}}));
  const CellBuffer unit = read_node(def, "unit");
  int64_t checked = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) continue;
    EXPECT_NEAR(unit.as<float>()[i], (v[i] + 3.0) / 8.0, 1e-6) << i;
    ++checked;
  }
  EXPECT_EQ(checked, 42 - 17);
  EXPECT_EQ(unit.as<float>()[40], 0.0F);
}

TEST(Otsu, ConstantImageGivesAnEmptyMaskAndBinsAreValidated) {
  const std::string key = test::Volumes::global().add(
      "const", make_buffer<float>(Shape{6, 7}, std::vector<double>(42, 3.5)));
  GraphDef def;
  def.add("raw", "test.volume", {}, test::volume_params(key, Shape{4, 4}));
  def.add("mask", "otsu", {"raw"});
  const CellBuffer mask = read_node(def, "mask");
  for (int64_t i = 0; i < mask.num_elements(); ++i) EXPECT_EQ(mask.as<uint8_t>()[i], 0);

  GraphDef bad;
  bad.add("raw", "test.volume", {}, test::volume_params(key, Shape{4, 4}));
  bad.add("mask", "otsu", {"raw"}, Value(Value::Object{{"bins", int64_t{1}}}));
  const auto reg = test::make_volume_registry();
  try {
    Graph::build(bad, *reg);
    FAIL() << "bins = 1 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("param \"bins\""), std::string::npos) << e.what();
  }
}

// ---- region.count -------------------------------------------------------------

/// Labels 0..7 in runs along x, so objects span cells and blocks.
std::vector<double> label_values(const Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> v(static_cast<size_t>(shape.product()));
  double cur = 0;
  for (auto& x : v) {
    if (rng() % 5 == 0) cur = static_cast<double>(rng() % 8);
    x = cur;
  }
  return v;
}

TEST(RegionCount, DistinctLabelsPerBlockWhateverTheCellShape) {
  const Shape shape{13, 22, 17};
  const Shape region{4, 5, 6};
  const std::vector<double> values = label_values(shape, 2u);
  for (const DType dt : {DType::kU32, DType::kU8, DType::kI64}) {
    const CellBuffer labels = dispatch_dtype(
        dt, [&](auto tag) { return make_buffer<typename decltype(tag)::type>(shape, values); });
    const std::string key = test::Volumes::global().add("labels", labels);
    // Reference: a set of labels per block.
    const Shape out_shape{4, 5, 3};
    std::vector<std::set<double>> sets(static_cast<size_t>(out_shape.product()));
    int64_t i = 0;
    for_each_index(Box::from_shape(shape), [&](const Dims& p) {
      const double l = values[static_cast<size_t>(i++)];
      if (l == 0) return;
      const int64_t b =
          ((p[0] / region[0]) * out_shape[1] + p[1] / region[1]) * out_shape[2] + p[2] / region[2];
      sets[static_cast<size_t>(b)].insert(l);
    });
    // Input cells of several shapes; output cells by default (one input cell
    // along axis 0; along the others at least 128 input voxels, clipped to
    // the output: the whole axis here) and given
    // (several cells, not aligned with the input's).
    for (const Shape& cells : {Shape{13, 22, 17}, Shape{8, 10, 12}, Shape{3, 7, 5}}) {
      for (const bool given : {false, true}) {
        GraphDef def;
        def.add("labels", "test.volume", {}, test::volume_params(key, cells));
        Value::Object params{{"region", test::ints({4, 5, 6})}};
        if (given) params.emplace_back("cell_shape", test::ints({3, 2, 1}));
        def.add("counts", "region.count", {"labels"}, Value(params));
        const auto reg = test::make_volume_registry();
        const Graph g = Graph::build(def, *reg);
        const GraphNode& n = g.node("counts");
        EXPECT_EQ(n.info.dtype, DType::kU32);
        EXPECT_EQ(n.info.shape, out_shape);
        const Shape by_default{std::clamp<int64_t>(cells[0] / 4, 1, 4), 5, 3};
        EXPECT_EQ(n.info.cell_shape, (given ? Shape{3, 2, 1} : by_default));
        auto img = g.image("counts");
        const CellBuffer counts = img->read(img->grid().bounds());
        for (size_t b = 0; b < sets.size(); ++b) {
          EXPECT_EQ(counts.as<uint32_t>()[b], sets[b].size())
              << "block " << b << ", cells " << cells.str() << (given ? ", cell_shape given" : "");
        }
      }
    }
  }
}

TEST(RegionCount, RejectsFloatInput) {
  const std::string key = test::Volumes::global().add(
      "f", make_buffer<float>(Shape{4, 4}, std::vector<double>(16, 1.0)));
  GraphDef def;
  def.add("labels", "test.volume", {}, test::volume_params(key, Shape{4, 4}));
  def.add("counts", "region.count", {"labels"}, Value(Value::Object{{"region", int64_t{2}}}));
  const auto reg = test::make_volume_registry();
  EXPECT_THROW(Graph::build(def, *reg), Error);
}

// ---- label.stats --------------------------------------------------------------

struct RefRow {
  int64_t count = 0;
  std::vector<double> sum;
  std::vector<int64_t> lo, hi;
  double sum_i = 0, min_i = INFINITY, max_i = -INFINITY;
};

std::map<int64_t, RefRow> reference_stats(const Shape& shape, const std::vector<double>& labels,
                                          const std::vector<double>& intensity) {
  std::map<int64_t, RefRow> rows;
  const int r = shape.rank();
  int64_t i = 0;
  for_each_index(Box::from_shape(shape), [&](const Dims& p) {
    const auto l = static_cast<int64_t>(labels[static_cast<size_t>(i)]);
    const double v = intensity[static_cast<size_t>(i)];
    ++i;
    if (l == 0) return;
    RefRow& row = rows[l];
    if (row.count == 0) {
      row.sum.assign(static_cast<size_t>(r), 0.0);
      row.lo.assign(p.begin(), p.end());
      row.hi.assign(p.begin(), p.end());
    }
    ++row.count;
    for (int d = 0; d < r; ++d) {
      row.sum[static_cast<size_t>(d)] += static_cast<double>(p[d]);
      row.lo[static_cast<size_t>(d)] = std::min(row.lo[static_cast<size_t>(d)], p[d]);
      row.hi[static_cast<size_t>(d)] = std::max(row.hi[static_cast<size_t>(d)], p[d]);
    }
    row.sum_i += v;
    row.min_i = std::min(row.min_i, v);
    row.max_i = std::max(row.max_i, v);
  });
  return rows;
}

void expect_table_matches(const Table& t, const std::map<int64_t, RefRow>& ref, int rank,
                          bool intensity, const std::string& what) {
  const std::vector<std::string> axes =
      rank == 3 ? std::vector<std::string>{"z", "y", "x"} : std::vector<std::string>{"y", "x"};
  std::vector<std::string> cols = {"label", "voxel_count"};
  for (const auto& a : axes) cols.push_back("centroid_" + a);
  for (const auto& a : axes) cols.push_back("bbox_begin_" + a);
  for (const auto& a : axes) cols.push_back("bbox_end_" + a);
  if (intensity) {
    cols.push_back("mean_intensity");
    cols.push_back("min_intensity");
    cols.push_back("max_intensity");
  }
  ASSERT_EQ(t.columns(), cols) << what;
  ASSERT_EQ(t.num_rows(), ref.size()) << what;
  size_t r = 0;
  for (const auto& [label, row] : ref) {
    SCOPED_TRACE(what + ", label " + std::to_string(label));
    EXPECT_EQ(t.at(r, 0), static_cast<double>(label));
    EXPECT_EQ(t.at(r, 1), static_cast<double>(row.count));
    for (int d = 0; d < rank; ++d) {
      const auto ds = static_cast<size_t>(d);
      EXPECT_NEAR(t.at(r, 2 + ds), row.sum[ds] / static_cast<double>(row.count), 1e-9);
      EXPECT_EQ(t.at(r, 2 + static_cast<size_t>(rank) + ds), static_cast<double>(row.lo[ds]));
      EXPECT_EQ(t.at(r, 2 + static_cast<size_t>(2 * rank) + ds),
                static_cast<double>(row.hi[ds] + 1));
    }
    if (intensity) {
      const size_t c = 2 + static_cast<size_t>(3 * rank);
      EXPECT_NEAR(t.at(r, c), row.sum_i / static_cast<double>(row.count),
                  1e-9 * (1 + std::abs(row.sum_i)));
      EXPECT_EQ(t.at(r, c + 1), row.min_i);
      EXPECT_EQ(t.at(r, c + 2), row.max_i);
    }
    ++r;
  }
}

TEST(LabelStats, TableMatchesBruteForceWhateverTheCellShape) {
  const Shape shape{13, 22, 17};
  const std::vector<double> labels = label_values(shape, 6u);
  const std::vector<double> intensity = bimodal_values(shape.product(), 8u);
  const std::string lkey =
      test::Volumes::global().add("labels", make_buffer<uint16_t>(shape, labels));
  const std::string ikey =
      test::Volumes::global().add("intensity", make_buffer<float>(shape, intensity));
  const std::vector<double> stored_i = to_doubles(make_buffer<float>(shape, intensity));
  const auto ref = reference_stats(shape, labels, stored_i);
  ASSERT_EQ(ref.size(), 7u);
  for (const Shape& cells : {Shape{13, 22, 17}, Shape{5, 6, 7}, Shape{2, 22, 3}}) {
    for (const bool with_intensity : {true, false}) {
      GraphDef def;
      def.add("labels", "test.volume", {}, test::volume_params(lkey, cells));
      def.add("intensity", "test.volume", {}, test::volume_params(ikey, Shape{4, 4, 4}));
      if (with_intensity) {
        def.add("objects", "label.stats", {"labels", "intensity"});
      } else {
        def.add("objects", "label.stats", {"labels"});
      }
      const auto reg = test::make_volume_registry();
      const Graph g = Graph::build(def, *reg);
      EXPECT_EQ(g.node("objects").info.kind, OutputKind::kTable);
      EXPECT_EQ(g.node("objects").info.cell_shape, cells);
      expect_table_matches(g.table("objects"), ref, 3, with_intensity,
                           "cells " + cells.str() + (with_intensity ? " with intensity" : ""));
    }
  }
}

TEST(LabelStats, TwoDimensionalColumnNames) {
  const Shape shape{9, 11};
  const std::vector<double> labels = label_values(shape, 1u);
  const std::string lkey =
      test::Volumes::global().add("labels2d", make_buffer<int32_t>(shape, labels));
  GraphDef def;
  def.add("labels", "test.volume", {}, test::volume_params(lkey, Shape{4, 5}));
  def.add("objects", "label.stats", {"labels"});
  const auto reg = test::make_volume_registry();
  const Graph g = Graph::build(def, *reg);
  expect_table_matches(g.table("objects"),
                       reference_stats(shape, labels, std::vector<double>(labels.size(), 0.0)), 2,
                       false, "2-D");
}

TEST(LabelStats, TableIsCachedAndReadBackByASecondGraph) {
  test::TempDir dir;
  const Shape shape{12, 10, 14};
  const std::vector<double> labels = label_values(shape, 3u);
  const std::vector<double> intensity = bimodal_values(shape.product(), 1u);
  const std::string lkey =
      test::Volumes::global().add("labels", make_buffer<uint32_t>(shape, labels));
  const std::string ikey =
      test::Volumes::global().add("intensity", make_buffer<double>(shape, intensity));
  GraphDef def;
  def.add("labels", "test.volume", {}, test::volume_params(lkey, Shape{5, 4, 6}));
  def.add("intensity", "test.volume", {}, test::volume_params(ikey, Shape{5, 4, 6}));
  def.add("objects", "label.stats", {"labels", "intensity"});
  def.outputs = {"objects"};
  const auto reg = test::make_volume_registry();
  GraphOptions opts;
  opts.cache_root = dir.path() / "cache";

  Table first;
  {
    const Graph g = Graph::build(def, *reg, opts);
    const RunReport report = materialize(g);
    EXPECT_EQ(report.nodes[g.index("objects")].cells_computed, 27);
    first = g.table("objects");
  }
  expect_table_matches(first, reference_stats(shape, labels, intensity), 3, true, "first run");

  const Graph g2 = Graph::build(def, *reg, opts);
  const RunReport again = materialize(g2);
  for (const NodeReport& n : again.nodes)
    EXPECT_EQ(n.cells_computed, 0) << g2.nodes()[n.node].def.id;
  EXPECT_TRUE(again.nodes[g2.index("objects")].complete);
  EXPECT_EQ(g2.table("objects"), first);
  EXPECT_EQ(g2.image("objects")->stats().computed, 0);
}

TEST(LabelStats, CliExportsCsvAndRejectsOtherExtensions) {
  test::TempDir dir;
  const fs::path graph = dir / "g.json";
  test::write_all(graph, R"({
  "cellflow": 1,
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [32, 40, 48], "cell_shape": [16, 16, 16], "dtype": "f32", "seed": 3, "count": 12}},
    {"id": "mask", "op": "otsu", "inputs": ["raw"]},
    {"id": "labels", "op": "label", "inputs": ["mask"], "params": {"connectivity": "full"}},
    {"id": "objects", "op": "label.stats", "inputs": ["labels", "raw"]}
  ],
  "outputs": ["objects"]
})");
  const std::string cache = (dir / "cache").string();
  const fs::path csv = dir / "out" / "objects.csv";
  const auto ok = test::run_cli(
      {"export", graph.string(), "objects", "--to", csv.string(), "--cache", cache}, dir.path());
  ASSERT_EQ(ok.exit_code, 0) << test::describe(ok);
  const std::string text = test::read_all(csv);
  EXPECT_EQ(
      text.substr(0, text.find('\n')),
      "label,voxel_count,centroid_z,centroid_y,centroid_x,bbox_begin_z,bbox_begin_y,bbox_begin_x,"
      "bbox_end_z,bbox_end_y,bbox_end_x,mean_intensity,min_intensity,max_intensity");
  const auto lines = std::count(text.begin(), text.end(), '\n');
  EXPECT_GE(lines, 2) << text;
  EXPECT_EQ(text.substr(text.find('\n') + 1, 2), "1,") << text;

  const auto png = test::run_cli(
      {"export", graph.string(), "objects", "--to", (dir / "o.png").string(), "--cache", cache},
      dir.path());
  EXPECT_EQ(png.exit_code, 2) << test::describe(png);
  EXPECT_NE(png.err.find(".csv"), std::string::npos) << png.err;
  const auto img_csv = test::run_cli(
      {"export", graph.string(), "labels", "--to", (dir / "l.csv").string(), "--cache", cache},
      dir.path());
  EXPECT_EQ(img_csv.exit_code, 2) << test::describe(img_csv);
  EXPECT_NE(img_csv.err.find("table"), std::string::npos) << img_csv.err;
}

}  // namespace
}  // namespace cellflow
