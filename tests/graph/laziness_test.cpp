// Pull evaluation: reading a region computes exactly the cells of its
// dependency cone, counted per node, and nothing else.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

// blobs 48 x 80 x 72 in 16^3 cells: a 3 x 5 x 5 grid whose last x cells are 8 wide.
GraphDef cone_def(int seed) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({48, 80, 72})},
                              {"cell_shape", test::ints({16, 16, 16})},
                              {"seed", seed},
                              {"count", 30}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.5}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.5}}));
  def.outputs = {"mask"};
  return def;
}

std::set<std::vector<int64_t>> available_cells(CachedCellImage& img) {
  std::set<std::vector<int64_t>> out;
  for (int64_t c = 0; c < img.grid().num_cells(); ++c)
    if (img.available(img.grid().cell_at(c))) out.insert(img.grid().cell_at(c).to_vector());
  return out;
}

std::set<std::vector<int64_t>> cells_of(const Box& cells) {
  std::set<std::vector<int64_t>> out;
  for_each_index(cells, [&](const Dims& c) { out.insert(c.to_vector()); });
  return out;
}

TEST(Laziness, ReadingOneRegionComputesExactlyItsDependencyCone) {
  // The gaussian's halo for sigma 1.5 must stay within one neighbouring cell
  // for the hand-computed cone below to hold.
  const auto radius = nodes::gaussian_radius({1.5, 1.5, 1.5}, 1e-4, 128);
  ASSERT_EQ(radius.size(), 3u);
  for (int64_t r : radius) {
    ASSERT_GE(r, 1);
    ASSERT_LT(r, 16);
  }

  const Graph g = Graph::build(cone_def(101), nodes::builtin_registry());
  auto raw = g.image("raw");
  auto smooth = g.image("smooth");
  auto mask = g.image("mask");
  EXPECT_EQ(raw->grid().grid_shape(), (Dims{3, 5, 5}));

  // z 20..27 -> cell 1; y 30..33 -> cells 1, 2; x 60..69 -> cells 3, 4 (4 is the 8-wide edge cell).
  const Box region({20, 30, 60}, {28, 34, 70});
  const CellBuffer m = mask->read(region);
  EXPECT_EQ(m.shape(), (Dims{8, 4, 10}));

  // mask and smooth: the cells the region touches (threshold is point-wise).
  const auto expected_mask = cells_of(Box({1, 1, 3}, {2, 3, 5}));
  ASSERT_EQ(expected_mask.size(), 4u);
  // raw: every neighbour (within the halo) of those: z 0..2, y 0..3, x 2..4.
  const auto expected_raw = cells_of(Box({0, 0, 2}, {3, 4, 5}));
  ASSERT_EQ(expected_raw.size(), 36u);

  EXPECT_EQ(mask->stats().computed, 4);
  EXPECT_EQ(smooth->stats().computed, 4);
  EXPECT_EQ(raw->stats().computed, 36) << "of " << raw->grid().num_cells();
  EXPECT_EQ(available_cells(*mask), expected_mask);
  EXPECT_EQ(available_cells(*smooth), expected_mask);
  EXPECT_EQ(available_cells(*raw), expected_raw);

  // Reading inside the same cells again computes nothing.
  mask->read(Box({16, 16, 48}, {32, 48, 72}));
  EXPECT_EQ(mask->stats().computed, 4);
  EXPECT_EQ(smooth->stats().computed, 4);
  EXPECT_EQ(raw->stats().computed, 36);

  // One more mask cell at the corner (0,0,0) needs smooth (0,0,0) and raw
  // z 0..1, y 0..1, x 0..1; raw cells with x < 2 were never computed, so all
  // 2 x 2 x 2 = 8 are new.
  mask->read(Box({0, 0, 0}, {2, 2, 2}));
  EXPECT_EQ(mask->stats().computed, 5);
  EXPECT_EQ(smooth->stats().computed, 5);
  EXPECT_EQ(raw->stats().computed, 36 + 8);
}

TEST(Laziness, ReadingAnUpstreamNodeComputesNothingDownstream) {
  const Graph g = Graph::build(cone_def(102), nodes::builtin_registry());
  g.image("raw")->read(Box({0, 0, 0}, {48, 80, 72}));
  EXPECT_EQ(g.image("raw")->stats().computed, 75);
  EXPECT_EQ(g.image("smooth")->stats().computed, 0);
  EXPECT_EQ(g.image("mask")->stats().computed, 0);
}

TEST(Laziness, LazyRegionEqualsTheFullyMaterializedResult) {
  const Graph lazy = Graph::build(cone_def(103), nodes::builtin_registry());
  const Box region({5, 17, 40}, {43, 70, 72});
  const CellBuffer part = lazy.image("mask")->read(region);
  const CellBuffer part_smooth = lazy.image("smooth")->read(region);
  // Another process-wide image of the same node would be shared; use a cache
  // root so the full run gets its own images.
  test::TempDir tmp;
  GraphOptions opts;
  opts.cache_root = tmp / "cache";
  const Graph full = Graph::build(cone_def(103), nodes::builtin_registry(), opts);
  const RunReport report = materialize(full);
  EXPECT_EQ(report.nodes[full.index("mask")].cells_computed, 75);
  EXPECT_TRUE(test::same_bytes(part, full.image("mask")->read(region)));
  EXPECT_TRUE(test::same_bytes(part_smooth, full.image("smooth")->read(region)));
}

}  // namespace
}  // namespace cellflow
