// The crash loop: `cellflow run` of the example workflow (cell_density at
// 128^3 in 32^3 cells: blobs, gaussian, otsu, label, region.count,
// region.density, label.stats) is killed with SIGKILL at random moments
// across its whole length, again and again, then left to finish. Every node's
// committed files must equal an uninterrupted run's byte for byte, `cellflow
// cache verify` must call the cache clean, and no cell that a run committed
// may be computed again by a later run (each cell's "computed" event appears
// at most once across all the runs of a round, so the last run computes less
// than the whole job). The seed is printed; CELLFLOW_CRASH_SEED replays it,
// CELLFLOW_CRASH_KILLS sets the number of kills (default 20).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>

#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

std::string workflow_json() {
  return R"({
  "cellflow": 1,
  "name": "cell_density_crash",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [128, 128, 128], "cell_shape": [32, 32, 32], "dtype": "f32", "seed": 1}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 2.0}},
    {"id": "mask", "op": "otsu", "inputs": ["smooth"]},
    {"id": "labels", "op": "label", "inputs": ["mask"]},
    {"id": "counts", "op": "region.count", "inputs": ["labels"], "params": {"region": [32, 32, 32]}},
    {"id": "density", "op": "region.density", "inputs": ["mask"], "params": {"region": [32, 32, 32]}},
    {"id": "objects", "op": "label.stats", "inputs": ["labels", "smooth"]}
  ],
  "outputs": ["counts", "density", "objects"]
}
)";
}

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(CrashLoop, KilledRunsResumeToTheBytesOfAnUninterruptedRun) {
  TempDir tmp;
  const std::string json = workflow_json();
  const fs::path graph = write_graph(tmp, "workflow.json", json);
  const Graph memory = build_graph(json, std::nullopt);
  const uint64_t seed = env_or("CELLFLOW_CRASH_SEED", std::random_device{}());
  const int want_kills = static_cast<int>(env_or("CELLFLOW_CRASH_KILLS", 20));
  std::printf("crash loop seed: %llu (CELLFLOW_CRASH_SEED=%llu replays it)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);

  // The reference: one uninterrupted run, and how long it takes.
  const fs::path clean = tmp / "clean";
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult ref =
      run_cli({"run", graph.string(), "--cache", clean.string(), "--quiet"}, tmp.path());
  const double run_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(ref.exit_code, 0) << describe(ref);
  std::printf("uninterrupted run: %.2f s\n", run_seconds);
  std::map<std::string, std::map<std::string, std::string>> reference;
  int64_t total_cells = 0;
  for (const GraphNode& n : memory.nodes()) {
    reference[n.def.id] = node_files(clean / n.hash);
    total_cells += CellGrid(n.info.shape, n.info.cell_shape).num_cells();
  }

  // Rounds: each starts from an empty cache and kills its runs at random
  // moments until one finishes by itself; rounds continue until enough kills.
  std::uniform_real_distribution<double> delay(0.0, run_seconds);
  int kills = 0;
  int rounds = 0;
  int64_t final_computed_min = total_cells;
  std::vector<double> delays;
  while (kills < want_kills) {
    ASSERT_LT(rounds, 4 * want_kills) << "runs keep finishing before they are killed";
    const fs::path cache = tmp / ("crash-" + std::to_string(rounds));
    std::map<std::string, int> computed_events;  // "node cell" -> computed done events
    int round_kills = 0;
    int64_t final_computed = -1;
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, 200) << "the job does not finish";
      const fs::path events = tmp / fmt::format("events-{}-{}.jsonl", rounds, attempt);
      const fs::path summary = tmp / fmt::format("summary-{}-{}.json", rounds, attempt);
      Child run({CELLFLOW_CLI, "run", graph.string(), "--cache", cache.string(), "--quiet",
                 "--progress-json", events.string(), "--summary-json", summary.string()},
                tmp / "run.out", tmp / "run.err");
      ASSERT_TRUE(run.started());
      const double d = delay(rng);
      bool finished = run.wait_for(d);
      if (!finished) {
        run.kill9();
        // It may have finished just before the signal.
        finished = run.wait() == 0;
        if (!finished) {
          EXPECT_EQ(run.code(), 128 + SIGKILL) << read_all(tmp / "run.err");
          ++kills;
          ++round_kills;
          delays.push_back(d);
        }
      }
      if (finished) {
        ASSERT_EQ(run.code(), 0) << read_all(tmp / "run.err");
      }
      // Whatever the run logged before it died: whole lines, one per event.
      if (!fs::exists(events)) continue;  // killed before it logged anything
      for (const Value& e : read_events(events)) {
        if (str_field(e, "event") != "cell" || str_field(e, "status") != "done") continue;
        if (!e.find("computed")->as_bool()) continue;
        const std::string key = str_field(e, "node") + " " + to_json_compact(*e.find("cell"));
        EXPECT_EQ(++computed_events[key], 1)
            << "round " << rounds << ", run " << attempt << ": " << key
            << " was committed by an earlier run and computed again";
      }
      if (finished) {
        const Summary s = read_summary(summary);
        final_computed = 0;
        for (const GraphNode& n : memory.nodes())
          final_computed += s.get(n.def.id, "cells_computed");
        break;
      }
    }
    ++rounds;

    // Bit-identical to the uninterrupted run, node by node.
    for (const GraphNode& n : memory.nodes()) {
      EXPECT_EQ(node_files(cache / n.hash), reference[n.def.id])
          << "round " << rounds << ": node " << n.def.id << " differs from the uninterrupted run";
    }
    const CommandResult v = run_cli({"cache", "verify", "--cache", cache.string()}, tmp.path());
    EXPECT_EQ(v.exit_code, 0) << describe(v);
    EXPECT_NE(v.out.find(": clean"), std::string::npos) << v.out;
    int64_t computed_before_last = 0;
    for (const auto& [key, count] : computed_events) computed_before_last += count;
    computed_before_last -= final_computed;
    EXPECT_LE(computed_before_last + final_computed, total_cells) << "no cell computed twice";
    if (round_kills > 0 && computed_before_last > 0) {
      EXPECT_LT(final_computed, total_cells) << "the last run redid committed work";
    }
    final_computed_min = std::min(final_computed_min, final_computed);
    std::printf(
        "round %d: %d kills, cells computed by killed runs %lld, by the last run %lld (of %lld)\n",
        rounds, round_kills, static_cast<long long>(computed_before_last),
        static_cast<long long>(final_computed), static_cast<long long>(total_cells));
    std::error_code ec;
    fs::remove_all(cache, ec);
  }
  std::sort(delays.begin(), delays.end());
  std::printf("%d kills in %d rounds; kill delays from %.3f s to %.3f s (run length %.2f s)\n",
              kills, rounds, delays.front(), delays.back(), run_seconds);
  EXPECT_GE(kills, want_kills);
  EXPECT_LT(final_computed_min, total_cells)
      << "in no round did the last run find committed work to reuse";
}

}  // namespace
}  // namespace cellflow::test
