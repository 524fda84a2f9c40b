// Physical space of an image: where its voxels lie. Axis i of an image (in
// cellflow's order, slowest first, e.g. z, y, x) has voxel i * spacing[i] +
// origin[i] in physical units units[i] ("" when unknown). A Space with no
// entries means "voxel space": spacing 1, origin 0, no units.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace cellflow {

struct Space {
  std::vector<double> spacing;          // per axis; > 0 and finite
  std::vector<double> origin;           // per axis; finite
  std::vector<std::string> axis_names;  // per axis, e.g. "z", "y", "x"
  std::vector<std::string> units;       // per axis, e.g. "micrometer"; "" unknown

  /// Voxel space of `rank` axes: spacing 1, origin 0, default axis names, no units.
  static Space voxels(int rank);

  /// Whether every axis has spacing 1, origin 0 and no unit (axis names aside).
  bool is_voxel_space() const;

  /// This space with every per-axis vector filled to `rank` entries (missing
  /// spacing 1, origin 0, axis names the defaults, units ""). Throws
  /// InvalidArgument if a non-empty vector has another size, a spacing is not
  /// finite and > 0, or an origin is not finite.
  Space filled(int rank) const;

  /// Whether `other` puts voxels at the same places: spacing and origin equal
  /// within a relative 1e-9 (metadata written as decimal text rounds), and
  /// units equal where both are known. Both must be filled to one rank.
  bool same_grid(const Space& other) const;

  /// "0.2 x 0.2 x 1 micrometer, origin (1, 2, 3)" (for messages and summaries).
  std::string describe() const;

  friend bool operator==(const Space&, const Space&) = default;
};

/// The default axis names of a rank-`rank` image: "x"; "y","x"; "z","y","x";
/// more axes get "d0", "d1", ... before them.
std::vector<std::string> default_axis_names(int rank);

/// The space units OME-NGFF allows on space axes (UDUNITS-2 names:
/// "micrometer", "nanometer", ...), sorted.
const std::vector<std::string>& space_units();
bool is_space_unit(const std::string& unit);

}  // namespace cellflow
