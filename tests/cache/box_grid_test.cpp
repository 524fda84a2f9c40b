// Dims, Box, CellGrid and copy_region.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace {

TEST(Dims, BasicsAndProduct) {
  const Dims d{2, 5, 1};
  EXPECT_EQ(d.rank(), 3);
  EXPECT_EQ(d[0], 2);
  EXPECT_EQ(d[1], 5);
  EXPECT_EQ(d[2], 1);
  EXPECT_EQ(d.product(), 10);
  EXPECT_EQ(d.str(), "(2,5,1)");
  EXPECT_EQ(Dims().product(), 1);
  EXPECT_TRUE(Dims().empty());
  EXPECT_EQ(Dims(4, 7).product(), 7 * 7 * 7 * 7);
  EXPECT_EQ((std::vector<int64_t>{2, 5, 1}), d.to_vector());
  EXPECT_TRUE(Dims({1, 2}) == Dims({1, 2}));
  EXPECT_FALSE(Dims({1, 2}) == Dims({1, 2, 0}));
  EXPECT_FALSE(Dims({1, 2}) == Dims({1, 3}));
  const std::vector<int64_t> v{3, 4, 5, 6, 7};
  EXPECT_EQ(Dims::from(v).rank(), 5);
  EXPECT_EQ(Dims::from(v)[4], 7);
}

TEST(Dims, RankLimits) {
  EXPECT_THROW(Dims(6), InvalidArgument);
  EXPECT_THROW(Dims(-1), InvalidArgument);
  EXPECT_THROW((Dims{1, 2, 3, 4, 5, 6}), InvalidArgument);
  const std::vector<int64_t> six{1, 2, 3, 4, 5, 6};
  EXPECT_THROW(Dims::from(six), InvalidArgument);
}

TEST(Box, ShapeVolumeEmpty) {
  const Box b({1, 2, 3}, {4, 6, 8});
  EXPECT_EQ(b.rank(), 3);
  EXPECT_EQ(b.shape(), (Dims{3, 4, 5}));
  EXPECT_EQ(b.volume(), 60);
  EXPECT_FALSE(b.empty());
  const Box e({1, 2}, {1, 5});
  EXPECT_TRUE(e.empty());
  EXPECT_EQ(e.volume(), 0);
  const Box inverted({5}, {2});
  EXPECT_TRUE(inverted.empty());
  EXPECT_EQ(inverted.volume(), 0);
  EXPECT_EQ(Box::from_shape({7, 9}), Box({0, 0}, {7, 9}));
  EXPECT_THROW(Box({1, 2}, {3}), InvalidArgument);
  EXPECT_EQ(b.str(), "[1:4,2:6,3:8]");
}

TEST(Box, IntersectGrowTranslateContains) {
  const Box a({0, 0}, {10, 10});
  const Box b({5, -3}, {15, 4});
  EXPECT_EQ(a.intersect(b), Box({5, 0}, {10, 4}));
  EXPECT_EQ(b.intersect(a), Box({5, 0}, {10, 4}));
  EXPECT_TRUE(a.intersect(Box({20, 20}, {30, 30})).empty());
  EXPECT_EQ(Box({2, 3}, {4, 5}).grow({1, 2}), Box({1, 1}, {5, 7}));
  EXPECT_EQ(Box({2, 3}, {4, 5}).grow({1, 0}, {0, 3}), Box({1, 3}, {4, 8}));
  EXPECT_EQ(Box({2, 3}, {4, 5}).translate({-2, 10}), Box({0, 13}, {2, 15}));
  EXPECT_TRUE(a.contains(Box({0, 0}, {10, 10})));
  EXPECT_TRUE(a.contains(Box({3, 4}, {5, 6})));
  EXPECT_FALSE(a.contains(Box({3, 4}, {11, 6})));
  EXPECT_FALSE(a.contains(Box({-1, 4}, {5, 6})));
  EXPECT_FALSE(a.contains(Box({0}, {1})));  // rank mismatch
  // Growing then clipping to the image: the halo of an edge cell.
  const Box image = Box::from_shape({10, 10});
  EXPECT_EQ(Box({0, 8}, {4, 10}).grow({2, 2}).intersect(image), Box({0, 6}, {6, 10}));
}

TEST(Box, ForEachIndexVisitsInCOrder) {
  std::vector<std::vector<int64_t>> seen;
  for_each_index(Box({1, 2}, {3, 5}), [&](const Dims& i) { seen.push_back(i.to_vector()); });
  const std::vector<std::vector<int64_t>> expected{{1, 2}, {1, 3}, {1, 4}, {2, 2}, {2, 3}, {2, 4}};
  EXPECT_EQ(seen, expected);
  int count = 0;
  for_each_index(Box({1, 2}, {1, 5}), [&](const Dims&) { ++count; });
  EXPECT_EQ(count, 0);
}

TEST(CellGrid, EdgeCellsAreSmaller) {
  const CellGrid g({10, 13, 7}, {4, 5, 7});
  EXPECT_EQ(g.rank(), 3);
  EXPECT_EQ(g.grid_shape(), (Dims{3, 3, 1}));
  EXPECT_EQ(g.num_cells(), 9);
  EXPECT_EQ(g.bounds(), Box::from_shape({10, 13, 7}));
  EXPECT_EQ(g.cell_box({0, 0, 0}), Box({0, 0, 0}, {4, 5, 7}));
  EXPECT_EQ(g.cell_box({1, 1, 0}), Box({4, 5, 0}, {8, 10, 7}));
  EXPECT_EQ(g.cell_box({2, 2, 0}), Box({8, 10, 0}, {10, 13, 7}));  // edge: 2 x 3 x 7
  EXPECT_EQ(g.cell_box({2, 2, 0}).shape(), (Dims{2, 3, 7}));
  // Every voxel belongs to exactly one cell.
  int64_t total = 0;
  for (int64_t c = 0; c < g.num_cells(); ++c) total += g.cell_box(g.cell_at(c)).volume();
  EXPECT_EQ(total, 10 * 13 * 7);
}

TEST(CellGrid, CellShapeLargerThanImage) {
  const CellGrid g({5, 3}, {64, 64});
  EXPECT_EQ(g.grid_shape(), (Dims{1, 1}));
  EXPECT_EQ(g.cell_box({0, 0}), Box({0, 0}, {5, 3}));
}

TEST(CellGrid, LinearRoundTripIsCOrder) {
  const CellGrid g({10, 13, 7}, {4, 5, 3});
  ASSERT_EQ(g.grid_shape(), (Dims{3, 3, 3}));
  EXPECT_EQ(g.linear({0, 0, 0}), 0);
  EXPECT_EQ(g.linear({0, 0, 1}), 1);
  EXPECT_EQ(g.linear({0, 1, 0}), 3);
  EXPECT_EQ(g.linear({1, 0, 0}), 9);
  EXPECT_EQ(g.linear({2, 2, 2}), 26);
  std::set<int64_t> seen;
  for (int64_t l = 0; l < g.num_cells(); ++l) {
    const CellIndex c = g.cell_at(l);
    EXPECT_EQ(g.linear(c), l);
    seen.insert(l);
  }
  EXPECT_EQ(seen.size(), 27u);
  EXPECT_EQ(g.cell_at(14), (Dims{1, 1, 2}));
}

TEST(CellGrid, CellsTouching) {
  const CellGrid g({10, 13, 7}, {4, 5, 3});
  EXPECT_EQ(g.cells_touching(Box({0, 0, 0}, {1, 1, 1})), Box({0, 0, 0}, {1, 1, 1}));
  EXPECT_EQ(g.cells_touching(Box({3, 4, 2}, {5, 6, 4})), Box({0, 0, 0}, {2, 2, 2}));
  EXPECT_EQ(g.cells_touching(Box({4, 5, 3}, {8, 10, 6})), Box({1, 1, 1}, {2, 2, 2}));
  EXPECT_EQ(g.cells_touching(g.bounds()), Box({0, 0, 0}, {3, 3, 3}));
  // Regions reaching outside the image are clipped first.
  EXPECT_EQ(g.cells_touching(Box({-5, -5, -5}, {100, 1, 1})), Box({0, 0, 0}, {3, 1, 1}));
  EXPECT_TRUE(g.cells_touching(Box({20, 0, 0}, {30, 5, 5})).empty());
  EXPECT_TRUE(g.cells_touching(Box({2, 2, 2}, {2, 5, 5})).empty());
}

TEST(CellGrid, RejectsBadShapes) {
  EXPECT_THROW(CellGrid({10, 10}, {4}), InvalidArgument);
  EXPECT_THROW(CellGrid({10, 10}, {4, 0}), InvalidArgument);
  EXPECT_THROW(CellGrid({10, -1}, {4, 4}), InvalidArgument);
  EXPECT_THROW(CellGrid(Dims(), Dims()), InvalidArgument);
}

TEST(CopyRegion, CopiesBetweenOverlappingBoxes) {
  // src covers [2:6, 10:15], dst covers [4:9, 12:20]; copy their overlap.
  const Box src_box({2, 10}, {6, 15});
  const Box dst_box({4, 12}, {9, 20});
  std::vector<int32_t> src(static_cast<size_t>(src_box.volume()));
  for (int64_t y = 2; y < 6; ++y)
    for (int64_t x = 10; x < 15; ++x)
      src[static_cast<size_t>((y - 2) * 5 + (x - 10))] = static_cast<int32_t>(y * 100 + x);
  std::vector<int32_t> dst(static_cast<size_t>(dst_box.volume()), -1);
  const Box region = src_box.intersect(dst_box);
  ASSERT_EQ(region, Box({4, 12}, {6, 15}));
  copy_region(src.data(), src_box, dst.data(), dst_box, region, sizeof(int32_t));
  for (int64_t y = 4; y < 9; ++y) {
    for (int64_t x = 12; x < 20; ++x) {
      const int32_t v = dst[static_cast<size_t>((y - 4) * 8 + (x - 12))];
      if (region.contains(Box({y, x}, {y + 1, x + 1}))) {
        EXPECT_EQ(v, y * 100 + x) << y << "," << x;
      } else {
        EXPECT_EQ(v, -1) << y << "," << x;
      }
    }
  }
}

TEST(CopyRegion, ThreeDimensionalWithContiguousRows) {
  // Full rows in the last two axes exercise the row-merging fast path.
  const Box src_box({0, 0, 0}, {4, 3, 5});
  const Box dst_box({1, 0, 0}, {6, 3, 5});
  std::vector<uint16_t> src(static_cast<size_t>(src_box.volume()));
  std::iota(src.begin(), src.end(), uint16_t{1});
  std::vector<uint16_t> dst(static_cast<size_t>(dst_box.volume()), 0);
  const Box region({1, 0, 0}, {4, 3, 5});
  copy_region(src.data(), src_box, dst.data(), dst_box, region, sizeof(uint16_t));
  for (int64_t z = 1; z < 6; ++z)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 5; ++x) {
        const uint16_t v = dst[static_cast<size_t>(((z - 1) * 3 + y) * 5 + x)];
        const uint16_t expected = z < 4 ? src[static_cast<size_t>((z * 3 + y) * 5 + x)] : 0;
        EXPECT_EQ(v, expected) << z << "," << y << "," << x;
      }
  // A strided sub-box in the middle.
  std::vector<uint16_t> small(2 * 1 * 2, 0);
  copy_region(src.data(), src_box, small.data(), Box({1, 1, 2}, {3, 2, 4}),
              Box({1, 1, 2}, {3, 2, 4}), sizeof(uint16_t));
  EXPECT_EQ(small[0], src[(1 * 3 + 1) * 5 + 2]);
  EXPECT_EQ(small[1], src[(1 * 3 + 1) * 5 + 3]);
  EXPECT_EQ(small[2], src[(2 * 3 + 1) * 5 + 2]);
  EXPECT_EQ(small[3], src[(2 * 3 + 1) * 5 + 3]);
}

// Every row length from 1 to past the inline-copy limit, every element size,
// ranks 1 to 4, random boxes: each voxel checked against an index-by-index
// copy, and nothing outside the region touched.
TEST(CopyRegion, MatchesAVoxelByVoxelCopyForEveryRowLength) {
  std::mt19937 rng(7);
  const auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 600; ++trial) {
    const int rank = static_cast<int>(pick(1, 4));
    const size_t esize = size_t{1} << pick(0, 3);
    // The last axis spans up to 80 elements, so rows reach 640 bytes.
    Dims sb(rank), se(rank), db(rank), de(rank), rb(rank), re(rank);
    for (int i = 0; i < rank; ++i) {
      const int64_t len = i == rank - 1 ? pick(1, 80) : pick(1, 5);
      rb[i] = pick(-3, 3);
      re[i] = rb[i] + len;
      sb[i] = rb[i] - pick(0, 2);
      se[i] = re[i] + pick(0, 2);
      db[i] = rb[i] - pick(0, 2);
      de[i] = re[i] + pick(0, 2);
    }
    const Box src_box(sb, se), dst_box(db, de), region(rb, re);
    std::vector<std::byte> src(static_cast<size_t>(src_box.volume()) * esize);
    for (auto& b : src) b = static_cast<std::byte>(pick(0, 255));
    std::vector<std::byte> dst(static_cast<size_t>(dst_box.volume()) * esize, std::byte{0xA5});
    std::vector<std::byte> want = dst;
    const auto linear = [&](const Box& box, const Dims& idx) {
      int64_t o = 0;
      for (int i = 0; i < rank; ++i)
        o = o * (box.end()[i] - box.begin()[i]) + idx[i] - box.begin()[i];
      return static_cast<size_t>(o) * esize;
    };
    for_each_index(region, [&](const Dims& idx) {
      std::memcpy(want.data() + linear(dst_box, idx), src.data() + linear(src_box, idx), esize);
    });
    copy_region(src.data(), src_box, dst.data(), dst_box, region, esize);
    ASSERT_EQ(dst, want) << "src " << src_box.str() << " dst " << dst_box.str() << " region "
                         << region.str() << " element " << esize;
  }
}

}  // namespace
}  // namespace cellflow
