// Tests of provenance (graph/src/provenance.cpp), node artifacts and strict
// code identity (graph/src/code_identity.cpp): a graph rebuilt from the
// cache's stored definitions has the original hashes, replay restores deleted
// cells bit-identically, missing definitions and unknown ops are named by
// hash, warnings of a computing cell land in <hash>/artifacts/, and
// --strict-code hashes carry the op library's ELF build-id.
#include "cellflow/graph/provenance.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/code_identity.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "graph/test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

/// blobs (30 x 36 x 44, 16^3 cells: edge cells on every axis) -> gaussian ->
/// threshold; plus region.density of the mask.
GraphDef pipeline(double sigma = 1.0) {
  GraphDef def;
  def.name = "provenance";
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({30, 36, 44})},
                              {"cell_shape", test::ints({16, 16, 16})},
                              {"seed", 3},
                              {"count", 12}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", sigma}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.4}}));
  def.add("density", "region.density", {"mask"},
          Value(Value::Object{{"region", test::ints({8, 8, 8})}}));
  def.outputs = {"density"};
  return def;
}

Graph build(GraphDef def, const std::optional<fs::path>& cache, bool strict = false,
            const Registry& registry = nodes::builtin_registry()) {
  GraphOptions o;
  o.cache_root = cache;
  o.strict_code = strict;
  return Graph::build(std::move(def), registry, o);
}

std::map<std::string, std::string> hashes_by_id(const Graph& g) {
  std::map<std::string, std::string> out;
  for (const GraphNode& n : g.nodes()) out[n.def.id] = n.hash;
  return out;
}

/// The files that differ between two snapshots (by name; contents not printed).
std::vector<std::string> differing(const std::map<std::string, std::string>& a,
                                   const std::map<std::string, std::string>& b) {
  std::vector<std::string> out;
  for (const auto& [k, v] : a)
    if (!b.count(k) || b.at(k) != v) out.push_back(k);
  for (const auto& [k, v] : b)
    if (!a.count(k)) out.push_back(k);
  return out;
}

CellBuffer whole(const Graph& g, const std::string& id) {
  auto img = g.image(id);
  return img->read(img->grid().bounds());
}

TEST(ProvenanceTest, RebuildsTheGraphWithTheSameHashes) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const Graph original = build(pipeline(), cache);
  materialize(original);
  const std::string target = original.node("density").hash;

  const CacheProvenance p = graph_from_cache(cache, target);
  EXPECT_EQ(p.target_id, "density");
  EXPECT_FALSE(p.strict_code);
  ASSERT_EQ(p.def.nodes.size(), 4u);
  EXPECT_EQ(p.def.nodes.front().id, "raw");  // inputs before users
  EXPECT_EQ(p.def.outputs, std::vector<std::string>{"density"});
  const Graph rebuilt = build_from_cache(p, nodes::builtin_registry());
  EXPECT_EQ(hashes_by_id(rebuilt), hashes_by_id(original));

  // Through the JSON form too, as `cellflow graph --from-cache` writes it.
  const std::string json = save_graph(p.def);
  const Graph reloaded = build(parse_graph(json, "from-cache.json"), std::nullopt);
  EXPECT_EQ(hashes_by_id(reloaded), hashes_by_id(original));

  // An upstream node alone: only its own ancestors.
  const CacheProvenance upstream = graph_from_cache(cache, original.node("smooth").hash);
  EXPECT_EQ(upstream.def.nodes.size(), 2u);
  EXPECT_EQ(upstream.hashes.at("smooth"), original.node("smooth").hash);
}

TEST(ProvenanceTest, DuplicateStoredIdsAreDisambiguated) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  // Graph A stores the blobs node under the id "raw". Graph B has the same
  // blobs node (same hash, so A's stored definition) as "src", and calls its
  // gaussian "raw": B's chain, as stored, holds two nodes with id "raw".
  const Graph a = build(pipeline(), cache);
  materialize(a, {a.index("raw")});
  GraphDef b_def;
  b_def.add("src", "synthetic.blobs", {}, pipeline().nodes[0].params);
  b_def.add("raw", "gaussian", {"src"}, Value(Value::Object{{"sigma", 2.0}}));
  b_def.add("out", "threshold", {"raw"}, Value(Value::Object{{"above", 0.3}}));
  const Graph b = build(b_def, cache);
  materialize(b);

  const CacheProvenance p = graph_from_cache(cache, b.node("out").hash);
  ASSERT_EQ(p.def.nodes.size(), 3u);
  EXPECT_EQ(p.def.nodes[0].id, "raw");  // the blobs node, as graph A stored it
  const std::string renamed = "raw_" + b.node("raw").hash.substr(0, 8);
  EXPECT_EQ(p.def.nodes[1].id, renamed);
  EXPECT_EQ(p.def.nodes[2].inputs, std::vector<std::string>{renamed});
  const Graph rebuilt = build_from_cache(p, nodes::builtin_registry());
  EXPECT_EQ(rebuilt.node("out").hash, b.node("out").hash);
  EXPECT_EQ(rebuilt.node(renamed).hash, b.node("raw").hash);
  EXPECT_EQ(rebuilt.node("raw").hash, b.node("src").hash);
}

TEST(ProvenanceTest, ReplayRestoresDeletedCellsBitIdentically) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  std::string mask_hash;
  std::string smooth_hash;
  CellBuffer mask_before;
  CellBuffer smooth_before;
  {
    const Graph g = build(pipeline(), cache);
    materialize(g, {g.index("mask")});
    mask_hash = g.node("mask").hash;
    smooth_hash = g.node("smooth").hash;
    mask_before = whole(g, "mask");
    smooth_before = whole(g, "smooth");
  }  // the graph's images (and their cells in memory) are gone
  const auto mask_files = test::snapshot(cache / mask_hash / "0");
  const auto smooth_files = test::snapshot(cache / smooth_hash / "0");
  // Delete a corner, an inner and an edge cell of the mask, a smooth cell one
  // of them reads and a smooth cell none of them reads.
  for (const char* cell : {"0/0/0", "1/1/1", "1/2/2"})
    ASSERT_TRUE(fs::remove(cache / mask_hash / "0" / cell)) << cell;
  for (const char* cell : {"1/1/1", "0/2/1"})
    ASSERT_TRUE(fs::remove(cache / smooth_hash / "0" / cell)) << cell;
  fs::remove(cache / mask_hash / ".cellflow-complete");

  const ReplayResult r = replay_from_cache(cache, mask_hash, nodes::builtin_registry());
  EXPECT_EQ(r.graph.nodes()[r.node].hash, mask_hash);
  const NodeReport& mask_report = r.report.nodes[r.node];
  EXPECT_EQ(mask_report.cells_computed, 3);
  EXPECT_TRUE(mask_report.complete);
  EXPECT_TRUE(fs::exists(cache / mask_hash / ".cellflow-complete"));
  EXPECT_EQ(r.report.nodes[r.graph.index("smooth")].cells_computed, 1)
      << "only what the mask's cells read";
  EXPECT_EQ(r.report.nodes[r.graph.index("raw")].cells_computed, 0) << "raw was complete";
  // The files are back, byte for byte (the unneeded smooth cell stays missing).
  EXPECT_TRUE(differing(test::snapshot(cache / mask_hash / "0"), mask_files).empty());
  EXPECT_EQ(differing(test::snapshot(cache / smooth_hash / "0"), smooth_files),
            std::vector<std::string>{"0/2/1"});
  EXPECT_TRUE(test::same_bytes(whole(r.graph, r.graph.nodes()[r.node].def.id), mask_before));
  EXPECT_TRUE(test::same_bytes(whole(r.graph, "smooth"), smooth_before));

  // Nothing missing: replay computes nothing.
  const ReplayResult again = replay_from_cache(cache, mask_hash, nodes::builtin_registry());
  EXPECT_EQ(again.report.nodes[again.node].cells_computed, 0);
}

TEST(ProvenanceTest, MissingDefinitionsAndUnknownOpsAreNamedByHash) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const Graph g = build(pipeline(), cache);
  materialize(g, {g.index("mask")});
  const std::string raw = g.node("raw").hash;
  const std::string smooth = g.node("smooth").hash;
  const std::string mask = g.node("mask").hash;

  // Not a hash at all.
  EXPECT_THROW(graph_from_cache(cache, "../etc"), InvalidArgument);
  // A hash the cache does not hold.
  const std::string absent(32, 'a');
  try {
    graph_from_cache(cache, absent);
    ADD_FAILURE() << "no error";
  } catch (const GraphError& e) {
    EXPECT_NE(std::string(e.what()).find(absent), std::string::npos) << e.what();
  }
  // An upstream definition removed: the error names it and who needs it.
  fs::rename(cache / raw / ".zattrs", cache / raw / ".zattrs.away");
  try {
    graph_from_cache(cache, mask);
    ADD_FAILURE() << "no error";
  } catch (const GraphError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("node " + raw + " has no stored definition"), std::string::npos) << what;
    EXPECT_NE(what.find("needed by node " + smooth), std::string::npos) << what;
  }
  EXPECT_THROW(replay_from_cache(cache, mask, nodes::builtin_registry()), GraphError);
  fs::rename(cache / raw / ".zattrs.away", cache / raw / ".zattrs");

  // An op this program does not know.
  const fs::path attrs = cache / smooth / ".zattrs";
  const std::string text = test::read_all(attrs);
  std::string edited = text;
  edited.replace(edited.find("\"gaussian\""), 10, "\"no.such.op\"");
  test::write_all(attrs, edited);
  try {
    build_from_cache(graph_from_cache(cache, mask), nodes::builtin_registry());
    ADD_FAILURE() << "no error";
  } catch (const GraphError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("node " + smooth), std::string::npos) << what;
    EXPECT_NE(what.find("unknown op \"no.such.op\""), std::string::npos) << what;
  }
  test::write_all(attrs, text);
}

TEST(ProvenanceTest, AChangedOpVersionIsReportedWithTheHash) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const auto v1 = test::make_test_registry(1);
  GraphDef def;
  def.add("c", "test.const", {},
          Value(Value::Object{
              {"shape", test::ints({8, 8})}, {"cell_shape", test::ints({4, 4})}, {"value", 2.0}}));
  const Graph g = build(def, cache, false, *v1);
  materialize(g);
  const std::string hash = g.node("c").hash;
  EXPECT_EQ(build_from_cache(graph_from_cache(cache, hash), *v1, cache).node("c").hash, hash);
  const auto v2 = test::make_test_registry(2);
  try {
    build_from_cache(graph_from_cache(cache, hash), *v2, cache);
    ADD_FAILURE() << "no error";
  } catch (const GraphError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("node " + hash), std::string::npos) << what;
    EXPECT_NE(what.find("version 1, the registered op is version 2"), std::string::npos) << what;
  }
}

// A source that logs a warning and writes an artifact for every cell.
class ChattyOp final : public Op {
 public:
  std::string_view name() const override { return "test.chatty"; }
  int version() const override { return 1; }
  std::string_view doc() const override { return "logs while computing"; }
  std::vector<ParamSpec> params() const override { return {}; }
  int min_inputs() const override { return 0; }
  std::unique_ptr<NodeKernel> bind(const Params&, std::span<const ImageInfo>) const override {
    class Kernel final : public NodeKernel {
     public:
      Kernel() : NodeKernel(ImageInfo{DType::kU8, Shape{8, 8}, Shape{4, 8}}) {}
      void compute(const Box& box, std::span<const InputRegion>, CellBuffer& out) const override {
        std::memset(out.mutable_data(), 1, out.num_bytes());
        log_warning("cell at row " + std::to_string(box.begin()[0]) + " looks odd");
        if (const ArtifactWriter* a = current_artifacts())
          a->write_text("rows-" + std::to_string(box.begin()[0]) + ".txt", box.str());
      }
    };
    return std::make_unique<Kernel>();
  }
};

TEST(NodeArtifactsTest, WarningsAndArtifactsOfACellLandBesideTheNode) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  Registry registry;
  registry.add(std::make_shared<ChattyOp>());
  GraphDef def;
  def.add("chatty", "test.chatty");
  const Graph g = build(def, cache, false, registry);
  const LogSink previous = set_log_sink([](LogLevel, const std::string&) {});
  materialize(g);
  set_log_sink(previous);
  const std::string hash = g.node("chatty").hash;
  const fs::path dir = cache / hash / "artifacts";
  const std::string log = test::read_all(dir / "warnings.log");
  EXPECT_NE(log.find("warning: cell at row 0 looks odd"), std::string::npos) << log;
  EXPECT_NE(log.find("warning: cell at row 4 looks odd"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir / "rows-0.txt"));
  EXPECT_TRUE(fs::exists(dir / "rows-4.txt"));

  const CachedNodeSummary s = describe_cached_node(cache, hash);
  ASSERT_TRUE(s.definition.has_value());
  EXPECT_EQ(s.definition->find("op")->as_string(), "test.chatty");
  EXPECT_TRUE(s.complete_marker);
  EXPECT_EQ(s.cells_total, 2);
  EXPECT_EQ(s.cells_present, 2);
  EXPECT_FALSE(s.table);
  EXPECT_GT(s.bytes, 0u);
  ASSERT_EQ(s.artifacts.size(), 3u);
  EXPECT_EQ(s.artifacts[0].name, "rows-0.txt");
  EXPECT_EQ(s.artifacts[2].name, "warnings.log");
  fs::remove(cache / hash / "0" / "1" / "0");
  EXPECT_EQ(describe_cached_node(cache, hash).cells_present, 1);
  EXPECT_THROW(describe_cached_node(cache, std::string(32, 'b')), InvalidArgument);
}

TEST(StrictCodeTest, BuiltinOpsHaveTheBuildIdOfTheNodesLibrary) {
  const auto op = nodes::builtin_registry().find("gaussian");
  ASSERT_NE(op, nullptr);
  const auto id = code_identity(*op);
  ASSERT_TRUE(id.has_value());
  EXPECT_NE(id->library.find("libcellflow_nodes"), std::string::npos) << id->library;
  EXPECT_GE(id->build_id.size(), 16u);
  EXPECT_EQ(id->build_id.find_first_not_of("0123456789abcdef"), std::string::npos) << id->build_id;
  // Every built-in op lives in the same library.
  EXPECT_EQ(code_identity(*nodes::builtin_registry().find("threshold"))->build_id, id->build_id);
  // An op defined in this test program belongs to the program.
  const test::ConstOp local;
  const auto here = code_identity(local);
  ASSERT_TRUE(here.has_value());
  EXPECT_NE(here->build_id, id->build_id);
  EXPECT_EQ(here->library, fs::read_symlink("/proc/self/exe").string());
  EXPECT_FALSE(code_identity_of(nullptr).has_value());
}

// `cellflow cache verify` checks that a node's stored definition hashes to its
// folder's name with definition_hash(): it must agree with the hash the graph
// gives every node (images, a table, strict code), and any edited field must
// change it.
TEST(ProvenanceTest, EveryStoredDefinitionHashesToItsNode) {
  GraphDef def = pipeline();
  def.add("labels", "label", {"mask"}, Value::object());
  def.add("stats", "label.stats", {"labels"}, Value::object());
  for (const bool strict : {false, true}) {
    const Graph g = build(def, std::nullopt, strict);
    for (const GraphNode& n : g.nodes()) {
      EXPECT_EQ(definition_hash(n.definition), n.hash) << n.def.id << (strict ? " strict" : "");
      Value edited = n.definition;
      edited.set("version", n.op->version() + 1);
      EXPECT_NE(definition_hash(edited), n.hash) << n.def.id;
    }
  }
  const Graph g = build(def, std::nullopt);
  EXPECT_EQ(g.node("stats").info.kind, OutputKind::kTable);
  Value sigma = g.node("smooth").definition;
  sigma.set("params", Value(Value::Object{{"sigma", 2.0}}));
  EXPECT_NE(definition_hash(sigma), g.node("smooth").hash);
  Value no_op = g.node("smooth").definition;
  no_op.set("op", 3);
  EXPECT_EQ(definition_hash(no_op), std::nullopt);
  EXPECT_EQ(definition_hash(Value(3)), std::nullopt);
}

TEST(StrictCodeTest, StrictHashesDifferFromDefaultOnesAndReplay) {
  TempDir tmp;
  const Graph plain = build(pipeline(), std::nullopt);
  const Graph strict = build(pipeline(), tmp / "cache", true);
  const Graph strict_again = build(pipeline(), std::nullopt, true);
  for (const GraphNode& n : strict.nodes()) {
    EXPECT_NE(n.hash, plain.node(n.def.id).hash) << n.def.id;
    EXPECT_EQ(n.hash, strict_again.node(n.def.id).hash) << n.def.id;
    const Value* code = n.definition.find("code");
    ASSERT_NE(code, nullptr);
    EXPECT_EQ(code->find("library")->as_string().rfind("libcellflow_nodes", 0), 0u);
  }
  EXPECT_EQ(plain.nodes()[0].definition.find("code"), nullptr);
  // A strict cache is replayed strictly.
  materialize(strict, {strict.index("mask")});
  const CacheProvenance p = graph_from_cache(tmp / "cache", strict.node("mask").hash);
  EXPECT_TRUE(p.strict_code);
  EXPECT_EQ(hashes_by_id(build_from_cache(p, nodes::builtin_registry())).at("mask"),
            strict.node("mask").hash);
}

}  // namespace
}  // namespace cellflow
