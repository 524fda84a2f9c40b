// DType names, sizes and Zarr strings; parse_size; CellBuffer; Error context.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "cellflow/cache/cell_buffer.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/memory_cache.hpp"

namespace cellflow {
namespace {

struct DTypeRow {
  DType type;
  const char* name;
  const char* long_name;
  const char* zarr;
  size_t size;
  bool is_float;
  bool is_signed;
};

const DTypeRow kRows[] = {
    {DType::kU8, "u8", "uint8", "|u1", 1, false, false},
    {DType::kU16, "u16", "uint16", "<u2", 2, false, false},
    {DType::kU32, "u32", "uint32", "<u4", 4, false, false},
    {DType::kU64, "u64", "uint64", "<u8", 8, false, false},
    {DType::kI8, "i8", "int8", "|i1", 1, false, true},
    {DType::kI16, "i16", "int16", "<i2", 2, false, true},
    {DType::kI32, "i32", "int32", "<i4", 4, false, true},
    {DType::kI64, "i64", "int64", "<i8", 8, false, true},
    {DType::kF32, "f32", "float32", "<f4", 4, true, true},
    {DType::kF64, "f64", "float64", "<f8", 8, true, true},
};

TEST(DType, NamesSizesAndZarrStrings) {
  for (const auto& r : kRows) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(dtype_name(r.type), r.name);
    EXPECT_EQ(dtype_size(r.type), r.size);
    EXPECT_EQ(zarr_dtype(r.type), r.zarr);
    EXPECT_EQ(parse_dtype(r.name), r.type);
    EXPECT_EQ(parse_dtype(r.long_name), r.type);
    EXPECT_EQ(parse_zarr_dtype(r.zarr), r.type);
    EXPECT_EQ(dtype_is_float(r.type), r.is_float);
    EXPECT_EQ(dtype_is_signed(r.type), r.is_signed);
  }
  EXPECT_FALSE(parse_dtype("f16").has_value());
  EXPECT_FALSE(parse_dtype("").has_value());
  EXPECT_FALSE(parse_dtype("F32").has_value());
  EXPECT_FALSE(parse_zarr_dtype(">f4").has_value());  // big-endian is not ours
  EXPECT_FALSE(parse_zarr_dtype("<c8").has_value());
  // numpy writes single-byte types with any byte order mark.
  EXPECT_EQ(parse_zarr_dtype("<u1"), DType::kU8);
  EXPECT_EQ(parse_zarr_dtype("|i1"), DType::kI8);
}

TEST(DType, Ranges) {
  EXPECT_EQ(dtype_min(DType::kU8), 0.0);
  EXPECT_EQ(dtype_max(DType::kU8), 255.0);
  EXPECT_EQ(dtype_min(DType::kI16), -32768.0);
  EXPECT_EQ(dtype_max(DType::kI16), 32767.0);
  EXPECT_EQ(dtype_max(DType::kU16), 65535.0);
  EXPECT_LT(dtype_min(DType::kF32), -1e38);
}

TEST(ParseSize, AcceptsUnits) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("512M"), size_t{512} << 20);
  EXPECT_EQ(parse_size("2G"), size_t{2} << 30);
  EXPECT_EQ(parse_size("2g"), size_t{2} << 30);
  EXPECT_EQ(parse_size("64K"), size_t{64} << 10);
  EXPECT_EQ(parse_size("1.5GiB"), (size_t{3} << 30) / 2);
  EXPECT_EQ(parse_size("100MB"), size_t{100} << 20);
  EXPECT_EQ(parse_size("1T"), size_t{1} << 40);
}

TEST(ParseSize, RejectsBadInputNamingWhat) {
  for (const char* bad : {"", "abc", "12Q", "-1", "M", "1.5.5G", "nan", "inf", "1X"}) {
    SCOPED_TRACE(bad);
    try {
      parse_size(bad, "--memory");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("--memory"), std::string::npos) << e.what();
    }
  }
}

TEST(CellBuffer, AllocateZerosEqualsAndSharing) {
  CellBuffer a = CellBuffer::zeros(DType::kU16, {3, 4});
  EXPECT_TRUE(static_cast<bool>(a));
  EXPECT_EQ(a.num_elements(), 12);
  EXPECT_EQ(a.num_bytes(), 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u) << "64-byte aligned";
  for (int i = 0; i < 12; ++i) EXPECT_EQ(a.as<uint16_t>()[i], 0);
  CellBuffer b = CellBuffer::allocate(DType::kU16, {3, 4});
  std::memset(b.mutable_data(), 0, b.num_bytes());
  EXPECT_TRUE(a.equals(b));
  b.mutable_as<uint16_t>()[11] = 7;
  EXPECT_FALSE(a.equals(b));
  EXPECT_FALSE(a.equals(CellBuffer::zeros(DType::kU16, {4, 3})));
  EXPECT_FALSE(a.equals(CellBuffer::zeros(DType::kI16, {3, 4})));
  EXPECT_EQ(a.use_count(), 1);
  {
    CellBuffer c = a;
    EXPECT_EQ(a.use_count(), 2);
    EXPECT_EQ(c.data(), a.data());
  }
  EXPECT_EQ(a.use_count(), 1);
  EXPECT_FALSE(static_cast<bool>(CellBuffer()));
}

TEST(Error, ContextFramesOutermostFirst) {
  try {
    with_context("node \"smooth\"", [] {
      with_context("cell (2,5,1)", [] { throw CorruptionError("checksum mismatch"); });
    });
    FAIL() << "no throw";
  } catch (const CorruptionError& e) {
    EXPECT_EQ(e.message(), "checksum mismatch");
    const std::string what = e.what();
    const auto node = what.find("node \"smooth\"");
    const auto cell = what.find("cell (2,5,1)");
    const auto cause = what.find("checksum mismatch");
    ASSERT_NE(node, std::string::npos) << what;
    ASSERT_NE(cell, std::string::npos) << what;
    ASSERT_NE(cause, std::string::npos) << what;
    EXPECT_LT(node, cell) << what;
    EXPECT_LT(cell, cause) << what;
  }
  // A foreign exception becomes a NodeError carrying the frame.
  try {
    with_context("node \"x\"", [] { throw std::runtime_error("boom"); });
    FAIL() << "no throw";
  } catch (const NodeError& e) {
    EXPECT_NE(std::string(e.what()).find("node \"x\""), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos);
  }
}

}  // namespace
}  // namespace cellflow
