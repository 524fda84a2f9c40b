#include "cellflow/cache/space.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cellflow/cache/error.hpp"

namespace cellflow {

std::vector<std::string> default_axis_names(int rank) {
  static const char* const kLast[] = {"z", "y", "x"};
  std::vector<std::string> names;
  for (int i = 0; i < rank; ++i) {
    const int from_end = rank - i;
    names.push_back(from_end <= 3 ? kLast[3 - from_end] : fmt::format("d{}", i));
  }
  return names;
}

const std::vector<std::string>& space_units() {
  static const std::vector<std::string> units = {
      "angstrom",   "attometer",  "centimeter", "decimeter",  "exameter",   "femtometer",
      "foot",       "gigameter",  "hectometer", "inch",       "kilometer",  "megameter",
      "meter",      "micrometer", "mile",       "millimeter", "nanometer",  "parsec",
      "petameter",  "picometer",  "terameter",  "yard",       "yoctometer", "yottameter",
      "zeptometer", "zettameter"};
  return units;
}

bool is_space_unit(const std::string& unit) {
  return std::binary_search(space_units().begin(), space_units().end(), unit);
}

Space Space::voxels(int rank) {
  Space s;
  s.spacing.assign(rank, 1.0);
  s.origin.assign(rank, 0.0);
  s.axis_names = default_axis_names(rank);
  s.units.assign(rank, "");
  return s;
}

bool Space::is_voxel_space() const {
  for (double v : spacing)
    if (v != 1.0) return false;
  for (double v : origin)
    if (v != 0.0) return false;
  for (const std::string& u : units)
    if (!u.empty()) return false;
  return true;
}

Space Space::filled(int rank) const {
  const auto check = [&](size_t size, const char* what) {
    if (size != 0 && size != static_cast<size_t>(rank))
      throw InvalidArgument(
          fmt::format("space: {} has {} entries for a rank-{} image", what, size, rank));
  };
  check(spacing.size(), "spacing");
  check(origin.size(), "origin");
  check(axis_names.size(), "axis_names");
  check(units.size(), "units");
  for (size_t i = 0; i < spacing.size(); ++i)
    if (!(spacing[i] > 0.0) || !std::isfinite(spacing[i]))
      throw InvalidArgument(
          fmt::format("space: spacing must be finite and > 0 (got {} on axis {})", spacing[i], i));
  for (size_t i = 0; i < origin.size(); ++i)
    if (!std::isfinite(origin[i]))
      throw InvalidArgument(
          fmt::format("space: origin must be finite (got {} on axis {})", origin[i], i));
  Space out = voxels(rank);
  if (!spacing.empty()) out.spacing = spacing;
  if (!origin.empty()) out.origin = origin;
  if (!axis_names.empty()) out.axis_names = axis_names;
  if (!units.empty()) out.units = units;
  return out;
}

bool Space::same_grid(const Space& other) const {
  const auto close = [](double a, double b, double scale) {
    return std::abs(a - b) <= 1e-9 * std::max({std::abs(a), std::abs(b), scale});
  };
  if (spacing.size() != other.spacing.size() || origin.size() != other.origin.size()) return false;
  for (size_t i = 0; i < spacing.size(); ++i)
    if (!close(spacing[i], other.spacing[i], 0.0)) return false;
  for (size_t i = 0; i < origin.size(); ++i)
    if (!close(origin[i], other.origin[i], spacing.empty() ? 1.0 : spacing[i])) return false;
  for (size_t i = 0; i < std::min(units.size(), other.units.size()); ++i)
    if (!units[i].empty() && !other.units[i].empty() && units[i] != other.units[i]) return false;
  return true;
}

std::string Space::describe() const {
  std::string text;
  for (size_t i = 0; i < spacing.size(); ++i)
    text += fmt::format("{}{:g}", i == 0 ? "" : " x ", spacing[i]);
  bool one_unit = !units.empty();
  for (const std::string& u : units) one_unit = one_unit && u == units.front();
  if (one_unit && !units.front().empty()) {
    text += " " + units.front();
  } else if (!units.empty()) {
    std::string list;
    for (size_t i = 0; i < units.size(); ++i)
      list += fmt::format("{}{}", i == 0 ? "" : ", ", units[i].empty() ? "?" : units[i]);
    text += " (" + list + ")";
  }
  bool zero = true;
  for (double v : origin) zero = zero && v == 0.0;
  if (!zero) {
    std::string list;
    for (size_t i = 0; i < origin.size(); ++i)
      list += fmt::format("{}{:g}", i == 0 ? "" : ", ", origin[i]);
    text += ", origin (" + list + ")";
  }
  return text;
}

}  // namespace cellflow
