// read.zarr's Zarr v2 reader (see zarr_v2.hpp).
#include "zarr_v2.hpp"

#include <fmt/format.h>

#include <optional>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::zarr {
namespace {

/// What a .zarray says, reduced to what reading its chunks needs.
struct V2Layout {
  Shape chunks;
  size_t elem = 1;
  bool big_endian = false;
  Compressor codec = Compressor::kNone;
  char separator = '.';
};

/// Parses a numpy type string such as "<u2", ">f8", "|u1", "|b1" (bool -> u8).
DType parse_type(const Value* v, const fs::path& meta, V2Layout& m) {
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
  m.elem = dtype_size(*t);
  m.big_endian = order == '>' && m.elem > 1;
  return *t;
}

void parse_compressor(const Value* v, const fs::path& meta, V2Layout& m) {
  if (v == nullptr || v->is_null()) {
    m.codec = Compressor::kNone;
    return;
  }
  const Value* id = v->find("id");
  if (id == nullptr || !id->is_string()) bad_array(meta, "\"compressor\" has no \"id\"");
  const std::string& name = id->as_string();
  if (name == "blosc") {
    m.codec = Compressor::kBlosc;
  } else if (name == "zstd") {
    m.codec = Compressor::kZstd;
  } else if (name == "zlib") {
    m.codec = Compressor::kZlib;
  } else if (name == "gzip") {
    m.codec = Compressor::kGzip;
  } else {
    bad_array(meta, fmt::format("compressor \"{}\" is not supported (supported: blosc, zstd, "
                                "zlib, gzip, none)",
                                name));
  }
}

/// Chunks of a Zarr v2 array: one file per chunk, compressed as a whole.
class V2ChunkFiles final : public ChunkSource {
 public:
  V2ChunkFiles(fs::path dir, V2Layout layout) : dir_(std::move(dir)), m_(std::move(layout)) {}

  fs::path file_of(const CellIndex& chunk) const override {
    std::string key;
    for (int d = 0; d < chunk.rank(); ++d) {
      if (d > 0) key += m_.separator;
      key += std::to_string(chunk[d]);
    }
    return dir_ / key;
  }

  bool read(const CellIndex& chunk, std::byte* out) const override {
    const fs::path file = file_of(chunk);
    thread_local std::string thread_buffer;
    ReusedBuffer stored(thread_buffer);
    if (!with_context("file " + file.string(), [&] { return read_file_reusing(file, *stored); }))
      return false;
    const auto n = static_cast<size_t>(m_.chunks.product());
    decompress(m_.codec, *stored, out, n * m_.elem, "file " + file.string());
    if (m_.big_endian) swap_bytes(out, n, m_.elem);
    return true;
  }

 private:
  fs::path dir_;
  V2Layout m_;
};

}  // namespace

OpenedArray open_v2(const fs::path& dir, std::string text) {
  const fs::path meta = dir / ".zarray";
  const Value z = parse_metadata(meta, text, 2);
  OpenedArray a;
  V2Layout m;
  a.shape = dims_field(z, "shape", meta, true);
  m.chunks = dims_field(z, "chunks", meta, true);
  if (m.chunks.rank() != a.shape.rank()) bad_array(meta, "\"chunks\" and \"shape\" differ in rank");
  check_grid(a.shape, m.chunks, meta);
  a.dtype = parse_type(z.find("dtype"), meta, m);
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
  a.fill = parse_fill(z.find("fill_value"), a.dtype, meta);
  a.chunks = m.chunks;
  a.meta_file = meta;
  a.meta_text = std::move(text);
  a.source = std::make_unique<V2ChunkFiles>(dir, std::move(m));
  return a;
}

}  // namespace cellflow::nodes::zarr
