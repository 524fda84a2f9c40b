// Writing a cell image as a Zarr v2 or v3 array, or as an OME-NGFF 0.4 (Zarr
// v2) or 0.5 (Zarr v3) multiscale group (a pyramid of 2x-downsampled levels
// carrying the image's physical space), for napari, zarr-python, zarrita and
// other viewers. Thread-safe: concurrent calls writing different folders are fine.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"
#include "cellflow/cache/space.hpp"
#include "cellflow/cache/value.hpp"

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
  /// Zarr format of the arrays: 2 or 3. An OME-Zarr export is NGFF 0.4 with
  /// Zarr v2, NGFF 0.5 with Zarr v3.
  int zarr_format = 2;
  /// The image's physical space (empty: voxel space), written into the NGFF
  /// metadata and, as axis names, into Zarr v3 dimension_names.
  Space space;
  /// OME-Zarr: the image is a label image (integer ids, 0 = background): it
  /// is written with "image-label" metadata, and its pyramid (kAuto) by mode.
  bool labels = false;
};

/// A label image written beside an OME-Zarr image, as labels/<name>.
struct LabelExport {
  std::string name;  // a folder name: no '/', not starting with '.'
  CachedCellImage* image = nullptr;
  Space space;  // must be the image's grid
};

/// The NGFF "multiscales" entry of an export (one function for NGFF 0.4 and
/// 0.5; 0.5 keeps "version" out of it, in the "ome" object): axes (t, c,
/// then up to 3 space axes from the end, named after `space` where it has
/// names, with its units where they are NGFF unit names), and per level l a
/// scale of spacing x 2^l and a translation of origin + spacing x (2^l - 1)/2
/// on the axes `factor` halves (the centre of the 2^l block a level-l voxel
/// summarizes), spacing and origin on the others.
Value ngff_multiscale(const Space& space, int rank, int levels, const Dims& factor,
                      std::string_view method, const std::string& name, std::string_view version);

/// True for paths ending in ".zarr" (including ".ome.zarr"), ignoring a
/// trailing slash and case.
bool is_zarr_path(const std::filesystem::path& path);
/// True for paths ending in ".ome.zarr".
bool is_ome_zarr_path(const std::filesystem::path& path);

/// Writes the whole image to `folder` as a plain Zarr array (v2 or v3 as
/// opts.zarr_format says): chunks = the image's cell shape, blosc-lz4 with
/// byte shuffle, "/" separator (v3: "c/i/j/k" keys, little-endian "bytes"),
/// fill_value 0. An existing
/// Zarr array or group there is replaced; any other existing file or non-empty
/// folder is an error. Computes the cells it lacks. Throws InvalidArgument or
/// IoError naming the folder.
void export_zarr(CachedCellImage& image, const std::filesystem::path& folder,
                 const ZarrExportOptions& opts = {});

/// Writes an OME-NGFF group to `folder`: NGFF 0.4 (.zgroup, .zattrs with one
/// "multiscales" entry) with Zarr v2 arrays, or NGFF 0.5 (zarr.json with
/// attributes.ome) with Zarr v3 arrays, per opts.zarr_format; datasets
/// "0".."L-1" transformed as ngff_multiscale says. Level l has
/// shape ceil(shape / 2^l) on the last min(rank, 3) axes (the spatial ones;
/// leading time/channel axes keep their size) and the cell shape of level 0
/// clipped to it. REQUIRES: 1 <= opts.levels <= 32. Same replacement rules
/// and errors as export_zarr.
///
/// `labels` are written beside the image as OME-NGFF label images: a
/// "labels" group listing them, and labels/<name> a multiscale group of its
/// own (same levels, pyramid by mode) with "image-label" metadata (background
/// 0 transparent, source "../../"). Each must be an integer image of the
/// image's shape on the image's grid (InvalidArgument naming it otherwise).
/// The image and its labels are written aside and renamed into place as one.
void export_ome_zarr(CachedCellImage& image, const std::filesystem::path& folder,
                     const ZarrExportOptions& opts = {},
                     const std::vector<LabelExport>& labels = {});

}  // namespace cellflow::nodes
