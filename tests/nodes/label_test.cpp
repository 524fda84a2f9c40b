// label: globally consistent connected components, checked against ITK's
// ConnectedComponentImageFilter on the whole volume (face and full
// connectivity, 2-D and 3-D) for cell shapes that do and do not divide the
// image, with objects that wind through many cells (a snake, a ring, a U
// whose arms meet late, diagonal-only contacts, random masks). ITK's labels
// are renumbered by first voxel in raster order, which is cellflow's own
// numbering, so the comparison is byte for byte.
#include "cellflow/nodes/label.hpp"

#include <gtest/gtest.h>
#include <itkConnectedComponentImageFilter.h>
#include <itkImage.h>

#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "nodes/volume_source.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

/// ITK's connected components of `mask` (u8, rank 2 or 3), relabeled 1..N in
/// raster order of each object's first voxel, as u32.
template <unsigned D>
CellBuffer itk_components(const CellBuffer& mask, bool full) {
  using In = itk::Image<uint8_t, D>;
  using Out = itk::Image<uint32_t, D>;
  auto image = In::New();
  typename In::SizeType size;
  // ITK's first index is the fastest-varying axis: cellflow's last.
  for (unsigned d = 0; d < D; ++d) {
    size[d] = static_cast<itk::SizeValueType>(mask.shape()[static_cast<int>(D - 1 - d)]);
  }
  typename In::RegionType region;
  region.SetSize(size);
  image->SetRegions(region);
  image->Allocate();
  std::memcpy(image->GetBufferPointer(), mask.data(), mask.num_bytes());
  auto filter = itk::ConnectedComponentImageFilter<In, Out>::New();
  filter->SetInput(image);
  filter->SetFullyConnected(full);
  filter->Update();
  const uint32_t* labels = filter->GetOutput()->GetBufferPointer();
  CellBuffer out = CellBuffer::zeros(DType::kU32, mask.shape());
  std::map<uint32_t, uint32_t> renumber;
  for (int64_t i = 0; i < mask.num_elements(); ++i) {
    if (labels[i] == 0) continue;
    auto [it, added] = renumber.try_emplace(labels[i], static_cast<uint32_t>(renumber.size() + 1));
    out.mutable_as<uint32_t>()[i] = it->second;
  }
  return out;
}

CellBuffer itk_components(const CellBuffer& mask, bool full) {
  return mask.shape().rank() == 2 ? itk_components<2>(mask, full) : itk_components<3>(mask, full);
}

int64_t offset_of(const Shape& shape, const Dims& at) {
  int64_t off = 0;
  for (int d = 0; d < shape.rank(); ++d) off = off * shape[d] + at[d];
  return off;
}

void set(CellBuffer& m, const Dims& at) { m.mutable_as<uint8_t>()[offset_of(m.shape(), at)] = 1; }

/// Hand-made objects in a 20 x 23 x 29 volume:
///  - a snake: rows along x in plane z=2, a column up to z=17, rows along y
///    in plane z=17 (one face-connected object through most cells);
///  - a square ring in plane x=14 (its union closes a cycle);
///  - a U whose arms (x=3 and x=7) meet only at their bottom (z=12), so they
///    start as two components in raster order;
///  - a diagonal line of 10 voxels touching only at corners;
///  - a corner-only pair and an edge-only pair.
/// Face connectivity: 1 + 1 + 1 + 10 + 2 + 2 = 17 objects; full: 6.
CellBuffer shapes_volume() {
  CellBuffer m = CellBuffer::zeros(DType::kU8, Shape{20, 23, 29});
  for (int y = 1; y <= 21; y += 2) {
    for (int x = 1; x <= 27; ++x) set(m, {2, y, x});
    if (y + 2 <= 21) set(m, {2, y + 1, ((y - 1) / 2) % 2 == 0 ? 27 : 1});
  }
  for (int z = 2; z <= 17; ++z) set(m, {z, 21, 1});  // the last row (y=21) ends at x=1
  for (int x = 1; x <= 27; x += 2) {
    for (int y = 1; y <= 21; ++y) set(m, {17, y, x});
    if (x + 2 <= 27) set(m, {17, ((x - 1) / 2) % 2 == 0 ? 1 : 21, x + 1});
  }
  for (int z = 5; z <= 14; ++z) {
    for (int y = 4; y <= 18; ++y) {
      if (z == 5 || z == 14 || y == 4 || y == 18) set(m, {z, y, 14});
    }
  }
  for (int z = 8; z <= 12; ++z) {
    set(m, {z, 20, 3});
    set(m, {z, 20, 7});
  }
  for (int x = 3; x <= 7; ++x) set(m, {12, 20, x});
  for (int i = 0; i < 10; ++i) set(m, {4 + i, 1 + i, 1 + i});
  set(m, {12, 5, 20});
  set(m, {13, 6, 21});  // corner contact
  set(m, {12, 8, 20});
  set(m, {12, 9, 21});  // edge contact
  return m;
}

/// A random mask with `percent` % foreground (std::mt19937's sequence is fixed
/// by the standard, so the volume is the same everywhere).
CellBuffer random_mask(const Shape& shape, int percent, uint32_t seed) {
  std::mt19937 rng(seed);
  CellBuffer m = CellBuffer::zeros(DType::kU8, shape);
  for (int64_t i = 0; i < m.num_elements(); ++i)
    m.mutable_as<uint8_t>()[i] = rng() % 100 < static_cast<uint32_t>(percent);
  return m;
}

struct LabelRun {
  std::string connectivity = "face";
  std::string dtype = "u32";
  int threads = 0;  // 0: read lazily; > 0: materialize on that many threads first
};

/// Labels `mask` cut into `cells` and reads the whole result.
CellBuffer label(const CellBuffer& mask, const Shape& cells, const LabelRun& run = {}) {
  const std::string key = test::Volumes::global().add("mask", mask);
  GraphDef def;
  def.add("mask", "test.volume", {}, test::volume_params(key, cells));
  def.add("labels", "label", {"mask"},
          Value(Value::Object{{"connectivity", run.connectivity}, {"dtype", run.dtype}}));
  const auto reg = test::make_volume_registry();
  const Graph g = Graph::build(def, *reg);
  if (run.threads > 0) {
    RunOptions o;
    o.threads = run.threads;
    materialize(g, {}, o);
  }
  auto img = g.image("labels");
  return img->read(img->grid().bounds());
}

uint32_t max_label(const CellBuffer& b) {
  uint32_t m = 0;
  for (int64_t i = 0; i < b.num_elements(); ++i) m = std::max(m, b.as<uint32_t>()[i]);
  return m;
}

const std::vector<Shape> kCellShapes3 = {{20, 23, 29}, {7, 5, 6}, {4, 9, 13},
                                         {1, 23, 3},   {3, 3, 3}, {20, 1, 29}};

TEST(Label, HandMadeObjectsMatchItkForEveryCellShape) {
  const CellBuffer mask = shapes_volume();
  for (const bool full : {false, true}) {
    const CellBuffer expected = itk_components(mask, full);
    EXPECT_EQ(max_label(expected), full ? 6u : 17u);
    for (const Shape& cells : kCellShapes3) {
      LabelRun run;
      run.connectivity = full ? "full" : "face";
      const CellBuffer got = label(mask, cells, run);
      EXPECT_TRUE(test::same_bytes(expected, got))
          << run.connectivity << " connectivity, cells " << cells.str();
    }
  }
}

TEST(Label, RandomMasksMatchItkForEveryCellShape) {
  // 30 % foreground: many small objects with face connectivity (near the
  // percolation threshold), a few huge ones crossing every cell with full
  // connectivity; 55 %: nearly one object spanning the volume.
  for (const int percent : {30, 55}) {
    const CellBuffer mask =
        random_mask(Shape{17, 19, 21}, percent, 11u + static_cast<uint32_t>(percent));
    for (const bool full : {false, true}) {
      const CellBuffer expected = itk_components(mask, full);
      EXPECT_GT(max_label(expected), percent == 30 && !full ? 100u : 0u);
      for (const Shape& cells :
           {Shape{17, 19, 21}, Shape{5, 6, 7}, Shape{8, 19, 4}, Shape{2, 3, 21}}) {
        LabelRun run;
        run.connectivity = full ? "full" : "face";
        EXPECT_TRUE(test::same_bytes(expected, label(mask, cells, run)))
            << percent << "%, " << run.connectivity << ", cells " << cells.str();
      }
    }
  }
}

TEST(Label, TwoDimensionalMatchesItk) {
  CellBuffer mask = random_mask(Shape{37, 41}, 45, 5u);
  for (int x = 0; x < 41; ++x)
    mask.mutable_as<uint8_t>()[offset_of(mask.shape(), {18, x})] = 1;  // a long bar
  for (const bool full : {false, true}) {
    const CellBuffer expected = itk_components(mask, full);
    for (const Shape& cells :
         {Shape{37, 41}, Shape{8, 16}, Shape{5, 7}, Shape{1, 41}, Shape{37, 3}}) {
      LabelRun run;
      run.connectivity = full ? "full" : "face";
      EXPECT_TRUE(test::same_bytes(expected, label(mask, cells, run)))
          << run.connectivity << ", cells " << cells.str();
    }
  }
}

TEST(Label, SameBytesWhateverTheThreadCount) {
  const CellBuffer mask = random_mask(Shape{24, 20, 22}, 50, 3u);
  for (const std::string conn : {"face", "full"}) {
    std::optional<CellBuffer> reference;
    for (const int threads : {1, 2, 4}) {
      for (const Shape& cells : {Shape{5, 6, 7}, Shape{24, 4, 22}}) {
        LabelRun run;
        run.connectivity = conn;
        run.threads = threads;
        const CellBuffer got = label(mask, cells, run);
        if (!reference) {
          reference = got;
        } else {
          EXPECT_TRUE(test::same_bytes(*reference, got))
              << conn << ", " << threads << " threads, cells " << cells.str();
        }
      }
    }
  }
}

TEST(Label, U64LabelsAndNonU8InputsGiveTheSameObjects) {
  const CellBuffer mask = shapes_volume();
  const CellBuffer expected = itk_components(mask, /*full=*/false);

  LabelRun run;
  run.dtype = "u64";
  const CellBuffer wide = label(mask, Shape{7, 5, 6}, run);
  ASSERT_EQ(wide.dtype(), DType::kU64);
  for (int64_t i = 0; i < wide.num_elements(); ++i) {
    ASSERT_EQ(wide.as<uint64_t>()[i], expected.as<uint32_t>()[i]) << "voxel " << i;
  }

  // Foreground is "not zero", whatever the sign or type.
  CellBuffer f32 = CellBuffer::zeros(DType::kF32, mask.shape());
  for (int64_t i = 0; i < mask.num_elements(); ++i) {
    if (mask.as<uint8_t>()[i] != 0) f32.mutable_as<float>()[i] = i % 2 == 0 ? 0.25f : -3.0f;
  }
  EXPECT_TRUE(test::same_bytes(expected, label(f32, Shape{4, 9, 13})));
}

TEST(Label, EmptyAndFullVolumes) {
  const CellBuffer empty = CellBuffer::zeros(DType::kU8, Shape{9, 10, 11});
  const CellBuffer none = label(empty, Shape{4, 4, 4});
  EXPECT_EQ(max_label(none), 0u);

  CellBuffer full = CellBuffer::zeros(DType::kU8, Shape{9, 10, 11});
  std::memset(full.mutable_data(), 1, full.num_bytes());
  const CellBuffer one = label(full, Shape{4, 4, 4});
  for (int64_t i = 0; i < one.num_elements(); ++i) ASSERT_EQ(one.as<uint32_t>()[i], 1u);
}

/// The process's memory budget, changed for one scope.
class ScopedMemoryBudget {
 public:
  explicit ScopedMemoryBudget(size_t bytes) : old_(MemoryCache::global().budget()) {
    MemoryCache::global().set_budget(bytes);
  }
  ~ScopedMemoryBudget() { MemoryCache::global().set_budget(old_); }
  ScopedMemoryBudget(const ScopedMemoryBudget&) = delete;
  ScopedMemoryBudget& operator=(const ScopedMemoryBudget&) = delete;

 private:
  size_t old_;
};

/// label_work() counted while labelling `mask` (a fresh volume: no cell of
/// it is in memory yet) cut into `cells`, checked against ITK.
nodes::LabelWork counted_label(const CellBuffer& mask, const Shape& cells, bool full) {
  LabelRun run;
  run.connectivity = full ? "full" : "face";
  const nodes::LabelWork before = nodes::label_work();
  EXPECT_TRUE(test::same_bytes(itk_components(mask, full), label(mask, cells, run)))
      << run.connectivity << ", cells " << cells.str();
  const nodes::LabelWork after = nodes::label_work();
  return {after.labelled - before.labelled, after.kept - before.kept, after.reused - before.reused,
          after.relabelled - before.relabelled};
}

// The global pass keeps each cell's provisional labels (while they fit a
// quarter of the memory budget): compute() maps them instead of running
// connected components on the cell a second time.
TEST(Label, EachCellIsLabelledOnceWhenItsLabelsAreKept) {
  const Shape cells{6, 5, 11};  // 4 x 4 x 2 = 32 cells of 330 voxels
  for (const bool full : {false, true}) {
    const nodes::LabelWork w =
        counted_label(random_mask(Shape{24, 20, 22}, 50, full ? 102u : 101u), cells, full);
    EXPECT_EQ(w.labelled, 32);
    EXPECT_EQ(w.kept, 32);
    EXPECT_EQ(w.reused, 32);
    EXPECT_EQ(w.relabelled, 0);
  }
}

TEST(Label, CellsWhoseLabelsDoNotFitAreLabelledAgainWithTheSameResult) {
  const Shape cells{6, 5, 11};
  {
    // Nothing fits: every output cell is labelled again.
    const ScopedMemoryBudget budget(0);
    const nodes::LabelWork w =
        counted_label(random_mask(Shape{24, 20, 22}, 50, 103u), cells, false);
    EXPECT_EQ(w.kept, 0);
    EXPECT_EQ(w.reused, 0);
    EXPECT_GE(w.relabelled, 32);
    EXPECT_EQ(w.labelled, 32 + w.relabelled);
  }
  {
    // A cell's labels (< 256 components, more runs than 330 / 8) are kept
    // as a u8 image of 330 bytes: a quarter of this budget holds three cells.
    const ScopedMemoryBudget budget(4 * (3 * 330 + 1));
    const nodes::LabelWork w = counted_label(random_mask(Shape{24, 20, 22}, 50, 104u), cells, true);
    EXPECT_EQ(w.kept, 3);
    EXPECT_EQ(w.reused, 3);
    EXPECT_GE(w.relabelled, 29);
    EXPECT_EQ(w.labelled, 32 + w.relabelled);
  }
}

TEST(Label, RejectsBadParams) {
  const std::string key = test::Volumes::global().add("mask", shapes_volume());
  const auto reg = test::make_volume_registry();
  const auto build = [&](Value params) {
    GraphDef def;
    def.add("mask", "test.volume", {}, test::volume_params(key, Shape{8, 8, 8}));
    def.add("labels", "label", {"mask"}, std::move(params));
    return Graph::build(def, *reg);
  };
  try {
    build(Value(Value::Object{{"connectivity", "edge"}}));
    FAIL() << "connectivity \"edge\" was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("param \"connectivity\""), std::string::npos) << e.what();
  }
  try {
    build(Value(Value::Object{{"dtype", "u16"}}));
    FAIL() << "dtype u16 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("param \"dtype\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cellflow
