// read.zarr: an existing Zarr v2 array (as zarr-python writes it) as a source
// node. Chunks are decoded on demand (blosc with any codec, zstd, zlib, gzip or
// none; "." or "/" dimension separator; little- or big-endian); a missing
// chunk reads as the array's fill_value. Foreign arrays carry no checksum, so
// a chunk is trusted as long as it decodes to the right size.
#include <blosc.h>
#include <fmt/format.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "file_identity.hpp"
#include "ops.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

enum class Codec { kNone, kBlosc, kZstd, kZlib, kGzip };

/// What a .zarray says, reduced to what reading needs.
struct ZarrMeta {
  Shape shape;
  Shape chunks;
  DType dtype = DType::kU8;
  bool big_endian = false;
  Codec codec = Codec::kNone;
  char separator = '.';
  /// One element holding fill_value, in native byte order.
  std::array<std::byte, 8> fill{};
  bool fill_is_zero = true;
};

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

ZarrMeta read_meta(const fs::path& dir, std::string& text) {
  const fs::path meta = dir / ".zarray";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InvalidArgument(
        fmt::format("param \"path\": {} is not a folder (a Zarr v2 array is a folder with a "
                    ".zarray file)",
                    dir.string()));
  }
  std::optional<std::string> content;
  try {
    content = read_file(meta);
  } catch (const IoError& e) {
    throw InvalidArgument(fmt::format("param \"path\": {}", e.what()));
  }
  if (!content) {
    throw InvalidArgument(fmt::format(
        "param \"path\": {} is not a Zarr v2 array (no .zarray; a group or a Zarr v3 array "
        "cannot be read: give the array's own folder)",
        dir.string()));
  }
  text = std::move(*content);
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

/// Decodes a stored chunk into `out` (exactly `bytes`, a whole chunk).
void decode_chunk(Codec codec, const std::string& stored, std::byte* out, size_t bytes,
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

/// Fills `region` (inside `box`) of a C-contiguous buffer covering `box` with `value`.
void fill_region(std::byte* out, const Box& box, const Box& region, const std::byte* value,
                 size_t size, bool zero) {
  const Shape shape = box.shape();
  const int r = box.rank();
  const int64_t len = region.shape()[r - 1];
  Dims row_end = region.end();
  row_end[r - 1] = region.begin()[r - 1] + 1;
  for_each_index(Box(region.begin(), row_end), [&](const Dims& g) {
    Dims local(r);
    for (int d = 0; d < r; ++d) local[d] = g[d] - box.begin()[d];
    std::byte* p = out + static_cast<size_t>(detail::linear_offset(shape, local)) * size;
    if (zero) {
      std::memset(p, 0, static_cast<size_t>(len) * size);
    } else {
      for (int64_t i = 0; i < len; ++i) std::memcpy(p + static_cast<size_t>(i) * size, value, size);
    }
  });
}

class ReadZarrKernel final : public NodeKernel {
 public:
  ReadZarrKernel(ImageInfo info, fs::path dir, ZarrMeta meta, std::string identity)
      : NodeKernel(std::move(info)),
        dir_(std::move(dir)),
        meta_(std::move(meta)),
        chunk_grid_(meta_.shape, meta_.chunks),
        identity_(std::move(identity)) {}

  std::string identity() const override { return identity_; }

  void compute(const Box& out_box, std::span<const InputRegion> /*inputs*/,
               CellBuffer& out) const override {
    const size_t size = dtype_size(meta_.dtype);
    const size_t chunk_elems = static_cast<size_t>(meta_.chunks.product());
    std::vector<std::byte> scratch;
    for_each_index(chunk_grid_.cells_touching(out_box), [&](const CellIndex& chunk) {
      Dims begin(chunk.rank());
      Dims end(chunk.rank());
      for (int d = 0; d < chunk.rank(); ++d) {
        begin[d] = chunk[d] * meta_.chunks[d];
        end[d] = begin[d] + meta_.chunks[d];
      }
      const Box stored_box(begin, end);  // the full chunk as stored, edge padding included
      const Box region = stored_box.intersect(out_box);
      const fs::path file = chunk_path(chunk);
      std::optional<std::string> stored =
          with_context("file " + file.string(), [&] { return read_file(file); });
      if (!stored) {
        fill_region(out.mutable_data(), out_box, region, meta_.fill.data(), size,
                    meta_.fill_is_zero);
        return;
      }
      // A cell that is exactly one stored chunk is decoded in place.
      const bool direct = stored_box == out_box;
      std::byte* dst = out.mutable_data();
      if (!direct) {
        scratch.resize(chunk_elems * size);
        dst = scratch.data();
      }
      decode_chunk(meta_.codec, *stored, dst, chunk_elems * size, "file " + file.string());
      if (meta_.big_endian) swap_bytes(dst, chunk_elems, size);
      if (!direct) copy_region(dst, stored_box, out.mutable_data(), out_box, region, size);
    });
  }

 private:
  fs::path chunk_path(const CellIndex& chunk) const {
    std::string key;
    for (int d = 0; d < chunk.rank(); ++d) {
      if (d > 0) key += meta_.separator;
      key += std::to_string(chunk[d]);
    }
    return dir_ / key;
  }

  fs::path dir_;
  ZarrMeta meta_;
  CellGrid chunk_grid_;
  std::string identity_;
};

/// The newest modification time of the array's folder and of its subfolders
/// (chunk writes that create or rename files touch their folder).
int64_t newest_folder_mtime(const fs::path& dir) {
  std::error_code ec;
  int64_t newest = static_cast<int64_t>(fs::last_write_time(dir, ec).time_since_epoch().count());
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const auto t = fs::last_write_time(it->path(), ec);
    if (!ec) newest = std::max(newest, static_cast<int64_t>(t.time_since_epoch().count()));
  }
  return newest;
}

/// XXH3-128 of .zarray and of every chunk file (relative paths and bytes, sorted).
std::string content_identity(const fs::path& dir, const std::string& zarray) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] == '.') continue;  // .zarray (hashed below), .zattrs, temp files
    files.push_back(fs::relative(e.path(), dir));
  }
  std::sort(files.begin(), files.end());
  detail::ContentHasher hasher;
  hasher.add(zarray);
  for (const fs::path& f : files) {
    const std::string rel = f.generic_string();
    hasher.add(std::string_view(rel.c_str(), rel.size() + 1));  // with its NUL as a separator
    hasher.add_file(dir / f);
  }
  return "zarr content " + hasher.hex();
}

class ReadZarrOp final : public Op {
 public:
  std::string_view name() const override { return "read.zarr"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Reads an existing Zarr v2 array (a folder with .zarray, as zarr-python writes it): "
           "blosc, zstd, zlib, gzip or no compression, \".\" or \"/\" separator, C order, "
           "bool/u8..u64/i8..i64/f32/f64 in either byte order (bool reads as u8); missing "
           "chunks read as fill_value.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"path", ParamType::kString, Value(),
         "the array's folder (a relative path is taken from the graph file's folder, else from "
         "the current directory)",
         true},
        {"cell_shape", ParamType::kIntList, Value(),
         "cell shape of the node (default: the array's chunks)"},
        detail::hash_mode_param(),
    };
  }
  int min_inputs() const override { return 0; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 0);
    const fs::path dir = params.get_path("path");
    const detail::HashMode mode = detail::parse_hash_mode(params);
    std::string zarray;
    ZarrMeta meta = read_meta(dir, zarray);

    ImageInfo info;
    info.dtype = meta.dtype;
    info.shape = meta.shape;
    info.cell_shape = meta.chunks;
    if (params.has("cell_shape") && !params.get("cell_shape").is_null()) {
      const std::vector<int64_t> cs = params.get_ints("cell_shape");
      if (cs.size() != static_cast<size_t>(meta.shape.rank())) {
        throw InvalidArgument(fmt::format(
            "param \"cell_shape\" must have {} entries like the array's shape {} (got {})",
            meta.shape.rank(), meta.shape.str(), cs.size()));
      }
      for (size_t d = 0; d < cs.size(); ++d) {
        if (cs[d] <= 0) {
          throw InvalidArgument(fmt::format(
              "param \"cell_shape\" must be > 0 on every axis (got {} on axis {})", cs[d], d));
        }
      }
      info.cell_shape = Shape::from(cs);
    }
    for (int d = 0; d < info.shape.rank(); ++d) {
      info.cell_shape[d] = std::min(info.cell_shape[d], info.shape[d]);
    }

    std::string identity;
    if (mode == detail::HashMode::kContent) {
      identity = with_context("param \"path\"", [&] { return content_identity(dir, zarray); });
    } else {
      identity = fmt::format("zarr {}\n{}\nnewest folder mtime {}", dir.string(), zarray,
                             newest_folder_mtime(dir));
    }
    return std::make_unique<ReadZarrKernel>(std::move(info), dir, std::move(meta),
                                            std::move(identity));
  }
};

}  // namespace

std::shared_ptr<const Op> make_read_zarr_op() { return std::make_shared<ReadZarrOp>(); }

}  // namespace cellflow::nodes
