// read.zarr: an existing Zarr array as a source node. Zarr v2 (as zarr-python
// 2 writes it: blosc with any codec, zstd, zlib, gzip or none; "." or "/"
// dimension separator; little- or big-endian) here, Zarr v3 in zarr_v3.cpp.
// Chunks are decoded on demand (array_reader.cpp); a missing chunk reads as
// the array's fill_value. A chunk without a checksum (v2, or v3 without
// crc32c) is trusted as long as it decodes to exactly its size.
#include <fmt/format.h>

#include <optional>
#include <string>

#include "array_reader.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
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
    return detail::array_reader_params("the array's folder", "the array's chunks");
  }
  int min_inputs() const override { return 0; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 0);
    const fs::path dir = params.get_path("path");
    zarr::OpenedArray array = open_array(dir);
    // The space of an NGFF image's array.
    std::optional<Space> space = ngff_space(dir, array.shape.rank());
    // A v2 array keeps the identity it always had; a v3 one is marked as such.
    const bool v3 = array.meta_file.filename() == "zarr.json";
    return detail::bind_array_reader(params, dir, std::move(array), std::move(space),
                                     {v3 ? "zarr v3" : "zarr", "zarr"});
  }
};

}  // namespace

std::shared_ptr<const Op> make_read_zarr_op() { return std::make_shared<ReadZarrOp>(); }

}  // namespace cellflow::nodes
