#include "cellflow/cache/space.hpp"

#include <fmt/format.h>

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
  Space out = voxels(rank);
  if (!spacing.empty()) out.spacing = spacing;
  if (!origin.empty()) out.origin = origin;
  if (!axis_names.empty()) out.axis_names = axis_names;
  if (!units.empty()) out.units = units;
  return out;
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
