// Private to cellflow_nodes: the min and max of a whole image, for the global
// ops (otsu, rescale) whose prepare() needs them before any cell is computed.
// image_value_range reads cells from several threads; CachedCellImage allows that.
#pragma once

#include <limits>

namespace cellflow {
class CachedCellImage;
}  // namespace cellflow

namespace cellflow::nodes::detail {

/// [lo, hi] of the values of an image; lo > hi (+inf, -inf) when it has none.
struct ValueRange {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();

  bool empty() const { return !(lo <= hi); }
};

/// The min and max over every cell of `image` (read in parallel), NaN voxels
/// ignored; empty when the image has no voxels or only NaN. Integer values are
/// converted to double after the comparison. The result does not depend on the
/// thread count: per-cell ranges are combined in cell order.
ValueRange image_value_range(CachedCellImage& image);

}  // namespace cellflow::nodes::detail
