// read.n5's N5 reader: a dataset folder whose attributes.json gives
// "dimensions", "blockSize", "dataType" and "compression" (raw, gzip with or
// without useZlib, zstd, blosc), with one file per block at
// <dataset>/<i0>/<i1>/... Private to nodes/. Thread-safety: the opened
// dataset's source may be read concurrently.
#pragma once

#include <filesystem>
#include <optional>

#include "cellflow/cache/space.hpp"
#include "zarr_codec.hpp"

namespace cellflow::nodes::n5 {

/// An N5 dataset opened for reading, in C order: the shape and chunks are
/// N5's dimensions and blockSize reversed, the data read as it is stored
/// (N5 stores a block's elements fastest axis first, which is C order of the
/// reversed shape). Missing blocks read as 0.
struct Dataset {
  zarr::OpenedArray array;
  /// From "pixelResolution" {"dimensions", "unit"} or "resolution" (reversed),
  /// when present and usable; nullopt (with a warning naming attributes.json
  /// when it is present but unusable) otherwise.
  std::optional<Space> space;
};

/// Opens the N5 dataset in folder `dir`. Throws InvalidArgument (param
/// "path", naming attributes.json and the field) for a folder that is not a
/// dataset or metadata it cannot read. Each block is checked when it is read:
/// its header (mode, rank, block size, which must be the in-bounds part of
/// the block or the whole block) and its exact decompressed size; a damaged
/// block is a CorruptionError naming its file.
Dataset open_dataset(const std::filesystem::path& dir);

}  // namespace cellflow::nodes::n5
