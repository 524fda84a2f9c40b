// `cellflow run` when cells fail: --max-retries, --timeout (cooperative
// in-process; a killed worker with --isolate), --isolate surviving crashing
// and hung ops, the --progress-json event log and the terminal display. The
// misbehaving op comes from the fault plugin (tests/tools/fault_plugin.cpp).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "cli_common.hpp"
#include "fault_common.hpp"
#include "test_util.hpp"

namespace cellflow::test {
namespace {

struct FaultRun {
  TempDir tmp;
  fs::path cache = tmp / "cache";
  fs::path state = tmp / "state";
  fs::path events = tmp / "events.jsonl";
  fs::path graph;
  std::string raw_hash;
  std::string boom_hash;

  explicit FaultRun(const std::string& params_with_state) {
    fs::create_directories(state);
    std::string params = params_with_state;
    const std::string tag = "STATE";
    if (auto p = params.find(tag); p != std::string::npos)
      params.replace(p, tag.size(), state.string());
    graph = write_graph(tmp, "faults.json", fault_graph_json(params));
    const CommandResult h = run_cli(
        {"graph", graph.string(), "--hashes", "--plugin", CELLFLOW_FAULT_PLUGIN}, tmp.path());
    EXPECT_EQ(h.exit_code, 0) << describe(h);
    std::istringstream in(h.out);
    std::string id, hash;
    while (in >> id >> hash) (id == "raw" ? raw_hash : boom_hash) = hash;
  }

  CommandResult run(std::vector<std::string> extra) {
    std::vector<std::string> args{"run",
                                  graph.string(),
                                  "--cache",
                                  cache.string(),
                                  "--plugin",
                                  CELLFLOW_FAULT_PLUGIN,
                                  "--progress-json",
                                  events.string(),
                                  "--summary-json",
                                  (tmp / "summary.json").string(),
                                  "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args, tmp.path());
  }

  /// Attempts the op made on cell "i_j_k".
  int64_t attempts(const std::string& cell) const {
    const fs::path f = state / cell;
    return fs::exists(f) ? static_cast<int64_t>(fs::file_size(f)) : 0;
  }

  /// boom holds exactly raw's cells (it copies them), all 8 of them.
  void expect_boom_is_raw() const {
    EXPECT_EQ(node_files(cache / boom_hash / "0").size(), 9u) << "8 cells and .zarray";
    EXPECT_TRUE(same_cells(cache / boom_hash / "0", cache / raw_hash / "0"));
  }
};

TEST(CliRetries, AFailingCellIsRetriedAndTheRunSucceeds) {
  FaultRun f(R"({"mode": "throw", "times": 2, "cell": [1, 0, 0], "state_dir": "STATE"})");
  const CommandResult r = f.run({"--max-retries", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(f.attempts("1_0_0"), 3);
  // Each failed attempt was announced on stderr.
  EXPECT_NE(r.err.find("attempt 1 of 3 failed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("attempt 2 of 3 failed"), std::string::npos) << r.err;
  const auto events = read_events(f.events);
  const auto retries = cell_events(events, "boom", "retry");
  ASSERT_EQ(retries.size(), 2u);
  for (const Value& e : retries) {
    EXPECT_EQ(*e.find("cell"), ints({1, 0, 0}));
    EXPECT_NE(str_field(e, "error").find("injected failure"), std::string::npos);
  }
  EXPECT_EQ(cell_events(events, "boom", "done").size(), 8u);
  EXPECT_TRUE(cell_events(events, "boom", "failed").empty());
  f.expect_boom_is_raw();
}

TEST(CliRetries, ExhaustedRetriesFailTheRunNamingNodeCellAndCause) {
  FaultRun f(R"({"mode": "throw", "times": 10, "cell": [1, 0, 0], "state_dir": "STATE"})");
  const CommandResult r = f.run({"--max-retries", "1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("cellflow: error: node \"boom\": cell (1,0,0): injected failure"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(f.attempts("1_0_0"), 2);
  const auto events = read_events(f.events);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(str_field(events.front(), "event"), "run_start");
  EXPECT_EQ(str_field(events.back(), "event"), "run_end");
  EXPECT_FALSE(events.back().find("ok")->as_bool());
  EXPECT_NE(str_field(events.back(), "error").find("injected failure"), std::string::npos);
  const auto failed = cell_events(events, "boom", "failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].find("attempt")->as_int(), 2);
  EXPECT_FALSE(fs::exists(f.cache / f.boom_hash / "0" / "1" / "0" / "0"));
}

// Under ASan the injected segfault must kill the worker by its signal, as in a
// normal build, not be caught by ASan's handler and turned into exit code 1.
void let_segfaults_kill_workers() {
#if defined(__SANITIZE_ADDRESS__)
  ::setenv("ASAN_OPTIONS", "handle_segv=0:detect_leaks=0", 1);
#endif
}

TEST(CliIsolate, ACrashingOpCostsOnlyItsWorkerAndTheCellIsRetried) {
  let_segfaults_kill_workers();
  FaultRun f(R"({"mode": "segfault", "times": 1, "cell": [0, 1, 1], "state_dir": "STATE"})");
  const CommandResult r = f.run({"--isolate", "--max-retries", "1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(f.attempts("0_1_1"), 2);
  const auto events = read_events(f.events);
  const auto retries = cell_events(events, "boom", "retry");
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_NE(str_field(retries[0], "error").find("worker killed by signal 11"), std::string::npos)
      << str_field(retries[0], "error");
  // Workers report whether they computed: every cell of both nodes was.
  const Summary s = read_summary(f.tmp / "summary.json");
  EXPECT_EQ(s.get("raw", "cells_computed"), 8);
  EXPECT_EQ(s.get("boom", "cells_computed"), 8);
  for (const Value& e : cell_events(events, "boom", "done"))
    EXPECT_TRUE(e.find("computed")->as_bool());
  f.expect_boom_is_raw();
  EXPECT_EQ(run_cli({"cache", "verify", "--cache", f.cache.string()}, f.tmp.path()).exit_code, 0);
}

TEST(CliIsolate, APersistentCrashIsReportedWithNodeCellAndSignal) {
  let_segfaults_kill_workers();
  FaultRun f(R"({"mode": "segfault", "times": 100, "cell": [0, 1, 1], "state_dir": "STATE"})");
  const CommandResult r = f.run({"--isolate", "--max-retries", "2"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("cellflow: error: node \"boom\": cell (0,1,1): worker killed by signal 11 "
                       "(Segmentation fault)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(f.attempts("0_1_1"), 3);
  EXPECT_FALSE(fs::exists(f.cache / f.boom_hash / "0" / "0" / "1" / "1"));
  // What was committed is sound, and a later run without the fault can use it.
  const CommandResult v = run_cli({"cache", "verify", "--cache", f.cache.string()}, f.tmp.path());
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

TEST(CliIsolate, AFailingWorkerPassesItsErrorOn) {
  FaultRun f(R"({"mode": "throw", "times": 100, "cell": [0, 0, 1], "state_dir": "STATE"})");
  const CommandResult r = f.run({"--isolate"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("cellflow: error: node \"boom\": cell (0,0,1): worker failed (exit code 1): "
                       "injected failure"),
            std::string::npos)
      << r.err;
}

TEST(CliIsolate, AHungWorkerIsKilledAtTheTimeoutAndTheCellRetried) {
  FaultRun f(
      R"({"mode": "hang", "times": 1, "cell": [1, 1, 0], "state_dir": "STATE", "seconds": 3600})");
  const auto t0 = std::chrono::steady_clock::now();
  // The limit applies to every cell; 5 s leaves room for slow worker starts
  // on a loaded machine (a second retry absorbs one more).
  const CommandResult r = f.run({"--isolate", "--timeout", "5", "--max-retries", "2"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_LT(seconds, 120);
  EXPECT_GE(f.attempts("1_1_0"), 2);
  std::vector<Value> hung;
  for (const Value& e : cell_events(read_events(f.events), "boom", "retry"))
    if (*e.find("cell") == ints({1, 1, 0})) hung.push_back(e);
  ASSERT_GE(hung.size(), 1u);
  EXPECT_NE(str_field(hung[0], "error").find("timed out after 5 s"), std::string::npos)
      << str_field(hung[0], "error");
  EXPECT_GE(hung[0].find("seconds")->as_double(), 4.9);
  f.expect_boom_is_raw();
}

TEST(CliTimeout, InProcessTimeoutsAreCooperative) {
  // An op that checks for cancellation stops at the deadline; without
  // retries the run fails naming the cell.
  FaultRun f(R"({"mode": "slow", "times": -1, "cell": [0, 0, 0], "seconds": 60})");
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult r = f.run({"--timeout", "0.5"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_LT(seconds, 30);
  EXPECT_NE(r.err.find("node \"boom\": cell (0,0,0)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

TEST(CliTimeout, BadValuesAreUsageErrors) {
  FaultRun f(R"({"mode": "throw", "times": -1, "cell": [0, 0, 0]})");
  EXPECT_EQ(f.run({"--timeout", "-1"}).exit_code, 2);
  EXPECT_EQ(f.run({"--max-retries", "-2"}).exit_code, 2);
  EXPECT_EQ(f.run({"--max-retries", "many"}).exit_code, 2);
}

TEST(CliProgressJson, EventsDescribeTheRun) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  const fs::path log1 = tmp / "run1.jsonl";
  const CommandResult r1 = run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet",
                                    "--progress-json", log1.string()},
                                   tmp.path());
  ASSERT_EQ(r1.exit_code, 0) << describe(r1);
  const auto events = read_events(log1);
  ASSERT_GE(events.size(), 3u);
  const Value& start = events.front();
  EXPECT_EQ(str_field(start, "event"), "run_start");
  EXPECT_EQ(start.find("cache")->as_string(), cache.string());
  EXPECT_EQ(*start.find("targets"), Value(Value::Array{Value("density")}));
  ASSERT_EQ(start.find("nodes")->as_array().size(), 4u);
  const Graph memory = build_graph(example_graph_json(), std::nullopt);
  int64_t total = 0;
  for (const Value& n : start.find("nodes")->as_array()) {
    const GraphNode& g = memory.node(n.find("id")->as_string());
    EXPECT_EQ(n.find("hash")->as_string(), g.hash);
    EXPECT_EQ(n.find("op")->as_string(), g.def.op);
    total += n.find("cells_total")->as_int();
  }
  // One done event per cell, each computed, each with its time.
  int64_t done = 0;
  double last_time = 0;
  for (const Value& e : events) {
    EXPECT_GE(e.find("time")->as_double(), last_time) << "events are in time order";
    last_time = e.find("time")->as_double();
    if (str_field(e, "event") != "cell") continue;
    EXPECT_EQ(str_field(e, "status"), "done");
    EXPECT_TRUE(e.find("computed")->as_bool());
    EXPECT_EQ(e.find("attempt")->as_int(), 1);
    EXPECT_EQ(e.find("cell")->as_array().size(), 3u);
    ++done;
  }
  EXPECT_EQ(done, total);
  // The last progress snapshot says everything is done.
  const Value* last_progress = nullptr;
  for (const Value& e : events)
    if (str_field(e, "event") == "progress") last_progress = &e;
  ASSERT_NE(last_progress, nullptr);
  for (const Value& n : last_progress->find("nodes")->as_array()) {
    EXPECT_EQ(n.find("done")->as_int(), n.find("scheduled")->as_int()) << to_json_compact(n);
    EXPECT_EQ(n.find("computed")->as_int(), n.find("total")->as_int()) << to_json_compact(n);
    EXPECT_EQ(n.find("hits")->as_int(), 0);
    EXPECT_TRUE(n.find("rate")->is_number());
  }
  const Value& end = events.back();
  EXPECT_EQ(str_field(end, "event"), "run_end");
  EXPECT_TRUE(end.find("ok")->as_bool());
  EXPECT_EQ(end.find("cells_computed")->as_int(), total);

  // A second run computes nothing: no cell events, every cell a hit.
  const fs::path log2 = tmp / "run2.jsonl";
  ASSERT_EQ(run_cli({"run", graph.string(), "--cache", cache.string(), "--quiet", "--progress-json",
                     log2.string()},
                    tmp.path())
                .exit_code,
            0);
  const auto again = read_events(log2);
  int64_t hits = 0;
  for (const Value& e : again) {
    EXPECT_NE(str_field(e, "event"), "cell");
    if (str_field(e, "event") == "progress") {
      hits = 0;
      for (const Value& n : e.find("nodes")->as_array()) hits += n.find("hits")->as_int();
    }
  }
  EXPECT_EQ(hits, total) << "every cell of every node was found committed";
  EXPECT_EQ(again.back().find("cells_computed")->as_int(), 0);
}

TEST(CliProgressJson, AnUnwritableLogIsAUsageError) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const CommandResult r =
      run_cli({"run", graph.string(), "--cache", (tmp / "cache").string(), "--progress-json",
               (tmp / "no" / "such" / "dir" / "x.jsonl").string()},
              tmp.path());
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--progress-json"), std::string::npos) << r.err;
}

TEST(CliProgress, TheTerminalDisplayShowsRateEtaAndHits) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "skipped: util-linux 'script' (to give the CLI a terminal) is not installed";
  }
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "graph.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  const std::string cli = std::string(CELLFLOW_CLI) + " run " + shell_quote(graph.string()) +
                          " --cache " + shell_quote(cache.string());
  const CommandResult r =
      run_command({"script", "-qec", cli, (tmp / "typescript").string()}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string screen = r.out + r.err;
  EXPECT_NE(screen.find("cells/s"), std::string::npos) << screen;
  EXPECT_NE(screen.find("hits 0"), std::string::npos) << screen;
  EXPECT_NE(screen.find("/"), std::string::npos) << screen;
  // Everything cached: the second display counts every cell as a hit.
  const CommandResult again =
      run_command({"script", "-qec", cli, (tmp / "typescript2").string()}, tmp.path());
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  const Graph memory = build_graph(example_graph_json(), std::nullopt);
  const int64_t target_cells = memory.image("density")->grid().num_cells();
  EXPECT_NE((again.out + again.err).find("hits " + std::to_string(target_cells)), std::string::npos)
      << again.out + again.err;
}

}  // namespace
}  // namespace cellflow::test
