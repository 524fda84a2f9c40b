// The fast Gaussian (nodes/src/gaussian_fast.cpp) against the native engine,
// which equals ITK's DiscreteGaussianImageFilter bit for bit: the kernel on
// whole images and on cells with their halo (ranks 1-3, sigmas 0.5 to 4.5,
// anisotropic, physical with anisotropic spacing, integer-valued and random
// float data), and the op's `engine: "fast"` on f32, u8 and u16 images cell by
// cell. Tolerance: max |fast - native| <= 1e-5 * max(1, max |native|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "nodes/gaussian_test_data.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

constexpr double kMaxError = 1e-4;
constexpr int kMaxWidth = 128;
constexpr double kTolerance = 1e-5;

using test::GaussianCase;

enum class Data { kFloat, kU8, kU16 };

// Deterministic values: random floats spanning several orders of magnitude
// (some negative), or random integers of a u8 or u16 image (in [0, 256) or
// [0, 65536)).
std::vector<float> noise(int64_t n, uint32_t seed, Data data) {
  std::vector<float> v = test::noise(n, seed);
  if (data == Data::kFloat) return v;
  const float top = data == Data::kU8 ? 256.0F : 65536.0F;
  // test::noise's values lie in [-20, 4000): spread them over the type's range.
  for (float& x : v) x = std::min(top - 1, std::floor((x + 20.0F) / 4020.0F * top));
  return v;
}

// max |fast - native| / max(1, max |native|), and the worst of them seen by
// this test binary (printed at the end of each test for the record).
double worst_seen = 0;

double scaled_error(const std::vector<float>& fast, const std::vector<float>& native) {
  EXPECT_EQ(fast.size(), native.size());
  double scale = 1;
  double worst = 0;
  for (size_t i = 0; i < native.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(native[i])));
    worst = std::max(worst, std::abs(static_cast<double>(fast[i]) - native[i]));
  }
  worst_seen = std::max(worst_seen, worst / scale);
  return worst / scale;
}

void print_worst() { std::printf("[ measured ] worst |fast - native| scaled: %.3g\n", worst_seen); }

using Filter = void (*)(const float*, const Box&, float*, const Box&, const std::vector<double>&,
                        double, int, const std::vector<double>&);

std::vector<float> run(Filter filter, const std::vector<float>& in, const Box& in_box,
                       const Box& out_box, const std::vector<double>& sigma,
                       const std::vector<double>& spacing) {
  std::vector<float> out(static_cast<size_t>(out_box.volume()));
  filter(in.data(), in_box, out.data(), out_box, sigma, kMaxError, kMaxWidth, spacing);
  return out;
}

std::vector<GaussianCase> cases() {
  std::vector<GaussianCase> c;
  for (double s : {0.5, 1.0, 2.0, 4.5}) {
    c.push_back({{257}, {s}, {}});
    c.push_back({{37, 53}, {s, s}, {}});
    c.push_back({{33, 41, 29}, {s, s, s}, {}});
  }
  // Anisotropic sigma, zero sigma (ITK's [0, 1, 0]), a kernel wider than the image.
  c.push_back({{17, 30, 45}, {1.0, 2.5, 0.6}, {}});
  c.push_back({{19, 7, 31}, {0.0, 3.0, 1.2}, {}});
  c.push_back({{3, 40, 9}, {4.5, 0.5, 2.2}, {}});
  c.push_back({{23, 1}, {1.0, 1.0}, {}});
  c.push_back({{5}, {3.0}, {}});
  c.push_back({{1}, {1.5}, {}});
  // Physical sigma with anisotropic spacing.
  c.push_back({{13, 23, 29}, {2.0, 0.5, 0.7}, {1.0, 0.2, 0.2}});
  c.push_back({{31, 26}, {1.1, 1.1}, {0.35, 0.8}});
  return c;
}

TEST(GaussianFast, WholeImageMatchesNative) {
  uint32_t seed = 1;
  for (Data data : {Data::kFloat, Data::kU8, Data::kU16}) {
    for (const GaussianCase& c : cases()) {
      SCOPED_TRACE(test::describe(c) + " data " + std::to_string(static_cast<int>(data)));
      const Box all = Box::from_shape(Shape::from(c.shape));
      const std::vector<float> in = noise(all.volume(), seed++, data);
      const std::vector<float> native =
          run(nodes::gaussian_filter_region_native, in, all, all, c.sigma, c.spacing);
      const std::vector<float> fast =
          run(nodes::gaussian_filter_region_fast, in, all, all, c.sigma, c.spacing);
      EXPECT_LE(scaled_error(fast, native), kTolerance);
    }
  }
  print_worst();
}

TEST(GaussianFast, CellsWithExactHaloMatchNativeOnTheWholeImage) {
  // The op's cells: each reads its box grown by the radius, clipped to the
  // image.
  uint32_t seed = 100;
  for (const GaussianCase& c : cases()) {
    SCOPED_TRACE(test::describe(c));
    const Shape shape = Shape::from(c.shape);
    const Box all = Box::from_shape(shape);
    const std::vector<float> in = noise(all.volume(), seed++, Data::kFloat);
    const std::vector<float> whole =
        run(nodes::gaussian_filter_region_native, in, all, all, c.sigma, c.spacing);
    const auto radius = nodes::gaussian_radius(c.sigma, kMaxError, kMaxWidth, c.spacing);
    test::for_each_cell_with_halo(shape, radius, [&](const Box& cell, const Box& halo) {
      const std::vector<float> got = run(nodes::gaussian_filter_region_fast,
                                         test::crop(in, all, halo), halo, cell, c.sigma, c.spacing);
      EXPECT_LE(scaled_error(got, test::crop(whole, all, cell)), kTolerance) << cell.str();
    });
  }
  print_worst();
}

TEST(GaussianFast, OversizedInputBoxClampsWhereNativeDoes) {
  const Box all = Box::from_shape(Shape{21, 26, 33});
  const std::vector<float> in = noise(all.volume(), 7, Data::kFloat);
  const std::vector<double> sigma{1.5, 0.8, 2.0};
  for (const Box& out : {Box(Dims{3, 4, 5}, Dims{9, 20, 11}), Box(Dims{0, 0, 0}, Dims{2, 26, 4}),
                         Box(Dims{18, 10, 30}, Dims{21, 11, 33})}) {
    SCOPED_TRACE(out.str());
    EXPECT_LE(scaled_error(run(nodes::gaussian_filter_region_fast, in, all, out, sigma, {}),
                           run(nodes::gaussian_filter_region_native, in, all, out, sigma, {})),
              kTolerance);
  }
  print_worst();
}

// ---- the op's engine "fast" ------------------------------------------------------

struct OpCase {
  std::vector<int64_t> shape;
  std::vector<int64_t> cells;
  const char* dtype;
  Value sigma;
  Value spacing;  // null: sigma in voxels; else units "physical"
};

GraphDef op_graph(const OpCase& c, const std::string& engine) {
  GraphDef def;
  Value blobs(Value::Object{{"shape", Value::list(c.shape)},
                            {"cell_shape", Value::list(c.cells)},
                            {"dtype", c.dtype},
                            {"seed", 5},
                            {"noise", 0.2}});
  if (!c.spacing.is_null()) blobs.set("spacing", c.spacing);
  def.add("raw", "synthetic.blobs", {}, blobs);
  Value p = Value::object();
  p.set("sigma", c.sigma);
  if (!c.spacing.is_null()) p.set("units", "physical");
  if (!engine.empty()) p.set("engine", engine);
  def.add("smooth", "gaussian", {"raw"}, p);
  return def;
}

std::vector<float> read_smooth(const GraphDef& def) {
  const Graph g = Graph::build(def, nodes::builtin_registry());
  auto img = g.image("smooth");
  EXPECT_EQ(img->dtype(), DType::kF32);
  const CellBuffer b = img->read(img->grid().bounds());
  return {b.as<float>(), b.as<float>() + b.num_elements()};
}

TEST(GaussianFast, OpFastMatchesNativeCellWise) {
  const std::vector<OpCase> op_cases = {
      {{41, 50, 37}, {16, 16, 16}, "f32", Value(2.0), Value()},
      {{41, 50, 37}, {9, 23, 11}, "f32", test::floats({0.8, 2.5, 1.3}), Value()},
      {{41, 50, 37}, {9, 23, 11}, "u8", Value(1.0), Value()},
      {{41, 50, 37}, {16, 16, 16}, "u16", Value(4.5), Value()},
      {{41, 50, 37},
       {12, 17, 10},
       "u16",
       test::floats({2.0, 0.6, 1.0}),
       test::floats({1.0, 0.3, 0.45})},
      {{70, 45}, {32, 13}, "u8", Value(0.5), test::floats({0.5, 1.25})},
      {{300}, {64}, "f32", Value(2.0), Value()},
  };
  for (const OpCase& c : op_cases) {
    SCOPED_TRACE(std::string(c.dtype) + " sigma " + to_json_compact(c.sigma) + " spacing " +
                 to_json_compact(c.spacing) + " cells " + to_json_compact(Value::list(c.cells)));
    EXPECT_LE(scaled_error(read_smooth(op_graph(c, "fast")), read_smooth(op_graph(c, ""))),
              kTolerance);
  }
  print_worst();
}

TEST(GaussianFast, FastIsItsOwnNode) {
  // A graph that names no engine keeps its hash (native's); "fast" is a
  // different result, hence a different node.
  const OpCase c{{41, 50, 37}, {16, 16, 16}, "f32", Value(2.0), Value()};
  const auto hash = [&](const std::string& engine) {
    return Graph::build(op_graph(c, engine), nodes::builtin_registry()).node("smooth").hash;
  };
  EXPECT_NE(hash("fast"), hash(""));
  EXPECT_NE(hash("fast"), hash("native"));
  EXPECT_NE(hash("fast"), hash("itk"));
  try {
    (void)hash("fastest");
    FAIL() << "engine \"fastest\" was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"fast\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cellflow
