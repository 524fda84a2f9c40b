// Shared by the CLI tests: a small example graph, the --summary-json reader,
// and in-process access to a graph's nodes for comparison with the CLI.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_util.hpp"

namespace cellflow::test {

/// blobs 40 x 48 x 56 (16^3 cells: a 3 x 3 x 4 grid with edge cells) ->
/// gaussian -> threshold -> region.density, as a person writes it.
inline std::string example_graph_json(double above = 0.5, int seed = 5,
                                      const std::string& extra_nodes = "") {
  return R"({
  "cellflow": 1,
  "name": "cli_test",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [40, 48, 56], "cell_shape": [16, 16, 16], "dtype": "f32", "seed": )" +
         std::to_string(seed) + R"(, "count": 25}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.5}},
    {"id": "mask", "op": "threshold", "inputs": ["smooth"], "params": {"above": )" +
         to_json_compact(Value(above)) + R"(}},
    {"id": "density", "op": "region.density", "inputs": ["mask"],
     "params": {"region": [8, 8, 8], "cell_shape": [2, 2, 2]}})" +
         extra_nodes + R"(
  ],
  "outputs": ["density"]
}
)";
}

inline fs::path write_graph(const TempDir& tmp, const std::string& name, const std::string& json) {
  const fs::path p = tmp / name;
  write_all(p, json);
  return p;
}

/// By id, the hashes of `cellflow graph --hashes` output ("id hash" lines).
inline std::map<std::string, std::string> parse_hashes(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string id, hash; in >> id >> hash;) out[id] = hash;
  return out;
}

/// A fixture: the example graph written to graph.json and run (quietly) into
/// cache/ of a fresh folder, with its hashes by id.
class ExampleRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    graph_ = write_graph(tmp_, "graph.json", example_graph_json());
    cache_ = tmp_ / "cache";
    const CommandResult run =
        run_cli({"run", graph_.string(), "--cache", cache_.string(), "-q"}, tmp_.path());
    ASSERT_EQ(run.exit_code, 0) << describe(run);
    const CommandResult h = run_cli({"graph", graph_.string(), "--hashes"}, tmp_.path());
    ASSERT_EQ(h.exit_code, 0) << describe(h);
    hashes_ = parse_hashes(h.out);
    ASSERT_EQ(hashes_.size(), 4u);
  }

  TempDir tmp_;
  fs::path graph_;
  fs::path cache_;
  std::map<std::string, std::string> hashes_;
};

/// Per node id: the summary's node object.
struct Summary {
  Value root;
  std::map<std::string, Value> nodes;
  int64_t get(const std::string& id, const std::string& field) const {
    const Value* v = nodes.at(id).find(field);
    if (v == nullptr) {
      ADD_FAILURE() << "summary node " << id << " has no \"" << field << "\"";
      return -1;
    }
    return v->as_int();
  }
  std::string str(const std::string& id, const std::string& field) const {
    const Value* v = nodes.at(id).find(field);
    return v != nullptr && v->is_string() ? v->as_string() : std::string("<missing>");
  }
};

inline Summary read_summary(const fs::path& file) {
  Summary s;
  s.root = parse_json(read_all(file), file.string());
  const Value* nodes = s.root.find("nodes");
  if (nodes == nullptr || !nodes->is_array()) {
    ADD_FAILURE() << "summary has no nodes list: " << read_all(file);
    return s;
  }
  for (const auto& n : nodes->as_array()) s.nodes[n.find("id")->as_string()] = n;
  return s;
}

/// Builds the graph of `json` in this process (with `cache`, or memory-only).
inline Graph build_graph(const std::string& json, const std::optional<fs::path>& cache) {
  GraphOptions o;
  o.cache_root = cache;
  return Graph::build(parse_graph(json, "test.json"), nodes::builtin_registry(), o);
}

inline CellBuffer read_whole(const Graph& g, const std::string& id) {
  auto img = g.image(id);
  return img->read(img->grid().bounds());
}

/// Path of a cell file of node `hash` under `cache`.
inline fs::path cell_file(const fs::path& cache, const std::string& hash,
                          std::initializer_list<int64_t> cell) {
  fs::path p = cache / hash / "0";
  for (int64_t c : cell) p /= std::to_string(c);
  return p;
}

}  // namespace cellflow::test
