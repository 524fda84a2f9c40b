// Writing a cell image to a single image file (TIFF, NRRD, MetaImage, PNG)
// with ITK's writers, for viewing and exchange. Thread-safe: concurrent calls
// writing different files are fine.
#pragma once

#include <filesystem>

#include "cellflow/cache/space.hpp"

namespace cellflow {
class CachedCellImage;
}

namespace cellflow::nodes {

struct ExportOptions {
  /// PNG only: nearest-neighbour enlargement factor (>= 1), so that a small
  /// image such as a 4x4 density map can be viewed.
  int upscale = 1;
  /// PNG only: also scale 2-D u8/u16 images from their min..max to 8 bits
  /// (by default they are written as they are; other types are always scaled).
  bool png_rescale = false;
  /// Where the voxels lie (Graph node info's space): NRRD, MetaImage and TIFF
  /// record spacing and origin (TIFF: as ITK writes its resolution); PNG does
  /// not. Empty: spacing 1, origin 0.
  Space space;
};

/// Writes the whole image (rank 2 or 3) to `file`; the format follows the
/// extension: .tif/.tiff, .nrrd, .mha/.mhd, .png. NRRD and MetaImage keep
/// every dtype; TIFF keeps u8, i8, u16, i16 and f32 and writes other types as
/// f32. A 2-D u8/u16 image goes to PNG as it is; any other image is scaled
/// linearly from its min..max to u8, and a 3-D image is first reduced to its
/// maximum projection along the first axis. Computes the cells it lacks.
/// Throws InvalidArgument for an unknown extension or an unsupported rank, and
/// IoError if the file cannot be written.
void export_image(CachedCellImage& image, const std::filesystem::path& file,
                  const ExportOptions& opts = {});

}  // namespace cellflow::nodes
