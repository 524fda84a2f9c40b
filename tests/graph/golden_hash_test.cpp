// Golden node hashes: the exact 32-hex hashes of a fixed set of nodes, and the
// canonical encoding they are computed from. A node's hash names its folder in
// every user's cache, so these values must never change by accident: a change
// to the recipe (what is hashed, in which order or spelling, the JSON
// canonicalization, the hash function) makes every cached node unreachable.
//
// If one of these tests fails, do not update the pins. Either revert the
// change, or (if the recipe really must change) bump the cache format and
// migrate existing caches, then pin the new values. Changing one op's version
// or a param default legitimately changes that op's hashes (and those
// downstream): then update only those pins, and say so in the commit.
//
// The hashes were captured from main at 397ccfc (cache format 1). Checked when
// written: appending one character to the op name inside node_hash() fails
// NodeHashesArePinned, CanonicalEncodingIsPinned and CacheFormat1GraphHashes,
// while every test in hashing_test.cpp still passes.
//
// The file readers are pinned in their "hash": "content" mode only: the
// default "stat" mode hashes the absolute path and modification time, which a
// test cannot hold fixed.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cellflow/graph/graph.hpp"
#include "cellflow/graph/graph_def.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kWhy =
    "changing the hash recipe orphans every user's cache; bump the cache format and migrate "
    "instead";

// Every kind of node the recipe has to cover: synthetic sources of several
// dtypes and ranks, a chain (gaussian -> threshold -> label), params that are
// floats (one in exponent form), ints, lists and strings, nodes with two inputs,
// a table node and the two file readers (hashed by content, so that neither
// the temporary folder nor an mtime enters the hash).
constexpr const char* kGoldenGraph = R"({
  "cellflow": 1,
  "name": "golden",
  "nodes": [
    {"id": "blobs_u8", "op": "synthetic.blobs",
     "params": {"shape": [24, 20, 16], "cell_shape": [8, 8, 6], "dtype": "u8", "seed": 1}},
    {"id": "blobs_u16", "op": "synthetic.blobs",
     "params": {"shape": [24, 20, 16], "cell_shape": [8, 8, 6], "dtype": "u16", "seed": 7,
                "count": 6, "radius": [2.0, 4.5], "noise": 0.0}},
    {"id": "blobs_i16", "op": "synthetic.blobs",
     "params": {"shape": [24, 20, 16], "cell_shape": [8, 8, 6], "dtype": "i16", "seed": 7}},
    {"id": "blobs_f32", "op": "synthetic.blobs",
     "params": {"shape": [24, 20, 16], "cell_shape": [8, 8, 8], "dtype": "f32", "seed": 3,
                "count": 10}},
    {"id": "blobs_f64", "op": "synthetic.blobs",
     "params": {"shape": [24, 20, 16], "cell_shape": [8, 8, 8], "dtype": "f64", "seed": 3,
                "count": 10}},
    {"id": "blobs_2d", "op": "synthetic.blobs",
     "params": {"shape": [40, 30], "cell_shape": [16, 16], "seed": 2, "count": 5,
                "radius": [1.5, 3.25], "noise": 0.125}},
    {"id": "smooth", "op": "gaussian", "inputs": ["blobs_f32"], "params": {"sigma": 1.5}},
    {"id": "smooth_axes", "op": "gaussian", "inputs": ["blobs_u16"],
     "params": {"sigma": [1.0, 0.5, 2.25], "max_error": 1e-05, "max_kernel_width": 64,
                "engine": "itk"}},
    {"id": "mask", "op": "threshold", "inputs": ["smooth"], "params": {"above": 0.25}},
    {"id": "labels", "op": "label", "inputs": ["mask"],
     "params": {"connectivity": "full", "dtype": "u64"}},
    {"id": "sum", "op": "add", "inputs": ["smooth", "blobs_f64"]},
    {"id": "scaled", "op": "multiply", "inputs": ["blobs_u16"], "params": {"scalar": 3}},
    {"id": "density", "op": "region.density", "inputs": ["mask"],
     "params": {"region": [8, 4, 8]}},
    {"id": "objects", "op": "label.stats", "inputs": ["labels", "smooth"]},
    {"id": "zarr_in", "op": "read.zarr",
     "params": {"path": "in.zarr", "cell_shape": [4, 4], "hash": "content"}},
    {"id": "image_in", "op": "read.image", "params": {"path": "in.mha", "hash": "content"}}
  ]
})";

// The pinned hashes (main at 397ccfc, cache format 1).
const std::map<std::string, std::string> kGoldenHashes = {
    {"blobs_u8", "45624f423cedea06ab9f097e628aa1a8"},
    {"blobs_u16", "3942ce0b36ea86fe2c8f5ae5dc017ca4"},
    {"blobs_i16", "acd3b204696f428d23f857949afe72d3"},
    {"blobs_f32", "f5bb60183ae14aaf61792f58572b1eb2"},
    {"blobs_f64", "fc24eefa18ebb5906c6714f05130bc91"},
    {"blobs_2d", "5fa1c7627f4677a7ae6d65e963896164"},
    {"smooth", "e9e1a0ffd880f029483b21c8828a1e21"},
    {"smooth_axes", "e09fe06c0c21c1ccd7e308c7ed408662"},
    {"mask", "3ab8592e65b0b8361c0ee297e31c4edb"},
    {"labels", "636f1e9864518c69f3ae1310cd06133c"},
    {"sum", "0e4c8cb16b75452e14fb9d5360178eb7"},
    {"scaled", "1cc2b4152094f428004394d85d6d4790"},
    // Not the recipe: the node's default output cells changed (2026-12-04:
    // along axes 1.. whole input cells covering >= 128 voxels instead of one
    // input cell; the cell shape is part of a node's identity). Was
    // 8fd1860d7a3c54876e377f02856d98f0 with cells (1, 2, 1), now (1, 5, 2).
    {"density", "11e51e95b26af4db8ec50152becffb1e"},
    {"objects", "c670213518e8a96e83d2035ec3de16ba"},
    {"zarr_in", "832ef8c4f09d217e39f62fccfc3b53f6"},
    {"image_in", "c9c2f3eebfc0a9b9a2300aa114abec1d"},
};

// The files the two readers hash: written byte for byte here (no compressor,
// no timestamps), so that their content hashes are fixed.
void write_reader_inputs(const fs::path& dir) {
  // A 6x5 u16 Zarr v2 array, uncompressed, chunks 4x4 ("." separator, so
  // chunk files are "i.j"); chunk (1, 1) is missing (reads as fill_value).
  fs::create_directories(dir / "in.zarr");
  test::write_all(dir / "in.zarr" / ".zarray",
                  "{\"chunks\": [4, 4], \"compressor\": null, \"dtype\": \"<u2\", "
                  "\"fill_value\": 0, \"filters\": null, \"order\": \"C\", \"shape\": [6, 5], "
                  "\"zarr_format\": 2}");
  for (const char* name : {"0.0", "0.1", "1.0"}) {
    std::string chunk;
    for (int i = 0; i < 16; ++i) {
      const uint16_t v = static_cast<uint16_t>(name[0] * 100 + name[2] * 10 + i);
      chunk.push_back(static_cast<char>(v & 0xff));
      chunk.push_back(static_cast<char>(v >> 8));
    }
    test::write_all(dir / "in.zarr" / name, chunk);
  }
  // A 3x4x5 (z, y, x) i16 MetaImage with its data inline.
  std::string mha =
      "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
      "DimSize = 5 4 3\nElementType = MET_SHORT\nElementDataFile = LOCAL\n";
  for (int i = 0; i < 60; ++i) {
    const auto v = static_cast<uint16_t>(static_cast<int16_t>(i * 37 - 1000));
    mha.push_back(static_cast<char>(v & 0xff));
    mha.push_back(static_cast<char>(v >> 8));
  }
  test::write_all(dir / "in.mha", mha);
}

std::map<std::string, std::string> golden_hashes() {
  TempDir tmp;
  write_reader_inputs(tmp.path());
  GraphDef def = parse_graph(kGoldenGraph, "golden.json");
  def.base_dir = tmp.path().string();
  const Graph g = Graph::build(std::move(def), nodes::builtin_registry());
  std::map<std::string, std::string> out;
  for (const auto& n : g.nodes()) out[n.def.id] = n.hash;
  return out;
}

TEST(GoldenHash, NodeHashesArePinned) {
  const auto got = golden_hashes();
  ASSERT_EQ(got.size(), kGoldenHashes.size());
  for (const auto& [id, want] : kGoldenHashes) {
    ASSERT_TRUE(got.count(id)) << id;
    EXPECT_EQ(got.at(id), want) << "node \"" << id << "\": " << kWhy;
  }
}

// What the hashes above cover for a few nodes: the params after validation
// (defaults filled in, params without a default left out, numbers in their
// declared types: the int 3 given for a float param is 3.0), in canonical form.
TEST(GoldenHash, ValidatedParamsArePinned) {
  TempDir tmp;
  write_reader_inputs(tmp.path());
  GraphDef def = parse_graph(kGoldenGraph, "golden.json");
  def.base_dir = tmp.path().string();
  const Graph g = Graph::build(std::move(def), nodes::builtin_registry());
  const std::map<std::string, std::string> want = {
      {"blobs_u16",
       R"({"cell_shape":[8,8,6],"count":6,"dtype":"u16","noise":0.0,"radius":[2.0,4.5],)"
       R"("seed":7,"shape":[24,20,16]})"},
      {"smooth_axes",
       R"({"engine":"itk","max_error":1e-05,"max_kernel_width":64,"sigma":[1.0,0.5,2.25]})"},
      {"scaled", R"({"scalar":3.0})"},
      {"labels", R"({"connectivity":"full","dtype":"u64"})"},
      {"blobs_u8",
       R"({"cell_shape":[8,8,6],"count":200,"dtype":"u8","noise":0.05,"radius":[4.0,10.0],)"
       R"("seed":1,"shape":[24,20,16]})"},
      {"smooth", R"({"max_error":1e-04,"max_kernel_width":128,"sigma":1.5})"},
      {"zarr_in", R"({"cell_shape":[4,4],"hash":"content","path":"in.zarr"})"},
  };
  for (const auto& [id, text] : want) {
    const Value* params = g.node(id).definition.find("params");
    ASSERT_NE(params, nullptr) << id;
    EXPECT_EQ(to_canonical_json(*params), text) << "node \"" << id << "\": " << kWhy;
  }
}

// The same hashes whatever the folder the readers' files lie in (content mode).
TEST(GoldenHash, ReaderHashesDoNotDependOnTheirFolder) {
  const auto a = golden_hashes();
  TempDir other("elsewhere");
  write_reader_inputs(other / "deeper");
  GraphDef def = parse_graph(kGoldenGraph, "golden.json");
  def.base_dir = (other / "deeper").string();
  const Graph g = Graph::build(std::move(def), nodes::builtin_registry());
  EXPECT_EQ(g.node("zarr_in").hash, a.at("zarr_in"));
  EXPECT_EQ(g.node("image_in").hash, a.at("image_in"));
}

// The canonical encoding a node hash is computed from, byte for byte: keys
// sorted, compact, floats with a decimal point or exponent, dims as int lists,
// input hashes in order.
TEST(GoldenHash, CanonicalEncodingIsPinned) {
  Value params = Value::object();
  params.set("sigma", test::floats({1.0, 0.5, 2.25}));
  params.set("max_error", 1e-5);
  params.set("max_kernel_width", 64);
  params.set("engine", "itk");
  params.set("flag", true);
  params.set("none", nullptr);
  params.set("text", "a \"quoted\"\\ line\n");
  EXPECT_EQ(to_canonical_json(params),
            R"({"engine":"itk","flag":true,"max_error":1e-05,"max_kernel_width":64,)"
            R"("none":null,"sigma":[1.0,0.5,2.25],"text":"a \"quoted\"\\ line\n"})")
      << kWhy;

  ImageInfo info;
  info.dtype = DType::kF32;
  info.shape = Shape{24, 20, 16};
  info.cell_shape = Shape{8, 8, 6};
  const std::vector<std::string> inputs = {"0123456789abcdef0123456789abcdef",
                                           "fedcba9876543210fedcba9876543210"};
  const std::string encoding =
      R"({"cell_shape":[8,8,6],"dtype":"f32","inputs":["0123456789abcdef0123456789abcdef",)"
      R"("fedcba9876543210fedcba9876543210"],"op":"gaussian","params":{"engine":"itk",)"
      R"("flag":true,"max_error":1e-05,"max_kernel_width":64,"none":null,)"
      R"("sigma":[1.0,0.5,2.25],"text":"a \"quoted\"\\ line\n"},"shape":[24,20,16],)"
      R"("version":1})";
  EXPECT_EQ(node_hash("gaussian", 1, params, info, inputs), hash_bytes(encoding)) << kWhy;
  EXPECT_EQ(node_hash("gaussian", 1, params, info, inputs), "da360d75041f4a3b0c987b2e903c3470")
      << kWhy;
  // A kernel identity (file readers) and a code build-id (--strict-code) are
  // two more keys of the same object.
  // Keys sorted: "code" sorts after "cell_shape", "identity" after "dtype".
  const std::string with_extras =
      R"({"cell_shape":[8,8,6],"code":"b1d","dtype":"f32","identity":"zarr content x",)" +
      encoding.substr(std::strlen(R"({"cell_shape":[8,8,6],"dtype":"f32",)"));
  EXPECT_EQ(node_hash("gaussian", 1, params, info, inputs, "zarr content x", "b1d"),
            hash_bytes(with_extras))
      << kWhy;
  // The hash function itself: 32 lowercase hex of XXH3-128 (high word first).
  EXPECT_EQ(hash_bytes("cellflow"), "414ce3889f9d577ca1436f4a3afdda4f") << kWhy;
}

// The graph kept as test data with a cache written by format 1
// (tests/data/cache_format1*): its hashes name the folders in that cache.
TEST(GoldenHash, CacheFormat1GraphHashes) {
  const std::string file =
      std::string(CELLFLOW_SOURCE_DIR) + "/tests/data/cache_format1.graph.json";
  const Graph g = Graph::build(load_graph_file(file), nodes::builtin_registry());
  const std::map<std::string, std::string> want = {
      {"raw", "3d9497855174f8a72442509748f62adf"},
      {"smooth", "fc9af2ff190bd464658c6a9ac41e39e6"},
      {"mask", "734b4b2de4a6d7c2429360db65f85490"},
      {"labels", "56df05e34b6c3621bbf9afe4a706aa38"},
      {"objects", "c08c2273a23dce345dbc6016eaea4794"},
  };
  ASSERT_EQ(g.nodes().size(), want.size());
  for (const auto& n : g.nodes()) {
    ASSERT_TRUE(want.count(n.def.id)) << n.def.id;
    EXPECT_EQ(n.hash, want.at(n.def.id)) << "node \"" << n.def.id << "\": " << kWhy;
    EXPECT_TRUE(fs::exists(fs::path(CELLFLOW_SOURCE_DIR) / "tests/data/cache_format1" / n.hash))
        << n.hash;
  }
}

}  // namespace
}  // namespace cellflow
