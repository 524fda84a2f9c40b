// `cellflow cache ls | verify | gc` as a user runs them, including while
// another process computes on the same cache.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "cellflow/cache/node_use_lock.hpp"
#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::vector<std::string> kIds = {"raw", "smooth", "mask", "density"};

CommandResult cli(const std::vector<std::string>& args, const TempDir& tmp) {
  return run_cli(args, tmp.path());
}

void run_ok(const TempDir& tmp, const fs::path& graph, const fs::path& cache) {
  const CommandResult r = cli({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST(CliCacheLs, OneLinePerNodeWithOpIdShapeSizeStateAndLastUse) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  run_ok(tmp, graph, cache);
  const Graph memory = build_graph(example_graph_json(), std::nullopt);

  const CommandResult r = cli({"cache", "ls", "--cache", cache.string()}, tmp);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 1 + kIds.size() + 1) << r.out;  // header, nodes, total
  EXPECT_NE(lines[0].find("last used"), std::string::npos);
  for (const auto& id : kIds) {
    const GraphNode& n = memory.node(id);
    const int64_t cells = CellGrid(n.info.shape, n.info.cell_shape).num_cells();
    const auto line = std::find_if(lines.begin(), lines.end(),
                                   [&](const std::string& l) { return l.starts_with(n.hash); });
    ASSERT_NE(line, lines.end()) << id << "\n" << r.out;
    EXPECT_NE(line->find(" " + n.def.op + " "), std::string::npos) << *line;
    EXPECT_NE(line->find(" " + id + " "), std::string::npos) << *line;
    EXPECT_NE(line->find(fmt::format("{}", fmt::join(n.info.shape, "x"))), std::string::npos)
        << *line;
    EXPECT_NE(line->find(fmt::format("complete ({}/{})", cells, cells)), std::string::npos)
        << *line;
    EXPECT_NE(line->find("iB"), std::string::npos) << "a size: " << *line;
  }
  EXPECT_NE(lines.back().find("4 nodes"), std::string::npos) << lines.back();

  // JSON, after removing one cell of mask: partial.
  const GraphNode& mask = memory.node("mask");
  fs::remove(cell_file(cache, mask.hash, {0, 0, 0}));
  const CommandResult j = cli({"cache", "ls", "--cache", cache.string(), "--json"}, tmp);
  ASSERT_EQ(j.exit_code, 0) << describe(j);
  const Value v = parse_json(j.out, "ls --json");
  EXPECT_EQ(v.find("cache")->as_string(), cache.string());
  ASSERT_EQ(v.find("nodes")->as_array().size(), 4u);
  int64_t bytes = 0;
  for (const Value& n : v.find("nodes")->as_array()) {
    const GraphNode& g = memory.node(n.find("id")->as_string());
    EXPECT_EQ(n.find("hash")->as_string(), g.hash);
    EXPECT_EQ(n.find("op")->as_string(), g.def.op);
    EXPECT_EQ(n.find("kind")->as_string(), "image");
    EXPECT_EQ(n.find("dtype")->as_string(), std::string(dtype_name(g.info.dtype)));
    EXPECT_EQ(*n.find("shape"), Value::list(g.info.shape.to_vector()));
    const int64_t total = CellGrid(g.info.shape, g.info.cell_shape).num_cells();
    EXPECT_EQ(n.find("cells_total")->as_int(), total);
    const bool is_mask = g.def.id == "mask";
    EXPECT_EQ(n.find("cells_present")->as_int(), is_mask ? total - 1 : total);
    EXPECT_EQ(n.find("complete")->as_bool(), !is_mask);
    EXPECT_TRUE(n.find("complete_marker")->as_bool()) << "the marker stays until verify --repair";
    EXPECT_GT(n.find("bytes")->as_int(), 0);
    EXPECT_EQ(n.find("last_used")->as_string().size(), 20u) << "ISO 8601 UTC";
    EXPECT_GT(n.find("last_used_unix")->as_double(), 1.0e9);
    bytes += n.find("bytes")->as_int();
  }
  EXPECT_EQ(v.find("total_bytes")->as_int(), bytes);
}

TEST(CliCacheLs, NotACacheIsAUsageErrorAndNothingIsCreated) {
  TempDir tmp;
  const CommandResult r = cli({"cache", "ls", "--cache", (tmp / "nothing").string()}, tmp);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("no such directory"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "nothing"));
  fs::create_directories(tmp / "plain");
  const CommandResult p = cli({"cache", "verify", "--cache", (tmp / "plain").string()}, tmp);
  EXPECT_EQ(p.exit_code, 2) << describe(p);
  EXPECT_NE(p.err.find("not a cellflow cache"), std::string::npos) << p.err;
  EXPECT_EQ(cli({"cache", "--cache", (tmp / "plain").string()}, tmp).exit_code, 2);
}

TEST(CliCacheVerify, NamesEveryDamagedFileAndRepairLetsTheNextRunRecomputeThem) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  run_ok(tmp, graph, cache);
  const Graph memory = build_graph(example_graph_json(), std::nullopt);
  std::map<std::string, std::map<std::string, std::string>> before;
  for (const auto& id : kIds) before[id] = node_files(cache / memory.node(id).hash);

  const CommandResult clean = cli({"cache", "verify", "--cache", cache.string()}, tmp);
  EXPECT_EQ(clean.exit_code, 0) << describe(clean);
  EXPECT_NE(clean.out.find(": clean"), std::string::npos) << clean.out;

  // Garble one cell of smooth, truncate one of mask.
  const fs::path garbled = cell_file(cache, memory.node("smooth").hash, {1, 2, 3});
  std::string data = read_all(garbled);
  data[data.size() / 2] = static_cast<char>(data[data.size() / 2] ^ 0xff);
  write_all(garbled, data);
  const fs::path truncated = cell_file(cache, memory.node("mask").hash, {2, 0, 1});
  write_all(truncated, read_all(truncated).substr(0, 10));

  const CommandResult bad = cli({"cache", "verify", "--cache", cache.string()}, tmp);
  EXPECT_EQ(bad.exit_code, 1) << describe(bad);
  EXPECT_NE(bad.out.find("damaged: " + garbled.string() + ": checksum mismatch"), std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find("damaged: " + truncated.string() + ": truncated"), std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find(".cellflow-complete"), std::string::npos)
      << "markers of nodes that lost cells";
  EXPECT_TRUE(fs::exists(garbled)) << "verify without --repair only reads";

  const CommandResult repaired =
      cli({"cache", "verify", "--cache", cache.string(), "--repair"}, tmp);
  EXPECT_EQ(repaired.exit_code, 0) << describe(repaired);
  EXPECT_NE(repaired.out.find("all repaired"), std::string::npos) << repaired.out;
  EXPECT_FALSE(fs::exists(garbled));
  EXPECT_FALSE(fs::exists(truncated));
  EXPECT_EQ(cli({"cache", "verify", "--cache", cache.string()}, tmp).exit_code, 0);

  // The next run of every node recomputes exactly the two cells and nothing
  // else; the cache is then what it was before the damage. (A run of the
  // graph's output alone would recompute nothing: density is complete.)
  const CommandResult r =
      cli({"run", graph.string(), "--cache", cache.string(), "--quiet", "--output", "smooth",
           "--output", "mask", "--output", "density", "--summary-json", (tmp / "s.json").string()},
          tmp);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_EQ(s.get("raw", "cells_computed"), 0);
  EXPECT_EQ(s.get("smooth", "cells_computed"), 1);
  EXPECT_EQ(s.get("mask", "cells_computed"), 1);
  EXPECT_EQ(s.get("density", "cells_computed"), 0);
  for (const auto& id : kIds) EXPECT_EQ(node_files(cache / memory.node(id).hash), before[id]) << id;
}

TEST(CliCacheGc, KeepGraphAgeAndSizeNeverTouchingANodeInUse) {
  TempDir tmp;
  const fs::path g1 = write_graph(tmp, "g1.json", example_graph_json(0.5));
  const fs::path g2 = write_graph(tmp, "g2.json", example_graph_json(0.6));  // new mask, density
  const fs::path cache = tmp / "cache";
  run_ok(tmp, g1, cache);
  run_ok(tmp, g2, cache);
  const Graph m1 = build_graph(example_graph_json(0.5), std::nullopt);
  const Graph m2 = build_graph(example_graph_json(0.6), std::nullopt);
  const auto present = [&](const Graph& g, const std::string& id) {
    return fs::exists(cache / g.node(id).hash / ".zattrs");
  };

  // Usage errors.
  EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string()}, tmp).exit_code, 2);
  EXPECT_EQ(
      cli({"cache", "gc", "--cache", cache.string(), "--older-than", "1", "--max-size", "1G"}, tmp)
          .exit_code,
      2);
  EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string(), "--max-size", "lots"}, tmp).exit_code,
            2);

  // Keep what g2 uses: g1's mask and density go.
  const CommandResult dry = cli(
      {"cache", "gc", "--cache", cache.string(), "--keep-graph", g2.string(), "--dry-run"}, tmp);
  ASSERT_EQ(dry.exit_code, 0) << describe(dry);
  EXPECT_NE(dry.out.find("would remove " + m1.node("mask").hash), std::string::npos) << dry.out;
  EXPECT_TRUE(present(m1, "mask"));
  const CommandResult keep =
      cli({"cache", "gc", "--cache", cache.string(), "--keep-graph", g2.string()}, tmp);
  ASSERT_EQ(keep.exit_code, 0) << describe(keep);
  EXPECT_NE(keep.out.find("removed 2 nodes"), std::string::npos) << keep.out;
  EXPECT_FALSE(present(m1, "mask"));
  EXPECT_FALSE(present(m1, "density"));
  for (const auto& id : kIds) EXPECT_TRUE(present(m2, id)) << id;

  // Nothing is older than a day.
  const CommandResult young =
      cli({"cache", "gc", "--cache", cache.string(), "--older-than", "1"}, tmp);
  ASSERT_EQ(young.exit_code, 0) << describe(young);
  EXPECT_NE(young.out.find("removed 0 nodes"), std::string::npos) << young.out;

  // A process using raw (as a running `cellflow run` does) keeps it through
  // gc by age and by size; everything else goes.
  NodeUseLock use = NodeUseLock::acquire(cache, m2.node("raw").hash);
  ASSERT_TRUE(use.held());
  const CommandResult all =
      cli({"cache", "gc", "--cache", cache.string(), "--older-than", "0"}, tmp);
  ASSERT_EQ(all.exit_code, 0) << describe(all);
  EXPECT_NE(all.out.find("kept " + m2.node("raw").hash), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("in use"), std::string::npos) << all.out;
  EXPECT_TRUE(present(m2, "raw"));
  EXPECT_FALSE(present(m2, "smooth"));
  EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string(), "--max-size", "0"}, tmp).exit_code, 0);
  EXPECT_TRUE(present(m2, "raw"));
  use = NodeUseLock();
  EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string(), "--max-size", "0"}, tmp).exit_code, 0);
  EXPECT_FALSE(fs::exists(cache / m2.node("raw").hash));
  // An empty cache is still a cache.
  const CommandResult ls = cli({"cache", "ls", "--cache", cache.string()}, tmp);
  EXPECT_EQ(ls.exit_code, 0);
  EXPECT_NE(ls.out.find("0 nodes"), std::string::npos) << ls.out;
}

TEST(CliCacheGc, GcAndVerifyWhileARunComputesNeverBreakIt) {
  TempDir tmp;
  // A run of a few seconds: every cell of boom sleeps (cooperatively) a little.
  const fs::path graph = write_graph(
      tmp, "slow.json", fault_graph_json(R"({"mode": "slow", "times": -1, "seconds": 0.4})"));
  const fs::path cache = tmp / "cache";
  const fs::path other = write_graph(tmp, "other.json", example_graph_json());
  run_ok(tmp, other, cache);  // nodes nobody uses: gc may take them

  std::string raw_hash;
  std::string boom_hash;
  {
    const CommandResult h =
        cli({"graph", graph.string(), "--hashes", "--plugin", CELLFLOW_FAULT_PLUGIN}, tmp);
    ASSERT_EQ(h.exit_code, 0) << describe(h);
    std::istringstream in(h.out);
    std::string id, hash;
    while (in >> id >> hash) (id == "raw" ? raw_hash : boom_hash) = hash;
  }

  Child run({CELLFLOW_CLI, "run", graph.string(), "--cache", cache.string(), "--plugin",
             CELLFLOW_FAULT_PLUGIN, "--threads", "2", "--quiet", "--summary-json",
             (tmp / "s.json").string()},
            tmp / "run.out", tmp / "run.err");
  ASSERT_TRUE(run.started());
  // Once the run has opened its nodes, gc and repair as hard as possible.
  for (int i = 0; i < 3000 && !fs::exists(cache / boom_hash / ".zattrs"); ++i) {
    if (run.wait_for(0.01)) break;
  }
  int rounds = 0;
  while (!run.wait_for(0.0)) {
    EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string(), "--max-size", "0"}, tmp).exit_code, 0);
    EXPECT_EQ(cli({"cache", "gc", "--cache", cache.string(), "--older-than", "0"}, tmp).exit_code,
              0);
    const CommandResult v = cli({"cache", "verify", "--cache", cache.string(), "--repair"}, tmp);
    EXPECT_EQ(v.exit_code, 0) << describe(v);
    // Still running after all of that: its nodes were in use the whole time.
    if (!run.wait_for(0.0)) {
      EXPECT_TRUE(fs::exists(cache / raw_hash / ".zattrs")) << "gc removed a node in use";
      EXPECT_TRUE(fs::exists(cache / boom_hash / ".zattrs")) << "gc removed a node in use";
      ++rounds;
    }
  }
  EXPECT_EQ(run.code(), 0) << read_all(tmp / "run.err");
  EXPECT_GT(rounds, 0) << "the run ended before any gc ran; make it slower";
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_EQ(s.get("boom", "cells_computed"), 8);
  // The unused nodes are gone. The run's nodes, unless a gc that started
  // after the run ended took them (whole: removal is one rename), are
  // complete and sound.
  EXPECT_FALSE(
      fs::exists(cache / build_graph(example_graph_json(), std::nullopt).node("raw").hash));
  if (fs::exists(cache / boom_hash)) {
    EXPECT_TRUE(fs::exists(cache / boom_hash / ".cellflow-complete"));
  }
  if (fs::exists(cache / boom_hash) && fs::exists(cache / raw_hash)) {
    EXPECT_TRUE(same_cells(cache / boom_hash / "0", cache / raw_hash / "0"));
  }
  const CommandResult v = cli({"cache", "verify", "--cache", cache.string()}, tmp);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_NE(v.out.find(": clean"), std::string::npos) << v.out;
}

}  // namespace
}  // namespace cellflow::test
