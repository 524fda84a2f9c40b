// read.zarr's Zarr v3 reader: a zarr.json array with a regular chunk grid,
// "default" or "v2" chunk keys, and the codecs transpose, bytes (either
// endianness), sharding_indexed, blosc, zstd, gzip and crc32c (verified).
// Private to nodes/. Thread-safety: the opened array's source may be read
// concurrently.
#pragma once

#include <filesystem>
#include <string>

#include "zarr_codec.hpp"

namespace cellflow::nodes::zarr {

/// Opens the v3 array in `dir` whose zarr.json holds `text`. Throws
/// InvalidArgument (param "path", the file and the field) for metadata it
/// cannot read or that changes meaning in a way it does not support.
OpenedArray open_v3(const std::filesystem::path& dir, std::string text);

}  // namespace cellflow::nodes::zarr
