// The parts of a stored cell that outside readers (zarr-python, napari) depend
// on, pinned exactly: the .zarray text of a node's array, the .zgroup text, the
// cell file's path, and the values a plain blosc decoder (as zarr-python's
// numcodecs uses, ignoring anything after the frame) gets from a cell file —
// an edge cell stored full-size, zero-padded, in C order. The bytes of the
// file itself (the checksum trailer after the frame) are not pinned here: that
// part of the format is cellflow's own and may change with the cache format.
#include <blosc.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/cache/zarr_shard.hpp"
#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "cellflow/nodes/builtin.hpp"
#include "cellflow/store/layout.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kPinnedCellHash = "d920a0ee4f3dc6fb";
constexpr const char* kWhy =
    "the .zarray text and the decoded cell are a contract with zarr-python and napari";

// What zarr-python does with a chunk file: blosc-decompress the frame at its
// start (the header says how long it is) into a full chunk.
template <class T>
std::vector<T> blosc_decode(const std::string& stored) {
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
  EXPECT_LE(cbytes, stored.size());
  EXPECT_EQ(nbytes % sizeof(T), 0u);
  std::vector<T> out(nbytes / sizeof(T));
  const int n = blosc_decompress_ctx(stored.data(), out.data(), nbytes, 1);
  EXPECT_EQ(n, static_cast<int>(nbytes));
  return out;
}

TEST(CellFormat, ZarrayAndZgroupText) {
  TempDir tmp;
  CacheDirectory cache(tmp / "cache");
  const std::string hash = "0123456789abcdef0123456789abcdef";
  cache.open_node(hash, DType::kU16, CellGrid({24, 20, 16}, {8, 8, 6}), R"({"op":"x"})");
  EXPECT_EQ(test::read_all(tmp / "cache" / hash / "0" / ".zarray"),
            "{\n"
            "  \"chunks\": [8, 8, 6],\n"
            "  \"compressor\": {\"blocksize\": 0, \"clevel\": 5, \"cname\": \"lz4\", \"id\": "
            "\"blosc\", \"shuffle\": 2},\n"
            "  \"dimension_separator\": \"/\",\n"
            "  \"dtype\": \"<u2\",\n"
            "  \"fill_value\": 0,\n"
            "  \"filters\": null,\n"
            "  \"order\": \"C\",\n"
            "  \"shape\": [24, 20, 16],\n"
            "  \"zarr_format\": 2\n"
            "}\n")
      << kWhy;
  EXPECT_EQ(test::read_all(tmp / "cache" / hash / ".zgroup"), "{\n  \"zarr_format\": 2\n}\n")
      << kWhy;
  // The dtype spellings of every other type.
  const std::vector<std::pair<DType, const char*>> dtypes = {
      {DType::kU8, "|u1"},  {DType::kU32, "<u4"}, {DType::kU64, "<u8"},
      {DType::kI8, "|i1"},  {DType::kI16, "<i2"}, {DType::kI32, "<i4"},
      {DType::kI64, "<i8"}, {DType::kF32, "<f4"}, {DType::kF64, "<f8"}};
  for (const auto& [t, zarr] : dtypes) {
    const std::string text = zarray_json(t, CellGrid({5, 7}, {4, 4}));
    EXPECT_NE(text.find(std::string("\"dtype\": \"") + zarr + "\","), std::string::npos)
        << dtype_name(t) << ": " << text << "\n"
        << kWhy;
  }
}

TEST(CellFormat, EdgeCellDecodesFullSizeZeroPadded) {
  TempDir tmp;
  CacheDirectory cache(tmp / "cache");
  const std::string hash = "fedcba9876543210fedcba9876543210";
  // 5 x 7 image, 4 x 4 cells: cell (1, 1) holds rows 4..5 and columns 4..7,
  // i.e. 1 x 3 voxels, stored as a full 4 x 4 chunk.
  auto arr = cache.open_node(hash, DType::kU16, CellGrid({5, 7}, {4, 4}), R"({"op":"x"})");
  CellBuffer edge = CellBuffer::allocate(DType::kU16, Shape{1, 3});
  const uint16_t values[3] = {1, 65535, 4242};
  std::memcpy(edge.mutable_data(), values, sizeof values);
  arr->write(CellIndex{1, 1}, edge);
  const fs::path file = tmp / "cache" / hash / "0" / "1" / "1";
  EXPECT_EQ(arr->cell_path(CellIndex{1, 1}), file);
  ASSERT_TRUE(fs::is_regular_file(file));
  const std::vector<uint16_t> want = {1, 65535, 4242, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(blosc_decode<uint16_t>(test::read_all(file)), want) << kWhy;
  // The store reads back exactly the part inside the image.
  const auto back = arr->read(CellIndex{1, 1});
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->shape(), (Shape{1, 3}));
  EXPECT_EQ(std::memcmp(back->data(), values, sizeof values), 0);
}

TEST(CellFormat, EncodedChunkDecodesWithPlainBlosc) {
  // A full f32 chunk of 2 x 3 x 4 with exactly representable values.
  std::vector<float> v(24);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f - 2.0f;
  const std::string identity = layout::cell_identity("0123456789abcdef0123456789abcdef", {1, 2, 3});
  const std::string stored =
      ZarrArray::encode_chunk(v.data(), v.size() * sizeof(float), 4, identity);
  const std::vector<float> want = {-2.0f, -1.75f, -1.5f, -1.25f, -1.0f, -0.75f, -0.5f, -0.25f,
                                   0.0f,  0.25f,  0.5f,  0.75f,  1.0f,  1.25f,  1.5f,  1.75f,
                                   2.0f,  2.25f,  2.5f,  2.75f,  3.0f,  3.25f,  3.5f,  3.75f};
  EXPECT_EQ(blosc_decode<float>(stored), want) << kWhy;
  std::vector<float> back(v.size());
  ZarrArray::decode_chunk(stored, back.data(), back.size() * sizeof(float), "chunk", identity);
  EXPECT_EQ(back, want);
}

// The bytes of a stored cell in cache format 2, pinned: the blosc-lz4 frame
// (shuffle, level 5) and the 16-byte trailer — XXH3-64 of the frame seeded
// with the XXH3-64 of the cell's identity "<hash>:i,j,k", then "CFLWXH32".
// A change here makes every stored cell unreadable: bump the cache format.
TEST(CellFormat, StoredCellBytesArePinned) {
  std::vector<uint16_t> v(4 * 4 * 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(i * 37 % 1000);
  const std::string identity = layout::cell_identity("0123456789abcdef0123456789abcdef", {1, 2, 3});
  EXPECT_EQ(identity, "0123456789abcdef0123456789abcdef:1,2,3");
  const std::string stored =
      ZarrArray::encode_chunk(v.data(), v.size() * sizeof(uint16_t), 2, identity);
  ASSERT_GE(stored.size(), 16u);
  EXPECT_EQ(stored.substr(stored.size() - 8), "CFLWXH32");
  EXPECT_EQ(fmt::format("{:016x}", XXH3_64bits(stored.data(), stored.size())), kPinnedCellHash)
      << "the stored bytes of a cell changed: " << kWhy;
}

// Integer cells are stored bit-shuffled (masks and labels pack several times
// smaller), float cells byte-shuffled; blosc records the filter in each
// frame's flags (0x04 bit shuffle, 0x01 byte shuffle), so one decoder reads
// both. An array whose .zarray says byte shuffle (written before) keeps it.
TEST(CellFormat, IntegerCellsAreBitShuffledFloatCellsByteShuffled) {
  TempDir tmp;
  CacheDirectory cache(tmp / "cache");
  const auto flags_of = [&](const std::string& hash) {
    const std::string stored = test::read_all(tmp / "cache" / hash / "0" / "0" / "0");
    return static_cast<unsigned char>(stored.at(2));
  };
  const auto write_one = [&](const std::string& hash, DType dtype) {
    auto store = cache.open_node(hash, dtype, CellGrid({8, 8}, {8, 8}), R"({"op":"x"})");
    CellBuffer b = CellBuffer::zeros(dtype, Shape{8, 8});
    for (size_t k = 0; k < b.num_bytes(); k += 3) b.mutable_data()[k] = std::byte{1};
    store->write(CellIndex{0, 0}, b);
    return std::pair{std::move(store), b};
  };
  const std::string labels = "11111111111111111111111111111111";
  const std::string smooth = "22222222222222222222222222222222";
  auto [ls, lb] = write_one(labels, DType::kU32);
  auto [ss, sb] = write_one(smooth, DType::kF32);
  EXPECT_EQ(flags_of(labels) & 0x05, 0x04) << "u32 cells bit-shuffled";
  EXPECT_EQ(flags_of(smooth) & 0x05, 0x01) << "f32 cells byte-shuffled";
  EXPECT_NE(test::read_all(tmp / "cache" / labels / "0" / ".zarray").find("\"shuffle\": 2"),
            std::string::npos);
  EXPECT_TRUE(test::same_bytes(*ls->read(CellIndex{0, 0}), lb));
  EXPECT_TRUE(test::same_bytes(*ss->read(CellIndex{0, 0}), sb));

  // A u16 node whose metadata predates bit shuffle: its new cells match it.
  const std::string old = "33333333333333333333333333333333";
  fs::create_directories(tmp / "cache" / old / "0");
  std::string meta = zarray_json(DType::kU16, CellGrid({8, 8}, {8, 8}));
  meta.replace(meta.find("\"shuffle\": 2"), 12, "\"shuffle\": 1");
  test::write_all(tmp / "cache" / old / "0" / ".zarray", meta);
  auto [os, ob] = write_one(old, DType::kU16);
  EXPECT_EQ(flags_of(old) & 0x05, 0x01) << "an old array keeps byte shuffle";
  EXPECT_TRUE(test::same_bytes(*os->read(CellIndex{0, 0}), ob));

  // The same for a packed node (zarr.json, blosc inside the sharding codec).
  const std::string packed = "44444444444444444444444444444444";
  fs::create_directories(tmp / "cache" / packed / "0");
  std::string v3 = zarr_v3_json(DType::kU16, CellGrid({8, 8}, {8, 8}), Dims{1, 1});
  ASSERT_NE(v3.find("\"bitshuffle\""), std::string::npos);
  v3.replace(v3.find("\"bitshuffle\""), 12, "\"shuffle\"");
  test::write_all(tmp / "cache" / packed / "0" / layout::kZarrJson, v3);
  auto ps = ZarrArray::open(tmp / "cache" / packed / "0");
  CellBuffer pb = CellBuffer::zeros(DType::kU16, Shape{8, 8});
  for (size_t k = 0; k < pb.num_bytes(); k += 3) pb.mutable_data()[k] = std::byte{1};
  ps->write(CellIndex{0, 0}, pb);
  EXPECT_EQ(flags_of(packed) & 0x05, 0x01) << "an old packed array keeps byte shuffle";
}

// A label image (ImageInfo::labels, e.g. the `label` op's output) is stored
// without shuffle: its cells are runs of one id, which LZ4 packs as they are
// (bit-shuffled they took 2.4x longer to write in B). Its metadata says so,
// for Zarr v2 and once packed (v3); masks stay bit-shuffled.
TEST(CellFormat, LabelImagesAreStoredWithoutShuffle) {
  TempDir tmp;
  GraphDef def;
  def.add("raw", "synthetic.blobs", {},
          Value(Value::Object{{"shape", test::ints({24, 20, 16})},
                              {"cell_shape", test::ints({8, 8, 8})},
                              {"seed", 4}}));
  def.add("mask", "threshold", {"raw"}, Value(Value::Object{{"above", 0.4}}));
  def.add("labels", "label", {"mask"}, Value::object());
  def.outputs = {"labels"};
  GraphOptions o;
  o.cache_root = tmp / "cache";
  const Graph g = Graph::build(def, nodes::builtin_registry(), o);
  ASSERT_TRUE(g.node("labels").info.labels);
  materialize(g);
  const auto meta_shuffle = [&](const std::string& id) {
    const Value z = parse_json(test::read_all(tmp / "cache" / g.node(id).hash / "0" / ".zarray"));
    return z.find("compressor")->find("shuffle")->as_int();
  };
  EXPECT_EQ(meta_shuffle("labels"), 0);
  EXPECT_EQ(meta_shuffle("mask"), 2);
  EXPECT_EQ(meta_shuffle("raw"), 1);
  int64_t cells = 0;
  for (const auto& e :
       fs::recursive_directory_iterator(tmp / "cache" / g.node("labels").hash / "0")) {
    if (!e.is_regular_file() || e.path().filename().string()[0] == '.') continue;
    const std::string stored = test::read_all(e.path());
    EXPECT_EQ(static_cast<unsigned char>(stored.at(2)) & 0x05, 0) << e.path() << ": shuffled";
    ++cells;
  }
  EXPECT_EQ(cells, 3 * 3 * 2);
  EXPECT_NE(zarr_v3_json(DType::kU32, CellGrid({8, 8}, {8, 8}), Dims{1, 1}, kNoShuffleForLabels)
                .find("\"noshuffle\""),
            std::string::npos);
}

}  // namespace
}  // namespace cellflow
