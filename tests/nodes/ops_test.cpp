// The built-in ops, checked against straightforward references computed here:
// synthetic.blobs (independent of cells and threads), gaussian (cell-wise ==
// whole image, borders included), threshold, region.density, cast, rescale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "graph/test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

Value blobs_params(std::initializer_list<int64_t> shape, std::initializer_list<int64_t> cells,
                   int seed, const std::string& dtype = "f32", double noise = 0.05,
                   int count = 40) {
  return Value(Value::Object{{"shape", test::ints(shape)},
                             {"cell_shape", test::ints(cells)},
                             {"dtype", dtype},
                             {"seed", seed},
                             {"count", count},
                             {"noise", noise}});
}

/// Builds `def` memory-only (or with `cache`) and reads node `id` whole.
CellBuffer read_node(const GraphDef& def, const std::string& id,
                     const std::optional<fs::path>& cache = std::nullopt) {
  GraphOptions o;
  o.cache_root = cache;
  const auto reg = test::make_test_registry();
  const Graph g = Graph::build(def, *reg, o);
  auto img = g.image(id);
  return img->read(img->grid().bounds());
}

using test::to_doubles;

// ---- synthetic.blobs ---------------------------------------------------------

TEST(SyntheticBlobs, SameImageWhateverTheCellShape) {
  const std::vector<std::vector<int64_t>> cell_shapes = {
      {50, 70, 90}, {32, 32, 32}, {16, 40, 24}, {7, 13, 90}, {1, 70, 5}};
  CellBuffer reference;
  for (const auto& cs : cell_shapes) {
    GraphDef def;
    def.add("raw", "synthetic.blobs", {}, blobs_params({50, 70, 90}, {cs[0], cs[1], cs[2]}, 7));
    const CellBuffer b = read_node(def, "raw");
    EXPECT_EQ(b.shape(), (Dims{50, 70, 90}));
    EXPECT_EQ(b.dtype(), DType::kF32);
    if (!reference) {
      reference = b;
    } else {
      EXPECT_TRUE(test::same_bytes(reference, b)) << "cell shape " << Dims::from(cs).str();
    }
  }
}

TEST(SyntheticBlobs, SameImageWhateverTheThreadCount) {
  test::TempDir tmp;
  std::map<std::string, std::string> first;
  for (int threads : {1, 2, 4}) {
    GraphDef def;
    def.add("raw", "synthetic.blobs", {}, blobs_params({40, 50, 60}, {16, 16, 16}, 8, "u16"));
    GraphOptions o;
    o.cache_root = tmp / ("t" + std::to_string(threads));
    const Graph g = Graph::build(def, nodes::builtin_registry(), o);
    RunOptions ro;
    ro.threads = threads;
    materialize(g, {}, ro);
    std::map<std::string, std::string> files;  // the cell files (not .zarray, locks, ...)
    for (const auto& [path, bytes] :
         test::snapshot(tmp / ("t" + std::to_string(threads)) / g.node("raw").hash / "0"))
      if (fs::path(path).filename().string()[0] != '.') files[path] = bytes;
    EXPECT_EQ(files.size(), 3u * 4u * 4u);
    if (first.empty())
      first = files;
    else
      EXPECT_TRUE(files == first) << threads << " threads gave other bytes";
  }
}

TEST(SyntheticBlobs, LooksLikeFluorescenceMicroscopy) {
  GraphDef clean, noisy;
  clean.add("raw", "synthetic.blobs", {},
            blobs_params({40, 64, 64}, {16, 32, 32}, 9, "f32", 0.0, 30));
  noisy.add("raw", "synthetic.blobs", {},
            blobs_params({40, 64, 64}, {16, 32, 32}, 9, "f32", 0.05, 30));
  const auto c = to_doubles(read_node(clean, "raw"));
  const auto n = to_doubles(read_node(noisy, "raw"));
  // Without noise: background exactly 0.1, blob centres about 1.0, nothing outside [0.1, 1].
  const auto [lo, hi] = std::minmax_element(c.begin(), c.end());
  EXPECT_NEAR(*lo, 0.1, 1e-6);
  EXPECT_NEAR(*hi, 1.0, 1e-3);
  const auto background =
      std::count_if(c.begin(), c.end(), [](double v) { return std::abs(v - 0.1) < 1e-6; });
  const auto bright = std::count_if(c.begin(), c.end(), [](double v) { return v > 0.9; });
  EXPECT_GT(background, static_cast<long>(c.size() / 4)) << "mostly background";
  EXPECT_GT(bright, 100) << "some bright blob interiors";
  // The noise is the difference: mean 0, standard deviation `noise`.
  double sum = 0, sum2 = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    const double d = n[i] - c[i];
    sum += d;
    sum2 += d * d;
  }
  const double mean = sum / static_cast<double>(c.size());
  const double sd = std::sqrt(sum2 / static_cast<double>(c.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(sd, 0.05, 0.0025);
  // Another seed gives another image.
  GraphDef other;
  other.add("raw", "synthetic.blobs", {},
            blobs_params({40, 64, 64}, {16, 32, 32}, 10, "f32", 0.0, 30));
  EXPECT_FALSE(read_node(other, "raw").equals(read_node(clean, "raw")));
}

TEST(SyntheticBlobs, IntegerTypesScaleOneToHalfTheMaximum) {
  GraphDef f, u;
  f.add("raw", "synthetic.blobs", {}, blobs_params({24, 32, 40}, {16, 16, 16}, 11, "f32"));
  u.add("raw", "synthetic.blobs", {}, blobs_params({24, 32, 40}, {16, 16, 16}, 11, "u16"));
  const auto fv = to_doubles(read_node(f, "raw"));
  const CellBuffer ub = read_node(u, "raw");
  EXPECT_EQ(ub.dtype(), DType::kU16);
  const auto uv = to_doubles(ub);
  const double scale = 65535.0 / 2.0;
  for (size_t i = 0; i < fv.size(); ++i) {
    const double expected = std::clamp(fv[i] * scale, 0.0, 65535.0);
    ASSERT_NEAR(uv[i], expected, 1.0 + 1e-6 * expected) << i;
  }
}

// ---- gaussian ----------------------------------------------------------------

GraphDef gaussian_def(std::initializer_list<int64_t> cells, const Value& sigma, int seed = 12) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({50, 70, 90}, cells, seed));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", sigma}}));
  return def;
}

::testing::AssertionResult close_relative(const CellBuffer& a, const CellBuffer& b, double rel,
                                          double floor) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << "shape/dtype differ";
  const auto x = to_doubles(a);
  const auto y = to_doubles(b);
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double err = std::abs(x[i] - y[i]) / std::max(std::abs(y[i]), floor);
    if (err > rel) {
      if (bad++ == 0) first = i;
    }
    worst = std::max(worst, err);
  }
  if (bad > 0)
    return ::testing::AssertionFailure()
           << bad << " of " << x.size() << " voxels differ by more than " << rel
           << " relative (first at linear index " << first << ": " << x[first] << " vs " << y[first]
           << "; worst " << worst << ")";
  return ::testing::AssertionSuccess();
}

TEST(Gaussian, CellWiseEqualsWholeImage) {
  for (const Value& sigma : {Value(2.0), test::floats({1.0, 2.5, 1.5})}) {
    SCOPED_TRACE(to_json_compact(sigma));
    const CellBuffer whole = read_node(gaussian_def({50, 70, 90}, sigma), "smooth");
    EXPECT_EQ(whole.dtype(), DType::kF32);
    EXPECT_TRUE(
        close_relative(read_node(gaussian_def({32, 32, 32}, sigma), "smooth"), whole, 1e-5, 1e-2));
    EXPECT_TRUE(
        close_relative(read_node(gaussian_def({16, 40, 24}, sigma), "smooth"), whole, 1e-5, 1e-2));
    EXPECT_TRUE(
        close_relative(read_node(gaussian_def({9, 70, 11}, sigma), "smooth"), whole, 1e-5, 1e-2));
  }
}

TEST(Gaussian, WholeImageCellIsItkOnTheWholeImage) {
  const CellBuffer raw = read_node(gaussian_def({50, 70, 90}, Value(2.0)), "raw");
  const CellBuffer node = read_node(gaussian_def({50, 70, 90}, Value(2.0)), "smooth");
  std::vector<float> direct(static_cast<size_t>(raw.num_elements()));
  const Box all = Box::from_shape({50, 70, 90});
  nodes::gaussian_filter_region(raw.as<float>(), all, direct.data(), all, {2.0, 2.0, 2.0}, 1e-4,
                                128);
  EXPECT_EQ(std::memcmp(direct.data(), node.data(), node.num_bytes()), 0);
  // And it really smooths: the variance drops.
  const auto var = [](const float* p, size_t n) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; ++i) {
      s += p[i];
      s2 += static_cast<double>(p[i]) * p[i];
    }
    return s2 / static_cast<double>(n) -
           (s / static_cast<double>(n)) * (s / static_cast<double>(n));
  };
  EXPECT_LT(var(direct.data(), direct.size()), 0.8 * var(raw.as<float>(), direct.size()));
}

TEST(Gaussian, ConstantImageStaysConstantIncludingBorders) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          blobs_params({30, 40, 50}, {16, 16, 16}, 13, "f32", 0.0, 0));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 3.0}}));
  for (double v : to_doubles(read_node(def, "smooth"))) ASSERT_NEAR(v, 0.1, 1e-6);
}

TEST(Gaussian, LinearRampIsPreservedInTheInterior) {
  // A symmetric normalized kernel maps a linear function to itself away from the borders.
  GraphDef def;
  def.add("ramp", "test.const", {},
          Value(Value::Object{{"shape", test::ints({24, 30, 36})},
                              {"cell_shape", test::ints({8, 16, 16})},
                              {"value", 1.0},
                              {"ramp", 1e-3}}));
  def.add("smooth", "gaussian", {"ramp"}, Value(Value::Object{{"sigma", 1.0}}));
  const CellBuffer in = read_node(def, "ramp");
  const CellBuffer out = read_node(def, "smooth");
  const auto r = nodes::gaussian_radius({1.0, 1.0, 1.0}, 1e-4, 128);
  const Box interior = Box::from_shape({24, 30, 36}).grow(Dims{-r[0], -r[1], -r[2]});
  ASSERT_FALSE(interior.empty());
  int64_t checked = 0;
  for_each_index(interior, [&](const Dims& g) {
    const int64_t i = (g[0] * 30 + g[1]) * 36 + g[2];
    ASSERT_NEAR(out.as<float>()[i], in.as<float>()[i], 2e-5 * in.as<float>()[i]) << g.str();
    ++checked;
  });
  EXPECT_EQ(checked, interior.volume());
}

TEST(Gaussian, IntegerInputIsSmoothedAsFloat) {
  GraphDef u;
  u.add("raw", "synthetic.blobs", {}, blobs_params({50, 70, 90}, {25, 35, 45}, 14, "u16"));
  u.add("as_f32", "cast", {"raw"}, Value(Value::Object{{"dtype", "f32"}}));
  u.add("smooth_u16", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.5}}));
  u.add("smooth_f32", "gaussian", {"as_f32"}, Value(Value::Object{{"sigma", 1.5}}));
  const CellBuffer a = read_node(u, "smooth_u16");
  EXPECT_EQ(a.dtype(), DType::kF32);
  EXPECT_TRUE(close_relative(a, read_node(u, "smooth_f32"), 1e-6, 1.0));
}

// ---- threshold ---------------------------------------------------------------

TEST(Threshold, MatchesReference) {
  struct Case {
    Value params;
    std::function<bool(double)> ref;
  };
  const std::vector<Case> cases = {
      {Value(Value::Object{{"above", 0.5}}), [](double v) { return v > 0.5; }},
      {Value(Value::Object{{"below", 0.12}}), [](double v) { return v < 0.12; }},
      {Value(Value::Object{{"above", 0.3}, {"below", 0.7}}),
       [](double v) { return v > 0.3 && v < 0.7; }},
      {Value(Value::Object{{"above", 0}}), [](double v) { return v > 0.0; }},
  };
  GraphDef base;
  base.add("raw", "synthetic.blobs", {}, blobs_params({36, 44, 52}, {16, 16, 16}, 15));
  const auto raw = to_doubles(read_node(base, "raw"));
  for (const auto& c : cases) {
    SCOPED_TRACE(to_json_compact(c.params));
    GraphDef def = base;
    def.add("mask", "threshold", {"raw"}, c.params);
    const CellBuffer m = read_node(def, "mask");
    ASSERT_EQ(m.dtype(), DType::kU8);
    ASSERT_EQ(m.num_elements(), static_cast<int64_t>(raw.size()));
    int64_t ones = 0, mismatches = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      const uint8_t v = m.as<uint8_t>()[i];
      ASSERT_LE(v, 1);
      ones += v;
      mismatches += (v == 1) != c.ref(static_cast<double>(static_cast<float>(raw[i])));
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(ones, 0);
  }
}

TEST(Threshold, IntegerInput) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({20, 30, 40}, {16, 16, 16}, 16, "u16"));
  def.add("mask", "threshold", {"raw"}, Value(Value::Object{{"above", 20000}}));
  const auto raw = to_doubles(read_node(def, "raw"));
  const CellBuffer m = read_node(def, "mask");
  for (size_t i = 0; i < raw.size(); ++i)
    ASSERT_EQ(m.as<uint8_t>()[i], raw[i] > 20000 ? 1 : 0) << i;
}

// ---- region.density ------------------------------------------------------------

template <class Get>
std::vector<double> block_means(const Shape& shape, const std::vector<int64_t>& region, Get&& get) {
  Shape out(shape.rank());
  for (int d = 0; d < shape.rank(); ++d)
    out[d] = (shape[d] + region[static_cast<size_t>(d)] - 1) / region[static_cast<size_t>(d)];
  std::vector<double> sums(static_cast<size_t>(out.product()), 0.0), counts(sums.size(), 0.0);
  for_each_index(Box::from_shape(shape), [&](const Dims& g) {
    int64_t o = 0, lin = 0;
    for (int d = 0; d < shape.rank(); ++d) {
      o = o * out[d] + g[d] / region[static_cast<size_t>(d)];
      lin = lin * shape[d] + g[d];
    }
    sums[static_cast<size_t>(o)] += get(lin);
    counts[static_cast<size_t>(o)] += 1;
  });
  for (size_t i = 0; i < sums.size(); ++i) sums[i] /= counts[i];
  return sums;
}

TEST(RegionDensity, ForegroundFractionOfAMask) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({36, 44, 52}, {16, 16, 16}, 17));
  def.add("mask", "threshold", {"raw"}, Value(Value::Object{{"above", 0.5}}));
  def.add("density", "region.density", {"mask"},
          Value(Value::Object{{"region", test::ints({8, 8, 8})}}));
  const CellBuffer mask = read_node(def, "mask");
  const auto reg = test::make_test_registry();
  const Graph g = Graph::build(def, *reg);
  EXPECT_EQ(g.node("density").info.shape, (Dims{5, 6, 7}));  // ceil(36/8, 44/8, 52/8)
  // The default output cells: one 16-voxel input cell along axis 0, at least
  // 128 input voxels (8 cells) along the others, clipped to the output.
  EXPECT_EQ(g.node("density").info.cell_shape, (Dims{2, 6, 7}));
  EXPECT_EQ(g.node("density").info.dtype, DType::kF32);
  const CellBuffer d = read_node(def, "density");
  const auto ref =
      block_means({36, 44, 52}, {8, 8, 8}, [&](int64_t i) { return mask.as<uint8_t>()[i]; });
  ASSERT_EQ(d.num_elements(), static_cast<int64_t>(ref.size()));
  double total = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(d.as<float>()[i], ref[i], 1e-6) << i;
    total += ref[i];
  }
  EXPECT_GT(total, 0.0);
}

// The default output cells of both per-block reductions: one input cell along
// the first axis (a run makes cells in raster order: spanning slabs would keep
// a slab of input in memory), whole input cells covering at least 128 input
// voxels along the others, clipped to the output. A 64^3 region over 64^3
// cells (the heatmaps of compare_peers' B) gives cells of 1x2x2 voxels, not
// one file per voxel; `cell_shape` overrides it.
TEST(RegionDensity, DefaultOutputCellsCoverAtLeast128InputVoxelsPerAxis) {
  struct Case {
    std::initializer_list<int64_t> shape, cells;
    int64_t region;
    Dims expected;
  };
  const auto reg = test::make_test_registry();
  for (const Case& c : {Case{{512, 512, 512}, {64, 64, 64}, 64, {1, 2, 2}},
                        Case{{512, 512, 512}, {32, 32, 32}, 16, {2, 8, 8}},
                        Case{{512, 300, 200}, {256, 100, 50}, 10, {25, 20, 15}},
                        Case{{256, 256, 256}, {64, 64, 64}, 512, {1, 1, 1}},
                        Case{{40, 40, 40}, {8, 8, 8}, 4, {2, 10, 10}}}) {
    for (const char* op : {"region.density", "region.count"}) {
      GraphDef def;
      def.add("raw", "synthetic.blobs", {}, blobs_params(c.shape, c.cells, 1, "u8"));
      def.add("out", op, {"raw"}, Value(Value::Object{{"region", c.region}}));
      EXPECT_EQ(Graph::build(def, *reg).node("out").info.cell_shape, c.expected)
          << op << " region " << c.region;
      def = GraphDef();
      def.add("raw", "synthetic.blobs", {}, blobs_params(c.shape, c.cells, 1, "u8"));
      def.add("out", op, {"raw"},
              Value(Value::Object{{"region", c.region}, {"cell_shape", test::ints({1, 2, 3})}}));
      EXPECT_EQ(Graph::build(def, *reg).node("out").info.cell_shape, (Dims{1, 2, 3})) << op;
    }
  }
}

TEST(RegionDensity, MeanOfAFloatImagePerAxisRegion) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({36, 44, 52}, {16, 16, 16}, 18));
  def.add("density", "region.density", {"raw"},
          Value(Value::Object{{"region", test::ints({4, 16, 7})},
                              {"cell_shape", test::ints({3, 2, 5})}}));
  const CellBuffer raw = read_node(def, "raw");
  const CellBuffer d = read_node(def, "density");
  EXPECT_EQ(d.shape(), (Dims{9, 3, 8}));
  const auto ref =
      block_means({36, 44, 52}, {4, 16, 7}, [&](int64_t i) { return raw.as<float>()[i]; });
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(d.as<float>()[i], ref[i], 1e-6 * std::abs(ref[i]) + 1e-7) << i;
}

// ---- cast and rescale ------------------------------------------------------------

template <class T>
T reference_convert(double v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (std::isnan(v)) return T{0};
    const double r = std::round(v);  // halves away from zero
    if (r <= static_cast<double>(std::numeric_limits<T>::lowest()))
      return std::numeric_limits<T>::lowest();
    if (r >= static_cast<double>(std::numeric_limits<T>::max()))
      return std::numeric_limits<T>::max();
    return static_cast<T>(r);
  }
}

GraphDef spread_def() {
  // blobs mapped onto [-300, 300] as f32, to exercise rounding and saturation.
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({24, 36, 40}, {16, 16, 16}, 19));
  def.add("spread", "rescale", {"raw"},
          Value(Value::Object{{"dtype", "f32"},
                              {"in_range", test::floats({0.0, 1.0})},
                              {"out_range", test::floats({-300.0, 300.0})}}));
  return def;
}

TEST(Cast, RoundsAndSaturatesLikeTheReference) {
  const CellBuffer spread = read_node(spread_def(), "spread");
  const auto in = to_doubles(spread);
  const auto mn = *std::min_element(in.begin(), in.end());
  const auto mx = *std::max_element(in.begin(), in.end());
  ASSERT_LT(mn, -200.0);
  ASSERT_GT(mx, 280.0);
  for (const char* dt : {"u8", "i8", "i16", "u16", "i32", "f64", "f32"}) {
    SCOPED_TRACE(dt);
    GraphDef def = spread_def();
    def.add("cast", "cast", {"spread"}, Value(Value::Object{{"dtype", dt}}));
    const CellBuffer out = read_node(def, "cast");
    ASSERT_EQ(out.dtype(), *parse_dtype(dt));
    dispatch_dtype(out.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      int64_t wrong = 0, first = -1;
      for (size_t i = 0; i < in.size(); ++i) {
        if (out.as<T>()[i] != reference_convert<T>(in[i])) {
          if (first < 0) first = static_cast<int64_t>(i);
          ++wrong;
        }
      }
      EXPECT_EQ(wrong, 0) << "first at " << first << ": input "
                          << (first >= 0 ? in[static_cast<size_t>(first)] : 0.0);
    });
  }
  // Integer to integer keeps values exactly where they fit.
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({24, 36, 40}, {16, 16, 16}, 19, "u16"));
  def.add("i32", "cast", {"raw"}, Value(Value::Object{{"dtype", "i32"}}));
  def.add("u8", "cast", {"raw"}, Value(Value::Object{{"dtype", "u8"}}));
  const auto raw = to_doubles(read_node(def, "raw"));
  const auto i32 = to_doubles(read_node(def, "i32"));
  const auto u8 = to_doubles(read_node(def, "u8"));
  for (size_t i = 0; i < raw.size(); ++i) {
    ASSERT_EQ(i32[i], raw[i]);
    ASSERT_EQ(u8[i], std::min(raw[i], 255.0));
  }
}

TEST(Rescale, GivenInputRangeToDefaultIntegerRange) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({24, 36, 40}, {16, 16, 16}, 20));
  def.add("u8", "rescale", {"raw"},
          Value(Value::Object{{"dtype", "u8"}, {"in_range", test::floats({0.1, 0.9})}}));
  def.add("i16", "rescale", {"raw"},
          Value(Value::Object{{"dtype", "i16"},
                              {"in_range", test::floats({0.1, 0.9})},
                              {"out_range", test::floats({100, -100})}}));
  const auto raw = to_doubles(read_node(def, "raw"));
  const CellBuffer u8 = read_node(def, "u8");
  const CellBuffer i16 = read_node(def, "i16");
  ASSERT_EQ(u8.dtype(), DType::kU8);
  ASSERT_EQ(i16.dtype(), DType::kI16);
  int saturated_low = 0, saturated_high = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    // The op's formula: out_lo + (x - in_lo) * (out_hi - out_lo) / (in_hi - in_lo), clamped.
    const double y = std::clamp(0.0 + (raw[i] - 0.1) * ((255.0 - 0.0) / (0.9 - 0.1)), 0.0, 255.0);
    ASSERT_EQ(u8.as<uint8_t>()[i], reference_convert<uint8_t>(y)) << i << " input " << raw[i];
    const double z =
        std::clamp(100.0 + (raw[i] - 0.1) * ((-100.0 - 100.0) / (0.9 - 0.1)), -100.0, 100.0);
    ASSERT_EQ(i16.as<int16_t>()[i], reference_convert<int16_t>(z)) << i << " input " << raw[i];
    saturated_low += u8.as<uint8_t>()[i] == 0;
    saturated_high += u8.as<uint8_t>()[i] == 255;
  }
  EXPECT_GT(saturated_low, 0);
  EXPECT_GT(saturated_high, 0);
}

TEST(Rescale, ImageOwnRangeToUnitFloat) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params({24, 36, 40}, {16, 16, 16}, 21));
  def.add("unit", "rescale", {"raw"}, Value(Value::Object{{"dtype", "f32"}}));
  def.add("u16", "rescale", {"raw"}, Value(Value::Object{{"dtype", "u16"}}));
  const auto raw = to_doubles(read_node(def, "raw"));
  const double lo = *std::min_element(raw.begin(), raw.end());
  const double hi = *std::max_element(raw.begin(), raw.end());
  const CellBuffer unit = read_node(def, "unit");
  const CellBuffer u16 = read_node(def, "u16");
  double out_lo = 1, out_hi = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    const double y = (raw[i] - lo) / (hi - lo);
    ASSERT_NEAR(unit.as<float>()[i], y, 1e-6) << i;
    ASSERT_EQ(u16.as<uint16_t>()[i], reference_convert<uint16_t>(std::clamp(
                                         (raw[i] - lo) * (65535.0 / (hi - lo)), 0.0, 65535.0)))
        << i;
    out_lo = std::min(out_lo, static_cast<double>(unit.as<float>()[i]));
    out_hi = std::max(out_hi, static_cast<double>(unit.as<float>()[i]));
  }
  EXPECT_EQ(out_lo, 0.0);
  EXPECT_EQ(out_hi, 1.0);
}

TEST(Ops, RejectOutOfRangeParams) {
  const auto reg = test::make_test_registry();
  const auto bad = [&](const std::string& op, Value params, const std::string& param) {
    GraphDef def;
    def.add("raw", "synthetic.blobs", {}, blobs_params({8, 8, 8}, {8, 8, 8}, 1));
    def.add("n", op, {"raw"}, std::move(params));
    try {
      Graph::build(def, *reg);
      ADD_FAILURE() << op << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(param), std::string::npos) << e.what();
    }
  };
  bad("gaussian", Value(Value::Object{{"sigma", -1}}), "sigma");
  bad("gaussian", Value(Value::Object{{"sigma", test::floats({1, 1})}}), "sigma");
  bad("gaussian", Value(Value::Object{{"sigma", 1}, {"max_error", 1.5}}), "max_error");
  bad("threshold", Value::object(), "above");
  bad("region.density", Value(Value::Object{{"region", 0}}), "region");
  bad("cast", Value::object(), "dtype");
  bad("rescale", Value(Value::Object{{"dtype", "u8"}, {"in_range", test::floats({1, 0})}}),
      "in_range");
  bad("rescale", Value(Value::Object{{"dtype", "u8"}, {"in_range", test::floats({0, 1, 2})}}),
      "in_range");
}

}  // namespace
}  // namespace cellflow
