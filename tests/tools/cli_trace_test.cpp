// `cellflow run --trace FILE` (Chrome/Perfetto trace of computed, loaded,
// stored and waited-for cells) and `cellflow graph --dot --cache DIR` (nodes
// coloured by cache state).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "cli_common.hpp"

namespace cellflow::test {
namespace {

struct Trace {
  std::vector<Value> complete;                                      // the "ph": "X" events
  std::multiset<std::pair<std::string, std::string>> by_kind_node;  // (cat, node)
  std::set<std::string> cells(const std::string& cat, const std::string& node) const {
    std::set<std::string> out;
    for (const Value& e : complete) {
      if (e.find("cat")->as_string() == cat && e.find("args")->find("node")->as_string() == node)
        out.insert(e.find("args")->find("cell")->as_string());
    }
    return out;
  }
};

Trace read_trace(const fs::path& file) {
  const Value root = parse_json(read_all(file), file.string());
  Trace t;
  const Value* events = root.find("traceEvents");
  EXPECT_TRUE(events != nullptr && events->is_array());
  if (events == nullptr) return t;
  for (const Value& e : events->as_array()) {
    if (e.find("ph")->as_string() != "X") continue;
    for (const char* field : {"name", "cat", "ts", "dur", "pid", "tid", "args"})
      EXPECT_NE(e.find(field), nullptr) << field << " missing in " << to_json_compact(e);
    EXPECT_GE(e.find("dur")->as_double(), 0.0);
    EXPECT_GT(e.find("tid")->as_int(), 0);
    t.by_kind_node.emplace(e.find("cat")->as_string(), e.find("args")->find("node")->as_string());
    t.complete.push_back(e);
  }
  return t;
}

TEST(CliTrace, OneEventPerCellComputedStoredAndLoaded) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  const auto first = run_cli({"run", graph.string(), "--cache", cache.string(), "--threads", "2",
                              "-q", "--trace", (tmp / "t1.json").string()},
                             tmp.path());
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const Trace t1 = read_trace(tmp / "t1.json");
  // raw, smooth and mask have 3 x 3 x 4 = 36 cells; density (5 x 6 x 7
  // regions) has its own grid: every cell computed once, stored once, and
  // scheduled once by the executor.
  for (const char* node : {"raw", "smooth", "mask"}) {
    SCOPED_TRACE(node);
    EXPECT_EQ(t1.by_kind_node.count({"compute", node}), 36u);
    EXPECT_EQ(t1.by_kind_node.count({"store", node}), 36u);
    EXPECT_EQ(t1.by_kind_node.count({"run", node}), 36u);
    EXPECT_EQ(t1.cells("compute", node).size(), 36u);  // distinct cells
  }
  EXPECT_EQ(t1.by_kind_node.count({"load", "raw"}), 0u);
  std::set<int64_t> pids;
  for (const Value& e : t1.complete) pids.insert(e.find("pid")->as_int());
  EXPECT_EQ(pids.size(), 1u);

  // Remove two committed cells of smooth: a second run recomputes them and
  // loads the raw cells they read from the store.
  const Summary s = [&] {
    const auto r = run_cli({"run", graph.string(), "--cache", cache.string(), "-q",
                            "--summary-json", (tmp / "s.json").string()},
                           tmp.path());
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    return read_summary(tmp / "s.json");
  }();
  const std::string smooth = s.str("smooth", "hash");
  fs::remove(cell_file(cache, smooth, {0, 0, 0}));
  fs::remove(cell_file(cache, smooth, {2, 2, 3}));
  fs::remove(cache / smooth / ".cellflow-complete");
  const auto second = run_cli({"run", graph.string(), "--cache", cache.string(), "--output",
                               "smooth", "-q", "--trace", (tmp / "t2.json").string()},
                              tmp.path());
  ASSERT_EQ(second.exit_code, 0) << describe(second);
  const Trace t2 = read_trace(tmp / "t2.json");
  EXPECT_EQ(t2.cells("compute", "smooth"), (std::set<std::string>{"(0,0,0)", "(2,2,3)"}));
  EXPECT_EQ(t2.by_kind_node.count({"compute", "raw"}), 0u);
  // Cell (0,0,0) reads raw cells (0..1, 0..1, 0..1), cell (2,2,3) reads (1..2, 1..2, 2..3).
  EXPECT_EQ(t2.cells("load", "raw").size(), 16u);
}

TEST(CliTrace, UnwritableTraceIsAUsageError) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", example_graph_json());
  const auto r = run_cli({"run", graph.string(), "--cache", (tmp / "cache").string(), "-q",
                          "--trace", (tmp / "no" / "such" / "dir" / "t.json").string()},
                         tmp.path());
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--trace"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "cache" / "cellflow-cache.json")) << "nothing may run";
}

TEST(CliDot, NodesColouredByCacheState) {
  TempDir tmp;
  const fs::path graph = write_graph(tmp, "g.json", example_graph_json());
  const fs::path cache = tmp / "cache";
  const auto dot = [&] {
    const auto r =
        run_cli({"graph", graph.string(), "--dot", "--cache", cache.string()}, tmp.path());
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    std::map<std::string, std::string> lines;  // node id -> its vertex line
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
      const size_t l = line.find("[label=\"");
      if (l == std::string::npos) continue;
      lines[line.substr(l + 8, line.find("\\n") - l - 8)] = line;
    }
    return lines;
  };
  // No cache yet: everything missing (and the cache is not created).
  auto lines = dot();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines["raw"].find("0/36 cells (missing)"), std::string::npos) << lines["raw"];
  EXPECT_NE(lines["raw"].find("fillcolor=\"#d9d9d9\""), std::string::npos) << lines["raw"];
  EXPECT_FALSE(fs::exists(cache));

  const auto r = run_cli({"run", graph.string(), "--cache", cache.string(), "--output", "smooth",
                          "-q", "--summary-json", (tmp / "s.json").string()},
                         tmp.path());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string smooth = read_summary(tmp / "s.json").str("smooth", "hash");
  fs::remove(cell_file(cache, smooth, {1, 1, 1}));
  fs::remove(cache / smooth / ".cellflow-complete");
  lines = dot();
  EXPECT_NE(lines["raw"].find("36/36 cells (complete)"), std::string::npos) << lines["raw"];
  EXPECT_NE(lines["raw"].find("fillcolor=\"#a6dba0\""), std::string::npos) << lines["raw"];
  EXPECT_NE(lines["smooth"].find("35/36 cells (partial)"), std::string::npos) << lines["smooth"];
  EXPECT_NE(lines["smooth"].find("fillcolor=\"#fee08b\""), std::string::npos) << lines["smooth"];
  EXPECT_NE(lines["mask"].find("(missing)"), std::string::npos) << lines["mask"];

  const auto bad =
      run_cli({"graph", graph.string(), "--hashes", "--cache", cache.string()}, tmp.path());
  EXPECT_EQ(bad.exit_code, 2) << describe(bad);
}

}  // namespace
}  // namespace cellflow::test
