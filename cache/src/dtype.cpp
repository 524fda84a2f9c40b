#include "cellflow/cache/dtype.hpp"

#include <array>
#include <limits>

#include "cellflow/cache/dtype_dispatch.hpp"

namespace cellflow {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  std::string_view long_name;
  std::string_view zarr;
};

constexpr std::array<DTypeInfo, 10> kInfos = {{
    {DType::kU8, "u8", "uint8", "|u1"},
    {DType::kU16, "u16", "uint16", "<u2"},
    {DType::kU32, "u32", "uint32", "<u4"},
    {DType::kU64, "u64", "uint64", "<u8"},
    {DType::kI8, "i8", "int8", "|i1"},
    {DType::kI16, "i16", "int16", "<i2"},
    {DType::kI32, "i32", "int32", "<i4"},
    {DType::kI64, "i64", "int64", "<i8"},
    {DType::kF32, "f32", "float32", "<f4"},
    {DType::kF64, "f64", "float64", "<f8"},
}};

const DTypeInfo& info(DType t) { return kInfos[static_cast<size_t>(t)]; }

}  // namespace

size_t dtype_size(DType t) {
  return dispatch_dtype(t, [](auto tag) { return sizeof(typename decltype(tag)::type); });
}

std::string_view dtype_name(DType t) { return info(t).name; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& i : kInfos)
    if (name == i.name || name == i.long_name) return i.type;
  return std::nullopt;
}

std::string zarr_dtype(DType t) { return std::string(info(t).zarr); }

std::optional<DType> parse_zarr_dtype(std::string_view s) {
  for (const auto& i : kInfos) {
    if (s == i.zarr) return i.type;
    // Single-byte types may be written with any byte order mark.
    if (i.zarr[0] == '|' && s.size() == 3 && (s[0] == '<' || s[0] == '>' || s[0] == '=') &&
        s.substr(1) == i.zarr.substr(1))
      return i.type;
  }
  return std::nullopt;
}

bool dtype_is_float(DType t) { return t == DType::kF32 || t == DType::kF64; }

bool dtype_is_signed(DType t) {
  return dispatch_dtype(
      t, [](auto tag) { return std::numeric_limits<typename decltype(tag)::type>::is_signed; });
}

double dtype_min(DType t) {
  return dispatch_dtype(t, [](auto tag) {
    return static_cast<double>(std::numeric_limits<typename decltype(tag)::type>::lowest());
  });
}

double dtype_max(DType t) {
  return dispatch_dtype(t, [](auto tag) {
    return static_cast<double>(std::numeric_limits<typename decltype(tag)::type>::max());
  });
}

}  // namespace cellflow
