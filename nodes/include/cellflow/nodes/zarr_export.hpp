// Writing a cell image as a Zarr v2 array or as an OME-NGFF 0.4 multiscale
// group (a pyramid of 2x-downsampled levels), for napari, zarr-python and
// other viewers. Thread-safe: concurrent calls writing different folders are fine.
#pragma once

#include <filesystem>
#include <string_view>

#include "cellflow/cache/dtype.hpp"

namespace cellflow {
class CachedCellImage;
}

namespace cellflow::nodes {

/// How a pyramid level is made from the one above it (2x2x2 blocks of voxels,
/// fewer at the image's edge).
enum class Downsample {
  /// By dtype: mean for floats and 8/16-bit integers (intensities, and 0/1
  /// masks, where the rounded mean is the majority with ties set); mode for
  /// 32/64-bit integers (label images, whose labels must not be averaged).
  kAuto,
  kMean,  // arithmetic mean, rounded to nearest for integer dtypes
  kMode,  // most frequent value, ties to the smallest
  kMax,   // maximum (keeps thin or small objects of masks visible)
};

/// Parses "auto", "mean", "mode" or "max"; throws InvalidArgument otherwise.
Downsample parse_downsample(std::string_view name);
/// The method kAuto picks for `dtype`.
Downsample auto_downsample(DType dtype);

struct ZarrExportOptions {
  /// Pyramid levels of an OME-Zarr export (1 = full resolution only).
  int levels = 1;
  Downsample downsample = Downsample::kAuto;
  /// Worker threads for writing chunks (0 = all cores).
  int threads = 0;
};

/// True for paths ending in ".zarr" (including ".ome.zarr"), ignoring a
/// trailing slash and case.
bool is_zarr_path(const std::filesystem::path& path);
/// True for paths ending in ".ome.zarr".
bool is_ome_zarr_path(const std::filesystem::path& path);

/// Writes the whole image to `folder` as a plain Zarr v2 array: chunks = the
/// image's cell shape, blosc-lz4, "/" separator, fill_value 0. An existing
/// Zarr array or group there is replaced; any other existing file or non-empty
/// folder is an error. Computes the cells it lacks. Throws InvalidArgument or
/// IoError naming the folder.
void export_zarr(CachedCellImage& image, const std::filesystem::path& folder,
                 const ZarrExportOptions& opts = {});

/// Writes an OME-NGFF 0.4 group to `folder`: .zgroup, .zattrs with one
/// "multiscales" entry (axes as in the cache, datasets "0".."L-1" with scale
/// 2^l on the downsampled axes), and one Zarr v2 array per level. Level l has
/// shape ceil(shape / 2^l) on the last min(rank, 3) axes (the spatial ones;
/// leading time/channel axes keep their size) and the cell shape of level 0
/// clipped to it. REQUIRES: 1 <= opts.levels <= 32. Same replacement rules
/// and errors as export_zarr.
void export_ome_zarr(CachedCellImage& image, const std::filesystem::path& folder,
                     const ZarrExportOptions& opts = {});

}  // namespace cellflow::nodes
