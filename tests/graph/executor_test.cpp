// materialize(): push evaluation with a cache directory. Reports, persistence
// across graph objects, targets, param changes, failures, memory budget,
// thread counts, damaged cells.
#include "cellflow/graph/executor.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

GraphDef pipeline(double above = 0.5, int seed = 11) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({40, 48, 56})},
                              {"cell_shape", test::ints({16, 16, 16})},
                              {"seed", seed},
                              {"count", 25}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.5}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", above}}));
  def.add("density", "region.density", {"mask"},
          Value(Value::Object{{"region", test::ints({8, 8, 8})}}));
  def.outputs = {"density"};
  return def;
}

Graph build(GraphDef def, const fs::path& cache) {
  GraphOptions o;
  o.cache_root = cache;
  return Graph::build(std::move(def), nodes::builtin_registry(), o);
}

std::map<std::string, CellBuffer> read_all_nodes(const Graph& g) {
  std::map<std::string, CellBuffer> out;
  for (size_t i = 0; i < g.nodes().size(); ++i)
    out[g.nodes()[i].def.id] = g.image(i)->read(g.image(i)->grid().bounds());
  return out;
}

TEST(Executor, FirstRunComputesAllSecondRunNothing) {
  test::TempDir tmp;
  std::map<std::string, CellBuffer> first_data;
  {
    const Graph g = build(pipeline(), tmp / "cache");
    const RunReport r = materialize(g);
    ASSERT_EQ(r.nodes.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      SCOPED_TRACE(g.nodes()[i].def.id);
      EXPECT_EQ(r.nodes[i].node, i);
      EXPECT_EQ(r.nodes[i].cells_total, g.image(i)->grid().num_cells());
      EXPECT_EQ(r.nodes[i].cells_computed, r.nodes[i].cells_total);
      EXPECT_EQ(r.nodes[i].cells_loaded, 0);
      EXPECT_TRUE(r.nodes[i].complete);
      EXPECT_TRUE(fs::exists(tmp / "cache" / g.nodes()[i].hash / ".cellflow-complete"));
      // Every cell is committed, even all-zero ones.
      const CellGrid& grid = g.image(i)->grid();
      for (int64_t c = 0; c < grid.num_cells(); ++c) {
        fs::path f = tmp / "cache" / g.nodes()[i].hash / "0";
        for (int64_t x : grid.cell_at(c)) f /= std::to_string(x);
        EXPECT_TRUE(fs::exists(f)) << f;
      }
    }
    EXPECT_EQ(r.nodes[0].cells_total, 3 * 3 * 4);
    EXPECT_GE(r.wall_seconds, 0.0);
    first_data = read_all_nodes(g);
  }
  const auto files = test::snapshot(tmp / "cache");
  {
    const Graph g = build(pipeline(), tmp / "cache");
    const RunReport r = materialize(g);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(r.nodes[i].cells_computed, 0) << g.nodes()[i].def.id;
      EXPECT_TRUE(r.nodes[i].complete);
    }
    const auto data = read_all_nodes(g);
    for (const auto& [id, buf] : first_data) EXPECT_TRUE(test::same_bytes(buf, data.at(id))) << id;
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(g.image(i)->stats().computed, 0);
      EXPECT_EQ(g.image(i)->stats().loaded, g.image(i)->grid().num_cells());
    }
  }
  EXPECT_EQ(test::snapshot(tmp / "cache"), files) << "a run that computes nothing writes nothing";
}

TEST(Executor, TargetsComputeOnlyTheirAncestors) {
  test::TempDir tmp;
  const Graph g = build(pipeline(0.5, 12), tmp / "cache");
  const RunReport r = materialize(g, {g.index("smooth")});
  EXPECT_EQ(r.nodes[g.index("raw")].cells_computed, 36);
  EXPECT_EQ(r.nodes[g.index("smooth")].cells_computed, 36);
  EXPECT_EQ(r.nodes[g.index("mask")].cells_computed, 0);
  EXPECT_EQ(r.nodes[g.index("density")].cells_computed, 0);
  EXPECT_TRUE(r.nodes[g.index("smooth")].complete);
  EXPECT_FALSE(r.nodes[g.index("mask")].complete);
  EXPECT_FALSE(fs::exists(tmp / "cache" / g.node("mask").hash / "0" / "0"));
  // Then the rest reuses what is there.
  const RunReport r2 = materialize(g);
  EXPECT_EQ(r2.nodes[g.index("smooth")].cells_computed, 0);
  EXPECT_EQ(r2.nodes[g.index("mask")].cells_computed, 36);
  EXPECT_TRUE(r2.nodes[g.index("density")].complete);
}

TEST(Executor, ChangingOneParamRecomputesThatNodeAndDescendantsOnly) {
  test::TempDir tmp;
  {
    const Graph g = build(pipeline(0.5, 13), tmp / "cache");
    materialize(g);
  }
  const Graph g = build(pipeline(0.6, 13), tmp / "cache");
  const RunReport r = materialize(g);
  EXPECT_EQ(r.nodes[g.index("raw")].cells_computed, 0);
  EXPECT_EQ(r.nodes[g.index("smooth")].cells_computed, 0);
  EXPECT_EQ(r.nodes[g.index("mask")].cells_computed, 36);
  EXPECT_EQ(r.nodes[g.index("density")].cells_computed, g.image("density")->grid().num_cells());
  EXPECT_EQ(r.nodes[g.index("raw")].cells_loaded, 0)
      << "raw is not needed: smooth is complete on disk";
  // mask's cells read smooth back from disk in this run, and the report says so.
  EXPECT_EQ(g.image("smooth")->stats().loaded, 36);
  EXPECT_EQ(r.nodes[g.index("smooth")].cells_loaded, 36)
      << "cells_loaded must count the cells this run read back from disk";
  // Two hash folders for mask and density now, one for raw and smooth.
  size_t folders = 0;
  for (const auto& e : fs::directory_iterator(tmp / "cache")) folders += e.is_directory() ? 1 : 0;
  EXPECT_EQ(folders, 6u);
}

TEST(Executor, FailureNamesNodeAndCell) {
  test::TempDir tmp;
  const auto reg = test::make_test_registry();
  GraphDef def;
  def.add("src", "test.const", {},
          Value(Value::Object{{"shape", test::ints({8, 8, 8})},
                              {"cell_shape", test::ints({4, 4, 4})}}));
  def.add("broken", "test.fail", {"src"}, Value(Value::Object{{"fail_at", test::ints({5, 1, 6})}}));
  GraphOptions o;
  o.cache_root = tmp / "cache";
  const Graph g = Graph::build(def, *reg, o);
  try {
    materialize(g);
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("broken"), std::string::npos) << what;
    EXPECT_NE(what.find("(1,0,1)"), std::string::npos) << what;
    EXPECT_NE(what.find("injected failure"), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(tmp / "cache" / g.node("broken").hash / ".cellflow-complete"));
  EXPECT_FALSE(fs::exists(tmp / "cache" / g.node("broken").hash / "0" / "1" / "0" / "1"));
}

TEST(Executor, SmallMemoryBudgetReloadsInsteadOfRecomputing) {
  test::TempDir tmp;
  std::map<std::string, CellBuffer> reference;
  {
    const Graph g = build(pipeline(0.5, 14), tmp / "big");
    materialize(g);
    reference = read_all_nodes(g);
  }
  MemoryCache& mem = MemoryCache::global();
  const size_t old_budget = mem.budget();
  mem.set_budget(64 * 1024);  // four f32 cells
  std::map<std::string, CellBuffer> data;
  RunReport r;
  {
    const Graph g = build(pipeline(0.5, 14), tmp / "small");
    RunOptions opts;
    opts.threads = 2;
    r = materialize(g, {}, opts);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(r.nodes[i].cells_computed, r.nodes[i].cells_total)
          << g.nodes()[i].def.id << ": no cell may be computed twice under memory pressure";
    }
    data = read_all_nodes(g);
  }
  EXPECT_GT(mem.stats().evictions, 0);
  mem.set_budget(old_budget);
  for (const auto& [id, buf] : reference) EXPECT_TRUE(test::same_bytes(buf, data.at(id))) << id;
}

// A cold run keeps in memory what it still reads, not everything it made: a
// committed cell leaves the memory cache once no task of the run reads it
// (its buffer goes back to the pool warm), and reading it later loads it
// from the store, unchanged. Cells only memory holds (not persisted) stay.
TEST(Executor, CommittedCellsLeaveMemoryOnceTheRunNoLongerReadsThem) {
  test::TempDir tmp;
  std::map<std::string, CellBuffer> in_memory_only;
  {
    GraphDef def = pipeline(0.5, 16);
    for (NodeDef& n : def.nodes) n.persist = false;
    const Graph g = build(std::move(def), tmp / "memory");
    materialize(g);
    for (size_t i = 0; i < g.nodes().size(); ++i)
      EXPECT_EQ(g.image(i)->stats().loaded, 0) << g.nodes()[i].def.id;
    in_memory_only = read_all_nodes(g);
    for (size_t i = 0; i < g.nodes().size(); ++i) {
      EXPECT_EQ(g.image(i)->stats().computed, g.image(i)->grid().num_cells())
          << g.nodes()[i].def.id << ": a cell only memory holds was dropped and recomputed";
    }
  }
  const Graph g = build(pipeline(0.5, 16), tmp / "cache");
  const RunReport r = materialize(g);
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    SCOPED_TRACE(g.nodes()[i].def.id);
    EXPECT_EQ(r.nodes[i].cells_computed, r.nodes[i].cells_total);
    EXPECT_EQ(g.image(i)->stats().loaded, 0) << "the run itself never reloads a cell";
  }
  const auto data = read_all_nodes(g);
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const std::string& id = g.nodes()[i].def.id;
    EXPECT_EQ(g.image(i)->stats().loaded, g.image(i)->grid().num_cells())
        << id << ": every cell was released after the run and read back from the store";
    EXPECT_EQ(g.image(i)->stats().computed, g.image(i)->grid().num_cells()) << id;
    EXPECT_TRUE(test::same_bytes(in_memory_only.at(id), data.at(id))) << id;
  }
}

// A caller that reads nothing after the run (the CLI) lets cells that only
// memory holds go as well once the run stops reading them, so that their
// buffers serve the cells made after them; the targets' cells stay, nothing
// is computed twice within the run, and a later read recomputes the same
// bytes.
TEST(Executor, ReleaseUnpersistedDropsMemoryOnlyIntermediatesButKeepsTargets) {
  test::TempDir tmp;
  const auto memory_only = [] {
    GraphDef def = pipeline(0.5, 18);
    for (NodeDef& n : def.nodes) n.persist = false;
    return def;
  };
  std::map<std::string, CellBuffer> reference;
  {
    const Graph g = build(memory_only(), tmp / "reference");
    materialize(g);
    reference = read_all_nodes(g);
  }
  const Graph g = build(memory_only(), tmp / "cache");
  RunOptions opts;
  opts.threads = 2;
  opts.release_unpersisted = true;
  const RunReport r = materialize(g, {}, opts);
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const std::string& id = g.nodes()[i].def.id;
    EXPECT_EQ(r.nodes[i].cells_computed, r.nodes[i].cells_total) << id;
    EXPECT_EQ(g.image(i)->stats().computed, g.image(i)->grid().num_cells())
        << id << ": a cell was dropped while the run still read it, and computed again";
    const CellGrid& grid = g.image(i)->grid();
    int64_t held = 0;
    for (int64_t c = 0; c < grid.num_cells(); ++c) held += g.image(i)->available(grid.cell_at(c));
    if (id == "density") {
      EXPECT_EQ(held, grid.num_cells()) << "a target's cells stay in memory";
    } else {
      EXPECT_EQ(held, 0) << id << ": an intermediate's cells stayed after the run";
    }
  }
  const auto data = read_all_nodes(g);
  for (const auto& [id, buf] : reference) EXPECT_TRUE(test::same_bytes(buf, data.at(id))) << id;
}

TEST(Executor, ThreadCountDoesNotChangeTheBytes) {
  test::TempDir tmp;
  for (int threads : {1, 4}) {
    const Graph g = build(pipeline(0.5, 15), tmp / ("t" + std::to_string(threads)));
    RunOptions opts;
    opts.threads = threads;
    materialize(g, {}, opts);
  }
  const auto a = test::snapshot(tmp / "t1");
  const auto b = test::snapshot(tmp / "t4");
  EXPECT_GT(a.size(), 100u);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [path, bytes] : a) {
    ASSERT_TRUE(b.count(path)) << path;
    EXPECT_TRUE(bytes == b.at(path)) << path << " differs between 1 and 4 threads";
  }
}

TEST(Executor, DamagedCellsAreDetectedAndRecomputed) {
  test::TempDir tmp;
  std::map<std::string, CellBuffer> original;
  std::string smooth_hash, mask_hash;
  {
    const Graph g = build(pipeline(0.5, 16), tmp / "cache");
    materialize(g);
    original = read_all_nodes(g);
    smooth_hash = g.node("smooth").hash;
    mask_hash = g.node("mask").hash;
  }
  const fs::path smooth_cell = tmp / "cache" / smooth_hash / "0" / "1" / "2" / "3";
  const fs::path mask_cell = tmp / "cache" / mask_hash / "0" / "2" / "0" / "1";
  const std::string bytes = test::read_all(smooth_cell);
  test::write_all(smooth_cell, bytes.substr(0, bytes.size() / 3));  // truncated
  fs::remove(mask_cell);                                            // deleted

  const Graph g = build(pipeline(0.5, 16), tmp / "cache");
  const auto data = read_all_nodes(g);
  for (const auto& [id, buf] : original) EXPECT_TRUE(test::same_bytes(buf, data.at(id))) << id;
  EXPECT_EQ(g.image("smooth")->stats().corrupt, 1);
  EXPECT_EQ(g.image("smooth")->stats().computed, 1);
  EXPECT_EQ(g.image("mask")->stats().computed, 1);
  EXPECT_EQ(g.image("raw")->stats().computed, 0) << "raw cells come from disk";
  EXPECT_EQ(g.image("density")->stats().computed, 0);
  // Both files are whole again.
  EXPECT_TRUE(fs::exists(mask_cell));
  auto arr = ZarrArray::open(tmp / "cache" / smooth_hash / "0");
  EXPECT_NO_THROW(arr->read({1, 2, 3}));
}

TEST(Executor, ProgressIsReported) {
  const Graph g = Graph::build(pipeline(0.5, 17), nodes::builtin_registry());
  std::atomic<int> calls{0};
  std::vector<NodeProgress> last;
  std::mutex mu;
  RunOptions opts;
  opts.progress_interval_ms = 10;
  opts.on_progress = [&](const std::vector<NodeProgress>& p) {
    ++calls;
    std::lock_guard lock(mu);
    last = p;
  };
  const RunReport r = materialize(g, {}, opts);
  EXPECT_GE(calls.load(), 1);
  ASSERT_EQ(last.size(), 4u);
  for (const auto& p : last) {
    EXPECT_EQ(p.cells_done, p.cells_scheduled);
    EXPECT_EQ(p.cells_scheduled, p.cells_total);
  }
  for (const auto& n : r.nodes) EXPECT_TRUE(n.complete);
}

TEST(Executor, GlobalOpSeesTheWholeInput) {
  test::TempDir tmp;
  GraphDef def = pipeline(0.5, 18);
  def.add("scaled", "rescale", {"smooth"}, Value(Value::Object{{"dtype", "u8"}}));
  def.outputs = {"scaled"};
  const Graph g = build(def, tmp / "cache");
  const RunReport r = materialize(g);
  EXPECT_EQ(r.nodes[g.index("scaled")].cells_computed, 36);
  EXPECT_EQ(r.nodes[g.index("smooth")].cells_computed, 36);
  const CellBuffer out = g.image("scaled")->read(g.image("scaled")->grid().bounds());
  uint8_t lo = 255, hi = 0;
  for (int64_t i = 0; i < out.num_elements(); ++i) {
    lo = std::min(lo, out.as<uint8_t>()[i]);
    hi = std::max(hi, out.as<uint8_t>()[i]);
  }
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 255);
}

}  // namespace
}  // namespace cellflow
