// The shared part of read.zarr and read.n5 (see array_reader.hpp).
#include "array_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "file_identity.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::detail {
namespace {

class ArrayReaderKernel final : public NodeKernel {
 public:
  ArrayReaderKernel(ImageInfo info, zarr::OpenedArray array, std::string identity, int64_t newest)
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
          fmt::format("file {}: the array changed since the graph was built (folder {} was "
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

/// XXH3-128 of the metadata text and of every chunk file (relative paths and
/// bytes, sorted).
std::string content_hash(const fs::path& dir, const std::string& meta_text) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] == '.') continue;  // .zarray (hashed below), .zattrs, temp files
    files.push_back(fs::relative(e.path(), dir));
  }
  std::sort(files.begin(), files.end());
  ContentHasher hasher;
  hasher.add(meta_text);
  for (const fs::path& f : files) {
    const std::string rel = f.generic_string();
    hasher.add(std::string_view(rel.c_str(), rel.size() + 1));  // with its NUL as a separator
    hasher.add_file(dir / f);
  }
  return hasher.hex();
}

}  // namespace

std::vector<ParamSpec> array_reader_params(const std::string& what, const std::string& chunks) {
  return {
      {"path", ParamType::kString, Value(),
       what + " (a relative path is taken from the graph file's folder, else from the current "
              "directory)",
       true},
      {"cell_shape", ParamType::kIntList, Value(),
       "cell shape of the node (default: " + chunks + ")"},
      hash_mode_param(),
  };
}

std::unique_ptr<NodeKernel> bind_array_reader(const Params& params, const fs::path& dir,
                                              zarr::OpenedArray array, std::optional<Space> space,
                                              const ArrayIdentityTags& tags) {
  const HashMode mode = parse_hash_mode(params);
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
  // Not part of the identity (the consumers whose results depend on spacing
  // hash it themselves).
  if (space) info.space = std::move(*space);

  const int64_t newest = newest_folder_mtime(dir);
  std::string identity;
  if (mode == HashMode::kContent) {
    identity = fmt::format("{} content {}", tags.content_tag, with_context("param \"path\"", [&] {
                             return content_hash(dir, array.meta_text);
                           }));
  } else {
    identity = fmt::format("{} {}\n{}\nnewest folder mtime {}", tags.stat_tag, dir.string(),
                           array.meta_text, newest);
  }
  return std::make_unique<ArrayReaderKernel>(std::move(info), std::move(array), std::move(identity),
                                             newest);
}

}  // namespace cellflow::nodes::detail
