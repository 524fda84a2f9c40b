// The Zarr v2 format as read.zarr reads it (zarr_v2_format.hpp): .zarray text
// and stored chunks, blosc with any codec, zstd, zlib, gzip or none.
#include "zarr_v2_format.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::detail {
namespace {

[[noreturn]] void bad_array(const fs::path& meta, const std::string& why) {
  throw InvalidArgument(fmt::format("param \"path\": {}: {}", meta.string(), why));
}

Shape dims_field(const Value& z, const char* key, const fs::path& meta) {
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
  }
  return out;
}

/// Parses a numpy type string such as "<u2", ">f8", "|u1", "|b1" (bool -> u8).
void parse_type(const Value* v, const fs::path& meta, ZarrMeta& m) {
  if (v == nullptr || !v->is_string()) {
    bad_array(meta,
              "\"dtype\" must be a type string such as \"<u2\" (structured dtypes are "
              "not supported)");
  }
  const std::string& s = v->as_string();
  const auto unsupported = [&] {
    bad_array(meta, fmt::format("dtype \"{}\" is not supported (supported: bool, u1/u2/u4/u8, "
                                "i1/i2/i4/i8, f4/f8 in either byte order)",
                                s));
  };
  if (s.size() < 3) unsupported();
  const char order = s[0];
  const char kind = s[1];
  const std::string size = s.substr(2);
  if (order != '<' && order != '>' && order != '|' && order != '=') unsupported();
  std::optional<DType> t;
  if (kind == 'b' && size == "1") {
    t = DType::kU8;
  } else if (kind == 'u' || kind == 'i' || kind == 'f') {
    t = parse_dtype(std::string(1, kind) + (size == "1"   ? "8"
                                            : size == "2" ? "16"
                                            : size == "4" ? "32"
                                            : size == "8" ? "64"
                                                          : "?"));
    if (kind == 'f' && size == "1") t.reset();
  }
  if (!t) unsupported();
  m.dtype = *t;
  m.big_endian = order == '>' && dtype_size(*t) > 1;
}

void parse_compressor(const Value* v, const fs::path& meta, ZarrMeta& m) {
  if (v == nullptr || v->is_null()) {
    m.codec = Codec::kNone;
    return;
  }
  const Value* id = v->find("id");
  if (id == nullptr || !id->is_string()) bad_array(meta, "\"compressor\" has no \"id\"");
  const std::string& name = id->as_string();
  if (name == "blosc") {
    m.codec = Codec::kBlosc;
  } else if (name == "zstd") {
    m.codec = Codec::kZstd;
  } else if (name == "zlib") {
    m.codec = Codec::kZlib;
  } else if (name == "gzip") {
    m.codec = Codec::kGzip;
  } else {
    bad_array(meta, fmt::format("compressor \"{}\" is not supported (supported: blosc, zstd, "
                                "zlib, gzip, none)",
                                name));
  }
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
  }
  bad_array(meta, fmt::format("fill_value {} is not supported", to_json_compact(v)));
}

void parse_fill(const Value* v, const fs::path& meta, ZarrMeta& m) {
  const Value fill = v != nullptr ? *v : Value();
  dispatch_dtype(m.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T x = fill_as<T>(fill, meta);
    std::memcpy(m.fill.data(), &x, sizeof(T));
    m.fill_is_zero = std::all_of(m.fill.begin(), m.fill.begin() + sizeof(T),
                                 [](std::byte b) { return b == std::byte{0}; });
  });
}

/// Inflates a zlib or gzip stream (the header says which) into exactly `bytes`.
void inflate_into(std::string_view stored, std::byte* out, size_t bytes, const std::string& what) {
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

/// Decodes a stored chunk into `out` (exactly `bytes`, a whole chunk).
void decode_codec(Codec codec, std::string_view stored, std::byte* out, size_t bytes,
                  const std::string& what) {
  switch (codec) {
    case Codec::kNone:
      if (stored.size() != bytes) {
        throw CorruptionError(fmt::format("{}: {} bytes, expected {} (uncompressed chunk)", what,
                                          stored.size(), bytes));
      }
      std::memcpy(out, stored.data(), bytes);
      return;
    case Codec::kBlosc: {
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
    case Codec::kZstd: {
      const size_t n = ZSTD_decompress(out, bytes, stored.data(), stored.size());
      if (ZSTD_isError(n) != 0 || n != bytes) {
        throw CorruptionError(fmt::format(
            "{}: zstd cannot decode the chunk ({})", what,
            ZSTD_isError(n) != 0 ? ZSTD_getErrorName(n) : fmt::format("{} of {} bytes", n, bytes)));
      }
      return;
    }
    case Codec::kZlib:
    case Codec::kGzip:
      inflate_into(stored, out, bytes, what);
      return;
  }
}

void swap_bytes(std::byte* data, size_t count, size_t size) {
  for (size_t i = 0; i < count; ++i) std::reverse(data + i * size, data + (i + 1) * size);
}

}  // namespace

ZarrMeta parse_zarray(std::string_view text, const fs::path& meta) {
  Value z;
  try {
    z = parse_json(text, meta.string());
  } catch (const Error& e) {
    bad_array(meta, e.what());
  }
  if (!z.is_object()) bad_array(meta, "not a JSON object");
  const Value* format = z.find("zarr_format");
  if (format == nullptr || !format->is_int() || format->as_int() != 2) {
    bad_array(meta, "\"zarr_format\" must be 2");
  }
  ZarrMeta m;
  m.shape = dims_field(z, "shape", meta);
  m.chunks = dims_field(z, "chunks", meta);
  if (m.chunks.rank() != m.shape.rank()) bad_array(meta, "\"chunks\" and \"shape\" differ in rank");
  for (int d = 0; d < m.shape.rank(); ++d) {
    if (m.shape[d] < 1) bad_array(meta, "\"shape\" must be >= 1 on every axis");
    if (m.chunks[d] < 1) bad_array(meta, "\"chunks\" must be >= 1 on every axis");
  }
  // The limits every image has (sizes that overflow int64 somewhere), checked
  // here so that the error names the file and chunk_bytes() cannot overflow.
  try {
    (void)CellGrid(m.shape, m.chunks);
  } catch (const InvalidArgument& e) {
    bad_array(meta, e.message());
  }
  parse_type(z.find("dtype"), meta, m);
  parse_compressor(z.find("compressor"), meta, m);
  if (const Value* order = z.find("order");
      order != nullptr && !(order->is_string() && order->as_string() == "C")) {
    bad_array(meta, fmt::format("order {} is not supported (only C order; rewrite the array with "
                                "order='C')",
                                to_json_compact(*order)));
  }
  if (const Value* filters = z.find("filters");
      filters != nullptr && !filters->is_null() &&
      !(filters->is_array() && filters->as_array().empty())) {
    bad_array(meta,
              fmt::format("filters {} are not supported (only null)", to_json_compact(*filters)));
  }
  if (const Value* sep = z.find("dimension_separator"); sep != nullptr && !sep->is_null()) {
    if (!sep->is_string() || (sep->as_string() != "." && sep->as_string() != "/")) {
      bad_array(meta, fmt::format("dimension_separator {} must be \".\" or \"/\"",
                                  to_json_compact(*sep)));
    }
    m.separator = sep->as_string()[0];
  }
  parse_fill(z.find("fill_value"), meta, m);
  return m;
}

size_t chunk_bytes(const ZarrMeta& meta) {
  return static_cast<size_t>(meta.chunks.product()) * dtype_size(meta.dtype);
}

void decode_chunk(const ZarrMeta& meta, std::string_view stored, std::byte* out,
                  const std::string& what) {
  const size_t size = dtype_size(meta.dtype);
  const size_t bytes = chunk_bytes(meta);
  decode_codec(meta.codec, stored, out, bytes, what);
  if (meta.big_endian) swap_bytes(out, bytes / size, size);
}

}  // namespace cellflow::nodes::detail
