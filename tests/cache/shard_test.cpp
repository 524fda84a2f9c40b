// Sharded nodes (zarr_shard.hpp, ZarrArray::pack, CacheDirectory::pack_node):
// packing keeps every committed cell readable at every step, even when it is
// cut short by a crash, an I/O error or a full disk at any write; readers
// racing a packer never miss a cell; verify finds and repair removes damage
// inside a shard; a packed node has few files; and a reader written from the
// Zarr v3 sharding spec (Python, numpy + numcodecs) decodes it bit-exactly.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/cache/zarr_shard.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Image 10 x 12 x 9 in 4^3 cells: a 3 x 3 x 3 grid with edge cells; shards of
// at most 8 cells are 1 x 2 x 3 (6 shards, the fewest: 2 x 2 x 2 would take 8),
// a 3 x 2 x 1 grid of shards whose second row along y is an edge shard.
const Shape kShape{10, 12, 9};
const Shape kCells{4, 4, 4};
constexpr int64_t kShardCells = 8;
const std::string kOwner = "0123456789abcdef0123456789abcdef";

// The value of voxel (z, y, x): every voxel distinct, so a cell from the
// wrong place never passes for the right one.
CellBuffer cell_data(const CellGrid& grid, const CellIndex& cell) {
  const Box box = grid.cell_box(cell);
  CellBuffer out = CellBuffer::allocate(DType::kU16, box.shape());
  uint16_t* p = out.mutable_as<uint16_t>();
  int64_t i = 0;
  for (int64_t z = box.begin()[0]; z < box.end()[0]; ++z)
    for (int64_t y = box.begin()[1]; y < box.end()[1]; ++y)
      for (int64_t x = box.begin()[2]; x < box.end()[2]; ++x)
        p[i++] = static_cast<uint16_t>(z * 1000 + y * 31 + x * 7 + 1);
  return out;
}

std::shared_ptr<ZarrArray> filled_array(const std::shared_ptr<Env>& env) {
  const CellGrid grid(kShape, kCells);
  auto array =
      ZarrArray::create(env, "n/0", kOwner, DType::kU16, grid, Durability::kProcess, kShardCells);
  for (int64_t c = 0; c < grid.num_cells(); ++c)
    array->write(grid.cell_at(c), cell_data(grid, grid.cell_at(c)));
  return array;
}

// Every cell reads back equal to its reference (none missing, none damaged).
::testing::AssertionResult all_cells_intact(ZarrArray& array) {
  const CellGrid& grid = array.grid();
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    std::optional<CellBuffer> got;
    try {
      got = array.read(cell);
    } catch (const Error& e) {
      return ::testing::AssertionFailure() << "cell " << cell.str() << ": " << e.what();
    }
    if (!got) return ::testing::AssertionFailure() << "cell " << cell.str() << " is missing";
    if (!array.contains(cell))
      return ::testing::AssertionFailure() << "cell " << cell.str() << ": contains() is false";
    ::testing::AssertionResult same = test::same_bytes(*got, cell_data(grid, cell));
    if (!same) return same << " (cell " << cell.str() << ")";
  }
  return ::testing::AssertionSuccess();
}

// What a standard reader sees at this moment must be a whole array or none:
// .zarray only while every single cell file is there, zarr.json only once
// every shard holds every cell.
::testing::AssertionResult readers_see_whole_or_none(MemoryEnv& env, ZarrArray& array) {
  const CellGrid& grid = array.grid();
  if (env.stat("n/0/.zarray").kind == EntryKind::kFile) {
    for (int64_t c = 0; c < grid.num_cells(); ++c)
      if (env.stat(layout::cell("n/0", grid.cell_at(c))).kind != EntryKind::kFile)
        return ::testing::AssertionFailure()
               << ".zarray is there but cell " << grid.cell_at(c).str() << "'s file is not";
  }
  if (env.stat("n/0/zarr.json").kind == EntryKind::kFile) {
    const ShardGeometry& g = *array.shards();
    int64_t cells = 0;
    for (int64_t s = 0; s < g.num_shards(); ++s) {
      const auto shard = array.read_shard(g.shard_at(s));
      if (!shard) return ::testing::AssertionFailure() << "zarr.json is there, a shard is not";
      for (const ShardEntry& e : shard->index) cells += e.present() ? 1 : 0;
    }
    if (cells != grid.num_cells())
      return ::testing::AssertionFailure() << "zarr.json is there, shards hold " << cells << " of "
                                           << grid.num_cells() << " cells";
  }
  return ::testing::AssertionSuccess();
}

TEST(ShardCodec, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283U);  // RFC 3720's check value of CRC-32C
  EXPECT_EQ(crc32c(""), 0U);
}

TEST(ShardCodec, GeometryIsAtMostTheMaximumAndCoversTheGrid) {
  const ShardGeometry big(CellGrid(Shape{1024, 1024, 1024}, Shape{16, 16, 16}), 512);
  EXPECT_EQ(big.per_shard(), (Dims{8, 8, 8}));
  EXPECT_EQ(big.num_shards(), 512);
  const ShardGeometry thin(CellGrid(Shape{2, 640, 640}, Shape{1, 10, 10}), 512);
  EXPECT_EQ(thin.per_shard(), (Dims{2, 16, 16}));
  const ShardGeometry small(CellGrid(kShape, kCells), kShardCells);
  EXPECT_EQ(small.per_shard(), (Dims{1, 2, 3}));
  EXPECT_EQ(small.shard_grid(), (Dims{3, 2, 1}));
  CellIndex cell;
  EXPECT_TRUE(small.cell_of(CellIndex{2, 0, 0}, 4, cell));  // slot 4 = (0, 1, 1)
  EXPECT_EQ(cell, (CellIndex{2, 1, 1}));
  EXPECT_EQ(small.slot_of(cell), 4);
  EXPECT_EQ(small.shard_of(cell), (CellIndex{2, 0, 0}));
  EXPECT_FALSE(small.cell_of(CellIndex{1, 1, 0}, 5, cell));  // (1, 3, 2): outside
}

// The shard shape covers the grid in the fewest shards there can be with at
// most `max` cells per shard: checked against every shape, by brute force.
TEST(ShardCodec, GeometryUsesTheFewestShardsAnyShapeCould) {
  const auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  for (const auto& [grid, max] : std::vector<std::pair<Dims, int64_t>>{{Dims{100, 100, 100}, 512},
                                                                       {Dims{13, 17, 10}, 512},
                                                                       {Dims{7, 300, 5}, 512},
                                                                       {Dims{1, 1, 1000}, 512},
                                                                       {Dims{64, 64, 64}, 512},
                                                                       {Dims{9, 9, 9}, 8},
                                                                       {Dims{3, 50, 70}, 100}}) {
    int64_t fewest = grid.product();
    for (int64_t a = 1; a <= std::min(grid[0], max); ++a)
      for (int64_t b = 1; b <= std::min(grid[1], max / a); ++b)
        for (int64_t c = 1; c <= std::min(grid[2], max / (a * b)); ++c)
          fewest =
              std::min(fewest, ceil_div(grid[0], a) * ceil_div(grid[1], b) * ceil_div(grid[2], c));
    Shape shape(3);
    for (int d = 0; d < 3; ++d) shape[d] = grid[d] * 4;
    const ShardGeometry g(CellGrid(shape, Shape{4, 4, 4}), max);
    EXPECT_LE(g.slots(), max) << grid.str();
    EXPECT_EQ(g.num_shards(), fewest) << grid.str() << ": shards of " << g.per_shard().str();
  }
  // 100^3 cells cannot tile into 512-cell shards: 2,000 is the fewest (1,954 = N/512).
  EXPECT_EQ(ShardGeometry(CellGrid(Shape{400, 400, 400}, Shape{4, 4, 4}), 512).num_shards(), 2000);
}

TEST(ShardCodec, IndexRoundTripsAndDamageIsNamed) {
  const std::string shard = encode_shard({"abc", "", "defgh"});
  const auto index = parse_shard_index(shard, 3, "shard s");
  ASSERT_EQ(index.size(), 3U);
  EXPECT_EQ(index[0].offset, 0U);
  EXPECT_EQ(index[0].nbytes, 3U);
  EXPECT_FALSE(index[1].present());
  EXPECT_EQ(shard.substr(index[2].offset, index[2].nbytes), "defgh");
  std::string bad = shard;
  bad[bad.size() - 10] ^= 0x01;
  try {
    parse_shard_index(bad, 3, "shard s");
    FAIL() << "a damaged index was accepted";
  } catch (const CorruptionError& e) {
    EXPECT_NE(std::string(e.what()).find("shard s: shard index checksum"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(parse_shard_index(shard.substr(5), 3, "shard s"), CorruptionError);
}

TEST(ShardPack, PackedArrayReadsTheSameFromShardsAndWritesV3Metadata) {
  auto env = std::make_shared<MemoryEnv>();
  auto array = filled_array(env);
  const ZarrArray::PackResult r = array->pack();
  EXPECT_TRUE(r.packed);
  EXPECT_EQ(r.shards_written, 6);
  EXPECT_EQ(r.missing_cells, 0);
  EXPECT_TRUE(array->is_packed());
  EXPECT_EQ(env->stat("n/0/.zarray").kind, EntryKind::kMissing);
  EXPECT_EQ(env->stat("n/0/0").kind, EntryKind::kMissing) << "single files removed";
  EXPECT_TRUE(all_cells_intact(*array));
  // A fresh open finds zarr.json and the same array.
  auto reopened = ZarrArray::open(env, "n/0", kOwner, kShardCells);
  EXPECT_EQ(reopened->grid(), array->grid());
  EXPECT_EQ(reopened->dtype(), DType::kU16);
  EXPECT_TRUE(all_cells_intact(*reopened));
  // create() on a packed array never writes a .zarray again.
  auto created = ZarrArray::create(env, "n/0", kOwner, DType::kU16, array->grid(),
                                   Durability::kProcess, kShardCells);
  EXPECT_EQ(env->stat("n/0/.zarray").kind, EntryKind::kMissing);
  // Packing again rewrites nothing.
  const ZarrArray::PackResult again = created->pack();
  EXPECT_TRUE(again.packed);
  EXPECT_EQ(again.shards_written, 0);
  const Value meta = parse_json(*env->read("n/0/zarr.json"), "zarr.json");
  EXPECT_EQ(meta.find("zarr_format")->as_int(), 3);
  EXPECT_EQ(meta.find("data_type")->as_string(), "uint16");
}

// Cells are found in shards by the geometry the cache's shard size gives: a
// packed array whose zarr.json says other shards is refused, naming the file.
TEST(ShardPack, ShardsOfAnotherShapeAreRefusedNamingTheFile) {
  auto env = std::make_shared<MemoryEnv>();
  ASSERT_TRUE(filled_array(env)->pack().packed);
  std::string json = *env->read("n/0/zarr.json");
  // The shard shape (1 x 2 x 3 cells of 4^3) as the chunk grid writes it.
  const std::string shard_shape = "[4, 8, 12]";
  const size_t at = json.find(shard_shape);
  ASSERT_NE(at, std::string::npos) << "no chunk_grid [4, 8, 12] in the packed array's zarr.json";
  json.replace(at, shard_shape.size(), "[8, 8, 8]");
  env->write_atomic("n/0/zarr.json", json, Durability::kProcess);
  try {
    (void)ZarrArray::open(env, "n/0", kOwner, kShardCells);
    FAIL() << "shards of another shape were taken as this cache's";
  } catch (const CorruptionError& e) {
    EXPECT_NE(std::string(e.what()).find("zarr.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shards are not of shape"), std::string::npos) << e.what();
  }
}

TEST(ShardPack, IncompleteArrayIsNotPacked) {
  auto env = std::make_shared<MemoryEnv>();
  auto array = filled_array(env);
  array->remove(CellIndex{2, 2, 2});
  const ZarrArray::PackResult r = array->pack();
  EXPECT_FALSE(r.packed);
  EXPECT_EQ(r.missing_cells, 1);
  EXPECT_EQ(env->stat("n/0/.zarray").kind, EntryKind::kFile);
  EXPECT_EQ(env->stat("n/0/zarr.json").kind, EntryKind::kMissing);
}

// A crash, an I/O error or a full disk at every write step of packing: after
// each, every committed cell reads back bit-identical (nothing lost), what a
// v2 or v3 reader sees is whole or nothing, and packing again finishes.
TEST(ShardPack, AFaultAtEveryWriteStepLosesNothing) {
  for (const MemoryEnv::Fault fault : {MemoryEnv::Fault::kCrash, MemoryEnv::Fault::kIoError,
                                       MemoryEnv::Fault::kNoSpace, MemoryEnv::Fault::kShortWrite}) {
    int64_t step = 0;
    for (;; ++step) {
      SCOPED_TRACE(::testing::Message()
                   << "fault " << static_cast<int>(fault) << " at step " << step);
      auto env = std::make_shared<MemoryEnv>();
      filled_array(env);
      auto array = ZarrArray::open(env, "n/0", kOwner, kShardCells);
      env->reset_steps();
      env->inject(step, fault);
      bool failed = false;
      try {
        array->pack();
      } catch (const IoError&) {
        failed = true;
      }
      if (env->steps() <= step) {
        EXPECT_FALSE(failed);
        break;  // packing has fewer steps than this: all covered
      }
      if (env->crashed()) env->restart(/*power_cut=*/false);
      auto reopened = ZarrArray::open(env, "n/0", kOwner, kShardCells);
      ASSERT_TRUE(readers_see_whole_or_none(*env, *reopened));
      ASSERT_TRUE(all_cells_intact(*reopened));
      const ZarrArray::PackResult r = reopened->pack();
      ASSERT_TRUE(r.packed);
      ASSERT_TRUE(reopened->is_packed());
      ASSERT_TRUE(all_cells_intact(*ZarrArray::open(env, "n/0", kOwner, kShardCells)));
    }
    EXPECT_GT(step, 10) << "every shard, zarr.json and removal is a step";
  }
}

// A power cut at every step of a kPowerCut pack: what was synced survives.
TEST(ShardPack, APowerCutAtEveryStepLosesNothingDurable) {
  for (int64_t step = 0;; ++step) {
    SCOPED_TRACE(::testing::Message() << "power cut at step " << step);
    auto env = std::make_shared<MemoryEnv>();
    const CellGrid grid(kShape, kCells);
    auto array = ZarrArray::create(env, "n/0", kOwner, DType::kU16, grid, Durability::kPowerCut,
                                   kShardCells);
    for (int64_t c = 0; c < grid.num_cells(); ++c)
      array->write(grid.cell_at(c), cell_data(grid, grid.cell_at(c)));
    env->reset_steps();
    env->inject(step, MemoryEnv::Fault::kCrash);
    try {
      array->pack();
      break;
    } catch (const IoError&) {
    }
    env->restart(/*power_cut=*/true);
    auto reopened = ZarrArray::open(env, "n/0", kOwner, kShardCells);
    ASSERT_TRUE(all_cells_intact(*reopened));
  }
}

// Readers racing packers (several, concurrently): every read finds its cell.
TEST(ShardPack, ReadersRacingPackersNeverMissACell) {
  for (int round = 0; round < 20; ++round) {
    auto env = std::make_shared<MemoryEnv>();
    filled_array(env);
    std::atomic<bool> stop{false};
    std::atomic<int64_t> misses{0}, reads{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&, t] {
        auto mine = ZarrArray::open(env, "n/0", kOwner, kShardCells);
        const CellGrid& grid = mine->grid();
        for (int64_t c = t; !stop.load() || c < grid.num_cells() * 2; ++c) {
          const CellIndex cell = grid.cell_at(c % grid.num_cells());
          const auto got = mine->read(cell);
          ++reads;
          if (!got || !test::same_bytes(*got, cell_data(grid, cell))) ++misses;
          if (c > 4 * grid.num_cells()) break;
        }
      });
    }
    std::vector<std::thread> packers;
    std::atomic<int> packed{0};
    for (int t = 0; t < 2; ++t) {
      packers.emplace_back([&] {
        auto mine = ZarrArray::open(env, "n/0", kOwner, kShardCells);
        const auto r = mine->pack();
        if (r.packed) ++packed;
      });
    }
    for (auto& p : packers) p.join();
    stop = true;
    for (auto& r : readers) r.join();
    EXPECT_EQ(misses.load(), 0) << "round " << round << ": of " << reads.load() << " reads";
    auto array = ZarrArray::open(env, "n/0", kOwner, kShardCells);
    if (!array->is_packed()) EXPECT_TRUE(array->pack().packed);  // both may have found it busy
    EXPECT_GE(packed.load(), 0);
    EXPECT_TRUE(all_cells_intact(*array));
  }
}

// --- On disk, through a sharded CacheDirectory ---------------------------

struct ShardedCache {
  explicit ShardedCache(const fs::path& root, int64_t shard_cells) {
    const std::string n = std::to_string(shard_cells);
    ::setenv("CELLFLOW_SHARD_CELLS", n.c_str(), 1);
    dir = std::make_unique<CacheDirectory>(root);
    ::unsetenv("CELLFLOW_SHARD_CELLS");
  }
  std::unique_ptr<CacheDirectory> dir;
};

std::string definition(const CellGrid& grid) {
  Value def = Value::object();
  def.set("op", "test.pattern");
  def.set("dtype", "u16");
  Value::Array shape, cells;
  for (int64_t v : grid.shape()) shape.emplace_back(v);
  for (int64_t v : grid.cell_shape()) cells.emplace_back(v);
  def.set("shape", Value(std::move(shape)));
  def.set("cell_shape", Value(std::move(cells)));
  return to_json(def);
}

std::shared_ptr<ZarrArray> complete_node(CacheDirectory& dir, const CellGrid& grid) {
  auto array = dir.open_node(kOwner, DType::kU16, grid, definition(grid));
  for (int64_t c = 0; c < grid.num_cells(); ++c)
    array->write(grid.cell_at(c), cell_data(grid, grid.cell_at(c)));
  dir.mark_complete(kOwner);
  return array;
}

int64_t files_below(const fs::path& dir) {
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

TEST(ShardedCache, FormatFileNamesTheShardSizeAndAnUnshardedCacheStaysFormat2) {
  TempDir tmp;
  ShardedCache sharded(tmp / "s", 512);
  EXPECT_EQ(sharded.dir->shard_cells(), 512);
  EXPECT_EQ(cache_format(*sharded.dir->env()), layout::kShardedFormat);
  CacheDirectory plain(tmp / "p");
  EXPECT_EQ(plain.shard_cells(), 0);
  EXPECT_EQ(cache_format(*plain.env()), layout::kFormat);
  // Reopened without the variable, a sharded cache stays sharded.
  CacheDirectory again(tmp / "s");
  EXPECT_EQ(again.shard_cells(), 512);
}

TEST(ShardedCache, ACompleteNodeHasAtMostCeilNOver512PlusAHandfulOfFiles) {
  TempDir tmp;
  ShardedCache cache(tmp / "c", 512);
  const CellGrid grid(Shape{64, 64, 64}, Shape{4, 4, 4});  // 4096 cells
  complete_node(*cache.dir, grid);
  const int64_t files = files_below(tmp / "c" / kOwner);
  const int64_t shards = (grid.num_cells() + 511) / 512;
  EXPECT_LE(files, shards + 8) << "shards: " << shards;
  EXPECT_GE(files, shards);
  auto array = ZarrArray::open(cache.dir->env(), layout::array(kOwner), kOwner, 512);
  EXPECT_TRUE(array->is_packed());
  EXPECT_TRUE(all_cells_intact(*array));
  const auto nodes = scan_cache(tmp / "c");
  ASSERT_EQ(nodes.size(), 1U);
  EXPECT_EQ(nodes[0].cells_present, grid.num_cells()) << "ls counts cells from shard indexes";
  EXPECT_TRUE(nodes[0].metadata_problem.empty()) << nodes[0].metadata_problem;
  const VerifyReport v = verify_cache(tmp / "c");
  EXPECT_TRUE(v.damaged.empty()) << v.damaged[0].file << ": " << v.damaged[0].reason;
  EXPECT_EQ(v.cells_checked, grid.num_cells());
}

// Damage inside a shard: verify names the shard and the cell; repair rewrites
// the shard without it and un-completes the node; a run recomputes only that
// cell and packs the node again.
TEST(ShardedCache, VerifyFindsAndRepairFixesDamageInsideAShard) {
  TempDir tmp;
  ShardedCache cache(tmp / "c", kShardCells);
  const CellGrid grid(kShape, kCells);
  complete_node(*cache.dir, grid);
  const CellIndex victim{1, 2, 0};
  auto array = ZarrArray::open(cache.dir->env(), layout::array(kOwner), kOwner, kShardCells);
  const ShardGeometry& g = *array->shards();
  const fs::path shard_file = array->shard_path(g.shard_of(victim));
  {
    std::string bytes = test::read_all(shard_file);
    const auto index = parse_shard_index(bytes, g.slots(), "s");
    const ShardEntry& e = index[static_cast<size_t>(g.slot_of(victim))];
    bytes[e.offset + e.nbytes / 2] ^= 0x5a;  // inside the chunk: the index stays sound
    test::write_all(shard_file, bytes);
  }
  const VerifyReport found = verify_cache(tmp / "c");
  ASSERT_FALSE(found.clean());
  bool named = false;
  for (const CacheProblem& p : found.damaged)
    named = named || (p.file == shard_file && p.reason.find("cell (1,2,0)") != std::string::npos);
  EXPECT_TRUE(named) << found.damaged[0].file << ": " << found.damaged[0].reason;

  VerifyOptions repair;
  repair.repair = true;
  const VerifyReport fixed = verify_cache(tmp / "c", repair);
  EXPECT_TRUE(fixed.clean());
  EXPECT_FALSE(cache.dir->is_complete(kOwner));
  EXPECT_FALSE(fs::exists(tmp / "c" / kOwner / "0" / "zarr.json"))
      << "no v3 reader may read the lost cell as fill values";
  EXPECT_FALSE(fs::exists(tmp / "c" / kOwner / "0" / ".zarray"));
  EXPECT_TRUE(verify_cache(tmp / "c").damaged.empty()) << "a repaired node is not damaged";
  const auto nodes = scan_cache(tmp / "c");
  ASSERT_EQ(nodes.size(), 1U);
  EXPECT_EQ(nodes[0].cells_present, grid.num_cells() - 1);

  // The next run: only the lost cell is computed, then the node is packed again.
  CacheDirectory reopened(tmp / "c");
  auto store = reopened.open_node(kOwner, DType::kU16, grid, definition(grid));
  EXPECT_FALSE(fs::exists(tmp / "c" / kOwner / "0" / ".zarray"));
  std::atomic<int> computed{0};
  CachedCellImage image(
      "node", grid, DType::kU16,
      [&](const CellIndex& cell, const Box&) {
        ++computed;
        return cell_data(grid, cell);
      },
      store);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    EXPECT_TRUE(test::same_bytes(image.get(cell), cell_data(grid, cell))) << cell.str();
  }
  EXPECT_EQ(computed.load(), 1);
  reopened.mark_complete(kOwner);
  auto packed = ZarrArray::open(reopened.env(), layout::array(kOwner), kOwner, kShardCells);
  EXPECT_TRUE(packed->is_packed());
  EXPECT_TRUE(all_cells_intact(*packed));
  EXPECT_TRUE(verify_cache(tmp / "c").damaged.empty());
}

TEST(ShardedCache, ADamagedShardIndexIsFoundAndItsShardRemovedByRepair) {
  TempDir tmp;
  ShardedCache cache(tmp / "c", kShardCells);
  const CellGrid grid(kShape, kCells);
  complete_node(*cache.dir, grid);
  auto array = ZarrArray::open(cache.dir->env(), layout::array(kOwner), kOwner, kShardCells);
  const fs::path shard_file = array->shard_path(CellIndex{0, 0, 0});
  std::string bytes = test::read_all(shard_file);
  bytes[bytes.size() - 20] ^= 0x01;
  test::write_all(shard_file, bytes);
  const VerifyReport found = verify_cache(tmp / "c");
  bool named = false;
  for (const CacheProblem& p : found.damaged)
    named = named || (p.file == shard_file && p.reason.find("crc32c") != std::string::npos);
  EXPECT_TRUE(named) << found.damaged.size() << " problems, the first: "
                     << (found.damaged.empty() ? "" : found.damaged[0].reason);
  // A reader never takes a cell from it: it recomputes (the read reports damage).
  EXPECT_THROW(array->read(CellIndex{0, 0, 0}), CorruptionError);
  VerifyOptions repair;
  repair.repair = true;
  EXPECT_TRUE(verify_cache(tmp / "c", repair).clean());
  EXPECT_FALSE(fs::exists(shard_file));
  EXPECT_FALSE(cache.dir->is_complete(kOwner));
}

// A damaged format file of a cache with packed nodes is reported, never
// rewritten as format 2 (which would have every packed cell read as missing).
TEST(ShardedCache, ADamagedFormatFileIsNotRewrittenUnshardedOverPackedNodes) {
  TempDir tmp;
  {
    ShardedCache cache(tmp / "c", kShardCells);
    complete_node(*cache.dir, CellGrid(kShape, kCells));
  }
  test::write_all(tmp / "c" / "cellflow-cache.json", "{\"format\": 3}\n");  // no shard size
  VerifyOptions repair;
  repair.repair = true;
  const VerifyReport r = verify_cache(tmp / "c", repair);
  ASSERT_FALSE(r.damaged.empty());
  EXPECT_EQ(r.damaged[0].file, tmp / "c" / "cellflow-cache.json");
  EXPECT_FALSE(r.damaged[0].repaired);
  EXPECT_NE(r.damaged[0].reason.find("packed nodes"), std::string::npos) << r.damaged[0].reason;
  EXPECT_EQ(test::read_all(tmp / "c" / "cellflow-cache.json"), "{\"format\": 3}\n");
  EXPECT_EQ(r.damaged.size(), 1U) << "the packed node is not judged without its shard size";
  EXPECT_TRUE(fs::exists(tmp / "c" / kOwner / ".cellflow-complete"));
  EXPECT_TRUE(fs::exists(tmp / "c" / kOwner / "0" / "zarr.json"));
  EXPECT_TRUE(fs::exists(tmp / "c" / kOwner / "0" / "c"));
  // Restored, the cache is whole again.
  test::write_all(tmp / "c" / "cellflow-cache.json", "{\"format\": 3, \"shard_cells\": 8}\n");
  EXPECT_TRUE(verify_cache(tmp / "c").damaged.empty());
}

// A reader written from the Zarr v3 spec (not our code): zarr.json, then each
// shard's index (crc32c checked), each inner chunk decoded by numcodecs'
// blosc, assembled into the array and compared with the reference bytes.
TEST(ShardedCache, AnIndependentV3ReaderDecodesTheNodeBitExactly) {
  TempDir tmp;
  ShardedCache cache(tmp / "c", kShardCells);
  const CellGrid grid(kShape, kCells);
  complete_node(*cache.dir, grid);
  std::string reference;
  for (int64_t z = 0; z < kShape[0]; ++z)
    for (int64_t y = 0; y < kShape[1]; ++y)
      for (int64_t x = 0; x < kShape[2]; ++x) {
        const auto v = static_cast<uint16_t>(z * 1000 + y * 31 + x * 7 + 1);
        reference += static_cast<char>(v & 0xff);
        reference += static_cast<char>(v >> 8);
      }
  test::write_all(tmp / "expected.bin", reference);
  const std::string script = R"PY(
import json, os, struct, sys
import numpy as np
from numcodecs import Blosc

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

array_dir, expected = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(array_dir, "zarr.json")))
assert meta["zarr_format"] == 3 and meta["node_type"] == "array", meta
shape = meta["shape"]
dtype = np.dtype(meta["data_type"]).newbyteorder("<")
shard_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
assert meta["chunk_key_encoding"]["configuration"]["separator"] == "/"
(codec,) = meta["codecs"]
assert codec["name"] == "sharding_indexed"
conf = codec["configuration"]
inner = conf["chunk_shape"]
assert [c["name"] for c in conf["codecs"]] == ["bytes", "blosc"]
assert [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
assert conf["index_location"] == "end"
per = [s // i for s, i in zip(shard_shape, inner)]
n_inner = int(np.prod(per))
out = np.full(shape, meta["fill_value"], dtype=dtype)
grid = [-(-s // c) for s, c in zip(shape, shard_shape)]
for sidx in np.ndindex(*grid):
    path = os.path.join(array_dir, "c", *[str(i) for i in sidx])
    if not os.path.exists(path):
        continue
    data = open(path, "rb").read()
    index = data[-(16 * n_inner + 4):-4]
    (stored_crc,) = struct.unpack("<I", data[-4:])
    assert crc32c(index) == stored_crc, f"{path}: index crc32c"
    for slot, cidx in enumerate(np.ndindex(*per)):
        off, nbytes = struct.unpack_from("<QQ", index, 16 * slot)
        if off == 2**64 - 1 and nbytes == 2**64 - 1:
            continue
        raw = Blosc().decode(data[off:off + nbytes])
        chunk = np.frombuffer(raw, dtype=dtype).reshape(inner)
        begin = [s * ss + c * i for s, ss, c, i in zip(sidx, shard_shape, cidx, inner)]
        sel = tuple(slice(b, min(b + i, n)) for b, i, n in zip(begin, inner, shape))
        if any(b >= n for b, n in zip(begin, shape)):
            continue
        out[sel] = chunk[tuple(slice(0, s.stop - s.start) for s in sel)]
want = np.frombuffer(open(expected, "rb").read(), dtype=dtype).reshape(shape)
bad = int(np.count_nonzero(out != want))
if bad:
    sys.exit(f"{bad} voxels differ from the reference")
print("v3 reader: identical")
)PY";
  test::write_all(tmp / "read_v3.py", script);
  const test::CommandResult r =
      test::run_command({"/usr/bin/python3", (tmp / "read_v3.py").string(),
                         (tmp / "c" / kOwner / "0").string(), (tmp / "expected.bin").string()},
                        tmp.path());
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
}

}  // namespace
}  // namespace cellflow
