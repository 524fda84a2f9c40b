// Decoding pieces shared by read.zarr's v2 and v3 readers.
#include "zarr_codec.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "ops.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::zarr {
namespace {

/// Inflates a zlib or gzip stream (the header says which) into exactly `bytes`.
void inflate_into(const std::string& stored, std::byte* out, size_t bytes,
                  const std::string& what) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) throw CorruptionError(what + ": zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(stored.data()));
  zs.avail_in = static_cast<uInt>(stored.size());
  zs.next_out = reinterpret_cast<Bytef*>(out);
  zs.avail_out = static_cast<uInt>(bytes);
  const int rc = inflate(&zs, Z_FINISH);
  const size_t produced = bytes - zs.avail_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || produced != bytes) {
    throw CorruptionError(
        fmt::format("{}: cannot inflate the chunk (zlib status {}, {} of {} bytes)", what, rc,
                    produced, bytes));
  }
}

/// The CRC-32C table (reflected polynomial 0x82F63B78), built once.
const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? (c >> 1) ^ 0x82F63B78U : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

template <class T>
T fill_as(const Value& v, const fs::path& meta) {
  if (v.is_null()) return T{0};
  if (v.is_bool()) return static_cast<T>(v.as_bool() ? 1 : 0);
  if (v.is_int()) return static_cast<T>(v.as_int());
  if (v.is_float()) return saturate_cast<T>(v.as_double());
  if (v.is_string() && std::is_floating_point_v<T>) {
    const std::string& s = v.as_string();
    if (s == "NaN") return std::numeric_limits<T>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<T>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<T>::infinity();
    // Zarr v3: the IEEE 754 bit pattern, as 2 hex digits per byte.
    if (s.size() == 2 + 2 * sizeof(T) && s.starts_with("0x") &&
        s.find_first_not_of("0123456789abcdefABCDEF", 2) == std::string::npos) {
      using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
      const Bits bits = static_cast<Bits>(std::stoull(s.substr(2), nullptr, 16));
      T x;
      std::memcpy(&x, &bits, sizeof(T));
      return x;
    }
  }
  bad_array(meta, fmt::format("fill_value {} is not supported", to_json_compact(v)));
}

}  // namespace

void bad_array(const fs::path& meta, const std::string& why) {
  throw InvalidArgument(fmt::format("param \"path\": {}: {}", meta.string(), why));
}

Value parse_metadata(const fs::path& meta, const std::string& text, int format) {
  Value z;
  try {
    z = parse_json(text, meta.string());
  } catch (const Error& e) {
    bad_array(meta, e.what());
  }
  if (!z.is_object()) bad_array(meta, "not a JSON object");
  const Value* f = z.find("zarr_format");
  if (f == nullptr || !f->is_int() || f->as_int() != format)
    bad_array(meta, fmt::format("\"zarr_format\" must be {}", format));
  return z;
}

Shape dims_field(const Value& z, const char* key, const fs::path& meta, bool positive) {
  const Value* v = z.find(key);
  if (v == nullptr || !v->is_array()) bad_array(meta, fmt::format("\"{}\" must be a list", key));
  const auto& a = v->as_array();
  if (a.empty() || a.size() > static_cast<size_t>(kMaxRank)) {
    bad_array(meta,
              fmt::format("\"{}\" must have 1 to {} entries (got {})", key, kMaxRank, a.size()));
  }
  Shape out(static_cast<int>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_int()) bad_array(meta, fmt::format("\"{}\" must hold integers", key));
    out[static_cast<int>(i)] = a[i].as_int();
    if (positive && out[static_cast<int>(i)] < 1)
      bad_array(meta, fmt::format("\"{}\" must be >= 1 on every axis", key));
  }
  return out;
}

void check_grid(const Shape& shape, const Shape& chunks, const fs::path& meta) {
  try {
    (void)CellGrid(shape, chunks);
  } catch (const InvalidArgument& e) {
    bad_array(meta, e.message());
  }
}

std::optional<DType> parse_type_name(const Value* v, bool allow_bool) {
  static const std::pair<const char*, DType> kTypes[] = {
      {"uint8", DType::kU8},    {"uint16", DType::kU16}, {"uint32", DType::kU32},
      {"uint64", DType::kU64},  {"int8", DType::kI8},    {"int16", DType::kI16},
      {"int32", DType::kI32},   {"int64", DType::kI64},  {"float32", DType::kF32},
      {"float64", DType::kF64},
  };
  if (v == nullptr || !v->is_string()) return std::nullopt;
  if (allow_bool && v->as_string() == "bool") return DType::kU8;
  for (const auto& [name, t] : kTypes)
    if (v->as_string() == name) return t;
  return std::nullopt;
}

void decompress(Compressor codec, const std::string& stored, std::byte* out, size_t bytes,
                const std::string& what) {
  switch (codec) {
    case Compressor::kNone:
      if (stored.size() != bytes) {
        throw CorruptionError(fmt::format("{}: {} bytes, expected {} (uncompressed chunk)", what,
                                          stored.size(), bytes));
      }
      std::memcpy(out, stored.data(), bytes);
      return;
    case Compressor::kBlosc: {
      size_t nbytes = 0;
      size_t cbytes = 0;
      size_t blocksize = 0;
      if (stored.size() < BLOSC_MIN_HEADER_LENGTH)
        throw CorruptionError(what + ": not a blosc frame");
      blosc_cbuffer_sizes(stored.data(), &nbytes, &cbytes, &blocksize);
      if (nbytes != bytes || cbytes > stored.size()) {
        throw CorruptionError(fmt::format("{}: blosc frame of {} bytes ({} stored), expected {}",
                                          what, nbytes, cbytes, bytes));
      }
      const int n = blosc_decompress_ctx(stored.data(), out, bytes, 1);
      if (n < 0 || static_cast<size_t>(n) != bytes) {
        throw CorruptionError(
            fmt::format("{}: blosc cannot decode the chunk (status {})", what, n));
      }
      return;
    }
    case Compressor::kZstd: {
      const size_t n = ZSTD_decompress(out, bytes, stored.data(), stored.size());
      if (ZSTD_isError(n) != 0 || n != bytes) {
        throw CorruptionError(fmt::format(
            "{}: zstd cannot decode the chunk ({})", what,
            ZSTD_isError(n) != 0 ? ZSTD_getErrorName(n) : fmt::format("{} of {} bytes", n, bytes)));
      }
      return;
    }
    case Compressor::kZlib:
    case Compressor::kGzip:
      inflate_into(stored, out, bytes, what);
      return;
  }
}

uint32_t crc32c(const void* data, size_t size) {
  const auto& table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFU;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFFU] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

void swap_bytes(std::byte* data, size_t count, size_t size) {
  for (size_t i = 0; i < count; ++i) std::reverse(data + i * size, data + (i + 1) * size);
}

FillValue parse_fill(const Value* v, DType dtype, const fs::path& meta) {
  const Value fill = v != nullptr ? *v : Value();
  FillValue out;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T x = fill_as<T>(fill, meta);
    std::memcpy(out.bytes.data(), &x, sizeof(T));
    out.zero = std::all_of(out.bytes.begin(), out.bytes.begin() + sizeof(T),
                           [](std::byte b) { return b == std::byte{0}; });
  });
  return out;
}

void fill_region(std::byte* out, const Box& box, const Box& region, const FillValue& fill,
                 size_t size) {
  const Shape shape = box.shape();
  const int r = box.rank();
  const int64_t len = region.shape()[r - 1];
  Dims row_end = region.end();
  row_end[r - 1] = region.begin()[r - 1] + 1;
  for_each_index(Box(region.begin(), row_end), [&](const Dims& g) {
    Dims local(r);
    for (int d = 0; d < r; ++d) local[d] = g[d] - box.begin()[d];
    std::byte* p = out + static_cast<size_t>(detail::linear_offset(shape, local)) * size;
    if (fill.zero) {
      std::memset(p, 0, static_cast<size_t>(len) * size);
    } else {
      for (int64_t i = 0; i < len; ++i)
        std::memcpy(p + static_cast<size_t>(i) * size, fill.bytes.data(), size);
    }
  });
}

}  // namespace cellflow::nodes::zarr
