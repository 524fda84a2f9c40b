// The whole-image min and max of global_range.hpp.
#include "global_range.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/parallel.hpp"

namespace cellflow::nodes::detail {
namespace {

/// Min and max of a buffer, NaN ignored. Written without branches so that the
/// loop vectorizes: a comparison with NaN is false, so NaN never replaces lo
/// or hi, and a buffer without values leaves lo > hi.
ValueRange buffer_range(const CellBuffer& b) {
  return dispatch_dtype(b.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = b.as<T>();
    const int64_t n = b.num_elements();
    T lo, hi;
    if constexpr (std::is_floating_point_v<T>) {
      lo = std::numeric_limits<T>::infinity();
      hi = -std::numeric_limits<T>::infinity();
    } else {
      lo = std::numeric_limits<T>::max();
      hi = std::numeric_limits<T>::lowest();
    }
    for (int64_t i = 0; i < n; ++i) {
      const T v = p[i];
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    bool any = n > 0;
    if constexpr (std::is_floating_point_v<T>) any = lo <= hi;
    return any ? ValueRange{static_cast<double>(lo), static_cast<double>(hi)} : ValueRange{};
  });
}

}  // namespace

ValueRange image_value_range(CachedCellImage& image) {
  const CellGrid& grid = image.grid();
  const int64_t cells = grid.num_cells();
  std::vector<ValueRange> ranges(static_cast<size_t>(cells));
  parallel_for_all(cells, [&](int64_t c) {
    ranges[static_cast<size_t>(c)] = buffer_range(image.get(grid.cell_at(c)));
  });
  // In cell order, so that which of -0.0 and 0.0 wins a tie is fixed.
  ValueRange all;
  for (const ValueRange& r : ranges) {
    all.lo = std::min(all.lo, r.lo);
    all.hi = std::max(all.hi, r.hi);
  }
  return all;
}

}  // namespace cellflow::nodes::detail
