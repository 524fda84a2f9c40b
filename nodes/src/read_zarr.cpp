// read.zarr: an existing Zarr v2 array (as zarr-python writes it) as a source
// node. Chunks are decoded on demand (blosc with any codec, zstd, zlib, gzip or
// none; "." or "/" dimension separator; little- or big-endian); a missing
// chunk reads as the array's fill_value. Foreign arrays carry no checksum, so
// a chunk is trusted as long as it decodes to the right size.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "file_identity.hpp"
#include "ops.hpp"
#include "zarr_v2_format.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

using detail::ZarrMeta;

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
  return detail::parse_zarray(text, meta);
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
    const size_t chunk_bytes = detail::chunk_bytes(meta_);
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
        scratch.resize(chunk_bytes);
        dst = scratch.data();
      }
      detail::decode_chunk(meta_, *stored, dst, "file " + file.string());
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
