// read.n5's N5 reader (see n5.hpp). A block file is a big-endian header
// (u16 mode, u16 ndim, ndim x u32 size, fastest axis first; mode 1 adds a
// u32 element count) and the compressed big-endian elements, fastest axis
// first. An edge block holds only its in-bounds part (N5's own writers) or
// the whole block, padded (zarr-python's N5Store): both are read.
#include "n5.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/log.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::n5 {
namespace {

/// What attributes.json says, reduced to what reading its blocks needs (C order).
struct Layout {
  Shape shape;
  Shape chunks;
  size_t elem = 1;
  zarr::Compressor codec = zarr::Compressor::kNone;
};

/// `s` with its axes in the other order (N5's fastest-first <-> C order).
Shape reversed(const Shape& s) {
  Shape out(s.rank());
  for (int d = 0; d < s.rank(); ++d) out[d] = s[s.rank() - 1 - d];
  return out;
}

DType parse_data_type(const Value* v, const fs::path& meta) {
  if (const std::optional<DType> t = zarr::parse_type_name(v, false)) return *t;
  zarr::bad_array(meta, fmt::format("\"dataType\" {} is not supported (supported: uint8..uint64, "
                                    "int8..int64, float32, float64)",
                                    v != nullptr ? to_json_compact(*v) : "(missing)"));
}

/// "compression": {"type": ...}, or N5 0.x's "compressionType" string; raw when neither.
zarr::Compressor parse_compression(const Value& z, const fs::path& meta) {
  std::string type = "raw";
  bool use_zlib = false;
  if (const Value* c = z.find("compression"); c != nullptr) {
    const Value* t = c->is_object() ? c->find("type") : nullptr;
    if (t == nullptr || !t->is_string())
      zarr::bad_array(meta, "\"compression\" must be an object with a \"type\"");
    type = t->as_string();
    if (const Value* u = c->find("useZlib"); u != nullptr) {
      if (!u->is_bool())
        zarr::bad_array(meta, "\"compression\": \"useZlib\" must be true or false");
      use_zlib = u->as_bool();
    }
  } else if (const Value* t = z.find("compressionType"); t != nullptr) {
    if (!t->is_string()) zarr::bad_array(meta, "\"compressionType\" must be a string");
    type = t->as_string();
  }
  if (type == "raw") return zarr::Compressor::kNone;
  if (type == "gzip") return use_zlib ? zarr::Compressor::kZlib : zarr::Compressor::kGzip;
  if (type == "zstd") return zarr::Compressor::kZstd;
  if (type == "blosc") return zarr::Compressor::kBlosc;
  zarr::bad_array(meta, fmt::format("compression \"{}\" is not supported (supported: raw, gzip, "
                                    "zstd, blosc; rewrite the dataset with one of them)",
                                    type));
}

/// Why a resolution cannot be used (turned into a warning).
struct Unusable {
  std::string why;
};

/// N5 units as OME-NGFF (UDUNITS-2) names.
std::string unit_name(const std::string& unit) {
  static const std::pair<const char*, const char*> kShort[] = {
      {"um", "micrometer"},      {"\u00b5m", "micrometer"},
      {"\u03bcm", "micrometer"}, {"micron", "micrometer"},
      {"nm", "nanometer"},       {"mm", "millimeter"},
      {"cm", "centimeter"},      {"m", "meter"},
      {"pm", "picometer"},       {"A", "angstrom"},
  };
  for (const auto& [from, to] : kShort)
    if (unit == from) return to;
  if (is_space_unit(unit)) return unit;
  throw Unusable{fmt::format("unit \"{}\" is not a known length unit", unit)};
}

/// Per-axis spacing (fastest axis first in `v`) reversed to C order.
std::vector<double> spacing_of(const Value& v, int rank, const char* field) {
  if (!v.is_array() || v.as_array().size() != static_cast<size_t>(rank))
    throw Unusable{fmt::format("\"{}\" must list {} numbers", field, rank)};
  std::vector<double> out(static_cast<size_t>(rank));
  for (int d = 0; d < rank; ++d) {
    const Value& x = v.as_array()[static_cast<size_t>(d)];
    const double s = x.is_int()     ? static_cast<double>(x.as_int())
                     : x.is_float() ? x.as_double()
                                    : 0;
    if (!(std::isfinite(s) && s > 0))
      throw Unusable{fmt::format("\"{}\" must hold finite numbers > 0", field)};
    out[static_cast<size_t>(rank - 1 - d)] = s;
  }
  return out;
}

/// The space "pixelResolution" or "resolution" give (nullopt without either).
std::optional<Space> space_of(const Value& z, int rank) {
  std::vector<double> spacing;
  std::string unit;
  if (const Value* p = z.find("pixelResolution"); p != nullptr) {
    if (p->is_object()) {
      const Value* dims = p->find("dimensions");
      if (dims == nullptr) throw Unusable{"\"pixelResolution\" has no \"dimensions\""};
      spacing = spacing_of(*dims, rank, "pixelResolution.dimensions");
      if (const Value* u = p->find("unit"); u != nullptr) {
        if (!u->is_string()) throw Unusable{"\"pixelResolution\".\"unit\" must be a string"};
        unit = unit_name(u->as_string());
      }
    } else {
      spacing = spacing_of(*p, rank, "pixelResolution");
    }
  } else if (const Value* r = z.find("resolution"); r != nullptr) {
    spacing = spacing_of(*r, rank, "resolution");
    if (const Value* u = z.find("units");
        u != nullptr && u->is_array() && u->as_array().size() == static_cast<size_t>(rank)) {
      // n5-viewer's per-axis "units": one unit for all axes only.
      for (const Value& x : u->as_array()) {
        if (!x.is_string() || x.as_string() != u->as_array()[0].as_string())
          throw Unusable{"\"units\" differ between axes"};
      }
      unit = unit_name(u->as_array()[0].as_string());
    }
  } else {
    return std::nullopt;
  }
  Space s;
  s.spacing = std::move(spacing);
  s.units.assign(static_cast<size_t>(rank), unit);
  return s.filled(rank);
}

uint32_t be32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

uint16_t be16(const std::string& s, size_t at) {
  return static_cast<uint16_t>((static_cast<unsigned char>(s[at]) << 8) |
                               static_cast<unsigned char>(s[at + 1]));
}

/// Blocks of an N5 dataset, one file each.
class BlockFiles final : public zarr::ChunkSource {
 public:
  BlockFiles(fs::path dir, Layout layout) : dir_(std::move(dir)), m_(std::move(layout)) {}

  fs::path file_of(const CellIndex& chunk) const override {
    fs::path file = dir_;
    for (int d = chunk.rank() - 1; d >= 0; --d) file /= std::to_string(chunk[d]);
    return file;
  }

  bool read(const CellIndex& chunk, std::byte* out) const override {
    const int r = chunk.rank();
    const fs::path file = file_of(chunk);
    const std::string what = "file " + file.string();
    thread_local std::string thread_buffer;
    ReusedBuffer stored(thread_buffer);
    if (!with_context(what, [&] { return read_file_reusing(file, *stored); })) return false;
    const std::string& s = *stored;

    if (s.size() < 4)
      throw CorruptionError(
          fmt::format("{}: {} bytes, too short for an N5 block header", what, s.size()));
    const uint16_t mode = be16(s, 0);
    const uint16_t ndim = be16(s, 2);
    if (mode == 2) {
      throw CorruptionError(what + ": an N5 object block (mode 2), not an array block");
    }
    if (mode > 2) throw CorruptionError(fmt::format("{}: unknown N5 block mode {}", what, mode));
    if (ndim != r) {
      throw CorruptionError(
          fmt::format("{}: the block header has {} dimensions, the dataset {}", what, ndim, r));
    }
    const size_t header = 4 + 4 * static_cast<size_t>(r) + (mode == 1 ? 4 : 0);
    if (s.size() < header) {
      throw CorruptionError(fmt::format("{}: {} bytes, too short for its {}-byte block header",
                                        what, s.size(), header));
    }
    // The block's shape in C order: each axis its in-bounds part or the whole block.
    Shape block(r);
    Shape in_bounds(r);
    for (int d = 0; d < r; ++d) {
      const int64_t full = m_.chunks[d];
      in_bounds[d] = std::min(full, m_.shape[d] - chunk[d] * full);
      block[d] = be32(s, 4 + 4 * static_cast<size_t>(r - 1 - d));
    }
    for (int d = 0; d < r; ++d) {
      if (block[d] != in_bounds[d] && block[d] != m_.chunks[d]) {
        throw CorruptionError(fmt::format(
            "{}: the block header gives size {} (fastest axis first), expected {}{}", what,
            reversed(block).str(), reversed(in_bounds).str(),
            in_bounds == m_.chunks ? ""
                                   : " (or the whole block " + reversed(m_.chunks).str() + ")"));
      }
    }
    const auto n = static_cast<size_t>(block.product());
    if (mode == 1 && be32(s, header - 4) != n) {
      throw CorruptionError(fmt::format("{}: a varlength block of {} elements, expected {}", what,
                                        be32(s, header - 4), n));
    }
    const std::string payload = s.substr(header);
    const bool whole = block == m_.chunks;
    std::vector<std::byte> scratch(whole ? 0 : n * m_.elem);
    std::byte* dst = whole ? out : scratch.data();
    zarr::decompress(m_.codec, payload, dst, n * m_.elem, what);
    if (std::endian::native == std::endian::little && m_.elem > 1)
      zarr::swap_bytes(dst, n, m_.elem);
    if (!whole) {
      const Box chunk_box(Dims(r, 0), m_.chunks);
      const Box block_box(Dims(r, 0), block);
      std::memset(out, 0, static_cast<size_t>(m_.chunks.product()) * m_.elem);
      copy_region(dst, block_box, out, chunk_box, block_box, m_.elem);
    }
    return true;
  }

 private:
  fs::path dir_;
  Layout m_;
};

}  // namespace

Dataset open_dataset(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InvalidArgument(fmt::format(
        "param \"path\": {} is not a folder (an N5 dataset is a folder with an attributes.json "
        "file)",
        dir.string()));
  }
  const fs::path meta = dir / "attributes.json";
  std::optional<std::string> text;
  try {
    text = read_file(meta);
  } catch (const IoError& e) {
    throw InvalidArgument(fmt::format("param \"path\": {}", e.what()));
  }
  if (!text) {
    zarr::bad_array(meta, "not found: the folder is not an N5 dataset (no attributes.json)");
  }
  Value z;
  try {
    z = parse_json(*text, meta.string());
  } catch (const Error& e) {
    zarr::bad_array(meta, e.what());
  }
  if (!z.is_object()) zarr::bad_array(meta, "not a JSON object");
  if (z.find("dimensions") == nullptr && z.find("dataType") == nullptr) {
    zarr::bad_array(meta,
                    "this is an N5 group, not a dataset (no \"dimensions\" or \"dataType\"): "
                    "give the folder of one of its datasets");
  }
  Layout m;
  m.shape = reversed(zarr::dims_field(z, "dimensions", meta, true));
  m.chunks = reversed(zarr::dims_field(z, "blockSize", meta, true));
  if (m.chunks.rank() != m.shape.rank())
    zarr::bad_array(meta, "\"blockSize\" and \"dimensions\" differ in rank");
  zarr::check_grid(m.shape, m.chunks, meta);
  Dataset out;
  zarr::OpenedArray& a = out.array;
  a.dtype = parse_data_type(z.find("dataType"), meta);
  m.elem = dtype_size(a.dtype);
  m.codec = parse_compression(z, meta);
  try {
    out.space = space_of(z, m.shape.rank());
  } catch (const Unusable& u) {
    log_warning(
        fmt::format("read.n5 {}: the resolution in {} cannot give its physical space "
                    "({}); it is read in voxel space",
                    dir.string(), meta.string(), u.why));
  }
  a.shape = m.shape;
  a.chunks = m.chunks;
  a.meta_file = meta;
  a.meta_text = std::move(*text);
  a.source = std::make_unique<BlockFiles>(dir, std::move(m));
  return out;
}

}  // namespace cellflow::nodes::n5
