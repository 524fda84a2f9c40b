// ZarrArray: the on-disk Zarr v2 cell store. Round trips for several dtypes
// and edge cells, .zarray content, atomic commits, corruption detection.
#include "cellflow/cache/zarr_array.hpp"

#include <blosc.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cmath>
#include <cstring>
#include <string>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/memory_env.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

using test::TempDir;

// A value that depends on the global voxel index and differs per dtype range.
double pattern(int64_t linear) { return static_cast<double>((linear * 37 + 11) % 251) - 100.0; }

CellBuffer make_cell(DType t, const CellGrid& grid, const CellIndex& cell) {
  const Box box = grid.cell_box(cell);
  CellBuffer b = CellBuffer::allocate(t, box.shape());
  dispatch_dtype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = b.mutable_as<T>();
    int64_t i = 0;
    for_each_index(box, [&](const Dims& g) {
      double v = pattern(grid.linear(cell) * 1000 + g[0] * 10000 + g[1] * 100 + g[g.rank() - 1]);
      if constexpr (std::is_floating_point_v<T>) v = v * 0.37 + 0.001;
      p[i++] = saturate_cast<T>(v);
    });
  });
  return b;
}

class ZarrRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(ZarrRoundTrip, EveryCellIncludingEdgeCells) {
  TempDir tmp;
  const DType t = GetParam();
  const CellGrid grid({10, 13, 7}, {4, 5, 3});  // edge cells on every axis
  auto arr = ZarrArray::create(tmp / "arr", t, grid);
  EXPECT_EQ(arr->dtype(), t);
  EXPECT_EQ(arr->grid(), grid);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    EXPECT_FALSE(arr->contains(cell));
    EXPECT_FALSE(arr->read(cell).has_value());
    EXPECT_FALSE(test::fs::exists(arr->cell_path(cell)));
    arr->write(cell, make_cell(t, grid, cell));
    EXPECT_TRUE(arr->contains(cell));
    EXPECT_TRUE(test::fs::exists(arr->cell_path(cell)));
  }
  // Reopen from disk and read every cell back.
  auto again = ZarrArray::open(tmp / "arr");
  EXPECT_EQ(again->dtype(), t);
  EXPECT_EQ(again->grid(), grid);
  for (int64_t c = 0; c < grid.num_cells(); ++c) {
    const CellIndex cell = grid.cell_at(c);
    auto got = again->read(cell);
    ASSERT_TRUE(got.has_value()) << cell.str();
    EXPECT_EQ(got->shape(), grid.cell_box(cell).shape()) << cell.str();
    EXPECT_TRUE(test::same_bytes(*got, make_cell(t, grid, cell))) << cell.str();
  }
  // Chunk files are "/"-separated: <arr>/z/y/x.
  EXPECT_EQ(arr->cell_path({2, 1, 0}), tmp / "arr" / "2" / "1" / "0");
  // Edge chunks are stored full-size (zarr's rule), zero-padded.
  const CellIndex edge{2, 2, 2};
  const std::string stored = test::read_all(arr->cell_path(edge));
  const size_t full = static_cast<size_t>(grid.cell_shape().product()) * dtype_size(t);
  CellBuffer decoded = CellBuffer::allocate(t, grid.cell_shape());
  ZarrArray::decode_chunk(stored, decoded.mutable_data(), full, "edge",
                          layout::cell_identity(arr->owner(), edge));
  const CellBuffer expected = make_cell(t, grid, edge);
  const Box ebox = grid.cell_box(edge);  // [8:10, 10:13, 6:7]
  const Box chunk_box({8, 10, 6}, {12, 15, 9});
  CellBuffer inside = CellBuffer::allocate(t, ebox.shape());
  copy_region(decoded.data(), chunk_box, inside.mutable_data(), ebox, ebox, dtype_size(t));
  EXPECT_TRUE(test::same_bytes(inside, expected));
  // The padding is zero.
  const size_t es = dtype_size(t);
  const std::byte* last = decoded.data() + (full - es);  // voxel (11,14,8): outside the image
  for (size_t i = 0; i < es; ++i) EXPECT_EQ(last[i], std::byte{0});
}

INSTANTIATE_TEST_SUITE_P(DTypes, ZarrRoundTrip,
                         ::testing::Values(DType::kU8, DType::kU16, DType::kI16, DType::kI32,
                                           DType::kU64, DType::kI64, DType::kF32, DType::kF64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(ZarrArray, ZarrayMetadata) {
  TempDir tmp;
  const CellGrid grid({10, 13, 7}, {4, 5, 3});
  ZarrArray::create(tmp / "arr", DType::kF32, grid);
  const Value z = parse_json(test::read_all(tmp / "arr" / ".zarray"));
  EXPECT_EQ(z.find("zarr_format")->as_int(), 2);
  EXPECT_EQ(*z.find("shape"), test::ints({10, 13, 7}));
  EXPECT_EQ(*z.find("chunks"), test::ints({4, 5, 3}));
  EXPECT_EQ(z.find("dtype")->as_string(), "<f4");
  EXPECT_EQ(z.find("dimension_separator")->as_string(), "/");
  EXPECT_EQ(z.find("order")->as_string(), "C");
  const Value* comp = z.find("compressor");
  ASSERT_NE(comp, nullptr);
  EXPECT_EQ(comp->find("id")->as_string(), "blosc");
  EXPECT_EQ(zarray_json(DType::kF32, grid), test::read_all(tmp / "arr" / ".zarray"));
  // create() on an existing, matching array opens it; a mismatching one is refused.
  EXPECT_NO_THROW(ZarrArray::create(tmp / "arr", DType::kF32, grid));
  EXPECT_THROW(ZarrArray::create(tmp / "arr", DType::kU8, grid), Error);
  EXPECT_THROW(ZarrArray::create(tmp / "arr", DType::kF32, CellGrid({10, 13, 7}, {4, 4, 4})),
               Error);
  EXPECT_THROW(ZarrArray::open(tmp / "nothing-here"), IoError);
}

TEST(ZarrArray, CommitLeavesNoTemporaryFiles) {
  TempDir tmp;
  const CellGrid grid({8, 8}, {4, 4});
  auto arr = ZarrArray::create(tmp / "arr", DType::kU16, grid);
  for (int64_t c = 0; c < grid.num_cells(); ++c)
    arr->write(grid.cell_at(c), make_cell(DType::kU16, grid, grid.cell_at(c)));
  // Rewriting a committed cell replaces it atomically.
  arr->write({1, 1}, make_cell(DType::kU16, grid, {1, 1}));
  const std::vector<std::string> expected{".zarray", "0/", "0/0", "0/1", "1/", "1/0", "1/1"};
  EXPECT_EQ(test::listing(tmp / "arr"), expected);
  // Wrong shape or dtype is refused and writes nothing.
  EXPECT_THROW(arr->write({0, 0}, CellBuffer::zeros(DType::kU16, {4, 3})), InvalidArgument);
  EXPECT_THROW(arr->write({0, 0}, CellBuffer::zeros(DType::kU8, {4, 4})), InvalidArgument);
  EXPECT_TRUE(test::same_bytes(*arr->read({0, 0}), make_cell(DType::kU16, grid, {0, 0})));
  arr->remove({0, 1});
  EXPECT_FALSE(arr->contains({0, 1}));
  EXPECT_FALSE(arr->read({0, 1}).has_value());
  EXPECT_NO_THROW(arr->remove({0, 1}));
}

class ZarrCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    arr_ = ZarrArray::create(tmp_ / "arr", DType::kF32, grid_);
    arr_->write(cell_, make_cell(DType::kF32, grid_, cell_));
    file_ = arr_->cell_path(cell_);
    good_ = test::read_all(file_);
    ASSERT_GT(good_.size(), 32u);
  }

  void expect_corrupt(const std::string& bytes) {
    test::write_all(file_, bytes);
    EXPECT_TRUE(arr_->contains(cell_));
    try {
      auto got = arr_->read(cell_);
      ADD_FAILURE() << "a damaged chunk was returned as data";
    } catch (const CorruptionError& e) {
      EXPECT_NE(std::string(e.what()).find(file_.string()), std::string::npos)
          << "the error should name the file: " << e.what();
    }
  }

  TempDir tmp_;
  CellGrid grid_{{16, 16, 16}, {8, 8, 8}};
  CellIndex cell_{1, 0, 1};
  std::shared_ptr<ZarrArray> arr_;
  test::fs::path file_;
  std::string good_;
};

TEST_F(ZarrCorruption, Truncated) {
  expect_corrupt(good_.substr(0, good_.size() / 2));
  expect_corrupt(good_.substr(0, good_.size() - 1));
  expect_corrupt(good_.substr(0, 10));
  expect_corrupt("");
}

TEST_F(ZarrCorruption, Garbled) {
  for (size_t pos : {size_t{0}, size_t{5}, size_t{20}, good_.size() / 2, good_.size() - 20,
                     good_.size() - 9, good_.size() - 1}) {
    SCOPED_TRACE(pos);
    std::string bad = good_;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x5a);
    expect_corrupt(bad);
  }
  // Extra bytes appended.
  expect_corrupt(good_ + "x");
}

TEST_F(ZarrCorruption, Foreign) {
  // A plain blosc chunk as zarr-python writes it (no cellflow trailer).
  const CellBuffer data = make_cell(DType::kF32, grid_, cell_);
  std::string plain(data.num_bytes() + BLOSC_MAX_OVERHEAD, '\0');
  const int n = blosc_compress_ctx(5, BLOSC_SHUFFLE, 4, data.num_bytes(), data.data(), plain.data(),
                                   plain.size(), "lz4", 0, 1);
  ASSERT_GT(n, 0);
  plain.resize(static_cast<size_t>(n));
  expect_corrupt(plain);
  // A valid cellflow chunk of another size (another array's cell).
  std::vector<float> other(4 * 4 * 4, 1.5f);
  expect_corrupt(ZarrArray::encode_chunk(other.data(), other.size() * 4, 4,
                                         layout::cell_identity(arr_->owner(), cell_)));
  // Text.
  expect_corrupt(std::string(200, 'a'));
  // The intact file still reads after all that.
  test::write_all(file_, good_);
  auto got = arr_->read(cell_);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(test::same_bytes(*got, make_cell(DType::kF32, grid_, cell_)));
}

TEST(ZarrArray, EncodeDecodeChunk) {
  std::vector<double> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<double>(i));
  const std::string enc = ZarrArray::encode_chunk(v.data(), v.size() * 8, 8, "n:1,2");
  std::vector<double> back(v.size());
  ZarrArray::decode_chunk(enc, back.data(), back.size() * 8, "x", "n:1,2");
  EXPECT_EQ(back, v);
  // The checksum binds the chunk to its identity: another cell, another node,
  // or no identity at all does not accept it.
  EXPECT_THROW(ZarrArray::decode_chunk(enc, back.data(), back.size() * 8, "x", "n:1,3"),
               CorruptionError);
  EXPECT_THROW(ZarrArray::decode_chunk(enc, back.data(), back.size() * 8, "x", "m:1,2"),
               CorruptionError);
  EXPECT_THROW(ZarrArray::decode_chunk(enc, back.data(), back.size() * 8, "x", ""),
               CorruptionError);
  // Trailer: 16 bytes after the blosc frame, whose header gives its size.
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  blosc_cbuffer_sizes(enc.data(), &nbytes, &cbytes, &blocksize);
  EXPECT_EQ(nbytes, v.size() * 8);
  EXPECT_EQ(cbytes + 16, enc.size());
  EXPECT_THROW(ZarrArray::decode_chunk(enc, back.data(), back.size() * 8 - 8, "x", "n:1,2"),
               CorruptionError);
}

// `frame` with a valid trailer for `identity` (the format pinned in cell_format_test.cpp).
std::string seal(const std::string& frame, std::string_view identity) {
  std::string out = frame;
  const uint64_t sum = XXH3_64bits_withSeed(frame.data(), frame.size(),
                                            XXH3_64bits(identity.data(), identity.size()));
  for (int i = 0; i < 8; ++i) out += static_cast<char>((sum >> (8 * i)) & 0xff);
  return out + "CFLWXH32";
}

// Found by tests/fuzz (fuzz_cache_chunk): a sound trailer over a blosc header
// whose decoded size is negative as int32 made decode_chunk_any allocate
// ~2^64 bytes (std::length_error escaped instead of a CorruptionError).
TEST(ZarrArray, DecodeChunkAnyRefusesBloscSizesBeforeAllocating) {
  const std::vector<uint8_t> v(64, 7);
  const std::string enc = ZarrArray::encode_chunk(v.data(), v.size(), 1, "n:0");
  std::string frame = enc.substr(0, enc.size() - 16);
  EXPECT_EQ(ZarrArray::decode_chunk_any(seal(frame, "n:0"), "x", "n:0").size(), v.size());
  for (int i = 4; i < 8; ++i) frame[static_cast<size_t>(i)] = '\xff';  // nbytes = -1
  EXPECT_THROW(ZarrArray::decode_chunk_any(seal(frame, "n:0"), "x", "n:0"), CorruptionError);
  // A frame shorter than its header's cbytes says, also refused before decoding.
  frame = enc.substr(0, enc.size() - 16) + "tail";
  EXPECT_THROW(ZarrArray::decode_chunk_any(seal(frame, "n:0"), "x", "n:0"), CorruptionError);
}

// Found by tests/fuzz (fuzz_cache_node): a .zarray whose grid CellGrid
// refuses made open() report the error through `env` after moving it into
// the array's constructor arguments — a null dereference where arguments are
// evaluated left to right (clang; g++ happened to build the grid first).
TEST(ZarrArray, OpenRefusesABadGridNamingTheFile) {
  auto env = std::make_shared<MemoryEnv>();
  env->make_folders("n/0");
  env->write_atomic("n/0/" + std::string(layout::kZarray),
                    R"({"dtype": "<u2", "shape": [-4, 4], "chunks": [2, 2]})",
                    Durability::kProcess);
  try {
    ZarrArray::open(env, "n/0", "n");
    ADD_FAILURE() << "no error";
  } catch (const CorruptionError& e) {
    EXPECT_NE(std::string(e.what()).find("negative"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::string(layout::kZarray)), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace cellflow
