// read.zarr's Zarr v2 reader: a .zarray array as zarr-python writes it (blosc,
// zstd, zlib, gzip or no compressor; "." or "/" separator; C order; either
// byte order). Private to nodes/. Thread-safety: the opened array's source may
// be read concurrently.
#pragma once

#include <filesystem>
#include <string>

#include "zarr_codec.hpp"

namespace cellflow::nodes::zarr {

/// Opens the v2 array in `dir` whose .zarray holds `text`. Throws
/// InvalidArgument (param "path", the file and the field) for metadata it
/// cannot read.
OpenedArray open_v2(const std::filesystem::path& dir, std::string text);

}  // namespace cellflow::nodes::zarr
