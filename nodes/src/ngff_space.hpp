// The physical space of a Zarr array that lies in an OME-NGFF image group
// (0.4: the group's .zattrs "multiscales"; 0.5: its zarr.json
// attributes.ome.multiscales), for read.zarr. Private to nodes/.
// Thread-safety: a pure function of the files it reads.
#pragma once

#include <filesystem>
#include <optional>

#include "cellflow/cache/space.hpp"

namespace cellflow::nodes {

/// The space of the array in `array_dir` (rank `rank`) when its parent or
/// grandparent folder is an NGFF image group listing it as a dataset: the
/// dataset's coordinateTransformations (scale, translation) followed by the
/// multiscale's own, and the axes' names and units (units of space and time
/// axes only). Every axis is carried, time and channel axes included.
/// nullopt, with a warning naming the file, when the metadata is there but
/// cannot be used (path-based transforms, lengths that do not match the
/// rank, non-positive scales); nullopt, silently, when there is no group.
std::optional<Space> ngff_space(const std::filesystem::path& array_dir, int rank);

}  // namespace cellflow::nodes
