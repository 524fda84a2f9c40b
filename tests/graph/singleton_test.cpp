// Per-process singleton: graphs that share nodes (same op, params, inputs;
// any ids) share one image, so concurrent runs compute each shared cell once.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>

#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

// Ends the process with a message if the test is still running after
// `seconds`: a hang is reported as such instead of blocking the suite.
class Watchdog {
 public:
  Watchdog(int seconds, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "HANG: %s did not finish within %d s\n", what_.c_str(), seconds);
        std::fflush(stderr);
        std::_Exit(3);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

Value blobs(int seed) {
  return Value(Value::Object{{"shape", test::ints({48, 48, 64})},
                             {"cell_shape", test::ints({16, 16, 16})},
                             {"seed", seed},
                             {"count", 25}});
}

GraphDef first(int seed) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs(seed));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 2.0}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.5}}));
  def.outputs = {"mask"};
  return def;
}

GraphDef second(int seed) {
  GraphDef def;
  // Same sub-pipeline under other ids, listed in another order, params spelled differently.
  def.add("blurred", "gaussian", {"source"}, Value(Value::Object{{"sigma", 2}}));
  def.add("source", "synthetic.blobs", {}, blobs(seed));
  def.add("dim", "threshold", {"blurred"}, Value(Value::Object{{"below", 0.3}}));
  def.add("density", "region.density", {"dim"},
          Value(Value::Object{{"region", test::ints({8, 8, 8})}}));
  def.outputs = {"density"};
  return def;
}

void run_concurrently(const std::optional<std::filesystem::path>& cache_root, int seed) {
  GraphOptions opts;
  opts.cache_root = cache_root;
  const Graph g1 = Graph::build(first(seed), nodes::builtin_registry(), opts);
  const Graph g2 = Graph::build(second(seed), nodes::builtin_registry(), opts);
  ASSERT_EQ(g1.node("raw").hash, g2.node("source").hash);
  ASSERT_EQ(g1.node("smooth").hash, g2.node("blurred").hash);
  EXPECT_EQ(g1.image("raw").get(), g2.image("source").get()) << "one image per node per process";
  EXPECT_EQ(g1.image("smooth").get(), g2.image("blurred").get());

  RunReport r1, r2;
  std::exception_ptr e1, e2;
  std::thread t1([&] {
    try {
      RunOptions o;
      o.threads = 2;
      r1 = materialize(g1, {}, o);
    } catch (...) {
      e1 = std::current_exception();
    }
  });
  std::thread t2([&] {
    try {
      RunOptions o;
      o.threads = 2;
      r2 = materialize(g2, {}, o);
    } catch (...) {
      e2 = std::current_exception();
    }
  });
  t1.join();
  t2.join();
  if (e1) std::rethrow_exception(e1);
  if (e2) std::rethrow_exception(e2);

  const int64_t n = g1.image("raw")->grid().num_cells();
  EXPECT_EQ(n, 3 * 3 * 4);
  // Every shared cell computed exactly once in this process, whoever asked first.
  EXPECT_EQ(g1.image("raw")->stats().computed, n);
  EXPECT_EQ(g1.image("smooth")->stats().computed, n);
  // With a cache, a run drops the committed cells it no longer reads, so the
  // other run may load one back from the store (never compute it again);
  // without one nothing is dropped and nothing is loaded.
  if (!cache_root) EXPECT_EQ(g1.image("raw")->stats().loaded, 0);
  EXPECT_LE(g1.image("raw")->stats().loaded, n);
  EXPECT_EQ(g1.image("mask")->stats().computed, n);
  EXPECT_EQ(g2.image("dim")->stats().computed, n);
  EXPECT_EQ(g2.image("density")->stats().computed, g2.image("density")->grid().num_cells());
  EXPECT_TRUE(r1.nodes[g1.index("mask")].complete);
  EXPECT_TRUE(r2.nodes[g2.index("density")].complete);
  // Each run's count for a shared node is at most the node's cell count.
  EXPECT_LE(r1.nodes[g1.index("raw")].cells_computed, n);
  EXPECT_LE(r2.nodes[g2.index("source")].cells_computed, n);
}

TEST(Singleton, ConcurrentGraphsShareCellsInMemory) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    run_concurrently(std::nullopt, 500 + round);
  }
}

TEST(Singleton, ConcurrentGraphsShareCellsWithACache) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    test::TempDir tmp("round" + std::to_string(round));
    run_concurrently(tmp / "cache", 600 + round);
  }
}

// Threads of the user's own (not TBB's) read regions lazily, through graphs
// sharing their nodes: each cell computed once, same data for all, no hang.
void concurrent_lazy_readers(int readers, int seed) {
  std::vector<Graph> graphs;
  for (int i = 0; i < readers; ++i)
    graphs.push_back(Graph::build(first(seed), nodes::builtin_registry()));
  std::vector<std::thread> threads;
  std::vector<CellBuffer> results(static_cast<size_t>(readers));
  for (int i = 0; i < readers; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<size_t>(i)] =
          graphs[static_cast<size_t>(i)].image("mask")->read(Box({0, 0, 0}, {48, 48, 64}));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(graphs[0].image("raw")->stats().computed, 36);
  EXPECT_EQ(graphs[0].image("smooth")->stats().computed, 36);
  EXPECT_EQ(graphs[0].image("mask")->stats().computed, 36);
  for (int i = 1; i < readers; ++i)
    EXPECT_TRUE(test::same_bytes(results[0], results[static_cast<size_t>(i)]));
}

TEST(Singleton, ConcurrentLazyReadersOfOneNode) {
  const Watchdog watchdog(60, "8 threads reading one node lazily");
  concurrent_lazy_readers(8, 700);
}

TEST(Singleton, ConcurrentLazyReadersStress) {
  // Repeats the above with fresh nodes: a rare hang in single-flight loading
  // shows up here (reported by the watchdog, not as a ctest timeout).
  const Watchdog watchdog(90, "20 rounds of 8 threads reading lazily");
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    concurrent_lazy_readers(8, 800 + round);
  }
}

// The lifetime policy: a memory-only pipeline rebuilt after its graph is gone
// reuses the cells still in memory; drop_node_images() lets them go.
TEST(Singleton, AMemoryOnlyPipelineRebuiltLaterReusesItsCellsUntilDropped) {
  const int seed = 4242;
  const auto computed = [](const Graph& g) {
    int64_t n = 0;
    for (size_t i = 0; i < g.nodes().size(); ++i) n += g.image(i)->stats().computed;
    return n;
  };
  int64_t first_run = 0;
  {
    const Graph g = Graph::build(first(seed), nodes::builtin_registry());
    materialize(g);
    first_run = computed(g);
  }
  ASSERT_GT(first_run, 0);
  {
    const Graph g = Graph::build(first(seed), nodes::builtin_registry());
    const int64_t before = computed(g);  // the same images: their counters carry on
    EXPECT_EQ(before, first_run);
    materialize(g);
    EXPECT_EQ(computed(g) - before, 0) << "the images outlived their first graph, cells and all";
  }
  EXPECT_GE(drop_node_images(), 3u);
  {
    const Graph g = Graph::build(first(seed), nodes::builtin_registry());
    materialize(g);
    EXPECT_EQ(computed(g), first_run) << "dropped: computed again";
  }
}

}  // namespace
}  // namespace cellflow
