// The `cellflow` program as a user runs it: persistence across processes,
// recomputation after a param change, thread counts, damaged cells, the
// summary, graph/ops/export commands.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "cellflow/cache/zarr_array.hpp"
#include "cli_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

const std::vector<std::string> kIds = {"raw", "smooth", "mask", "density"};

CommandResult run_ok(const std::vector<std::string>& args, const TempDir& tmp) {
  CommandResult r = run_cli(args, tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return r;
}

TEST(CliRun, SecondProcessComputesNothingAndReturnsBitIdenticalData) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  run_ok({"run", graph.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s1.json").string(), "--quiet"},
         tmp);
  const Summary s1 = read_summary(tmp / "s1.json");
  const Graph memory = build_graph(example_graph_json(), std::nullopt);

  // The summary's contract.
  EXPECT_EQ(s1.root.find("graph")->as_string(), graph.string());
  EXPECT_EQ(fs::path(s1.root.find("cache")->as_string()), cache);
  EXPECT_TRUE(s1.root.find("wall_seconds")->is_number());
  EXPECT_GT(s1.root.find("peak_rss_bytes")->as_int(), 0);
  ASSERT_EQ(s1.nodes.size(), 4u);
  for (const auto& id : kIds) {
    SCOPED_TRACE(id);
    const GraphNode& n = memory.node(id);
    EXPECT_EQ(s1.str(id, "op"), n.def.op);
    EXPECT_EQ(s1.str(id, "hash"), n.hash) << "hashes are the same in every process";
    EXPECT_EQ(fs::path(s1.str(id, "path")), cache / n.hash);
    EXPECT_EQ(s1.str(id, "dtype"), std::string(dtype_name(n.info.dtype)));
    EXPECT_EQ(*s1.nodes.at(id).find("shape"), Value::list(n.info.shape.to_vector()));
    EXPECT_EQ(*s1.nodes.at(id).find("cell_shape"), Value::list(n.info.cell_shape.to_vector()));
    const int64_t total = CellGrid(n.info.shape, n.info.cell_shape).num_cells();
    EXPECT_EQ(s1.get(id, "cells_total"), total);
    EXPECT_EQ(s1.get(id, "cells_computed"), total);
    EXPECT_EQ(s1.get(id, "cells_loaded"), 0);
    EXPECT_TRUE(s1.nodes.at(id).find("seconds")->is_number());
    EXPECT_TRUE(fs::exists(cache / n.hash / ".cellflow-complete"));
  }
  const auto files = snapshot(cache);

  // A second process on the same cache computes nothing and rewrites nothing.
  run_ok({"run", graph.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s2.json").string(), "--quiet"},
         tmp);
  const Summary s2 = read_summary(tmp / "s2.json");
  for (const auto& id : kIds) {
    EXPECT_EQ(s2.get(id, "cells_computed"), 0) << id;
    EXPECT_EQ(s2.str(id, "hash"), s1.str(id, "hash")) << id;
  }
  EXPECT_EQ(snapshot(cache), files);

  // This process (a third one) reads every node from disk, computing nothing,
  // and gets exactly what a memory-only computation gives.
  const Graph cached = build_graph(example_graph_json(), cache);
  for (const auto& id : kIds) {
    SCOPED_TRACE(id);
    const CellBuffer from_disk = read_whole(cached, id);
    EXPECT_TRUE(same_bytes(from_disk, read_whole(memory, id)));
    EXPECT_EQ(cached.image(id)->stats().computed, 0);
    EXPECT_EQ(cached.image(id)->stats().loaded, cached.image(id)->grid().num_cells());
  }
}

TEST(CliRun, ChangingOneParamRecomputesThatNodeAndItsDescendantsOnly) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const fs::path g1 = write_graph(tmp, "g1.json", example_graph_json(0.5));
  const fs::path g2 = write_graph(tmp, "g2.json", example_graph_json(0.6));
  run_ok({"run", g1.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s1.json").string(), "--quiet"},
         tmp);
  run_ok({"run", g2.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s2.json").string(), "--quiet"},
         tmp);
  const Summary s1 = read_summary(tmp / "s1.json");
  const Summary s2 = read_summary(tmp / "s2.json");
  EXPECT_EQ(s2.get("raw", "cells_computed"), 0);
  EXPECT_EQ(s2.get("smooth", "cells_computed"), 0);
  EXPECT_EQ(s2.get("mask", "cells_computed"), s2.get("mask", "cells_total"));
  EXPECT_EQ(s2.get("density", "cells_computed"), s2.get("density", "cells_total"));
  EXPECT_EQ(s2.str("raw", "hash"), s1.str("raw", "hash"));
  EXPECT_EQ(s2.str("smooth", "hash"), s1.str("smooth", "hash"));
  EXPECT_NE(s2.str("mask", "hash"), s1.str("mask", "hash"));
  EXPECT_NE(s2.str("density", "hash"), s1.str("density", "hash"));
  // Going back to the first param computes nothing: both versions are cached.
  run_ok({"run", g1.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s3.json").string(), "--quiet"},
         tmp);
  const Summary s3 = read_summary(tmp / "s3.json");
  for (const auto& id : kIds) EXPECT_EQ(s3.get(id, "cells_computed"), 0) << id;
}

TEST(CliRun, SummaryCountsCellsLoadedFromDisk) {
  // After a param change of mask, this run reads smooth's cells back from
  // disk to compute mask: the summary's cells_loaded must say so.
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const fs::path g1 = write_graph(tmp, "g1.json", example_graph_json(0.5));
  const fs::path g2 = write_graph(tmp, "g2.json", example_graph_json(0.6));
  run_ok({"run", g1.string(), "--cache", cache.string(), "--quiet"}, tmp);
  run_ok({"run", g2.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s2.json").string(), "--quiet"},
         tmp);
  const Summary s2 = read_summary(tmp / "s2.json");
  EXPECT_EQ(s2.get("smooth", "cells_loaded"), s2.get("smooth", "cells_total"));
  EXPECT_EQ(s2.get("raw", "cells_loaded"), 0);
}

TEST(CliRun, OneThreadAndAllThreadsWriteIdenticalBytes) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 6));
  run_ok({"run", graph.string(), "--cache", (tmp / "c1").string(), "--threads", "1", "--quiet"},
         tmp);
  run_ok({"run", graph.string(), "--cache", (tmp / "call").string(), "--quiet"}, tmp);
  const auto a = snapshot(tmp / "c1");
  const auto b = snapshot(tmp / "call");
  EXPECT_GT(a.size(), 4u * 36u);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [path, bytes] : a) {
    ASSERT_TRUE(b.count(path)) << path;
    EXPECT_TRUE(bytes == b.at(path)) << path << " differs between --threads 1 and the default";
  }
}

TEST(CliRun, OutputFlagSelectsWhatIsComputed) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 7));
  run_ok({"run", graph.string(), "--cache", (tmp / "cache").string(), "--output", "smooth",
          "--summary-json", (tmp / "s.json").string(), "--quiet"},
         tmp);
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_EQ(s.nodes.size(), 4u) << "every node of the graph is listed";
  EXPECT_EQ(s.get("raw", "cells_computed"), 36);
  EXPECT_EQ(s.get("smooth", "cells_computed"), 36);
  EXPECT_EQ(s.get("mask", "cells_computed"), 0);
  EXPECT_EQ(s.get("density", "cells_computed"), 0);
  EXPECT_FALSE(fs::exists(tmp / "cache" / s.str("mask", "hash") / ".cellflow-complete"));
  // Two --output flags.
  run_ok({"run", graph.string(), "--cache", (tmp / "cache").string(), "--output", "mask",
          "--output", "density", "--summary-json", (tmp / "s2.json").string(), "--quiet"},
         tmp);
  const Summary s2 = read_summary(tmp / "s2.json");
  EXPECT_EQ(s2.get("smooth", "cells_computed"), 0);
  EXPECT_EQ(s2.get("mask", "cells_computed"), 36);
  EXPECT_EQ(s2.get("density", "cells_computed"), s2.get("density", "cells_total"));
}

TEST(CliRun, SmallMemoryBudgetStillComputesEachCellOnce) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 8));
  run_ok({"run", graph.string(), "--cache", (tmp / "cache").string(), "--memory", "128K",
          "--threads", "2", "--summary-json", (tmp / "s.json").string(), "--quiet"},
         tmp);
  const Summary s = read_summary(tmp / "s.json");
  for (const auto& id : kIds)
    EXPECT_EQ(s.get(id, "cells_computed"), s.get(id, "cells_total")) << id;
  const Graph memory = build_graph(example_graph_json(0.5, 8), std::nullopt);
  const Graph cached = build_graph(example_graph_json(0.5, 8), tmp / "cache");
  for (const auto& id : kIds)
    EXPECT_TRUE(same_bytes(read_whole(cached, id), read_whole(memory, id))) << id;
}

// Out of core: 4 nodes of 128 MiB each (512 MiB of cells) through a 32 MiB
// budget. Peak RSS must stay within the budget plus a fixed overhead (the
// buffer pool's 16 MiB floor, cells in flight, libraries). With the default
// budget a run still drops the cells it committed and will not read again,
// and so (the CLI reads nothing after the run) the cells of intermediates
// kept in memory only ("persist": false); an output kept in memory only
// stays whole, which shows the bounds are not vacuous.
TEST(CliRun, OutOfCoreRunStaysWithinItsMemoryBudget) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "peak RSS bounds do not hold with a sanitizer's shadow memory";
#endif
  TempDir tmp;
  const std::string json = R"({"cellflow": 1, "name": "ooc", "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [128, 512, 512], "cell_shape": [64, 64, 64], "seed": 5}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 2.0}},
    {"id": "mask", "op": "threshold", "inputs": ["smooth"], "params": {"above": 0.5}},
    {"id": "density", "op": "region.density", "inputs": ["mask"],
     "params": {"region": [64, 64, 64]}}], "outputs": ["density"]})";
  const fs::path graph = write_graph(tmp, "ooc.json", json);
  std::string in_memory = json;
  for (const std::string id : {"raw", "smooth", "mask"}) {
    const std::string from = "{\"id\": \"" + id + "\", ";
    in_memory.replace(in_memory.find(from), from.size(), from + "\"persist\": false, ");
  }
  const fs::path graph_in_memory = write_graph(tmp, "ooc_memory.json", in_memory);
  std::string smooth_output = in_memory;
  smooth_output.replace(smooth_output.find(R"("outputs": ["density"])"),
                        std::string(R"("outputs": ["density"])").size(),
                        R"("outputs": ["density", "smooth"])");
  const fs::path graph_smooth_output = write_graph(tmp, "ooc_output.json", smooth_output);
  const auto peak_rss = [&](const std::string& name, const std::vector<std::string>& extra,
                            const fs::path& g) {
    std::vector<std::string> args = {
        "run",       g.string(), "--cache",        (tmp / name).string(),
        "--threads", "2",        "--summary-json", (tmp / (name + ".json")).string(),
        "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    run_ok(args, tmp);
    const Summary s = read_summary(tmp / (name + ".json"));
    for (const auto& id : kIds)
      EXPECT_EQ(s.get(id, "cells_computed"), s.get(id, "cells_total")) << name << " " << id;
    return s.root.find("peak_rss_bytes")->as_int();
  };
  constexpr int64_t kMiB = int64_t{1} << 20;
  const int64_t tight = peak_rss("tight", {"--memory", "32M"}, graph);
  EXPECT_LT(tight, (32 + 16 + 64) * kMiB) << "budget 32 MiB + pool 16 MiB + 64 MiB overhead";
  const int64_t roomy = peak_rss("roomy", {}, graph);
  EXPECT_LT(roomy, 192 * kMiB) << "committed cells leave memory once the run stops reading them";
  const int64_t memory_only = peak_rss("memory_only", {}, graph_in_memory);
  EXPECT_LT(memory_only, 192 * kMiB)
      << "an intermediate only memory holds leaves memory once the run stops reading it";
  const int64_t held = peak_rss("held", {}, graph_smooth_output);
  EXPECT_GT(held, 128 * kMiB) << "an output only memory holds stays (128 MiB of f32)";
  EXPECT_TRUE(same_bytes(read_whole(build_graph(json, tmp / "tight"), "density"),
                         read_whole(build_graph(json, tmp / "roomy"), "density")));
}

TEST(CliRun, CacheFromEnvironmentVariable) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 9));
  const CommandResult r = run_command({"env", "CELLFLOW_CACHE=" + (tmp / "envcache").string(),
                                       CELLFLOW_CLI, "run", graph.string(), "--quiet"},
                                      tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(fs::exists(tmp / "envcache" / "cellflow-cache.json"));
}

TEST(CliRun, ResumesAPartiallyComputedNode) {
  // Cells committed earlier (here by a lazy read in this process) are not
  // computed again: a node is resumable cell by cell.
  TempDir tmp;
  const std::string json = example_graph_json(0.5, 13);
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  int64_t mask_done = 0, smooth_done = 0, raw_done = 0;
  {
    const Graph g = build_graph(json, cache);
    g.image("mask")->read(Box({0, 0, 0}, {20, 20, 20}));  // mask cells z 0..1, y 0..1, x 0..1
    mask_done = g.image("mask")->stats().computed;
    smooth_done = g.image("smooth")->stats().computed;
    raw_done = g.image("raw")->stats().computed;
  }
  ASSERT_EQ(mask_done, 8);
  ASSERT_EQ(smooth_done, 8);
  ASSERT_EQ(raw_done, 27);
  run_ok({"run", graph.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s.json").string(), "--quiet"},
         tmp);
  const Summary s = read_summary(tmp / "s.json");
  EXPECT_EQ(s.get("raw", "cells_computed"), 36 - raw_done);
  EXPECT_EQ(s.get("smooth", "cells_computed"), 36 - smooth_done);
  EXPECT_EQ(s.get("mask", "cells_computed"), 36 - mask_done);
  EXPECT_EQ(s.get("density", "cells_computed"), s.get("density", "cells_total"));
  const Graph memory = build_graph(json, std::nullopt);
  const Graph cached = build_graph(json, cache);
  for (const auto& id : kIds)
    EXPECT_TRUE(same_bytes(read_whole(cached, id), read_whole(memory, id))) << id;
}

// `processes` concurrent `cellflow run`s of one graph on one cache (with
// `env` before each command, e.g. "CELLFLOW_SHARD_CELLS=8 "); returns their summaries.
std::vector<Summary> run_concurrently(const TempDir& tmp, const fs::path& graph,
                                      const fs::path& cache, int processes,
                                      const std::string& env) {
  std::string script;
  for (int i = 1; i <= processes; ++i) {
    script += "( " + env + shell_quote(CELLFLOW_CLI) + " run " + shell_quote(graph.string()) +
              " --cache " + shell_quote(cache.string()) + " --quiet --summary-json " +
              shell_quote((tmp / ("s" + std::to_string(i) + ".json")).string()) + " 2>" +
              shell_quote((tmp / ("err" + std::to_string(i))).string()) + "; echo $? > " +
              shell_quote((tmp / ("rc" + std::to_string(i))).string()) + " ) & ";
  }
  script += "wait";
  const CommandResult r = run_command({"sh", "-c", script}, tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  std::vector<Summary> out;
  for (int i = 1; i <= processes; ++i) {
    const std::string n = std::to_string(i);
    EXPECT_EQ(read_all(tmp / ("rc" + n)), "0\n")
        << "process " << n << ": " << read_all(tmp / ("err" + n));
    out.push_back(read_summary(tmp / ("s" + n + ".json")));
  }
  // No temporary file left behind.
  for (const auto& [path, bytes] : snapshot(cache))
    EXPECT_EQ(path.find(".tmp"), std::string::npos) << path;
  return out;
}

// Node `id` of a graph on a cache reads back as the in-memory graph computes
// it, with nothing damaged and nothing computed.
void expect_reads_as_computed(const Graph& cached, const Graph& memory, const std::string& id) {
  EXPECT_TRUE(same_bytes(read_whole(cached, id), read_whole(memory, id)));
  EXPECT_EQ(cached.image(id)->stats().corrupt, 0);
  EXPECT_EQ(cached.image(id)->stats().computed, 0);
}

TEST(CliConcurrency, TwoProcessesOnOneCache) {
  TempDir tmp;
  const std::string json = example_graph_json(0.5, 14);
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const std::vector<Summary> s = run_concurrently(tmp, graph, cache, 2, "");
  ASSERT_EQ(s.size(), 2U);
  // Every node complete, every cell intact.
  const Graph memory = build_graph(json, std::nullopt);
  const Graph cached = build_graph(json, cache);
  for (const auto& id : kIds) {
    SCOPED_TRACE(id);
    EXPECT_TRUE(fs::exists(cache / memory.node(id).hash / ".cellflow-complete"));
    EXPECT_GE(s[0].get(id, "cells_computed") + s[1].get(id, "cells_computed"),
              s[0].get(id, "cells_total"));
    expect_reads_as_computed(cached, memory, id);
  }
}

// Four processes on one sharded cache (8 cells per shard): each cell is
// computed once in total, every image node ends packed (zarr.json, shards,
// no single cell file) and reads back bit-identical to a clean run's.
TEST(CliConcurrency, FourProcessesOnOneShardedCache) {
  TempDir tmp;
  const std::string json = example_graph_json(0.5, 15);
  const fs::path graph = write_graph(tmp, "graph.json", json);
  const fs::path cache = tmp / "cache";
  const std::vector<Summary> s = run_concurrently(tmp, graph, cache, 4, "CELLFLOW_SHARD_CELLS=8 ");
  ASSERT_EQ(s.size(), 4U);
  EXPECT_NE(read_all(cache / "cellflow-cache.json").find("\"format\": 3"), std::string::npos);
  const Graph memory = build_graph(json, std::nullopt);
  const Graph cached = build_graph(json, cache);
  for (const auto& id : kIds) {
    SCOPED_TRACE(id);
    const fs::path node = cache / memory.node(id).hash;
    EXPECT_TRUE(fs::exists(node / ".cellflow-complete"));
    int64_t computed = 0;
    for (const Summary& one : s) computed += one.get(id, "cells_computed");
    EXPECT_EQ(computed, s[0].get(id, "cells_total")) << "each cell computed once in total";
    if (fs::exists(node / "0")) {
      EXPECT_TRUE(fs::exists(node / "0" / "zarr.json"));
      EXPECT_FALSE(fs::exists(node / "0" / ".zarray"));
      EXPECT_FALSE(fs::exists(node / "0" / "0")) << "single cell files left";
    }
    expect_reads_as_computed(cached, memory, id);
  }
  const CommandResult v = run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

TEST(CliCorruption, TruncatedAndDeletedCellsAreRecomputedWhenRead) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 10));
  const fs::path cache = tmp / "cache";
  run_ok({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp);
  const Graph memory = build_graph(example_graph_json(0.5, 10), std::nullopt);
  const fs::path truncated = cell_file(cache, memory.node("smooth").hash, {1, 1, 2});
  const fs::path deleted = cell_file(cache, memory.node("mask").hash, {0, 2, 3});
  const std::string bytes = read_all(truncated);
  write_all(truncated, bytes.substr(0, bytes.size() - 7));
  fs::remove(deleted);

  // `export` reads the whole node: the damage is found, recomputed, never returned.
  const CommandResult r = run_cli({"export", graph.string(), "smooth", "--to",
                                   (tmp / "smooth.mha").string(), "--cache", cache.string()},
                                  tmp.path());
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("1/1/2"), std::string::npos)
      << "the damaged cell is reported: " << describe(r);
  EXPECT_NO_THROW(
      ZarrArray::open(truncated.parent_path().parent_path().parent_path())->read({1, 1, 2}));
  // The exported data equal the original (MetaImage keeps f32 as it is, x fastest = C order).
  const std::string mha = read_all(tmp / "smooth.mha");
  const std::string marker = "ElementDataFile = LOCAL\n";
  const auto at = mha.find(marker);
  ASSERT_NE(at, std::string::npos) << mha.substr(0, 400);
  EXPECT_NE(mha.find("DimSize = 56 48 40"), std::string::npos) << mha.substr(0, at);
  EXPECT_NE(mha.find("MET_FLOAT"), std::string::npos) << mha.substr(0, at);
  const CellBuffer expected = read_whole(memory, "smooth");
  const std::string payload = mha.substr(at + marker.size());
  ASSERT_EQ(payload.size(), expected.num_bytes());
  EXPECT_EQ(std::memcmp(payload.data(), expected.data(), payload.size()), 0);

  // In this process: the deleted mask cell is recomputed on read.
  const Graph cached = build_graph(example_graph_json(0.5, 10), cache);
  EXPECT_TRUE(same_bytes(read_whole(cached, "mask"), read_whole(memory, "mask")));
  EXPECT_EQ(cached.image("mask")->stats().computed, 1);
  EXPECT_TRUE(fs::exists(deleted));
}

TEST(CliCorruption, NextRunRestoresADeletedCell) {
  // A run must leave every output cell committed, even when a file of a node
  // marked complete was deleted since.
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 11));
  const fs::path cache = tmp / "cache";
  run_ok({"run", graph.string(), "--cache", cache.string(), "--quiet"}, tmp);
  const Graph memory = build_graph(example_graph_json(0.5, 11), std::nullopt);
  const fs::path deleted = cell_file(cache, memory.node("density").hash, {1, 1, 1});
  ASSERT_TRUE(fs::exists(deleted));
  fs::remove(deleted);
  run_ok({"run", graph.string(), "--cache", cache.string(), "--summary-json",
          (tmp / "s.json").string(), "--quiet"},
         tmp);
  EXPECT_TRUE(fs::exists(deleted))
      << "the run claimed success but left a cell of its output missing";
  EXPECT_EQ(read_summary(tmp / "s.json").get("density", "cells_computed"), 1);
}

TEST(CliGraph, HashesAndDot) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const CommandResult h = run_ok({"graph", graph.string(), "--hashes"}, tmp);
  const Graph g = build_graph(example_graph_json(), std::nullopt);
  std::string expected;
  for (const auto& n : g.nodes()) expected += n.def.id + " " + n.hash + "\n";
  EXPECT_EQ(h.out, expected) << "hashes are stable across processes";
  const CommandResult d = run_ok({"graph", graph.string(), "--dot"}, tmp);
  EXPECT_NE(d.out.find("digraph"), std::string::npos) << d.out;
  for (const auto& id : kIds) EXPECT_NE(d.out.find(id), std::string::npos) << d.out;
  // Exactly one of --dot / --hashes.
  EXPECT_EQ(run_cli({"graph", graph.string()}, tmp.path()).exit_code, 2);
  EXPECT_EQ(run_cli({"graph", graph.string(), "--dot", "--hashes"}, tmp.path()).exit_code, 2);
  EXPECT_FALSE(fs::exists(tmp / "cellflow-cache"));
}

TEST(CliOps, ListsEveryOpWithParams) {
  TempDir tmp;
  const CommandResult j = run_ok({"ops", "--json"}, tmp);
  const Value v = parse_json(j.out, "ops --json");
  const Value* ops = v.find("ops");
  ASSERT_NE(ops, nullptr) << j.out;
  std::map<std::string, Value> by_name;
  for (const auto& op : ops->as_array()) by_name[op.find("name")->as_string()] = op;
  for (const char* name :
       {"synthetic.blobs", "gaussian", "threshold", "region.density", "cast", "rescale"}) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_GE(by_name[name].find("version")->as_int(), 1);
    EXPECT_FALSE(by_name[name].find("doc")->as_string().empty());
  }
  bool has_sigma = false;
  for (const auto& p : by_name["gaussian"].find("params")->as_array()) {
    if (p.find("name")->as_string() == "sigma") {
      has_sigma = true;
      EXPECT_FALSE(p.find("type")->as_string().empty());
      EXPECT_FALSE(p.find("doc")->as_string().empty());
    }
  }
  EXPECT_TRUE(has_sigma);
  const CommandResult t = run_ok({"ops"}, tmp);
  for (const char* name :
       {"synthetic.blobs", "gaussian", "threshold", "region.density", "cast", "rescale"})
    EXPECT_NE(t.out.find(name), std::string::npos) << name;
}

TEST(CliHelp, HelpEverywhereAndUsageErrors) {
  TempDir tmp;
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"run", "--help"},
                                             {"ops", "--help"},
                                             {"graph", "--help"},
                                             {"export", "--help"}}) {
    const CommandResult r = run_cli(args, tmp.path());
    EXPECT_EQ(r.exit_code, 0) << args[0] << describe(r);
    EXPECT_FALSE(r.out.empty());
  }
  EXPECT_EQ(run_cli({}, tmp.path()).exit_code, 2);
  EXPECT_EQ(run_cli({"frobnicate"}, tmp.path()).exit_code, 2);
  EXPECT_EQ(run_cli({"run"}, tmp.path()).exit_code, 2);
  EXPECT_EQ(run_cli({"run", "x.json", "--threads", "-3"}, tmp.path()).exit_code, 2);
  EXPECT_EQ(run_cli({"run", "x.json", "--no-such-flag"}, tmp.path()).exit_code, 2);
}

TEST(CliExport, WritesEveryFormat) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 12));
  const fs::path cache = tmp / "cache";
  for (const char* file : {"d.png", "d.tif", "d.nrrd", "d.mha", "m.png"}) {
    const std::string node = file[0] == 'd' ? "density" : "mask";
    const CommandResult r = run_cli(
        {"export", graph.string(), node, "--to", (tmp / file).string(), "--cache", cache.string()},
        tmp.path());
    EXPECT_EQ(r.exit_code, 0) << file << describe(r);
    ASSERT_TRUE(fs::exists(tmp / file)) << file;
    EXPECT_GT(fs::file_size(tmp / file), 20u) << file;
  }
  const std::string png = read_all(tmp / "d.png");
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_EQ(run_cli({"export", graph.string(), "density", "--to", (tmp / "d.xyz").string(),
                     "--cache", cache.string()},
                    tmp.path())
                .exit_code,
            2);
  EXPECT_EQ(run_cli({"export", graph.string(), "nope", "--to", (tmp / "n.png").string(), "--cache",
                     cache.string()},
                    tmp.path())
                .exit_code,
            2);
}

// ITK and MPI are loaded when a run needs them, not by every process (they
// cost it ~10 ms of loading): a graph of gaussians, thresholds and reductions
// maps neither; exporting to an image file loads cellflow's ITK library, and
// the exported file is right. The dynamic loader's own log (LD_DEBUG=files)
// says what was loaded.
TEST(CliRun, ItkAndMpiLoadOnlyWhenARunUsesThem) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json(0.5, 12));
  const auto loaded = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"env", "LD_DEBUG=files", CELLFLOW_CLI});
    const CommandResult r = run_command(args, tmp.path());
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    return r.err;
  };
  const std::string run =
      loaded({"run", graph.string(), "--cache", (tmp / "cache").string(), "--quiet"});
  EXPECT_NE(run.find("libcellflow_nodes.so"), std::string::npos) << "LD_DEBUG logged nothing";
  EXPECT_EQ(run.find("libITKCommon"), std::string::npos) << "a run without ITK ops loaded ITK";
  EXPECT_EQ(run.find("libcellflow_itk.so"), std::string::npos);
  EXPECT_EQ(run.find("libmpi"), std::string::npos) << "a run outside MPI loaded MPI";
  const std::string exported =
      loaded({"export", graph.string(), "smooth", "--to", (tmp / "smooth.nrrd").string(), "--cache",
              (tmp / "cache").string()});
  EXPECT_NE(exported.find("libcellflow_itk.so"), std::string::npos);
  EXPECT_NE(exported.find("libITKCommon"), std::string::npos);
  const Graph g = build_graph(example_graph_json(0.5, 12), tmp / "cache");
  const Graph back = build_graph(R"({"cellflow": 1, "nodes": [{"id": "f", "op": "read.image",
      "params": {"path": ")" + (tmp / "smooth.nrrd").string() +
                                     R"("}}]})",
                                 std::nullopt);
  EXPECT_TRUE(same_bytes(read_whole(back, "f"), read_whole(g, "smooth")));
}

}  // namespace
}  // namespace cellflow::test
