// read.n5: N5 datasets written by zarr-python's N5Store and N5FSStore (every
// compression it reads, every dtype, 2-D to 4-D shapes the blocks do not
// divide, missing blocks, edge blocks holding only their in-bounds part) read
// back bit-exactly with their own blocks and with cells that cut across them;
// damaged blocks and unreadable metadata are errors naming the file; the node
// hash follows the data; the resolution gives the spacing.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
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
using test::TempDir;

const std::string kMakeDatasets =
    std::string(CELLFLOW_SOURCE_DIR) + "/tests/nodes/make_n5_datasets.py";

Graph build_reader(const fs::path& path, const Value& cell_shape = Value(),
                   const std::string& hash = "stat") {
  GraphDef def;
  Value p(Value::Object{{"path", path.string()}, {"hash", hash}});
  if (!cell_shape.is_null()) p.set("cell_shape", cell_shape);
  def.add("in", "read.n5", {}, p);
  return Graph::build(def, nodes::builtin_registry());
}

CellBuffer read_all_of(const Graph& g) {
  auto img = g.image("in");
  return img->read(img->grid().bounds());
}

Shape shape_of(const Value& list) {
  std::vector<int64_t> v;
  for (const Value& x : list.as_array()) v.push_back(x.as_int());
  return Shape::from(v);
}

/// Runs make_n5_datasets.py (with `mode`, if any) and parses its manifest.
Value datasets_manifest(const TempDir& tmp, const std::string& mode = "") {
  std::vector<std::string> argv = {CELLFLOW_PYTHON, kMakeDatasets, tmp.path().string()};
  if (!mode.empty()) argv.push_back(mode);
  return test::manifest_of(tmp, argv, "\n(needs numpy and zarr 2.x with N5Store: python3-zarr)");
}

TEST(ReadN5, DatasetsWrittenByZarrPythonReadBitExactly) {
  TempDir tmp;
  const Value cases = datasets_manifest(tmp);
  ASSERT_FALSE(cases.is_null());
  ASSERT_GE(cases.as_array().size(), 18u);
  for (const Value& c : cases.as_array()) {
    const std::string name = c.find("name")->as_string();
    const DType dtype = *parse_dtype(c.find("dtype")->as_string());
    const Shape shape = shape_of(*c.find("shape"));
    const std::string raw = test::read_all(c.find("raw")->as_string());
    CellBuffer expected = CellBuffer::allocate(dtype, shape);
    ASSERT_EQ(raw.size(), expected.num_bytes()) << name;
    std::memcpy(expected.mutable_data(), raw.data(), raw.size());

    const Graph own = build_reader(c.find("path")->as_string());
    EXPECT_EQ(own.node("in").info.shape, shape) << name;
    EXPECT_EQ(own.node("in").info.cell_shape, shape_of(*c.find("chunks"))) << name;
    EXPECT_EQ(own.node("in").info.dtype, dtype) << name;
    EXPECT_TRUE(own.node("in").info.space.is_voxel_space()) << name;
    EXPECT_TRUE(test::same_bytes(read_all_of(own), expected)) << name << " (own blocks)";

    // Cells that straddle blocks, and one cell holding the whole dataset.
    std::vector<int64_t> odd(static_cast<size_t>(shape.rank()));
    for (int d = 0; d < shape.rank(); ++d) odd[static_cast<size_t>(d)] = 3 + d;
    for (const Value& cs : {Value::list(odd), Value::list(shape.to_vector())}) {
      EXPECT_TRUE(
          test::same_bytes(read_all_of(build_reader(c.find("path")->as_string(), cs)), expected))
          << name << " cells " << to_json_compact(cs);
    }
  }
}

// Damaged blocks (at read time) and unreadable metadata (at graph build): an
// error naming the file, never zeros.
TEST(ReadN5, DamagedDatasetsAreErrorsNamingTheFile) {
  TempDir tmp;
  const Value cases = datasets_manifest(tmp, "errors");
  ASSERT_FALSE(cases.is_null());
  const std::map<std::string, std::string> why = {
      {"truncated-gzip", "cannot inflate"},
      {"truncated-raw", "bytes, expected"},
      {"raw-extra-bytes", "bytes, expected"},
      {"header-rank", "the block header has 3 dimensions, the dataset 2"},
      {"header-size", "the block header gives size (3,3) (fastest axis first), expected (4,3)"},
      {"header-mode", "object block (mode 2)"},
      {"header-only", "too short for its 12-byte block header"},
      {"no-attributes", "not an N5 dataset (no attributes.json)"},
      {"bad-datatype", "\"dataType\" \"complex64\" is not supported"},
      {"bzip2", "compression \"bzip2\" is not supported"},
      {"bad-json", "attributes.json"},
      {"group", "this is an N5 group, not a dataset"},
  };
  test::expect_errors_name_the_file(
      cases, why, [](const std::string& path) { read_all_of(build_reader(path)); });
}

TEST(ReadN5, ParamsAreChecked) {
  TempDir tmp;
  const auto expect_error = [&](const fs::path& path, const Value& cell_shape,
                                const std::string& what) {
    try {
      build_reader(path, cell_shape);
      ADD_FAILURE() << "no error for " << path;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(tmp / "absent.n5", Value(),
               "param \"path\": " + (tmp / "absent.n5").string() + " is not a folder");
  const fs::path ds = tmp / "a.n5" / "s0";
  test::write_all(ds / "attributes.json",
                  R"({"dimensions": [7, 6], "blockSize": [4, 3], "dataType": "uint8",
                      "compression": {"type": "raw"}})");
  EXPECT_EQ(build_reader(ds).node("in").info.shape, (Shape{6, 7}));
  EXPECT_EQ(build_reader(ds).node("in").info.cell_shape, (Shape{3, 4}));
  EXPECT_EQ(build_reader(ds, test::ints({5, 100})).node("in").info.cell_shape, (Shape{5, 7}));
  expect_error(ds, test::ints({2, 2, 2}), "param \"cell_shape\" must have 2 entries");
  expect_error(ds, test::ints({2, 0}), "param \"cell_shape\" must be > 0");
  // No block at all: zeros.
  const CellBuffer zeros = read_all_of(build_reader(ds));
  for (int64_t i = 0; i < zeros.shape().product(); ++i) ASSERT_EQ(zeros.as<uint8_t>()[i], 0);
  // xz, lz4: refused by name; N5 0.x "compressionType" is read.
  for (const char* type : {"xz", "lz4"}) {
    test::write_all(ds / "attributes.json",
                    std::string(R"({"dimensions": [7, 6], "blockSize": [4, 3], "dataType":
                        "uint8", "compression": {"type": ")") +
                        type + R"("}})");
    expect_error(ds, Value(), fmt::format("compression \"{}\" is not supported", type));
  }
  test::write_all(ds / "attributes.json",
                  R"({"dimensions": [7, 6], "blockSize": [4, 3], "dataType": "uint8",
                      "compressionType": "bzip2"})");
  expect_error(ds, Value(), "compression \"bzip2\" is not supported");
  test::write_all(ds / "attributes.json",
                  R"({"dimensions": [7, 6], "blockSize": [4], "dataType": "uint8"})");
  expect_error(ds, Value(), "\"blockSize\" and \"dimensions\" differ in rank");
}

// "pixelResolution" (or "resolution") gives the spacing, reversed to C order.
TEST(ReadN5, ResolutionGivesTheSpacing) {
  TempDir tmp;
  const fs::path ds = tmp / "a.n5" / "s0";
  const std::string base =
      R"({"dimensions": [7, 6, 5], "blockSize": [4, 3, 2], "dataType": "uint16",
          "compression": {"type": "gzip", "useZlib": false})";
  test::write_all(ds / "attributes.json", base + "}");
  EXPECT_TRUE(build_reader(ds).node("in").info.space.is_voxel_space());
  test::write_all(ds / "attributes.json",
                  base + R"(, "pixelResolution": {"dimensions": [0.25, 0.5, 2.0], "unit": "um"}})");
  Space s = build_reader(ds).node("in").info.space;
  EXPECT_EQ(s.spacing, (std::vector<double>{2.0, 0.5, 0.25}));
  EXPECT_EQ(s.units, (std::vector<std::string>{"micrometer", "micrometer", "micrometer"}));
  test::write_all(ds / "attributes.json", base + R"(, "resolution": [4, 4, 40]})");
  s = build_reader(ds).node("in").info.space;
  EXPECT_EQ(s.spacing, (std::vector<double>{40, 4, 4}));
  EXPECT_EQ(s.units, (std::vector<std::string>{"", "", ""}));
  // Unusable: voxel space, with a warning naming attributes.json, not an error.
  std::vector<std::string> warnings;
  const LogSink previous =
      set_log_sink([&](LogLevel, const std::string& message) { warnings.push_back(message); });
  test::write_all(ds / "attributes.json", base + R"(, "resolution": [4, 4]})");
  EXPECT_TRUE(build_reader(ds).node("in").info.space.is_voxel_space());
  test::write_all(ds / "attributes.json",
                  base + R"(, "pixelResolution": {"dimensions": [1, 1, 1], "unit": "cubits"}})");
  EXPECT_TRUE(build_reader(ds).node("in").info.space.is_voxel_space());
  set_log_sink(previous);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("\"resolution\" must list 3 numbers"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("unit \"cubits\""), std::string::npos) << warnings[1];
  for (const std::string& w : warnings)
    EXPECT_NE(w.find((ds / "attributes.json").string()), std::string::npos) << w;
}

TEST(ReadN5, HashFollowsTheData) {
  TempDir tmp;
  const fs::path container = tmp / "c.n5";
  const auto write = [&](const std::string& code) {
    const std::string script =
        "import zarr, numcodecs, numpy as np\n"
        "a = zarr.open(zarr.N5Store('" +
        container.string() +
        "'), mode='a', path='s0', shape=(6, 6), chunks=(3, 3), dtype='<u2', "
        "compressor=numcodecs.Zstd())\n" +
        code + "\n";
    const test::CommandResult r = test::run_command({CELLFLOW_PYTHON, "-c", script}, tmp.path());
    ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  };
  const fs::path ds = container / "s0";
  write("a[...] = np.arange(36).reshape(6, 6)");
  const std::string stat0 = build_reader(ds).node("in").hash;
  const std::string content0 = build_reader(ds, Value(), "content").node("in").hash;
  EXPECT_NE(stat0, content0);
  EXPECT_EQ(build_reader(ds).node("in").hash, stat0) << "the hash is stable";

  // The same values written again: "stat" changes, "content" does not.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write("a[...] = np.arange(36).reshape(6, 6)");
  const std::string stat1 = build_reader(ds).node("in").hash;
  EXPECT_NE(stat1, stat0);
  EXPECT_EQ(build_reader(ds, Value(), "content").node("in").hash, content0);

  // New values: both change.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write("a[0, 0] = 99");
  EXPECT_NE(build_reader(ds).node("in").hash, stat1);
  EXPECT_NE(build_reader(ds, Value(), "content").node("in").hash, content0);
  EXPECT_EQ(read_all_of(build_reader(ds)).as<uint16_t>()[0], 99);
}

}  // namespace
}  // namespace cellflow
