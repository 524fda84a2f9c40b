// read.image: files written by export_image (what `cellflow export` writes) read
// back bit-exactly in every format and for cell shapes that do not divide the
// image; raw NRRD and MetaImage are streamed cell by cell while TIFF is read
// once; hand-written NRRD headers (big-endian, byte skip, detached data); the
// hash follows the file (stat or content); clear errors naming the file.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/nodes/image_export.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

/// The part `box` of `whole` (which covers [0, shape)).
CellBuffer crop(const CellBuffer& whole, const Box& box) {
  CellBuffer out = CellBuffer::allocate(whole.dtype(), box.shape());
  copy_region(whole.data(), Box::from_shape(whole.shape()), out.mutable_data(), box, box,
              dtype_size(whole.dtype()));
  return out;
}

/// Writes a synthetic image to `file` with export_image; returns its values.
CellBuffer write_image(const fs::path& file, const Shape& shape, const std::string& dtype,
                       int seed) {
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", Value::list(shape.to_vector())},
                              {"cell_shape", Value::list(shape.to_vector())},
                              {"dtype", dtype},
                              {"seed", seed},
                              {"count", 6},
                              {"radius", test::floats({2.0, 5.0})},
                              {"noise", 0.2}}));
  const Graph g = Graph::build(def, nodes::builtin_registry());
  nodes::export_image(*g.image("raw"), file);
  return g.image("raw")->read(Box::from_shape(shape));
}

Graph build_reader(const fs::path& file, const Value& cell_shape = Value(),
                   const std::string& hash = "stat") {
  GraphDef def;
  Value p(Value::Object{{"path", file.string()}, {"hash", hash}});
  if (!cell_shape.is_null()) p.set("cell_shape", cell_shape);
  def.add("in", "read.image", {}, p);
  return Graph::build(def, nodes::builtin_registry());
}

CellBuffer read_all_of(const Graph& g) {
  auto img = g.image("in");
  return img->read(img->grid().bounds());
}

std::string hash_of(const fs::path& file, const std::string& mode = "stat") {
  return build_reader(file, Value(), mode).node("in").hash;
}

TEST(ReadImage, ExportedFilesRoundTripBitExactly) {
  TempDir tmp;
  struct Case {
    std::string file;
    std::string dtype;
  };
  // TIFF keeps 8/16-bit integers and f32; NRRD and MetaImage keep every dtype.
  const std::vector<Case> cases = {
      {"a.tif", "u8"},   {"b.tif", "u16"},  {"c.tiff", "i16"}, {"d.tif", "f32"},  {"e.nrrd", "u8"},
      {"f.nrrd", "i16"}, {"g.nrrd", "u32"}, {"h.nrrd", "i64"}, {"i.nrrd", "f32"}, {"j.nrrd", "f64"},
      {"k.mha", "u16"},  {"l.mha", "f64"},  {"m.mha", "i32"},  {"n.mhd", "f32"},  {"o.mhd", "u64"},
  };
  const Shape shape{11, 19, 14};
  int seed = 1;
  for (const Case& c : cases) {
    const CellBuffer expected = write_image(tmp / c.file, shape, c.dtype, seed++);
    for (const Value& cells :
         {Value(), test::ints({4, 8, 5}), test::ints({11, 3, 14}), test::ints({1, 19, 6})}) {
      const Graph g = build_reader(tmp / c.file, cells);
      EXPECT_EQ(g.node("in").info.shape, shape) << c.file;
      EXPECT_EQ(g.node("in").info.dtype, *parse_dtype(c.dtype)) << c.file;
      EXPECT_TRUE(test::same_bytes(read_all_of(g), expected))
          << c.file << " cells " << to_json_compact(cells);
    }
  }
  // 2-D: PNG (u8, u16) and TIFF.
  const Shape plane{23, 31};
  for (const Case& c :
       std::vector<Case>{{"p.png", "u8"}, {"q.png", "u16"}, {"r.tif", "f32"}, {"s.nrrd", "i8"}}) {
    const CellBuffer expected = write_image(tmp / c.file, plane, c.dtype, seed++);
    const Graph g = build_reader(tmp / c.file, test::ints({10, 7}));
    EXPECT_EQ(g.node("in").info.shape, plane) << c.file;
    EXPECT_TRUE(test::same_bytes(read_all_of(g), expected)) << c.file;
  }
}

/// Reads cell (0,0,0), replaces the file by another image of the same type
/// and shape, then reads the last cell: a streamed file gives the new
/// values, a file read whole at the first cell the old ones.
void check_streaming(const fs::path& file, const std::string& dtype, bool streamed) {
  const Shape shape{20, 20, 20};
  const CellBuffer old_values = write_image(file, shape, dtype, 11);
  const Graph g = build_reader(file, test::ints({8, 8, 8}));
  auto img = g.image("in");
  const Box first = Box({0, 0, 0}, {8, 8, 8});
  const Box last = Box({16, 16, 16}, {20, 20, 20});
  ASSERT_TRUE(test::same_bytes(img->read(first), crop(old_values, first))) << file;
  const CellBuffer new_values = write_image(file, shape, dtype, 12);
  ASSERT_FALSE(crop(new_values, last).equals(crop(old_values, last)));
  if (streamed) {
    // A streamed file is read cell by cell: a cell read after the file
    // changed would mix old and new data, so it is an error naming the file.
    try {
      img->read(last);
      ADD_FAILURE() << file << ": a cell of the changed file was served";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(file.string() + " changed since the graph was built"),
                std::string::npos)
          << e.what();
    }
  } else {
    // A file read once serves every cell from that read.
    EXPECT_TRUE(test::same_bytes(img->read(last), crop(old_values, last)))
        << file << " is not read once";
  }
}

TEST(ReadImage, RawNrrdAndMetaImageAreStreamedTiffIsReadOnce) {
  TempDir tmp;
  check_streaming(tmp / "a.nrrd", "u16", true);
  check_streaming(tmp / "b.mha", "f32", true);
  check_streaming(tmp / "c.tif", "u16", false);
}

TEST(ReadImage, HandWrittenNrrdBigEndianByteSkipDetachedData) {
  TempDir tmp;
  // sizes are fastest-first: x=5, y=4, z=3 -> shape (3, 4, 5).
  test::write_all(tmp / "h.nhdr",
                  "NRRD0004\n# a comment\ntype: uint16\ndimension: 3\nsizes: 5 4 3\nendian: big\n"
                  "encoding: raw\nspacings: 1 1 1\nbyte skip: 7\n"
                  "data file: h.raw\n\n");
  std::string data = "JUNKJUN";
  for (int i = 0; i < 60; ++i) {
    const uint16_t v = static_cast<uint16_t>(i * 257 + 3);
    data += static_cast<char>(v >> 8);
    data += static_cast<char>(v & 0xff);
  }
  test::write_all(tmp / "h.raw", data);
  const Graph g = build_reader(tmp / "h.nhdr", test::ints({2, 3, 2}));
  ASSERT_EQ(g.node("in").info.shape, (Shape{3, 4, 5}));
  ASSERT_EQ(g.node("in").info.dtype, DType::kU16);
  const CellBuffer b = read_all_of(g);
  for (int i = 0; i < 60; ++i)
    ASSERT_EQ(b.as<uint16_t>()[i], static_cast<uint16_t>(i * 257 + 3)) << i;

  // The detached data file is part of the identity.
  const std::string before = hash_of(tmp / "h.nhdr");
  fs::last_write_time(tmp / "h.raw", fs::last_write_time(tmp / "h.raw") + std::chrono::seconds(5));
  EXPECT_NE(hash_of(tmp / "h.nhdr"), before);
}

TEST(ReadImage, HashFollowsTheFile) {
  TempDir tmp;
  const fs::path file = tmp / "x.nrrd";
  write_image(file, Shape{6, 7, 8}, "f32", 3);
  const std::string stat0 = hash_of(file);
  const std::string content0 = hash_of(file, "content");
  EXPECT_EQ(hash_of(file), stat0);
  EXPECT_NE(stat0, content0);

  // A touch changes "stat", not "content".
  fs::last_write_time(file, fs::last_write_time(file) + std::chrono::seconds(3));
  const std::string stat1 = hash_of(file);
  EXPECT_NE(stat1, stat0);
  EXPECT_EQ(hash_of(file, "content"), content0);

  // New content changes both; and the hash flows downstream.
  write_image(file, Shape{6, 7, 8}, "f32", 4);
  EXPECT_NE(hash_of(file), stat1);
  EXPECT_NE(hash_of(file, "content"), content0);

  // A .mhd's detached .raw is part of the identity too.
  write_image(tmp / "y.mhd", Shape{4, 5, 6}, "u8", 5);
  const std::string mhd0 = hash_of(tmp / "y.mhd");
  fs::path raw;
  for (const auto& e : fs::directory_iterator(tmp.path()))
    if (e.path().stem() == "y" && e.path().extension() != ".mhd") raw = e.path();
  ASSERT_FALSE(raw.empty());
  fs::last_write_time(raw, fs::last_write_time(raw) + std::chrono::seconds(3));
  EXPECT_NE(hash_of(tmp / "y.mhd"), mhd0);
}

TEST(ReadImage, ClearErrorsNamingTheFile) {
  TempDir tmp;
  const auto expect_error = [&](const fs::path& file, const std::string& what) {
    try {
      build_reader(file);
      ADD_FAILURE() << "no error for " << file;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
      EXPECT_NE(msg.find(file.filename().string()), std::string::npos) << msg;
    }
  };
  expect_error(tmp / "missing.tif", "does not exist");
  test::write_all(tmp / "text.tif", "this is not an image\n");
  expect_error(tmp / "text.tif", "no ITK reader recognizes this file");
  // An RGB MetaImage.
  test::write_all(tmp / "rgb.mha",
                  "ObjectType = Image\nNDims = 2\nDimSize = 2 2\nElementType = MET_UCHAR\n"
                  "ElementNumberOfChannels = 3\nElementDataFile = LOCAL\n" +
                      std::string(12, '\x7f'));
  expect_error(tmp / "rgb.mha", "3 components are not supported");
  fs::create_directories(tmp / "folder.tif");
  expect_error(tmp / "folder.tif", "is not a file");
  write_image(tmp / "ok.nrrd", Shape{4, 4}, "u8", 1);
  try {
    build_reader(tmp / "ok.nrrd", test::ints({2, 2, 2}));
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("param \"cell_shape\" must have 2 entries"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace cellflow
