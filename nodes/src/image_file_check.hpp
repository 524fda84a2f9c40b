// Whole-file checks for read.image: a file whose header promises more bytes
// than it holds is refused before any cell is read (ITK would zero-fill the
// missing part of a MetaImage, or count fewer pages of a cut TIFF).
// Stateless; safe from any thread.
#pragma once

#include <filesystem>

#include "cellflow/cache/dims.hpp"
#include "cellflow/cache/dtype.hpp"

namespace cellflow::nodes::detail {

/// Throws IoError naming the file when a MetaImage (.mha/.mhd) or TIFF file
/// (or a MetaImage's data file) is shorter than its header says. `shape` and
/// `dtype` are what ITK read from the header. Other formats are not checked
/// here (raw NRRD is checked where its layout is read).
void check_image_file_whole(const std::filesystem::path& file, const Shape& shape, DType dtype);

}  // namespace cellflow::nodes::detail
