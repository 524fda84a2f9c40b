// read.zarr: an existing Zarr array as a source node. Zarr v2 (as zarr-python
// 2 writes it: blosc with any codec, zstd, zlib, gzip or none; "." or "/"
// dimension separator; little- or big-endian) here, Zarr v3 in zarr_v3.cpp.
// Chunks are decoded on demand; a missing chunk reads as the array's
// fill_value. A chunk without a checksum (v2, or v3 without crc32c) is
// trusted as long as it decodes to exactly its size.
#include <fmt/format.h>

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
#include "ngff_space.hpp"
#include "ops.hpp"
#include "zarr_codec.hpp"
#include "zarr_v2.hpp"
#include "zarr_v3.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

/// Opens the array in `dir`: Zarr v3 when it has a zarr.json, else v2 (.zarray).
zarr::OpenedArray open_array(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InvalidArgument(
        fmt::format("param \"path\": {} is not a folder (a Zarr array is a folder with a "
                    "zarr.json (v3) or .zarray (v2) file)",
                    dir.string()));
  }
  for (const char* name : {"zarr.json", ".zarray"}) {
    std::optional<std::string> content;
    try {
      content = read_file(dir / name);
    } catch (const IoError& e) {
      throw InvalidArgument(fmt::format("param \"path\": {}", e.what()));
    }
    if (!content) continue;
    return name[0] == 'z' ? zarr::open_v3(dir, std::move(*content))
                          : zarr::open_v2(dir, std::move(*content));
  }
  throw InvalidArgument(fmt::format(
      "param \"path\": {} is not a Zarr array (no zarr.json or .zarray; a v2 group cannot be "
      "read: give the array's own folder)",
      dir.string()));
}

class ReadZarrKernel final : public NodeKernel {
 public:
  ReadZarrKernel(ImageInfo info, zarr::OpenedArray array, std::string identity, int64_t newest)
      : NodeKernel(std::move(info)),
        a_(std::move(array)),
        chunk_grid_(a_.shape, a_.chunks),
        identity_(std::move(identity)),
        newest_(newest) {}

  std::string identity() const override { return identity_; }

  void compute(const Box& out_box, std::span<const InputRegion> /*inputs*/,
               CellBuffer& out) const override {
    const size_t size = dtype_size(a_.dtype);
    const size_t chunk_elems = static_cast<size_t>(a_.chunks.product());
    std::vector<std::byte> scratch;
    for_each_index(chunk_grid_.cells_touching(out_box), [&](const CellIndex& chunk) {
      Dims begin(chunk.rank());
      Dims end(chunk.rank());
      for (int d = 0; d < chunk.rank(); ++d) {
        begin[d] = chunk[d] * a_.chunks[d];
        end[d] = begin[d] + a_.chunks[d];
      }
      const Box stored_box(begin, end);  // the full chunk as stored, edge padding included
      const Box region = stored_box.intersect(out_box);
      // A cell that is exactly one stored chunk is decoded in place.
      const bool direct = stored_box == out_box;
      std::byte* dst = out.mutable_data();
      if (!direct) {
        scratch.resize(chunk_elems * size);
        dst = scratch.data();
      }
      check_unchanged(chunk);
      if (!a_.source->read(chunk, dst)) {
        zarr::fill_region(out.mutable_data(), out_box, region, a_.fill, size);
        return;
      }
      if (!direct) copy_region(dst, stored_box, out.mutable_data(), out_box, region, size);
    });
  }

 private:
  // The node serves its cells from the array (it is not copied into the
  // cache), so data that changed under a run would mix old and new cells: a
  // chunk whose folder changed since the graph was built (a chunk written,
  // renamed or removed there) is an error instead.
  void check_unchanged(const CellIndex& chunk) const {
    const fs::path file = a_.source->file_of(chunk);
    if (file.empty()) return;
    // A missing chunk's folder may be missing too: then its nearest existing
    // parent (creating the folder would have changed that one's mtime).
    std::error_code ec;
    for (fs::path folder = file.parent_path(); !folder.empty(); folder = folder.parent_path()) {
      const auto t = fs::last_write_time(folder, ec);
      if (ec) continue;
      if (static_cast<int64_t>(t.time_since_epoch().count()) <= newest_) return;
      throw IoError(
          fmt::format("file {}: the Zarr array changed since the graph was built (folder {} was "
                      "modified); build the graph again to read the new data",
                      file.string(), folder.string()));
    }
  }

  zarr::OpenedArray a_;
  CellGrid chunk_grid_;
  std::string identity_;
  int64_t newest_;  // the newest folder mtime of the array when the graph was built
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
  // Its cells are served from the array, never copied into the cache.
  bool persist_by_default() const override { return false; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Reads an existing Zarr array, v2 (a folder with .zarray, as zarr-python 2 writes "
           "it: blosc, zstd, zlib, gzip or no compression, \".\" or \"/\" separator, C order) "
           "or v3 (a folder with zarr.json: regular chunk grid, \"default\" or \"v2\" chunk "
           "keys, codecs bytes in either byte order, transpose, blosc, zstd, gzip, crc32c "
           "(verified) and sharding_indexed, read by inner chunk); dtypes bool/u8..u64/"
           "i8..i64/f32/f64 (bool reads as u8); missing chunks, shards and inner chunks read as "
           "fill_value. A chunk that does not decode to exactly its size is an error naming "
           "its file. An array of an OME-NGFF 0.4/0.5 image group gets the group's physical "
           "space (scale and translation of its dataset and multiscale, axis names, units).";
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
    zarr::OpenedArray array = open_array(dir);

    ImageInfo info;
    info.dtype = array.dtype;
    info.shape = array.shape;
    info.cell_shape = array.chunks;
    if (params.has("cell_shape") && !params.get("cell_shape").is_null()) {
      const std::vector<int64_t> cs = params.get_ints("cell_shape");
      if (cs.size() != static_cast<size_t>(array.shape.rank())) {
        throw InvalidArgument(fmt::format(
            "param \"cell_shape\" must have {} entries like the array's shape {} (got {})",
            array.shape.rank(), array.shape.str(), cs.size()));
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

    // The space of an NGFF image's array; not part of the identity (the
    // consumers whose results depend on spacing hash it themselves).
    if (std::optional<Space> space = ngff_space(dir, info.shape.rank())) info.space = *space;

    const int64_t newest = newest_folder_mtime(dir);
    std::string identity;
    if (mode == detail::HashMode::kContent) {
      identity =
          with_context("param \"path\"", [&] { return content_identity(dir, array.meta_text); });
    } else {
      // A v2 array keeps the identity it always had; a v3 one is marked as such.
      identity = fmt::format("zarr {}{}\n{}\nnewest folder mtime {}",
                             array.meta_file.filename() == "zarr.json" ? "v3 " : "", dir.string(),
                             array.meta_text, newest);
    }
    return std::make_unique<ReadZarrKernel>(std::move(info), std::move(array), std::move(identity),
                                            newest);
  }
};

}  // namespace

std::shared_ptr<const Op> make_read_zarr_op() { return std::make_shared<ReadZarrOp>(); }

}  // namespace cellflow::nodes
