// Private to cellflow_nodes: element conversion between dtypes, rounding to
// nearest and saturating for integer outputs. Header-only kernels for .cpp files.
#pragma once

#include <limits>
#include <type_traits>
#include <utility>

#include "cellflow/cache/dtype_dispatch.hpp"

namespace cellflow::nodes::detail {

/// `v` as Out: floats convert directly, floats to integers round to nearest
/// (halves away from zero) and saturate (NaN -> 0), integers to integers
/// saturate exactly (no detour through double, which would lose 64-bit values).
template <class Out, class In>
inline Out convert_value(In v) {
  if constexpr (std::is_floating_point_v<Out>) {
    return static_cast<Out>(v);
  } else if constexpr (std::is_floating_point_v<In>) {
    return saturate_cast<Out>(static_cast<double>(v));
  } else {
    if (std::cmp_less(v, std::numeric_limits<Out>::lowest()))
      return std::numeric_limits<Out>::lowest();
    if (std::cmp_greater(v, std::numeric_limits<Out>::max()))
      return std::numeric_limits<Out>::max();
    return static_cast<Out>(v);
  }
}

}  // namespace cellflow::nodes::detail
