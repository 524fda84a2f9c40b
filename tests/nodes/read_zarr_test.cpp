// read.zarr: Zarr v2 arrays written by zarr-python (every codec, both
// separators, every dtype, big-endian types, missing chunks with a
// fill_value) and Zarr v3 arrays written by zarrita or encoded in Python
// (sharding, crc32c, gzip, transpose, chunk key encodings) read back
// bit-exactly with their own chunks and with cells that cut across them; clear
// errors for what it cannot read; the node hash follows the array's data.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "reader_fixtures.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::manifest_of;
using test::TempDir;

const std::string kMakeArrays =
    std::string(CELLFLOW_SOURCE_DIR) + "/tests/nodes/make_zarr_arrays.py";
const std::string kZarritaTool = std::string(CELLFLOW_SOURCE_DIR) + "/tests/js/zarrita_tool.mjs";
const std::string kMakeV3Arrays =
    std::string(CELLFLOW_SOURCE_DIR) + "/tests/nodes/make_zarr_v3_arrays.py";

Graph build_reader(const fs::path& path, const Value& cell_shape = Value(),
                   const std::string& hash = "stat") {
  GraphDef def;
  Value p(Value::Object{{"path", path.string()}, {"hash", hash}});
  if (!cell_shape.is_null()) p.set("cell_shape", cell_shape);
  def.add("in", "read.zarr", {}, p);
  return Graph::build(def, nodes::builtin_registry());
}

CellBuffer read_all_of(const Graph& g) {
  auto img = g.image("in");
  return img->read(img->grid().bounds());
}

CellBuffer raw_buffer(const fs::path& raw, DType dtype, const Shape& shape) {
  const std::string bytes = test::read_all(raw);
  CellBuffer b = CellBuffer::allocate(dtype, shape);
  EXPECT_EQ(bytes.size(), b.num_bytes()) << raw;
  std::memcpy(b.mutable_data(), bytes.data(), std::min(bytes.size(), b.num_bytes()));
  return b;
}

/// Writes one array with zarr-python; `code` sees `a` (the array) and `np`.
void python_array(const TempDir& tmp, const fs::path& path, const std::string& create_args,
                  const std::string& code = "a[...] = 1") {
  const std::string script =
      "import zarr, numcodecs, numpy as np\n"
      "a = zarr.open('" +
      path.string() + "', mode='w', " + create_args + ")\n" + code + "\n";
  const test::CommandResult r = test::run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
}

/// Reads every array of a manifest ({name, path, raw, dtype} of 13x17x10
/// arrays) with its own chunks and with cells that straddle them, against the
/// raw values the writer recorded.
void expect_manifest_reads(const Value& cases, const Shape& own_chunks) {
  for (const Value& c : cases.as_array()) {
    const std::string name = c.find("name")->as_string();
    const fs::path path = c.find("path")->as_string();
    const DType dtype = *parse_dtype(c.find("dtype")->as_string());
    const Shape shape = Shape{13, 17, 10};
    const CellBuffer expected = raw_buffer(c.find("raw")->as_string(), dtype, shape);

    const Graph own = build_reader(path);
    if (own_chunks.rank() > 0) EXPECT_EQ(own.node("in").info.cell_shape, own_chunks) << name;
    EXPECT_EQ(own.node("in").info.dtype, dtype) << name;
    EXPECT_TRUE(test::same_bytes(read_all_of(own), expected)) << name << " (own chunks)";

    // Cells that straddle chunks (and one cell holding the whole array).
    for (const Value& cs :
         {test::ints({6, 7, 3}), test::ints({13, 17, 10}), test::ints({2, 100, 9})}) {
      const Graph g = build_reader(path, cs);
      EXPECT_TRUE(test::same_bytes(read_all_of(g), expected))
          << name << " cells " << to_json_compact(cs);
    }
  }
}

TEST(ReadZarr, ArraysWrittenByZarrPythonReadBitExactly) {
  TempDir tmp;
  const Value cases = manifest_of(tmp, {CELLFLOW_PYTHON, kMakeArrays, tmp.path().string()});
  ASSERT_FALSE(cases.is_null());
  ASSERT_GE(cases.as_array().size(), 30u);
  expect_manifest_reads(cases, Shape{5, 8, 4});
}

// Zarr v3 chunks encoded by numpy + numcodecs + a Python CRC-32C, with
// hand-written zarr.json (gzip, crc32c and sharding, which zarrita cannot
// write; fill values; chunk key encodings; missing chunks and inner chunks).
TEST(ReadZarr, V3ArraysEncodedInPythonReadBitExactly) {
  TempDir tmp;
  const Value cases = manifest_of(tmp, {CELLFLOW_PYTHON, kMakeV3Arrays, tmp.path().string()});
  ASSERT_FALSE(cases.is_null());
  ASSERT_GE(cases.as_array().size(), 12u);
  expect_manifest_reads(cases, Shape());
  // The fixtures themselves, checked by another reader: zarrita reads the same
  // values (but for the cases the manifest marks as beyond zarrita 0.7.5).
  int checked = 0;
  for (const Value& c : cases.as_array()) {
    if (!c.find("zarrita")->as_bool()) continue;
    const fs::path raw = tmp / (c.find("name")->as_string() + ".zarrita.raw");
    const test::CommandResult r = test::run_command(
        {"node", kZarritaTool, "read", c.find("path")->as_string(), raw.string()}, tmp.path());
    ASSERT_EQ(r.exit_code, 0) << test::describe(r) << "\n(zarrita missing? run scripts/setup.sh)";
    EXPECT_TRUE(test::read_all(raw) == test::read_all(c.find("raw")->as_string()))
        << c.find("name")->as_string() << ": zarrita reads other values than the fixture's";
    ++checked;
  }
  EXPECT_GE(checked, 9);
}

// Zarr v3 arrays written by zarrita (the JavaScript implementation), one per
// codec chain it can encode.
TEST(ReadZarr, V3ArraysWrittenByZarritaReadBitExactly) {
  TempDir tmp;
  const Value cases = manifest_of(tmp, {"node", kZarritaTool, "write", tmp.path().string()},
                                  "\n(zarrita missing? run scripts/setup.sh)");
  ASSERT_FALSE(cases.is_null());
  ASSERT_GE(cases.as_array().size(), 13u);
  Value::Array with_dtypes;
  for (const Value& c : cases.as_array()) {
    Value d = c;
    std::string t = c.find("dtype")->as_string();  // "uint16" -> "u16", "int8" -> "i8"...
    t = t.starts_with("uint")  ? "u" + t.substr(4)
        : t.starts_with("int") ? "i" + t.substr(3)
                               : "f" + t.substr(5);
    d.set("dtype", t);
    with_dtypes.push_back(std::move(d));
  }
  expect_manifest_reads(Value(std::move(with_dtypes)), Shape{5, 8, 4});
}

// Damaged or unreadable v3 arrays: an error naming the file (and for
// metadata, the field), never zeros.
TEST(ReadZarr, DamagedV3ArraysAreErrorsNamingTheFile) {
  TempDir tmp;
  const Value cases =
      manifest_of(tmp, {CELLFLOW_PYTHON, kMakeV3Arrays, tmp.path().string(), "errors"});
  ASSERT_FALSE(cases.is_null());
  const std::map<std::string, std::string> why = {
      {"bad-crc32c", "crc32c checksum mismatch"},
      {"truncated-shard", "shorter than its index"},
      {"half-shard", "(shard index): crc32c checksum mismatch"},
      {"index-out-of-range", "points outside the file"},
      {"short-chunk", "bytes after decoding, expected"},
      {"unknown-codec", "\"codecs\"[1]: codec \"lz5\" is not supported"},
      {"bad-json", "zarr.json"},
  };
  test::expect_errors_name_the_file(
      cases, why, [](const std::string& path) { read_all_of(build_reader(path)); });
}

// An array that is a dataset of an OME-NGFF image group gets the group's
// physical space (dataset transforms, then the multiscale's; axis names and
// units), from NGFF 0.4 (.zattrs) and 0.5 (zarr.json); metadata that cannot
// give one keeps voxel space with a warning; the hash does not change.
TEST(ReadZarr, NgffImageArraysCarryTheGroupsSpace) {
  TempDir tmp;
  const fs::path g4 = tmp / "g4.ome.zarr";
  python_array(tmp, g4 / "s0", "shape=(2, 3, 4, 5, 6), chunks=(1, 3, 4, 5, 6), dtype='<u1'");
  const std::string before = build_reader(g4 / "s0").node("in").hash;
  EXPECT_TRUE(build_reader(g4 / "s0").node("in").info.space.is_voxel_space());
  test::write_all(g4 / ".zattrs", R"({"multiscales": [{"version": "0.4", "axes": [
      {"name": "t", "type": "time", "unit": "second"}, {"name": "ch", "type": "channel"},
      {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space"},
      {"name": "x", "type": "space", "unit": "micrometer"}],
    "datasets": [{"path": "s0", "coordinateTransformations": [
      {"type": "scale", "scale": [60, 1, 1.5, 0.5, 0.25]},
      {"type": "translation", "translation": [0, 0, 3, -1, 0.5]}]}],
    "coordinateTransformations": [{"type": "scale", "scale": [2, 1, 2, 1, 1]}]}]})");
  const Graph g = build_reader(g4 / "s0");
  EXPECT_EQ(g.node("in").hash, before);
  const Space& s = g.node("in").info.space;
  EXPECT_EQ(s.spacing, (std::vector<double>{120, 1, 3, 0.5, 0.25}));
  EXPECT_EQ(s.origin, (std::vector<double>{0, 0, 6, -1, 0.5}));
  EXPECT_EQ(s.axis_names, (std::vector<std::string>{"t", "ch", "z", "y", "x"}));
  EXPECT_EQ(s.units, (std::vector<std::string>{"second", "", "micrometer", "", "micrometer"}));

  // NGFF 0.5: the group's zarr.json, a Zarr v3 array.
  ASSERT_FALSE(manifest_of(tmp, {CELLFLOW_PYTHON, kMakeV3Arrays, tmp.path().string()}).is_null());
  const fs::path g5 = tmp / "g5.ome.zarr";
  fs::create_directories(g5);
  fs::rename(tmp / "gzip-u16.zarr", g5 / "0");
  test::write_all(g5 / "zarr.json", R"({"zarr_format": 3, "node_type": "group", "attributes":
    {"ome": {"version": "0.5", "multiscales": [{"axes": [{"name": "z", "type": "space",
      "unit": "nanometer"}, {"name": "y", "type": "space", "unit": "nanometer"},
      {"name": "x", "type": "space", "unit": "nanometer"}],
      "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [40, 8, 8]}, {"type": "translation",
        "translation": [100, 0, -4]}]}]}]}}})");
  const Space s5 = build_reader(g5 / "0").node("in").info.space;
  EXPECT_EQ(s5.spacing, (std::vector<double>{40, 8, 8}));
  EXPECT_EQ(s5.origin, (std::vector<double>{100, 0, -4}));
  EXPECT_EQ(s5.units, (std::vector<std::string>{"nanometer", "nanometer", "nanometer"}));

  // Transforms in a file: voxel space, and a warning naming the metadata file.
  test::write_all(g4 / ".zattrs", R"({"multiscales": [{"axes": ["t", "c", "z", "y", "x"],
    "datasets": [{"path": "s0", "coordinateTransformations": [
      {"type": "scale", "path": "scale.bin"}]}]}]})");
  std::vector<std::string> warnings;
  const LogSink previous =
      set_log_sink([&](LogLevel, const std::string& message) { warnings.push_back(message); });
  const Space unusable = build_reader(g4 / "s0").node("in").info.space;
  set_log_sink(previous);
  EXPECT_TRUE(unusable.is_voxel_space());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find((g4 / ".zattrs").string()), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("voxel space"), std::string::npos) << warnings[0];
}

TEST(ReadZarr, UnsupportedArraysAreClearErrors) {
  TempDir tmp;
  const auto expect_error = [&](const fs::path& path, const std::string& what) {
    try {
      build_reader(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("param \"path\""), std::string::npos) << e.what();
    }
  };
  expect_error(tmp / "absent.zarr", "is not a folder");
  fs::create_directories(tmp / "empty.zarr");
  expect_error(tmp / "empty.zarr", "no zarr.json or .zarray");

  python_array(tmp, tmp / "f.zarr", "shape=(4, 4), chunks=(2, 2), dtype='<u2', order='F'");
  expect_error(tmp / "f.zarr", "only C order");
  python_array(tmp, tmp / "filters.zarr",
               "shape=(4, 4), chunks=(2, 2), dtype='<f8', filters=[numcodecs.Delta(dtype='<f8')]");
  expect_error(tmp / "filters.zarr", "filters");
  python_array(tmp, tmp / "lz4.zarr",
               "shape=(4, 4), chunks=(2, 2), dtype='<u2', compressor=numcodecs.LZ4()");
  expect_error(tmp / "lz4.zarr", "compressor \"lz4\" is not supported");
  python_array(tmp, tmp / "c16.zarr", "shape=(4,), chunks=(2,), dtype='<c16'", "pass");
  expect_error(tmp / "c16.zarr", "dtype \"<c16\" is not supported");
  // Chunks whose element count overflows int64 (a hand-made input of
  // fuzz_read_zarr): refused as the .zarray's fault, before anything is sized by them.
  fs::create_directories(tmp / "huge.zarr");
  test::write_all(tmp / "huge.zarr" / ".zarray",
                  R"({"zarr_format": 2, "shape": [10, 10], "chunks": [4294967296, 4294967296],
                      "dtype": "<u2", "compressor": null, "fill_value": 0})");
  expect_error(tmp / "huge.zarr", "2^36 elements per cell");

  // A damaged chunk is an error naming the file, not data.
  python_array(tmp, tmp / "ok.zarr",
               "shape=(4, 4), chunks=(2, 2), dtype='<u2', compressor=numcodecs.Zstd()");
  test::write_all(tmp / "ok.zarr" / "1.1", "garbage");
  const Graph g = build_reader(tmp / "ok.zarr");
  try {
    read_all_of(g);
    ADD_FAILURE() << "no error for a damaged chunk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1.1"), std::string::npos) << e.what();
  }

  // Wrong cell_shape.
  try {
    build_reader(tmp / "ok.zarr", test::ints({2, 2, 2}));
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("param \"cell_shape\" must have 2 entries"),
              std::string::npos)
        << e.what();
  }
}

TEST(ReadZarr, HashFollowsTheData) {
  TempDir tmp;
  const fs::path path = tmp / "a.zarr";
  python_array(tmp, path, "shape=(6, 6), chunks=(3, 3), dtype='<u2', compressor=numcodecs.Zstd()",
               "a[...] = np.arange(36).reshape(6, 6)");
  const std::string stat0 = build_reader(path).node("in").hash;
  const std::string content0 = build_reader(path, Value(), "content").node("in").hash;
  EXPECT_NE(stat0, content0);
  EXPECT_EQ(build_reader(path).node("in").hash, stat0) << "the hash is stable";

  // Rewriting one chunk with the same values: "stat" changes, "content" does not.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  python_array(tmp, path, "shape=(6, 6), chunks=(3, 3), dtype='<u2', compressor=numcodecs.Zstd()",
               "a[...] = np.arange(36).reshape(6, 6)");
  const std::string stat1 = build_reader(path).node("in").hash;
  EXPECT_NE(stat1, stat0);
  EXPECT_EQ(build_reader(path, Value(), "content").node("in").hash, content0);

  // New values: both change.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  test::CommandResult r = test::run_command(
      {CELLFLOW_PYTHON, "-c",
       "import zarr\na = zarr.open('" + path.string() + "', mode='r+')\na[0, 0] = 99\n"},
      tmp.path());
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_NE(build_reader(path).node("in").hash, stat1);
  EXPECT_NE(build_reader(path, Value(), "content").node("in").hash, content0);
  EXPECT_EQ(read_all_of(build_reader(path)).as<uint16_t>()[0], 99);

  try {
    build_reader(path, Value(), "mtime");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("param \"hash\" must be \"stat\" or \"content\""),
              std::string::npos);
  }
}

TEST(ReadZarr, ASourceThatChangesUnderARunIsAnErrorNotAMix) {
  // The node serves its cells from the array (no copy in the cache): after a
  // chunk is rewritten, a cell not read yet is an error naming the file, in
  // the v2 flat layout and with "/" chunk folders.
  for (const std::string sep : {".", "/"}) {
    TempDir tmp;
    const fs::path path = tmp / "a.zarr";
    const std::string create = "shape=(8, 8), chunks=(4, 4), dtype='<f4', dimension_separator='" +
                               sep + "', compressor=numcodecs.Zstd()";
    python_array(tmp, path, create, "a[...] = np.arange(64).reshape(8, 8)");
    const Graph g = build_reader(path);
    auto img = g.image("in");
    const CellBuffer first = img->read(Box(Dims{0, 0}, Dims{4, 4}));  // cell (0,0), before
    EXPECT_EQ(first.as<float>()[5], 9.0f);                            // (1, 1)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const test::CommandResult r = test::run_command(
        {CELLFLOW_PYTHON, "-c",
         "import zarr\na = zarr.open('" + path.string() + "', mode='r+')\na[4:, 4:] = -1\n"},
        tmp.path());
    ASSERT_EQ(r.exit_code, 0) << test::describe(r);
    try {
      img->read(Box(Dims{4, 4}, Dims{8, 8}));
      ADD_FAILURE() << sep << ": a changed chunk was served";
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("changed since the graph was built"), std::string::npos) << what;
      EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    }
    // Built again, the graph has a new hash and reads the new data.
    const Graph again = build_reader(path);
    EXPECT_NE(again.node("in").hash, g.node("in").hash);
    EXPECT_EQ(again.image("in")->read(Box(Dims{4, 4}, Dims{8, 8})).as<float>()[0], -1.0f);
  }
}

TEST(ReadZarr, TheCacheHoldsNoCopyOfTheSourceUnlessAsked) {
  TempDir tmp;
  const fs::path path = tmp / "a.zarr";
  python_array(tmp, path, "shape=(16, 16), chunks=(8, 8), dtype='<f4'",
               "a[...] = np.arange(256).reshape(16, 16)");
  const auto run = [&](const fs::path& cache, std::optional<bool> persist_source) {
    GraphDef def;
    def.add("in", "read.zarr", {}, Value(Value::Object{{"path", path.string()}}));
    if (persist_source) def.nodes.back().persist = *persist_source;
    def.add("plus", "add", {"in"}, Value(Value::Object{{"scalar", 1.0}}));
    def.outputs = {"plus"};
    GraphOptions o;
    o.cache_root = cache;
    const Graph g = Graph::build(def, nodes::builtin_registry(), o);
    const CellBuffer out = g.image("plus")->read(g.image("plus")->grid().bounds());
    EXPECT_EQ(out.as<float>()[17], 18.0f);
    return std::pair{g.node("in").hash, g.node("plus").hash};
  };
  const auto [in_hash, plus_hash] = run(tmp / "cache", std::nullopt);
  EXPECT_TRUE(fs::exists(tmp / "cache" / plus_hash));
  EXPECT_FALSE(fs::exists(tmp / "cache" / in_hash)) << "the source was copied into the cache";
  // "persist": true stores it after all; the hashes do not depend on the choice.
  const auto [in2, plus2] = run(tmp / "cache2", true);
  EXPECT_EQ(in2, in_hash);
  EXPECT_EQ(plus2, plus_hash);
  EXPECT_TRUE(fs::exists(tmp / "cache2" / in_hash));
}

}  // namespace
}  // namespace cellflow
