// Node hashes: 32 lowercase hex XXH3-128 Merkle hashes, stable, sensitive to
// everything that defines a node's data, and to nothing else.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_ops.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

using Hashes = std::map<std::string, std::string>;
const std::vector<std::string> kChain = {"raw", "smooth", "mask", "density"};

GraphDef base_def() {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({32, 40, 48})},
                              {"cell_shape", test::ints({16, 16, 16})},
                              {"seed", 3},
                              {"count", 20}}));
  def.add("smooth", "gaussian", {"raw"}, Value(Value::Object{{"sigma", 1.5}}));
  def.add("mask", "threshold", {"smooth"}, Value(Value::Object{{"above", 0.4}}));
  def.add("density", "region.density", {"mask"},
          Value(Value::Object{{"region", test::ints({8, 8, 8})}}));
  def.outputs = {"density"};
  return def;
}

Hashes hashes_of(GraphDef def, const Registry& reg = nodes::builtin_registry()) {
  const Graph g = Graph::build(std::move(def), reg);
  Hashes out;
  for (const auto& n : g.nodes()) out[n.def.id] = n.hash;
  return out;
}

bool is_hex32(const std::string& h) {
  if (h.size() != 32) return false;
  for (char c : h)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

TEST(Hashing, HashBytesIsXxh3_128) {
  for (const std::string& s : {std::string(), std::string("cellflow"), std::string(1000, 'x')}) {
    const XXH128_hash_t h = XXH3_128bits(s.data(), s.size());
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    EXPECT_EQ(hash_bytes(s), std::string(buf));
    EXPECT_TRUE(is_hex32(hash_bytes(s)));
  }
  EXPECT_EQ(hash_bytes(""), "99aa06d3014798d86001c324468d497f");
}

TEST(Hashing, ThirtyTwoLowercaseHexAndStableAcrossBuilds) {
  const Hashes a = hashes_of(base_def());
  const Hashes b = hashes_of(base_def());
  ASSERT_EQ(a.size(), 4u);
  for (const auto& [id, h] : a) EXPECT_TRUE(is_hex32(h)) << id << " " << h;
  EXPECT_EQ(a, b);
  // All distinct.
  std::set<std::string> distinct;
  for (const auto& [id, h] : a) distinct.insert(h);
  EXPECT_EQ(distinct.size(), 4u);
  // Stable against a fresh registry too (no pointer or address in the hash).
  const auto reg = test::make_test_registry();
  EXPECT_EQ(hashes_of(base_def(), *reg), a);
}

TEST(Hashing, IndependentOfJsonKeyOrderWhitespaceAndNodeOrder) {
  const std::string a = R"({"cellflow": 1, "name": "one", "nodes": [
    {"id": "raw", "op": "synthetic.blobs",
     "params": {"shape": [32, 40, 48], "cell_shape": [16, 16, 16], "seed": 3, "count": 20}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 1.5}},
    {"id": "mask", "op": "threshold", "inputs": ["smooth"], "params": {"above": 0.4}},
    {"id": "density", "op": "region.density", "inputs": ["mask"], "params": {"region": [8, 8, 8]}}
  ], "outputs": ["density"]})";
  const std::string b =
      "{\"outputs\":[\"density\"],\"nodes\":[{\"params\":{\"region\":[8,8,8]},\"inputs\":[\"mask\"]"
      ","
      "\"op\":\"region.density\",\"id\":\"density\"},\n\n\t{\"op\":\"threshold\",\"params\":{"
      "\"above\":0.4},"
      "\"id\":\"mask\",\"inputs\":[\"smooth\"]},{\"id\":\"raw\",\"params\":{\"count\":20,\"seed\":"
      "3,"
      "\"cell_shape\":[16,16,16],\"shape\":[ 32 , 40 , 48 ]},\"op\":\"synthetic.blobs\"},"
      "{\"inputs\":[\"raw\"],\"id\":\"smooth\",\"params\":{\"sigma\":1.5},\"op\":\"gaussian\"}],"
      "\"cellflow\":1,\"name\":\"two\"}";
  const Hashes ha = hashes_of(parse_graph(a, "a.json"));
  const Hashes hb = hashes_of(parse_graph(b, "b.json"));
  EXPECT_EQ(ha, hb);
  EXPECT_EQ(ha, hashes_of(base_def())) << "JSON and code give the same hashes";
}

TEST(Hashing, NotSensitiveToNodeIds) {
  GraphDef def = base_def();
  const Hashes before = hashes_of(def);
  const std::map<std::string, std::string> rename = {
      {"raw", "input_image"}, {"smooth", "s"}, {"mask", "foreground"}, {"density", "heatmap"}};
  for (auto& n : def.nodes) {
    n.id = rename.at(n.id);
    for (auto& in : n.inputs) in = rename.at(in);
  }
  def.outputs = {"heatmap"};
  const Hashes after = hashes_of(def);
  for (const auto& [old_id, new_id] : rename)
    EXPECT_EQ(before.at(old_id), after.at(new_id)) << old_id;
}

TEST(Hashing, EquivalentParamSpellingsHashTheSame) {
  const Hashes base = hashes_of(base_def());
  const auto with = [](const std::string& id, const std::string& key, Value v) {
    GraphDef def = base_def();
    for (auto& n : def.nodes)
      if (n.id == id) n.params.set(key, std::move(v));
    return hashes_of(std::move(def));
  };
  // An int where a float is expected.
  GraphDef d2 = base_def();
  d2.nodes[1].params = Value(Value::Object{{"sigma", 2}});
  GraphDef d3 = base_def();
  d3.nodes[1].params = Value(Value::Object{{"sigma", 2.0}});
  EXPECT_EQ(hashes_of(d2), hashes_of(d3));
  EXPECT_NE(hashes_of(d2).at("smooth"), base.at("smooth"));
  // A default written out explicitly; a long dtype name; a float where an int is expected.
  EXPECT_EQ(with("smooth", "max_error", 1e-4), base);
  EXPECT_EQ(with("raw", "dtype", "float32"), base);
  EXPECT_EQ(with("raw", "dtype", "f32"), base);
  EXPECT_EQ(with("raw", "seed", 3.0), base);
}

struct Mutation {
  std::string id;
  std::string key;
  Value value;
};

TEST(Hashing, SensitiveToEveryParamAndPropagatesDownstreamOnly) {
  const std::vector<Mutation> mutations = {
      {"raw", "shape", test::ints({32, 40, 50})},
      {"raw", "cell_shape", test::ints({16, 16, 8})},
      {"raw", "dtype", "u16"},
      {"raw", "seed", 4},
      {"raw", "count", 21},
      {"raw", "radius", test::floats({3.0, 9.0})},
      {"raw", "noise", 0.06},
      {"smooth", "sigma", 1.6},
      {"smooth", "sigma", test::floats({1.5, 1.5, 2.0})},
      {"smooth", "max_error", 1e-3},
      {"smooth", "max_kernel_width", 100},
      {"mask", "above", 0.41},
      {"mask", "below", 0.9},
      {"density", "region", test::ints({8, 8, 4})},
      {"density", "cell_shape", test::ints({1, 2, 2})},
  };
  const Hashes base = hashes_of(base_def());
  for (const auto& m : mutations) {
    SCOPED_TRACE(m.id + "." + m.key + " = " + to_json_compact(m.value));
    GraphDef def = base_def();
    for (auto& n : def.nodes)
      if (n.id == m.id) n.params.set(m.key, m.value);
    const Hashes h = hashes_of(std::move(def));
    const auto pos = std::find(kChain.begin(), kChain.end(), m.id) - kChain.begin();
    for (size_t k = 0; k < kChain.size(); ++k) {
      if (static_cast<ptrdiff_t>(k) < pos) {
        EXPECT_EQ(h.at(kChain[k]), base.at(kChain[k]))
            << "upstream " << kChain[k] << " must not change";
      } else {
        EXPECT_NE(h.at(kChain[k]), base.at(kChain[k])) << kChain[k] << " must change";
      }
    }
  }
}

TEST(Hashing, SensitiveToOpVersion) {
  const auto v1 = test::make_test_registry(1);
  const auto v2 = test::make_test_registry(2);
  GraphDef def;
  def.add("c", "test.const", {},
          Value(Value::Object{{"shape", test::ints({8, 8})}, {"cell_shape", test::ints({4, 4})}}));
  def.add("g", "gaussian", {"c"}, Value(Value::Object{{"sigma", 1.0}}));
  const Hashes a = hashes_of(def, *v1);
  const Hashes b = hashes_of(def, *v2);
  EXPECT_NE(a.at("c"), b.at("c"));
  EXPECT_NE(a.at("g"), b.at("g")) << "a version bump invalidates everything downstream";
}

TEST(Hashing, SensitiveToInputOrder) {
  const auto reg = test::make_test_registry();
  const auto def = [](std::vector<std::string> inputs) {
    GraphDef d;
    d.add("a", "test.const", {},
          Value(Value::Object{
              {"shape", test::ints({8, 8})}, {"cell_shape", test::ints({4, 4})}, {"value", 1.0}}));
    d.add("b", "test.const", {},
          Value(Value::Object{
              {"shape", test::ints({8, 8})}, {"cell_shape", test::ints({4, 4})}, {"value", 2.0}}));
    d.add("sum", "test.add", std::move(inputs));
    return d;
  };
  const Hashes ab = hashes_of(def({"a", "b"}), *reg);
  const Hashes ba = hashes_of(def({"b", "a"}), *reg);
  EXPECT_EQ(ab.at("a"), ba.at("a"));
  EXPECT_EQ(ab.at("b"), ba.at("b"));
  EXPECT_NE(ab.at("sum"), ba.at("sum"));
  // Same input twice differs from two different inputs.
  EXPECT_NE(hashes_of(def({"a", "a"}), *reg).at("sum"), ab.at("sum"));
}

TEST(Hashing, SameNodeInDifferentGraphsHasTheSameHash) {
  GraphDef other;
  other.add("source", "synthetic.blobs", {},
            Value(Value::Object{{"count", 20},
                                {"seed", 3},
                                {"cell_shape", test::ints({16, 16, 16})},
                                {"shape", test::ints({32, 40, 48})}}));
  other.add("blurred", "gaussian", {"source"}, Value(Value::Object{{"sigma", 1.5}}));
  other.add("other_mask", "threshold", {"blurred"}, Value(Value::Object{{"below", 0.2}}));
  const Hashes base = hashes_of(base_def());
  const Hashes h = hashes_of(other);
  EXPECT_EQ(h.at("source"), base.at("raw"));
  EXPECT_EQ(h.at("blurred"), base.at("smooth"));
  EXPECT_NE(h.at("other_mask"), base.at("mask"));
}

}  // namespace
}  // namespace cellflow
