// GraphDef: the JSON form of a pipeline (parse, save, round trips, errors).
#include "cellflow/graph/graph_def.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

const std::string kExample = std::string(CELLFLOW_SOURCE_DIR) + "/examples/cell_density.json";

TEST(GraphDef, ParsesTheExample) {
  const GraphDef def = load_graph_file(kExample);
  EXPECT_EQ(def.name, "cell_density");
  EXPECT_EQ(def.source, kExample);
  // Relative file paths in params are taken from the file's folder; not saved.
  EXPECT_EQ(def.base_dir, std::string(CELLFLOW_SOURCE_DIR) + "/examples");
  EXPECT_EQ(parse_graph(save_graph(def)).base_dir, "");
  EXPECT_EQ(save_graph(def).find("/examples"), std::string::npos);
  ASSERT_GE(def.nodes.size(), 3u);
  EXPECT_EQ(def.nodes[0].id, "raw");
  EXPECT_EQ(def.nodes[0].op, "synthetic.blobs");
  EXPECT_TRUE(def.nodes[0].inputs.empty());
  EXPECT_EQ(*def.nodes[0].params.find("shape"), test::ints({256, 256, 256}));
  EXPECT_EQ(*def.nodes[0].params.find("cell_shape"), test::ints({64, 64, 64}));
  EXPECT_EQ(def.nodes[1].id, "smooth");
  EXPECT_EQ(def.nodes[1].op, "gaussian");
  EXPECT_EQ(def.nodes[1].inputs, std::vector<std::string>{"raw"});
  EXPECT_EQ(def.nodes[1].params.find("sigma")->as_double(), 2.0);
  // The cell density heatmap is among the outputs.
  bool density = false;
  for (const auto& n : def.nodes)
    density = density || (n.id == "density" && n.op == "region.density");
  EXPECT_TRUE(density);
  EXPECT_NE(std::find(def.outputs.begin(), def.outputs.end(), "density"), def.outputs.end());
}

TEST(GraphDef, TheExampleBuildsWithTheBuiltinOps) {
  Graph::build(load_graph_file(kExample), nodes::builtin_registry());
}

TEST(GraphDef, SaveParseSaveIsByteIdentical) {
  const GraphDef def = load_graph_file(kExample);
  const std::string once = save_graph(def);
  const std::string twice = save_graph(parse_graph(once, "saved.json"));
  EXPECT_EQ(once, twice);
  EXPECT_EQ(save_graph(parse_graph(twice)), twice);
  // What save writes is the hand-writable form: no serializer noise.
  EXPECT_EQ(once.find("value0"), std::string::npos) << once;
  EXPECT_EQ(once.find("polymorphic"), std::string::npos) << once;
  EXPECT_NE(once.find("\"cellflow\": 1"), std::string::npos) << once;
  EXPECT_NE(once.find("\"inputs\": [\"raw\"]"), std::string::npos) << once;
}

TEST(GraphDef, BuiltInCodeRoundTrips) {
  GraphDef def;
  def.name = "coded";
  def.add("a", "test.const", {},
          Value(Value::Object{{"shape", test::ints({4, 5})},
                              {"cell_shape", test::ints({2, 2})},
                              {"value", 0.1},
                              {"dtype", "f64"}}));
  def.add("b", "test.const", {},
          Value(Value::Object{{"shape", test::ints({4, 5})}, {"cell_shape", test::ints({2, 2})}}));
  def.add("sum", "test.add", {"b", "a"},
          Value(Value::Object{{"scale", -1.5e-7}, {"note", "é \"q\"\n"}}));
  def.add("bare", "test.thing");
  def.outputs = {"sum", "bare"};
  const std::string saved = save_graph(def);
  const GraphDef back = parse_graph(saved, "x.json");
  EXPECT_EQ(back.name, "coded");
  ASSERT_EQ(back.nodes.size(), 4u);
  EXPECT_EQ(back.nodes[2].inputs, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(back.nodes[2].params, def.nodes[2].params);
  EXPECT_EQ(back.nodes[0].params, def.nodes[0].params);
  EXPECT_TRUE(back.nodes[3].params.is_object());
  EXPECT_TRUE(back.nodes[3].params.as_object().empty());
  EXPECT_EQ(back.outputs, def.outputs);
  EXPECT_EQ(save_graph(back), saved);
}

TEST(GraphDef, KeyOrderOfTheInputIsKept) {
  // A person's key order survives (the canonical order is only for hashing).
  const std::string text = R"({"cellflow": 1, "nodes": [
    {"id": "a", "op": "test.const", "params": {"value": 1.0, "shape": [2], "cell_shape": [2]}}]})";
  const GraphDef def = parse_graph(text, "t.json");
  const std::string saved = save_graph(def);
  EXPECT_LT(saved.find("\"value\""), saved.find("\"shape\"")) << saved;
  EXPECT_EQ(save_graph(parse_graph(saved)), saved);
}

void expect_graph_error(const std::string& text, const std::vector<std::string>& mentions) {
  try {
    parse_graph(text, "bad.json");
    ADD_FAILURE() << "accepted: " << text;
  } catch (const GraphError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.json"), std::string::npos) << what;
    for (const auto& m : mentions)
      EXPECT_NE(what.find(m), std::string::npos) << "missing '" << m << "' in: " << what;
  }
}

TEST(GraphDef, StructuralErrorsNameFileAndField) {
  expect_graph_error("{\"cellflow\": 1, \"nodes\": [", {"bad.json:1:"});
  expect_graph_error("[]", {});
  expect_graph_error(R"({"nodes": []})", {"cellflow"});
  expect_graph_error(R"({"cellflow": 2, "nodes": []})", {"cellflow"});
  expect_graph_error(R"({"cellflow": 1})", {"nodes"});
  expect_graph_error(R"({"cellflow": 1, "nodes": {}})", {"nodes"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [], "extra": 1})", {"extra"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"op": "x"}]})", {"id"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a"}]})", {"\"a\"", "op"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a", "op": "x", "inputs": "b"}]})",
                     {"\"a\"", "inputs"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a", "op": "x", "inputs": [1]}]})",
                     {"\"a\"", "inputs"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a", "op": "x", "params": [1]}]})",
                     {"\"a\"", "params"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a", "op": "x", "parms": {}}]})",
                     {"\"a\"", "parms"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [], "outputs": "a"})", {"outputs"});
  expect_graph_error(R"({"cellflow": 1, "name": 3, "nodes": []})", {"name"});
  expect_graph_error(R"({"cellflow": 1, "nodes": [{"id": "a", "op": "x", "persist": "no"}]})",
                     {"\"a\"", "persist", "true or false"});
}

TEST(GraphDef, PersistRoundTripsAndIsNotPartOfTheHash) {
  const std::string text =
      R"({"cellflow": 1, "nodes": [{"id": "a", "op": "synthetic.blobs", "params": {"shape": [8, 8], "cell_shape": [4, 4]}, "persist": false}, {"id": "b", "op": "gaussian", "inputs": ["a"], "params": {"sigma": 1.0}}]})";
  const GraphDef def = parse_graph(text, "p.json");
  ASSERT_TRUE(def.nodes[0].persist.has_value());
  EXPECT_FALSE(*def.nodes[0].persist);
  EXPECT_FALSE(def.nodes[1].persist.has_value());
  EXPECT_EQ(save_graph(parse_graph(save_graph(def))), save_graph(def));
  EXPECT_NE(save_graph(def).find("\"persist\": false"), std::string::npos);
  GraphDef stored = def;
  stored.nodes[0].persist.reset();
  const Graph g = Graph::build(def, nodes::builtin_registry());
  const Graph h = Graph::build(stored, nodes::builtin_registry());
  EXPECT_FALSE(g.nodes()[0].persist);
  EXPECT_TRUE(h.nodes()[0].persist);  // synthetic.blobs persists by default
  EXPECT_EQ(g.nodes()[0].hash, h.nodes()[0].hash);
  EXPECT_EQ(g.nodes()[1].hash, h.nodes()[1].hash);
}

TEST(GraphDef, MissingFileIsAnIoError) {
  EXPECT_THROW(load_graph_file("/nonexistent/graph.json"), IoError);
}

}  // namespace
}  // namespace cellflow
