// cache_scan (ls / verify / gc of a cache directory) and NodeUseLock: what
// each finds, reports and removes on caches built here cell by cell.
#include "cellflow/cache/cache_scan.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/node_use_lock.hpp"
#include "cellflow/cache/table.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

const std::string kImage = "0123456789abcdef0123456789abcdef";
const std::string kTable = "fedcba9876543210fedcba9876543210";
const std::string kOther = "00000000000000000000000000000001";

std::string definition(const std::string& hash, const std::string& id, const std::string& op,
                       const std::string& dtype, const std::string& shape,
                       const std::string& cells) {
  return R"({"id":")" + id + R"(","op":")" + op +
         R"(","version":1,"params":{},"inputs":[],"dtype":")" + dtype + R"(","shape":)" + shape +
         R"(,"cell_shape":)" + cells + R"(,"hash":")" + hash + R"("})";
}

CellBuffer ramp(DType dtype, const Shape& shape, int seed) {
  CellBuffer b = CellBuffer::allocate(dtype, shape);
  auto* p = b.mutable_as<float>();
  for (int64_t i = 0; i < b.num_elements(); ++i) p[i] = static_cast<float>(i * 7 + seed);
  return b;
}

// An image node 20x30 (cells 8x16: a 3x2 grid, edge cells) with every cell
// written, and a table node (2 cells) with one cell written.
struct Fixture {
  fs::path root;
  std::shared_ptr<ZarrArray> image;
  std::shared_ptr<TableStore> table;
  CellGrid grid{{20, 30}, {8, 16}};

  explicit Fixture(const fs::path& r) : root(r) {
    CacheDirectory cache(root);
    image = cache.open_node(kImage, DType::kF32, grid,
                            definition(kImage, "smooth", "gaussian", "f32", "[20,30]", "[8,16]"));
    for (int64_t c = 0; c < grid.num_cells(); ++c) {
      const CellIndex cell = grid.cell_at(c);
      image->write(cell, ramp(DType::kF32, grid.cell_box(cell).shape(), static_cast<int>(c)));
    }
    cache.mark_complete(kImage);
    table = cache.open_table_node(
        kTable, definition(kTable, "objects", "label.stats", "u8", "[20,30]", "[20,16]"));
    Table t({"label", "volume"});
    const double row[] = {1.0, 42.0};
    t.add_row(row);
    const std::string bytes = t.serialize();
    CellBuffer b = CellBuffer::allocate(DType::kU8, Shape{static_cast<int64_t>(bytes.size())});
    std::memcpy(b.mutable_data(), bytes.data(), bytes.size());
    table->write(CellIndex{0, 1}, b);
  }

  fs::path cell(int64_t i, int64_t j) const { return image->cell_path(CellIndex{i, j}); }
};

// Moves the mtime of everything under `dir` (and `dir`) `age` into the past.
void age_folder(const fs::path& dir, std::chrono::seconds age) {
  const auto t = fs::file_time_type::clock::now() - age;
  for (const auto& e : fs::recursive_directory_iterator(dir)) fs::last_write_time(e.path(), t);
  fs::last_write_time(dir, t);
}

void flip_byte(const fs::path& file, size_t offset) {
  std::string data = test::read_all(file);
  ASSERT_LT(offset, data.size());
  data[offset] = static_cast<char>(data[offset] ^ 0x5a);
  test::write_all(file, data);
}

const CachedNode& find(const std::vector<CachedNode>& nodes, const std::string& hash) {
  auto it =
      std::find_if(nodes.begin(), nodes.end(), [&](const CachedNode& n) { return n.hash == hash; });
  if (it == nodes.end()) throw std::runtime_error("no node " + hash);
  return *it;
}

std::vector<std::string> damaged_files(const VerifyReport& r, const fs::path& root) {
  std::vector<std::string> out;
  // Lexically: a damaged entry may be a link, which must not be resolved.
  for (const auto& p : r.damaged) out.push_back(p.file.lexically_relative(root).string());
  return out;
}

TEST(CacheScan, ListsEveryNodeWithItsDefinitionCellsSizeAndLastUse) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  // Not nodes: a file and a folder that is not named by a hash.
  test::write_all(f.root / "notes.txt", "hello");
  fs::create_directories(f.root / "not-a-hash");

  const auto before = fs::file_time_type::clock::now() - std::chrono::seconds(5);
  const std::vector<CachedNode> nodes = scan_cache(f.root);
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].hash, kImage);  // sorted by hash
  const CachedNode& img = find(nodes, kImage);
  EXPECT_EQ(img.kind, CachedNodeKind::kImage);
  EXPECT_EQ(img.id, "smooth");
  EXPECT_EQ(img.op, "gaussian");
  EXPECT_EQ(img.dtype, "f32");
  EXPECT_EQ(img.shape, (Shape{20, 30}));
  EXPECT_EQ(img.cell_shape, (Shape{8, 16}));
  EXPECT_EQ(img.cells_total, 6);
  EXPECT_EQ(img.cells_present, 6);
  EXPECT_TRUE(img.complete());
  EXPECT_TRUE(img.complete_marker);
  EXPECT_TRUE(img.metadata_problem.empty()) << img.metadata_problem;
  uint64_t cell_bytes = 0;
  for (int64_t c = 0; c < 6; ++c)
    cell_bytes += fs::file_size(f.image->cell_path(f.grid.cell_at(c)));
  EXPECT_GE(img.bytes, cell_bytes);
  EXPECT_GT(img.last_used, before);
  EXPECT_EQ(img.path, f.root / kImage);

  const CachedNode& tab = find(nodes, kTable);
  EXPECT_EQ(tab.kind, CachedNodeKind::kTable);
  EXPECT_EQ(tab.op, "label.stats");
  EXPECT_EQ(tab.cells_total, 2);
  EXPECT_EQ(tab.cells_present, 1);
  EXPECT_FALSE(tab.complete());
  EXPECT_FALSE(tab.complete_marker);

  // Aging the folder moves last_used; a use of the node moves it back.
  age_folder(f.root / kImage, std::chrono::hours(48));
  const auto aged = find(scan_cache(f.root), kImage).last_used;
  EXPECT_LT(aged, fs::file_time_type::clock::now() - std::chrono::hours(47));
  {
    NodeUseLock use = NodeUseLock::acquire(f.root, kImage);
    EXPECT_TRUE(use.held());
  }
  EXPECT_GT(find(scan_cache(f.root), kImage).last_used, before);
}

TEST(CacheScan, NotACacheIsAnError) {
  TempDir tmp;
  EXPECT_THROW(scan_cache(tmp / "absent"), InvalidArgument);
  fs::create_directories(tmp / "plain");
  EXPECT_THROW(scan_cache(tmp / "plain"), InvalidArgument);
  EXPECT_THROW(verify_cache(tmp / "plain"), InvalidArgument);
  EXPECT_THROW(gc_cache(tmp / "plain", GcOptions{.older_than = std::chrono::seconds(1)}),
               InvalidArgument);
  EXPECT_FALSE(fs::exists(tmp / "absent")) << "maintenance never creates a cache";
}

TEST(CacheVerify, ACleanCacheIsClean) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  const VerifyReport r = verify_cache(f.root);
  EXPECT_TRUE(r.clean());
  EXPECT_TRUE(r.damaged.empty());
  EXPECT_EQ(r.nodes, 2);
  EXPECT_EQ(r.cells_checked, 7);
  EXPECT_GT(r.bytes_checked, 0);
  EXPECT_TRUE(r.stale_temps.empty());
}

TEST(CacheVerify, NamesEveryDamagedFileAndRepairLeavesACleanCache) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  // A second image node whose definition gets garbled.
  {
    CacheDirectory cache(f.root);
    auto other =
        cache.open_node(kOther, DType::kF32, f.grid,
                        definition(kOther, "raw", "synthetic.blobs", "f32", "[20,30]", "[8,16]"));
    other->write(CellIndex{0, 0}, ramp(DType::kF32, Shape{8, 16}, 1));
  }
  const std::string zarray_before = test::read_all(f.root / kImage / "0" / ".zarray");

  // Truncated, garbled and foreign cells; a foreign file in the cell tree.
  const std::string c00 = test::read_all(f.cell(0, 0));
  test::write_all(f.cell(0, 0), c00.substr(0, c00.size() / 2));
  flip_byte(f.cell(1, 1), 20);
  test::write_all(f.cell(2, 0), std::string(600, '\0'));
  test::write_all(f.root / kImage / "0" / "9" / "9", "stray");
  // Garbled metadata: .zarray of the image, .zgroup of the table, .zattrs of the other.
  test::write_all(f.root / kImage / "0" / ".zarray", "{\"zarr_format\": 2, \"shape\": [");
  test::write_all(f.root / kTable / ".zgroup", "garbage");
  test::write_all(f.root / kOther / ".zattrs", "{\"cellflow\": 3}");
  // The table's one cell is damaged too.
  flip_byte(f.table->cell_path(CellIndex{0, 1}), 30);

  const VerifyReport r = verify_cache(f.root);
  EXPECT_FALSE(r.clean());
  const std::vector<std::string> expected = {
      kOther + "/.zattrs",
      kImage + "/.cellflow-complete",  // marks complete, but 3 of 6 cells are damaged
      kImage + "/0/.zarray",
      kImage + "/0/0/0",
      kImage + "/0/1/1",
      kImage + "/0/2/0",
      kImage + "/0/9",  // a folder outside the grid: reported (and removed) whole
      kTable + "/.zgroup",
      kTable + "/table/0/1",
  };
  std::vector<std::string> got = damaged_files(r, f.root);
  std::vector<std::string> want = expected;
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  for (const auto& p : r.damaged) {
    EXPECT_FALSE(p.reason.empty()) << p.file;
    EXPECT_FALSE(p.repaired);
  }
  const auto reason = [&](const std::string& rel) {
    for (const auto& p : r.damaged)
      if (p.file == f.root / rel) return p.reason;
    return std::string("<none>");
  };
  EXPECT_NE(reason(kImage + "/0/1/1").find("checksum"), std::string::npos)
      << reason(kImage + "/0/1/1");
  EXPECT_NE(reason(kImage + "/0/2/0").find("trailer"), std::string::npos)
      << reason(kImage + "/0/2/0");
  EXPECT_NE(reason(kImage + "/.cellflow-complete").find("3 of its 6"), std::string::npos)
      << reason(kImage + "/.cellflow-complete");
  // Verifying only reads: nothing changed.
  EXPECT_FALSE(fs::exists(f.cell(0, 0)) && test::read_all(f.cell(0, 0)) == c00);
  EXPECT_TRUE(fs::exists(f.root / kOther));

  const VerifyReport repaired = verify_cache(f.root, VerifyOptions{.repair = true});
  EXPECT_TRUE(repaired.clean());
  EXPECT_EQ(damaged_files(repaired, f.root).size(), expected.size());
  for (const auto& p : repaired.damaged) EXPECT_TRUE(p.repaired) << p.file << ": " << p.repair;
  EXPECT_FALSE(fs::exists(f.cell(0, 0)));
  EXPECT_FALSE(fs::exists(f.cell(1, 1)));
  EXPECT_FALSE(fs::exists(f.cell(2, 0)));
  EXPECT_TRUE(fs::exists(f.cell(0, 1))) << "intact cells are kept";
  EXPECT_FALSE(fs::exists(f.root / kImage / ".cellflow-complete"));
  EXPECT_EQ(test::read_all(f.root / kImage / "0" / ".zarray"), zarray_before)
      << "rewritten from the definition";
  EXPECT_FALSE(fs::exists(f.root / kOther)) << "a node without a definition is removed";
  EXPECT_EQ(parse_json(test::read_all(f.root / kTable / ".zgroup")).find("zarr_format")->as_int(),
            2);

  const VerifyReport after = verify_cache(f.root);
  EXPECT_TRUE(after.clean());
  EXPECT_TRUE(after.damaged.empty()) << after.damaged.front().file;
  EXPECT_EQ(after.cells_checked, 3);
  // And the repaired array is usable: intact cells read back.
  EXPECT_TRUE(ZarrArray::open(f.root / kImage / "0")->read(CellIndex{0, 1}).has_value());
}

TEST(CacheVerify, StaleTemporaryFilesAreReportedNotDamageAndRepairRemovesThem) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  const fs::path old_tmp = f.root / kImage / "0" / "1" / ".0.tmp.4242.0.abc";
  const fs::path new_tmp = f.root / kImage / "0" / "1" / ".1.tmp.4242.1.def";
  const fs::path trash = f.root / ("." + kOther + ".trash.4242.1f");
  test::write_all(old_tmp, "half a cell");
  test::write_all(new_tmp, "in flight");
  test::write_all(trash / "0" / "0", "left over");
  fs::last_write_time(old_tmp, fs::file_time_type::clock::now() - std::chrono::minutes(5));

  const VerifyReport r = verify_cache(f.root);
  EXPECT_TRUE(r.clean());
  EXPECT_TRUE(r.damaged.empty());
  ASSERT_EQ(r.stale_temps.size(), 2u);
  EXPECT_EQ(r.stale_temps[0], trash);
  EXPECT_EQ(r.stale_temps[1], old_tmp);
  EXPECT_TRUE(fs::exists(old_tmp));

  const VerifyReport repaired = verify_cache(f.root, VerifyOptions{.repair = true});
  EXPECT_EQ(repaired.stale_removed, 2);
  EXPECT_FALSE(fs::exists(old_tmp));
  EXPECT_FALSE(fs::exists(trash));
  EXPECT_TRUE(fs::exists(new_tmp)) << "a young temporary file may belong to a running writer";
}

TEST(CacheVerify, AFolderWithoutMetadataIsUnfinishedNotDamaged) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  { NodeUseLock use = NodeUseLock::acquire(f.root, kOther); }  // creates the folder only
  const VerifyReport r = verify_cache(f.root);
  EXPECT_TRUE(r.clean());
  ASSERT_EQ(r.unfinished.size(), 1u);
  EXPECT_EQ(r.unfinished[0], f.root / kOther);
  const std::vector<CachedNode> scanned = scan_cache(f.root);
  const CachedNode& n = find(scanned, kOther);
  EXPECT_EQ(n.kind, CachedNodeKind::kUnknown);
  EXPECT_FALSE(n.metadata_problem.empty());
}

// Entries the layout does not define: each is reported without being
// followed or opened (the FIFO would block a reader), repair removes the
// links themselves and leaves their targets, a second verify is clean.
TEST(CacheVerify, EntriesTheLayoutDoesNotDefineAreReportedAndRemovedNeverFollowed) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  const fs::path outside = tmp / "outside";
  test::write_all(outside / "file", "outside");
  fs::remove(f.cell(0, 0));
  fs::create_symlink(outside / "file", f.cell(0, 0));  // a link at a cell
  fs::remove(f.root / kTable / ".zgroup");
  ASSERT_EQ(::mkfifo((f.root / kTable / ".zgroup").c_str(), 0644), 0);   // a FIFO
  fs::create_directory_symlink(outside, f.root / kImage / "artifacts");  // a link to a folder
  test::write_all(f.root / kImage / "notes.txt", "foreign");             // a foreign file
  fs::create_directory_symlink(outside, f.root / kOther);                // a node that is a link
  test::write_all(f.root / "stray.bin", "foreign");                      // in the root

  VerifyOptions check;
  check.definition_hash = [](const Value& def) -> std::optional<std::string> {
    return def.find("hash")->as_string();  // the fixture's definitions name their own folder
  };
  const VerifyReport r = verify_cache(f.root, check);
  const std::vector<std::string> expected = {
      kOther,
      kImage + "/.cellflow-complete",  // one cell is no longer a cell file
      kImage + "/0/0/0",
      kImage + "/artifacts",
      kImage + "/notes.txt",
      kTable + "/.zgroup",
      "stray.bin",
  };
  EXPECT_EQ(damaged_files(r, f.root), expected);
  EXPECT_NE(r.damaged[2].reason.find("a symbolic link is where the cache expects a cell file"),
            std::string::npos)
      << r.damaged[2].reason;

  check.repair = true;
  const VerifyReport repaired = verify_cache(f.root, check);
  EXPECT_TRUE(repaired.clean());
  EXPECT_EQ(damaged_files(repaired, f.root), expected);
  EXPECT_EQ(test::read_all(outside / "file"), "outside");  // the targets are untouched
  EXPECT_EQ(test::snapshot(outside).size(), 1u);
  EXPECT_FALSE(fs::exists(fs::symlink_status(f.cell(0, 0))));
  EXPECT_EQ(test::read_all(f.root / kTable / ".zgroup"), "{\n  \"zarr_format\": 2\n}\n");
  check.repair = false;
  const VerifyReport again = verify_cache(f.root, check);
  EXPECT_TRUE(again.damaged.empty()) << damaged_files(again, f.root).front();
}

// gc removes what stands at a node's place without being a folder (the link
// itself: its target keeps everything) and reports it.
TEST(CacheGc, ANodeThatIsALinkIsRemovedNotItsTarget) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  const fs::path outside = tmp / "outside";
  fs::copy(f.root / kImage, outside, fs::copy_options::recursive);
  const auto before = test::snapshot(outside);
  fs::create_directory_symlink(outside, f.root / kOther);
  const GcReport r = gc_cache(f.root, GcOptions{.keep = std::set<std::string>{kImage, kTable}});
  ASSERT_EQ(r.unexpected_removed.size(), 1u);
  EXPECT_EQ(r.unexpected_removed[0], f.root / kOther);
  EXPECT_FALSE(fs::exists(fs::symlink_status(f.root / kOther)));
  EXPECT_EQ(test::snapshot(outside), before);
  EXPECT_TRUE(r.removed.empty());
}

TEST(CacheGc, ByAgeRemovesOnlyNodesUnusedForLonger) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  age_folder(f.root / kImage, std::chrono::hours(24 * 10));
  const GcReport r = gc_cache(f.root, GcOptions{.older_than = std::chrono::hours(24 * 7)});
  ASSERT_EQ(r.removed.size(), 1u);
  EXPECT_EQ(r.removed[0].hash, kImage);
  EXPECT_TRUE(r.in_use.empty());
  EXPECT_FALSE(fs::exists(f.root / kImage));
  EXPECT_TRUE(fs::exists(f.root / kTable));
  EXPECT_LT(r.bytes_after, r.bytes_before);
  // No trash is left behind.
  for (const auto& e : fs::directory_iterator(f.root))
    EXPECT_FALSE(is_trash_name(e.path().filename().string())) << e.path();
}

TEST(CacheGc, BySizeRemovesLeastRecentlyUsedFirstUntilTheCacheFits) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  {
    CacheDirectory cache(f.root);
    auto other =
        cache.open_node(kOther, DType::kF32, f.grid,
                        definition(kOther, "raw", "synthetic.blobs", "f32", "[20,30]", "[8,16]"));
    other->write(CellIndex{0, 0}, ramp(DType::kF32, Shape{8, 16}, 1));
  }
  age_folder(f.root / kTable, std::chrono::hours(3));  // oldest
  age_folder(f.root / kImage, std::chrono::hours(2));
  age_folder(f.root / kOther, std::chrono::hours(1));  // newest
  const auto nodes = scan_cache(f.root);
  const uint64_t other_bytes = find(nodes, kOther).bytes;

  // A budget that fits the newest node only: the two older go, oldest first.
  GcOptions dry{.max_bytes = other_bytes, .dry_run = true};
  const GcReport d = gc_cache(f.root, dry);
  ASSERT_EQ(d.removed.size(), 2u);
  EXPECT_TRUE(fs::exists(f.root / kTable)) << "a dry run removes nothing";

  const GcReport r = gc_cache(f.root, GcOptions{.max_bytes = other_bytes});
  ASSERT_EQ(r.removed.size(), 2u);
  EXPECT_EQ(r.removed[0].hash, kTable);
  EXPECT_EQ(r.removed[1].hash, kImage);
  EXPECT_EQ(r.bytes_after, other_bytes);
  EXPECT_TRUE(fs::exists(f.root / kOther));

  // A budget the cache already fits removes nothing.
  EXPECT_TRUE(gc_cache(f.root, GcOptions{.max_bytes = other_bytes}).removed.empty());
}

TEST(CacheGc, KeepRemovesEverythingElseButNeverANodeInUse) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  {
    CacheDirectory cache(f.root);
    cache.open_node(kOther, DType::kF32, f.grid,
                    definition(kOther, "raw", "synthetic.blobs", "f32", "[20,30]", "[8,16]"));
  }
  NodeUseLock use = NodeUseLock::acquire(f.root, kTable);
  ASSERT_TRUE(use.held());
  EXPECT_TRUE(node_in_use(f.root, kTable));
  EXPECT_FALSE(node_in_use(f.root, kImage));

  const GcReport r = gc_cache(f.root, GcOptions{.keep = std::set<std::string>{kImage}});
  ASSERT_EQ(r.removed.size(), 1u);
  EXPECT_EQ(r.removed[0].hash, kOther);
  ASSERT_EQ(r.in_use.size(), 1u);
  EXPECT_EQ(r.in_use[0].hash, kTable);
  EXPECT_TRUE(fs::exists(f.root / kTable / ".zattrs"));
  EXPECT_TRUE(fs::exists(f.root / kImage / ".zattrs"));

  // Once the user is gone, the node goes.
  use = NodeUseLock();
  const GcReport again = gc_cache(f.root, GcOptions{.keep = std::set<std::string>{kImage}});
  ASSERT_EQ(again.removed.size(), 1u);
  EXPECT_EQ(again.removed[0].hash, kTable);
  EXPECT_FALSE(fs::exists(f.root / kTable));
}

TEST(CacheGc, ExactlyOneCriterion) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  EXPECT_THROW(gc_cache(f.root, GcOptions{}), InvalidArgument);
  EXPECT_THROW(gc_cache(f.root, GcOptions{.older_than = std::chrono::seconds(1), .max_bytes = 1}),
               InvalidArgument);
}

TEST(NodeUseLock, ARemovedNodeIsRecreatedByTheNextUser) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  EXPECT_TRUE(remove_node_folder(f.root, kImage));
  EXPECT_FALSE(fs::exists(f.root / kImage));
  EXPECT_FALSE(remove_node_folder(f.root, kImage)) << "absent: nothing to remove";
  NodeUseLock use = NodeUseLock::acquire(f.root, kImage);
  EXPECT_TRUE(use.held());
  EXPECT_TRUE(fs::exists(f.root / kImage / std::string(layout::kUseFile)));
  EXPECT_FALSE(remove_node_folder(f.root, kImage)) << "in use";
  EXPECT_TRUE(fs::exists(f.root / kImage));
}

TEST(NodeUseLock, AUserWaitingOnARemovalStartsOverOnAFreshFolder) {
  TempDir tmp;
  Fixture f(tmp / "cache");
  // Many removers and users race on one node; every user that got the lock
  // must hold the use file of the folder that is in place.
  std::atomic<bool> stop{false};
  std::thread remover([&] {
    while (!stop) remove_node_folder(f.root, kImage);
  });
  // A failed ASSERT returns early: stop and join the remover on every path.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~Joiner() {
      stop = true;
      thread.join();
    }
  } joiner{stop, remover};
  for (int i = 0; i < 300; ++i) {
    NodeUseLock use = NodeUseLock::acquire(f.root, kImage);
    ASSERT_TRUE(use.held());
    // While held, the folder cannot be removed.
    ASSERT_TRUE(fs::exists(f.root / kImage / std::string(layout::kUseFile))) << "iteration " << i;
    ASSERT_FALSE(remove_node_folder(f.root, kImage));
  }
}

}  // namespace
}  // namespace cellflow
