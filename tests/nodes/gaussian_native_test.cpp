// The native Gaussian (nodes/src/gaussian_native.cpp) against ITK's
// DiscreteGaussianImageFilter (gaussian_filter_region): whole images of odd
// shapes and ranks 1-3, anisotropic and zero sigmas, sub-boxes with exact and
// oversized halos, and the gaussian op's `engine` param cell by cell.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "itkGaussianOperator.h"
#include "nodes/gaussian_test_data.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

constexpr double kMaxError = 1e-4;
constexpr int kMaxWidth = 128;

using test::GaussianCase;
using test::noise;

struct Diff {
  double worst_relative = 0;  // |a-b| / max(|b|, 1e-3 * max|b|)
  int64_t differing = 0;      // voxels not bit-identical
};

Diff compare(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0;
  for (float x : b) scale = std::max(scale, std::abs(static_cast<double>(x)));
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) ++d.differing;
    const double den = std::max(std::abs(static_cast<double>(b[i])), 1e-3 * scale);
    d.worst_relative = std::max(d.worst_relative, std::abs(double(a[i]) - double(b[i])) / den);
  }
  return d;
}

std::vector<float> run_itk(const std::vector<float>& in, const Box& in_box, const Box& out_box,
                           const std::vector<double>& sigma) {
  std::vector<float> out(static_cast<size_t>(out_box.volume()));
  nodes::gaussian_filter_region(in.data(), in_box, out.data(), out_box, sigma, kMaxError,
                                kMaxWidth);
  return out;
}

std::vector<float> run_native(const std::vector<float>& in, const Box& in_box, const Box& out_box,
                              const std::vector<double>& sigma) {
  std::vector<float> out(static_cast<size_t>(out_box.volume()));
  nodes::gaussian_filter_region_native(in.data(), in_box, out.data(), out_box, sigma, kMaxError,
                                       kMaxWidth);
  return out;
}

const std::vector<GaussianCase>& cases() {
  static const std::vector<GaussianCase> c = {
      {{257}, {2.0}},
      {{1}, {1.5}},
      {{5}, {3.0}},  // kernel wider than the image: clamping on both sides
      {{37, 53}, {2.0, 0.7}},
      {{23, 1}, {1.0, 1.0}},
      {{33, 41, 29}, {2.0, 2.0, 2.0}},
      {{17, 30, 45}, {1.0, 2.5, 0.6}},
      {{19, 7, 31}, {0.0, 3.0, 1.2}},  // sigma 0: ITK's [0, 1, 0] kernel
      {{3, 40, 9}, {4.0, 0.5, 2.2}},
      // Rows of 32 voxels and more (the AVX-512 path sums 32 at a time, the
      // rest of a row by the general loop) and a kernel of over 64 taps.
      {{6, 35, 71}, {1.0, 2.0, 3.0}},
      {{4, 5, 160}, {0.5, 0.0, 12.0}},
  };
  return c;
}

TEST(GaussianNative, CoefficientsAreItksKernel) {
  for (double sigma : {0.0, 0.5, 1.0, 2.0, 3.7, 8.0}) {
    const std::vector<double> c = nodes::gaussian_coefficients(sigma, kMaxError, kMaxWidth);
    const int64_t radius = nodes::gaussian_radius({sigma}, kMaxError, kMaxWidth)[0];
    ASSERT_EQ(static_cast<int64_t>(c.size()), 2 * radius + 1) << sigma;
    EXPECT_NEAR(std::accumulate(c.begin(), c.end(), 0.0), 1.0, 1e-12) << sigma;
    for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i], c[c.size() - 1 - i]) << sigma;
    // The centre weight is the largest, and the kernel narrows with sigma.
    EXPECT_EQ(*std::max_element(c.begin(), c.end()), c[c.size() / 2]);
  }
  EXPECT_EQ(nodes::gaussian_coefficients(0.0, kMaxError, kMaxWidth),
            (std::vector<double>{0, 1, 0}));
  EXPECT_THROW(nodes::gaussian_coefficients(-1, kMaxError, kMaxWidth), InvalidArgument);
  EXPECT_THROW(nodes::gaussian_coefficients(1, 0, kMaxWidth), InvalidArgument);
}

// gaussian_coefficients() and gaussian_radius() are computed without ITK
// (nodes/src/gaussian_coefficients.cpp): bit for bit the operator ITK's
// DiscreteGaussianImageFilter builds for a float image (GaussianOperator<double>),
// over variances on both sides of the Bessel approximations' switch at 3.75,
// truncation errors and width limits that cut the kernel short.
TEST(GaussianNative, CoefficientsAndRadiusAreBitForBitItksOperator) {
  int compared = 0;
  for (double sigma :
       {0.0, 0.1, 0.7, 1.0, 1.5, 1.9364916731037085, 2.0, 3.3, 5.0, 8.25, 13.0, 20.0, 26.0}) {
    for (double max_error : {1e-6, 1e-4, 0.01, 0.3}) {
      for (int max_width : {1, 2, 3, 7, 32, 128, 1000}) {
        SCOPED_TRACE(::testing::Message() << "sigma " << sigma << " max_error " << max_error
                                          << " max_width " << max_width);
        itk::GaussianOperator<double, 1> op;
        op.SetDirection(0);
        op.SetVariance(sigma * sigma);
        op.SetMaximumError(max_error);
        op.SetMaximumKernelWidth(static_cast<unsigned>(max_width));
        itk::OutputWindow::SetGlobalWarningDisplay(false);  // truncation warnings
        op.CreateDirectional();
        const std::vector<double> c = nodes::gaussian_coefficients(sigma, max_error, max_width);
        ASSERT_EQ(c.size(), op.Size());
        for (unsigned i = 0; i < op.Size(); ++i) {
          ASSERT_EQ(std::memcmp(&c[i], &op[i], sizeof(double)), 0)
              << "weight " << i << ": " << c[i] << " against ITK's " << op[i];
        }
        // The radius ITK's filter uses: its kernel's, capped by the width.
        itk::GaussianOperator<double, 1> natural;
        natural.SetDirection(0);
        natural.SetVariance(sigma * sigma);
        natural.SetMaximumError(max_error);
        natural.SetMaximumKernelWidth(1u << 16);
        natural.CreateDirectional();
        EXPECT_EQ(nodes::gaussian_radius({sigma}, max_error, max_width)[0],
                  std::min<int64_t>(natural.GetRadius(0), std::max(max_width, 2)));
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 13 * 4 * 7);
  // Past sigma ~26 the Bessel values overflow (ITK's kernel is NaN): refused.
  EXPECT_THROW(nodes::gaussian_radius({40.0}, kMaxError, kMaxWidth), InvalidArgument);
}

TEST(GaussianNative, WholeImageMatchesItk) {
  uint32_t seed = 1;
  for (const GaussianCase& c : cases()) {
    SCOPED_TRACE(test::describe(c));
    const Box all = Box::from_shape(Shape::from(c.shape));
    const std::vector<float> in = noise(all.volume(), seed++);
    const Diff d = compare(run_native(in, all, all, c.sigma), run_itk(in, all, all, c.sigma));
    EXPECT_LT(d.worst_relative, 1e-5);
    // Same coefficients, same order of sums, same float rounding per pass.
    EXPECT_EQ(d.differing, 0) << "worst relative difference " << d.worst_relative;
  }
}

TEST(GaussianNative, SubBoxesWithExactHaloMatchWholeImage) {
  uint32_t seed = 100;
  for (const GaussianCase& c : cases()) {
    SCOPED_TRACE(test::describe(c));
    const Shape shape = Shape::from(c.shape);
    const Box all = Box::from_shape(shape);
    const std::vector<float> in = noise(all.volume(), seed++);
    const std::vector<float> whole = run_itk(in, all, all, c.sigma);
    const auto radius = nodes::gaussian_radius(c.sigma, kMaxError, kMaxWidth);
    test::for_each_cell_with_halo(shape, radius, [&](const Box& cell, const Box& halo) {
      const Diff d = compare(run_native(test::crop(in, all, halo), halo, cell, c.sigma),
                             test::crop(whole, all, cell));
      EXPECT_LT(d.worst_relative, 1e-5) << cell.str();
      EXPECT_EQ(d.differing, 0) << cell.str();
    });
  }
}

TEST(GaussianNative, OversizedInputBoxIsCroppedLikeItk) {
  // The input box larger than the halo on every side: clamping must still
  // happen at the input box's edge, exactly where ITK's buffered region ends.
  const Shape shape{21, 26, 33};
  const Box all = Box::from_shape(shape);
  const std::vector<float> in = noise(all.volume(), 7);
  const std::vector<double> sigma{1.5, 0.8, 2.0};
  for (const Box& out : {Box(Dims{3, 4, 5}, Dims{9, 20, 11}), Box(Dims{0, 0, 0}, Dims{2, 26, 4}),
                         Box(Dims{18, 10, 30}, Dims{21, 11, 33})}) {
    SCOPED_TRACE(out.str());
    const Diff d = compare(run_native(in, all, out, sigma), run_itk(in, all, out, sigma));
    EXPECT_LT(d.worst_relative, 1e-5);
    EXPECT_EQ(d.differing, 0);
  }
  // A 2-D input whose box is wider along the last axis than the output needs.
  const Box plane = Box::from_shape(Shape{30, 40});
  const std::vector<float> in2 = noise(plane.volume(), 8);
  const Box out2(Dims{5, 2}, Dims{25, 9});
  const Diff d2 =
      compare(run_native(in2, plane, out2, {2.0, 1.0}), run_itk(in2, plane, out2, {2.0, 1.0}));
  EXPECT_EQ(d2.differing, 0);
}

TEST(GaussianNative, RejectsBadArguments) {
  // The fast engine shares the native one's checks (gaussian_separable.cpp).
  for (auto* filter : {nodes::gaussian_filter_region_native, nodes::gaussian_filter_region_fast}) {
    const std::vector<float> in(64, 1.0f);
    float out[64];
    const Box b = Box::from_shape(Shape{4, 4, 4});
    EXPECT_THROW(filter(in.data(), b, out, b, {1.0}, kMaxError, kMaxWidth, {}), InvalidArgument);
    EXPECT_THROW(filter(in.data(), b, out, Box::from_shape(Shape{5, 4, 4}), {1.0, 1.0, 1.0},
                        kMaxError, kMaxWidth, {}),
                 InvalidArgument);
    const Box b4 = Box::from_shape(Shape{2, 2, 4, 4});
    EXPECT_THROW(filter(in.data(), b4, out, b4, {1, 1, 1, 1}, kMaxError, kMaxWidth, {}),
                 InvalidArgument);
  }
}

// ---- the op's engine param ----------------------------------------------------

GraphDef engine_graph(const std::string& engine, std::vector<int64_t> cells, const Value& sigma) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({41, 50, 37})},
                              {"cell_shape", Value::list(cells)},
                              {"seed", 5},
                              {"noise", 0.2}}));
  Value p = Value::object();
  p.set("sigma", sigma);
  if (!engine.empty()) p.set("engine", engine);
  def.add("smooth", "gaussian", {"raw"}, p);
  return def;
}

std::vector<float> read_smooth(const GraphDef& def) {
  const Graph g = Graph::build(def, nodes::builtin_registry());
  auto img = g.image("smooth");
  const CellBuffer b = img->read(img->grid().bounds());
  return {b.as<float>(), b.as<float>() + b.num_elements()};
}

TEST(GaussianNative, OpEnginesAgreeCellWise) {
  for (const Value& sigma : {Value(2.0), test::floats({0.8, 2.5, 1.3})}) {
    SCOPED_TRACE(to_json_compact(sigma));
    const std::vector<float> reference = read_smooth(engine_graph("itk", {41, 50, 37}, sigma));
    for (const std::vector<int64_t>& cells :
         {std::vector<int64_t>{16, 16, 16}, std::vector<int64_t>{9, 23, 11}}) {
      for (const char* engine : {"native", "", "itk"}) {
        SCOPED_TRACE(std::string("engine '") + engine + "' cells " + std::to_string(cells[1]));
        const Diff d = compare(read_smooth(engine_graph(engine, cells, sigma)), reference);
        EXPECT_LT(d.worst_relative, 1e-5);
        EXPECT_EQ(d.differing, 0);
      }
    }
  }
}

TEST(GaussianNative, EngineParam) {
  // Naming no engine keeps the hash graphs had before engines existed;
  // naming one makes a different node (same values).
  const Graph plain =
      Graph::build(engine_graph("", {16, 16, 16}, Value(2.0)), nodes::builtin_registry());
  const Graph native =
      Graph::build(engine_graph("native", {16, 16, 16}, Value(2.0)), nodes::builtin_registry());
  EXPECT_NE(plain.nodes()[1].hash, native.nodes()[1].hash);
  try {
    (void)Graph::build(engine_graph("gpu", {16, 16, 16}, Value(2.0)), nodes::builtin_registry());
    FAIL() << "engine \"gpu\" was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("engine"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cellflow
