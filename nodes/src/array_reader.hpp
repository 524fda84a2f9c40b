// What the chunked-array readers (read.zarr, read.n5) share once their format
// is parsed into a zarr::OpenedArray: the params path, cell_shape and hash,
// the kernel that reads cells chunk by chunk, and the node's identity.
// Private to nodes/. Thread-safety: the kernel may be computed concurrently.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/space.hpp"
#include "cellflow/graph/op.hpp"
#include "zarr_codec.hpp"

namespace cellflow::nodes::detail {

/// The params of a reader of the array at `path` (the folder, described by
/// `what`): path (required), cell_shape (default: the chunks, described by
/// `chunks`) and hash.
std::vector<ParamSpec> array_reader_params(const std::string& what, const std::string& chunks);

/// How the node's identity names the format: `stat_tag` starts the "stat"
/// identity ("zarr", "zarr v3", "n5"), `content_tag` the "content" one.
struct ArrayIdentityTags {
  std::string stat_tag;
  std::string content_tag;
};

/// The kernel of a reader of `array` (opened from folder `dir`) with the
/// params of array_reader_params: the node has the array's dtype and shape,
/// cells of `cell_shape` (checked against the rank; clipped to the shape) or
/// of its chunks, and `space` when given. Its identity covers the metadata
/// text and the data ("stat": the newest folder mtime; "content": every chunk
/// file's bytes, read now). Throws InvalidArgument naming the param.
std::unique_ptr<NodeKernel> bind_array_reader(const Params& params,
                                              const std::filesystem::path& dir,
                                              zarr::OpenedArray array, std::optional<Space> space,
                                              const ArrayIdentityTags& tags);

}  // namespace cellflow::nodes::detail
