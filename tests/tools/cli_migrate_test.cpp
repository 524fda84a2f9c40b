// `cellflow cache migrate`: a cache written by the previous format (kept as
// test data: tests/data/cache_format1, made by main at 397ccfc) is refused by
// every command with a message that says what to do, never misread or
// silently recomputed; after migrate, a run computes nothing and zarr-python
// reads every node with the bytes it read from the format-1 cache.
#include <gtest/gtest.h>

#include <string>

#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;
using test::describe;
using test::run_cli;
using test::run_command;
using test::TempDir;

const fs::path kData = fs::path(CELLFLOW_SOURCE_DIR) / "tests" / "data";

fs::path copy_format1_cache(const TempDir& tmp) {
  const fs::path cache = tmp / "cache";
  fs::copy(kData / "cache_format1", cache, fs::copy_options::recursive);
  return cache;
}

TEST(CliMigrate, AFormat1CacheIsRefusedUntilMigratedThenReusedBitExactly) {
  TempDir tmp;
  const fs::path cache = copy_format1_cache(tmp);
  const std::string graph = (kData / "cache_format1.graph.json").string();

  const CommandResult refused = run_cli({"run", graph, "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(refused.exit_code, 2) << describe(refused);
  EXPECT_NE(refused.err.find("cellflow cache migrate"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("format 1"), std::string::npos) << refused.err;

  const CommandResult migrated = run_cli({"cache", "migrate", cache.string()}, tmp.path());
  ASSERT_EQ(migrated.exit_code, 0) << describe(migrated);
  EXPECT_NE(migrated.out.find("format 1 -> 2"), std::string::npos) << migrated.out;
  EXPECT_NE(migrated.out.find("40 cells rewritten"), std::string::npos) << migrated.out;
  EXPECT_NE(migrated.out.find("0 damaged cells removed"), std::string::npos) << migrated.out;

  // Every cell was kept: a run computes nothing.
  const CommandResult run = run_cli({"run", graph, "--cache", cache.string(), "--quiet",
                                     "--summary-json", (tmp / "s.json").string()},
                                    tmp.path());
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  const test::Summary s = test::read_summary(tmp / "s.json");
  for (const char* id : {"raw", "smooth", "mask", "labels", "objects"})
    EXPECT_EQ(s.get(id, "cells_computed"), 0) << id;

  const CommandResult verify = run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(verify.exit_code, 0) << describe(verify);

  // zarr-python reads the same bytes as before the migration.
  const std::string script = R"(
import hashlib, json, sys, zarr
cache, expected = sys.argv[1], json.load(open(sys.argv[2]))
bad = 0
for node_id, n in expected["nodes"].items():
    if n.get("kind") != "image":
        continue
    got = hashlib.sha256(zarr.open(cache + "/" + n["hash"] + "/0", mode="r")[:].tobytes()).hexdigest()
    if got != n["sha256_decoded"]:
        print("differs:", node_id); bad += 1
print("checked")
sys.exit(1 if bad else 0)
)";
  const CommandResult py = run_command({CELLFLOW_PYTHON, "-c", script, cache.string(),
                                        (kData / "cache_format1.expected.json").string()},
                                       tmp.path());
  EXPECT_EQ(py.exit_code, 0) << describe(py);
  EXPECT_NE(py.out.find("checked"), std::string::npos) << describe(py);

  // A second migrate has nothing to do.
  const CommandResult again = run_cli({"cache", "migrate", cache.string()}, tmp.path());
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.out.find("nothing to do"), std::string::npos) << again.out;
}

TEST(CliMigrate, ADamagedFormat1CellIsRemovedAndRecomputedNotKept) {
  TempDir tmp;
  const fs::path cache = copy_format1_cache(tmp);
  // Flip one byte inside a cell of "raw" (hash from cache_format1.expected.json).
  const fs::path node = cache / "3d9497855174f8a72442509748f62adf";
  const fs::path victim = node / "0" / "0" / "0" / "0";
  ASSERT_TRUE(fs::exists(victim));
  ASSERT_TRUE(fs::exists(node / ".cellflow-complete"));
  std::string bytes = test::read_all(victim);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
  test::write_all(victim, bytes);

  const CommandResult migrated = run_cli({"cache", "migrate", cache.string()}, tmp.path());
  ASSERT_EQ(migrated.exit_code, 0) << describe(migrated);
  EXPECT_NE(migrated.out.find("1 damaged cells removed"), std::string::npos) << migrated.out;
  EXPECT_FALSE(fs::exists(victim));
  EXPECT_FALSE(fs::exists(node / ".cellflow-complete")) << "the node lost a cell";
  const std::string graph = (kData / "cache_format1.graph.json").string();
  const CommandResult run =
      run_cli({"run", graph, "--cache", cache.string(), "--output", "raw"}, tmp.path());
  EXPECT_EQ(run.exit_code, 0) << describe(run);
  EXPECT_TRUE(fs::exists(victim)) << "recomputed";
}

// `cache migrate --shard-cells N`: a format-2 cache becomes sharded (format
// 3); every complete image node is packed (zarr.json, no .zarray, no single
// cell file), verify calls it clean, and a run reads every cell back from the
// shards, bit-identical, computing nothing. A second migrate changes nothing;
// another shard size is refused.
TEST(CliMigrate, AFormat2CacheIsShardedExplicitlyAndReusedBitExactly) {
  TempDir tmp;
  const std::string json = test::example_graph_json(0.5, 7);
  const fs::path graph = test::write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const CommandResult first =
      run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp.path());
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const CommandResult m =
      run_cli({"cache", "migrate", cache.string(), "--shard-cells", "8"}, tmp.path());
  ASSERT_EQ(m.exit_code, 0) << describe(m);
  EXPECT_NE(m.out.find("format 2 -> 3"), std::string::npos) << m.out;
  EXPECT_NE(test::read_all(cache / "cellflow-cache.json").find("\"format\": 3"), std::string::npos);
  const Graph memory = test::build_graph(json, std::nullopt);
  int packed = 0;
  for (const auto& n : memory.nodes()) {
    const fs::path array = cache / n.hash / "0";
    if (!fs::exists(array)) continue;
    SCOPED_TRACE(n.def.id);
    EXPECT_TRUE(fs::exists(array / "zarr.json"));
    EXPECT_FALSE(fs::exists(array / ".zarray"));
    EXPECT_FALSE(fs::exists(array / "0")) << "single cell files left";
    ++packed;
  }
  EXPECT_GT(packed, 0);
  const CommandResult v = run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  const Graph cached = test::build_graph(json, cache);
  for (const auto& n : memory.nodes()) {
    if (!fs::exists(cache / n.hash / "0")) continue;
    SCOPED_TRACE(n.def.id);
    EXPECT_TRUE(
        test::same_bytes(test::read_whole(cached, n.def.id), test::read_whole(memory, n.def.id)));
    EXPECT_EQ(cached.image(n.def.id)->stats().computed, 0);
  }
  const CommandResult again =
      run_cli({"cache", "migrate", cache.string(), "--shard-cells", "8"}, tmp.path());
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  const CommandResult other =
      run_cli({"cache", "migrate", cache.string(), "--shard-cells", "64"}, tmp.path());
  EXPECT_NE(other.exit_code, 0) << describe(other);
  EXPECT_NE(other.err.find("already sharded"), std::string::npos) << other.err;
}

}  // namespace
}  // namespace cellflow
