// Graph::build: validation before anything runs, topology, GraphViz, the
// stored definition, that building writes nothing, and that a graph's nodes
// are leased (kept from `cellflow cache gc`) while it or an image uses them.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>

#include "cellflow/cache/cache_scan.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

Value blobs_params() {
  return Value(Value::Object{
      {"shape", test::ints({16, 16, 16})}, {"cell_shape", test::ints({8, 8, 8})}, {"count", 3}});
}

// Expects Graph::build(text) to fail with an Error whose message names all of `mentions`.
void expect_invalid(const std::string& text, const std::vector<std::string>& mentions) {
  const auto reg = test::make_test_registry();
  try {
    GraphDef def = parse_graph(text, "g.json");
    Graph::build(std::move(def), *reg);
    ADD_FAILURE() << "accepted: " << text;
  } catch (const Error& e) {
    EXPECT_TRUE(dynamic_cast<const GraphError*>(&e) != nullptr ||
                dynamic_cast<const InvalidArgument*>(&e) != nullptr)
        << "should be a GraphError or InvalidArgument: " << e.what();
    const std::string what = e.what();
    EXPECT_NE(what.find("g.json"), std::string::npos) << "should name the file: " << what;
    for (const auto& m : mentions)
      EXPECT_NE(what.find(m), std::string::npos) << "missing '" << m << "' in: " << what;
  }
}

const std::string kRaw =
    R"({"id": "raw", "op": "synthetic.blobs", "params": {"shape": [16, 16, 16], "cell_shape": [8, 8, 8]}})";

std::string graph_with(const std::string& nodes, const std::string& extra = "") {
  return R"({"cellflow": 1, "nodes": [)" + nodes + "]" + extra + "}";
}

TEST(GraphBuild, RejectsInvalidGraphsNamingNodeAndField) {
  expect_invalid(graph_with(""), {});
  expect_invalid(graph_with(kRaw + R"(, {"id": "s", "op": "gausian", "inputs": ["raw"]})"),
                 {"\"s\"", "gausian"});
  expect_invalid(
      graph_with(
          kRaw +
          R"(, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1, "sigmaa": 1}})"),
      {"\"s\"", "sigmaa"});
  expect_invalid(
      graph_with(
          kRaw +
          R"(, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": "big"}})"),
      {"\"s\"", "sigma"});
  expect_invalid(
      graph_with(kRaw +
                 R"(, {"id": "s", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": -1}})"),
      {"\"s\"", "sigma"});
  expect_invalid(graph_with(kRaw + R"(, {"id": "s", "op": "gaussian", "inputs": ["raw"]})"),
                 {"\"s\"", "sigma"});
  expect_invalid(
      graph_with(kRaw +
                 R"(, {"id": "s", "op": "gaussian", "inputs": ["nope"], "params": {"sigma": 1}})"),
      {"\"s\"", "nope", "inputs"});
  expect_invalid(
      graph_with(kRaw +
                 R"(, {"id": "raw", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1}})"),
      {"\"raw\"", "duplicate"});
  expect_invalid(
      graph_with(R"({"id": "a", "op": "gaussian", "inputs": ["b"], "params": {"sigma": 1}},
                               {"id": "b", "op": "gaussian", "inputs": ["a"], "params": {"sigma": 1}})"),
      {"cycle"});
  expect_invalid(
      graph_with(R"({"id": "a", "op": "gaussian", "inputs": ["a"], "params": {"sigma": 1}})"),
      {"\"a\"", "cycle"});
  expect_invalid(
      graph_with(
          kRaw +
          R"(, {"id": "t", "op": "threshold", "inputs": ["raw", "raw"], "params": {"above": 1}})"),
      {"\"t\"", "inputs"});
  expect_invalid(graph_with(kRaw + R"(, {"id": "t", "op": "threshold", "inputs": ["raw"]})"),
                 {"\"t\"", "above"});
  expect_invalid(
      graph_with(
          kRaw +
          R"(, {"id": "t", "op": "threshold", "inputs": ["raw"], "params": {"above": 2, "below": 1}})"),
      {"\"t\"", "above"});
  expect_invalid(
      graph_with(
          R"({"id": "src", "op": "synthetic.blobs", "params": {"shape": [16, 16], "cell_shape": [8, 8, 8]}})"),
      {"\"src\"", "cell_shape"});
  expect_invalid(
      graph_with(
          R"({"id": "src", "op": "synthetic.blobs", "params": {"shape": [16, 0], "cell_shape": [8, 8]}})"),
      {"\"src\"", "shape"});
  expect_invalid(graph_with(kRaw, R"(, "outputs": ["missing"])"), {"outputs", "missing"});
  // Shape mismatch: gaussian takes rank 1..3, and two inputs of different shapes.
  expect_invalid(
      graph_with(
          R"({"id": "r4", "op": "synthetic.blobs", "params": {"shape": [4, 8, 8, 8], "cell_shape": [2, 8, 8, 8]}},
                               {"id": "g", "op": "gaussian", "inputs": ["r4"], "params": {"sigma": 1}})"),
      {"\"g\""});
  expect_invalid(
      graph_with(
          kRaw +
          R"(, {"id": "d", "op": "region.density", "inputs": ["raw"], "params": {"region": [2, 2]}})"),
      {"\"d\"", "region"});
  expect_invalid(
      graph_with(
          R"({"id": "a", "op": "test.const", "params": {"shape": [8, 8], "cell_shape": [4, 4]}},
                               {"id": "b", "op": "test.const", "params": {"shape": [8, 9], "cell_shape": [4, 4]}},
                               {"id": "sum", "op": "test.add", "inputs": ["a", "b"]})"),
      {"\"sum\"", "shape"});
  expect_invalid(
      graph_with(
          R"({"id": "a", "op": "test.const", "params": {"shape": [8, 8], "cell_shape": [4, 4], "dtype": "u8"}},
                               {"id": "b", "op": "test.const", "params": {"shape": [8, 8], "cell_shape": [4, 4]}},
                               {"id": "sum", "op": "test.add", "inputs": ["a", "b"]})"),
      {"\"sum\"", "dtype"});
}

TEST(GraphBuild, TopologyOutputsAncestorsAndDot) {
  const auto reg = test::make_test_registry();
  GraphDef def;
  // Listed out of order on purpose: users before inputs.
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.5}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.0}}));
  def.add("raw", "synthetic.blobs", {}, blobs_params());
  def.add("other", "cast", {"raw"}, Value(Value::Object{{"dtype", "u8"}}));
  const Graph g = Graph::build(def, *reg);
  ASSERT_EQ(g.nodes().size(), 4u);
  EXPECT_EQ(g.index("raw"), 2u);
  EXPECT_EQ(g.node("smooth").def.op, "gaussian");
  EXPECT_THROW(g.index("nope"), InvalidArgument);
  const auto& topo = g.topological_order();
  ASSERT_EQ(topo.size(), 4u);
  const auto pos = [&](const std::string& id) {
    return std::find(topo.begin(), topo.end(), g.index(id)) - topo.begin();
  };
  EXPECT_LT(pos("raw"), pos("smooth"));
  EXPECT_LT(pos("smooth"), pos("mask"));
  EXPECT_LT(pos("raw"), pos("other"));
  // No outputs listed: the sinks.
  auto outs = g.outputs();
  std::sort(outs.begin(), outs.end());
  EXPECT_EQ(outs, (std::vector<size_t>{g.index("mask"), g.index("other")}));
  const auto anc = g.ancestors({g.index("mask")});
  EXPECT_EQ(anc, (std::vector<size_t>{g.index("raw"), g.index("smooth"), g.index("mask")}));
  EXPECT_EQ(g.ancestors({g.index("raw")}), std::vector<size_t>{g.index("raw")});
  // Infos.
  EXPECT_EQ(g.node("mask").info.dtype, DType::kU8);
  EXPECT_EQ(g.node("smooth").info.dtype, DType::kF32);
  EXPECT_EQ(g.node("smooth").info.shape, (Dims{16, 16, 16}));
  EXPECT_EQ(g.node("smooth").info.cell_shape, (Dims{8, 8, 8}));
  EXPECT_EQ(g.node("mask").inputs, std::vector<size_t>{g.index("smooth")});
  // GraphViz names every node and edge.
  const std::string dot = g.to_dot();
  EXPECT_NE(dot.find("digraph"), std::string::npos) << dot;
  for (const char* id : {"raw", "smooth", "mask", "other"})
    EXPECT_NE(dot.find(id), std::string::npos) << dot;
  size_t edges = 0;
  for (size_t p = dot.find("->"); p != std::string::npos; p = dot.find("->", p + 2)) ++edges;
  EXPECT_EQ(edges, 3u) << dot;
}

TEST(GraphBuild, DefinitionRecordsWhatIdentifiesTheNode) {
  const auto reg = test::make_test_registry();
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params());
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1}}));
  const Graph g = Graph::build(def, *reg);
  const Value& d = g.node("smooth").definition;
  EXPECT_EQ(d.find("op")->as_string(), "gaussian");
  EXPECT_EQ(d.find("version")->as_int(), 1);
  EXPECT_EQ(d.find("params")->find("sigma")->as_double(), 1.0);
  EXPECT_TRUE(d.find("params")->find("sigma")->is_float());
  EXPECT_NE(d.find("params")->find("max_error"), nullptr) << "defaults are recorded";
  EXPECT_EQ(d.find("dtype")->as_string(), "f32");
  EXPECT_EQ(*d.find("shape"), test::ints({16, 16, 16}));
  EXPECT_EQ(*d.find("cell_shape"), test::ints({8, 8, 8}));
  const Value* inputs = d.find("inputs");
  ASSERT_NE(inputs, nullptr);
  ASSERT_EQ(inputs->as_array().size(), 1u);
  EXPECT_NE(to_json_compact(*inputs).find(g.node("raw").hash), std::string::npos)
      << to_json_compact(*inputs);
}

TEST(GraphBuild, BuildingWritesNothing) {
  test::TempDir tmp;
  const auto reg = test::make_test_registry();
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params());
  GraphOptions opts;
  opts.cache_root = tmp / "cache";
  const Graph g = Graph::build(def, *reg, opts);
  EXPECT_EQ(g.cache_root(), tmp / "cache");
  EXPECT_FALSE(test::fs::exists(tmp / "cache")) << "building a graph must not touch the cache";
  // The cache appears only when something is computed.
  g.image("raw")->get({0, 0, 0});
  EXPECT_TRUE(test::fs::exists(tmp / "cache" / g.node("raw").hash / "0" / "0" / "0" / "0"));
}

TEST(GraphBuild, ImagesAreInternedPerHashAndCacheRoot) {
  test::TempDir tmp;
  const auto reg = test::make_test_registry();
  GraphDef a;
  a.add("raw", "synthetic.blobs", {}, blobs_params());
  GraphDef b;
  b.add("other_name", "synthetic.blobs", {}, blobs_params());
  const Graph ga = Graph::build(a, *reg);
  const Graph gb = Graph::build(b, *reg);
  EXPECT_EQ(ga.image("raw").get(), gb.image("other_name").get()) << "same node, same image";
  GraphOptions opts;
  opts.cache_root = tmp / "cache";
  const Graph gc = Graph::build(a, *reg, opts);
  EXPECT_NE(ga.image("raw").get(), gc.image("raw").get()) << "another cache root, another image";
  EXPECT_THROW(ga.image(5), InvalidArgument);
}

// gc_cache with keep={} (every node chosen), from another thread.
GcReport gc_everything(const test::fs::path& cache) {
  GcReport report;
  std::thread([&] {
    GcOptions o;
    o.keep = std::set<std::string>{};
    report = gc_cache(cache, o);
  }).join();
  return report;
}

TEST(GraphLease, GcKeepsTheNodesAGraphOrAnImageUsesAndRemovesThemAfter) {
  test::TempDir tmp;
  const auto reg = test::make_test_registry();
  GraphDef def;
  def.add("raw", "synthetic.blobs", {}, blobs_params());
  def.add("twice", "threshold", {"raw"}, Value(Value::Object{{"above", 0.5}}));
  GraphOptions opts;
  opts.cache_root = tmp / "cache";
  std::string raw_hash;
  std::string twice_hash;
  std::shared_ptr<CachedCellImage> kept;
  {
    const Graph g = Graph::build(def, *reg, opts);
    raw_hash = g.node("raw").hash;
    twice_hash = g.node("twice").hash;
    const Box region({0, 0, 0}, {12, 12, 12});
    const CellBuffer before = g.image("twice")->read(region);
    const GcReport busy = gc_everything(tmp / "cache");
    EXPECT_TRUE(busy.removed.empty());
    EXPECT_EQ(busy.in_use.size(), 2u) << "the node read and the input it was computed from";
    EXPECT_TRUE(test::fs::exists(tmp / "cache" / raw_hash / "0" / "0" / "0" / "0"));
    EXPECT_TRUE(test::fs::exists(tmp / "cache" / twice_hash / "0" / "0" / "0" / "0"));
    EXPECT_TRUE(test::same_bytes(before, g.image("twice")->read(region)));
    kept = g.image("raw");
  }
  // The graph is gone, one of its images is not: only that node stays leased.
  const GcReport partly = gc_everything(tmp / "cache");
  ASSERT_EQ(partly.removed.size(), 1u);
  EXPECT_EQ(partly.removed[0].hash, twice_hash);
  ASSERT_EQ(partly.in_use.size(), 1u);
  EXPECT_EQ(partly.in_use[0].hash, raw_hash);
  EXPECT_TRUE(test::fs::exists(tmp / "cache" / raw_hash));
  kept.reset();
  const GcReport all = gc_everything(tmp / "cache");
  EXPECT_EQ(all.removed.size(), 1u);
  EXPECT_TRUE(all.in_use.empty());
  EXPECT_FALSE(test::fs::exists(tmp / "cache" / raw_hash));
  EXPECT_FALSE(test::fs::exists(tmp / "cache" / twice_hash));
}

}  // namespace
}  // namespace cellflow
