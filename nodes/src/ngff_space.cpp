// read.zarr's physical space from OME-NGFF metadata (see ngff_space.hpp).
#include "ngff_space.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/cache/value.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

/// Why the metadata cannot be used (turned into a warning by ngff_space).
struct Unusable {
  std::string why;
};

/// The "multiscales" list of the group in `dir`, and the file it is in.
std::optional<std::pair<Value, fs::path>> multiscales_of(const fs::path& dir) {
  for (const char* name : {"zarr.json", ".zattrs"}) {
    const fs::path file = dir / name;
    std::optional<std::string> text;
    try {
      text = read_file(file);
    } catch (const IoError&) {
      continue;
    }
    if (!text) continue;
    Value v;
    try {
      v = parse_json(*text, file.string());
    } catch (const Error&) {
      continue;  // not ours to judge: read.zarr reads the array, not the group
    }
    const Value* root = &v;
    if (name[0] == 'z') {  // NGFF 0.5: attributes.ome
      const Value* attrs = v.is_object() ? v.find("attributes") : nullptr;
      root = attrs != nullptr && attrs->is_object() ? attrs->find("ome") : nullptr;
    }
    const Value* ms = root != nullptr && root->is_object() ? root->find("multiscales") : nullptr;
    if (ms != nullptr && ms->is_array()) return std::make_pair(*ms, file);
  }
  return std::nullopt;
}

std::vector<double> numbers(const Value& v, const char* key, int rank) {
  const Value* list = v.find(key);
  if (list == nullptr || !list->is_array() || list->as_array().size() != static_cast<size_t>(rank))
    throw Unusable{fmt::format("a \"{}\" transform must list {} numbers", key, rank)};
  std::vector<double> out;
  for (const Value& x : list->as_array()) {
    if (!x.is_int() && !x.is_float()) throw Unusable{fmt::format("\"{}\" holds a non-number", key)};
    out.push_back(x.is_int() ? static_cast<double>(x.as_int()) : x.as_double());
    if (!std::isfinite(out.back())) throw Unusable{fmt::format("\"{}\" is not finite", key)};
  }
  return out;
}

/// Applies the transforms of `owner` (a dataset or a multiscale) to
/// x = spacing * i + origin.
void apply(const Value& owner, int rank, Space& s) {
  const Value* list = owner.find("coordinateTransformations");
  if (list == nullptr) return;
  if (!list->is_array()) throw Unusable{"\"coordinateTransformations\" must be a list"};
  for (const Value& t : list->as_array()) {
    const Value* type = t.is_object() ? t.find("type") : nullptr;
    const std::string kind = type != nullptr && type->is_string() ? type->as_string() : "";
    if (kind == "identity") continue;
    if (t.find("path") != nullptr)
      throw Unusable{"transforms stored in a file (\"path\") are not supported"};
    if (kind == "scale") {
      const std::vector<double> k = numbers(t, "scale", rank);
      for (int d = 0; d < rank; ++d) {
        if (!(k[d] > 0)) throw Unusable{"a scale must be > 0 on every axis"};
        s.spacing[d] *= k[d];
        s.origin[d] *= k[d];
      }
    } else if (kind == "translation") {
      const std::vector<double> u = numbers(t, "translation", rank);
      for (int d = 0; d < rank; ++d) s.origin[d] += u[d];
    } else {
      throw Unusable{fmt::format("transform type \"{}\" is not supported", kind)};
    }
  }
}

Space space_of(const Value& multiscale, const Value& dataset, int rank) {
  Space s = Space::voxels(rank);
  const Value* axes = multiscale.find("axes");
  if (axes != nullptr) {
    if (!axes->is_array() || axes->as_array().size() != static_cast<size_t>(rank))
      throw Unusable{fmt::format("\"axes\" must list the array's {} axes", rank)};
    for (int d = 0; d < rank; ++d) {
      const Value& a = axes->as_array()[static_cast<size_t>(d)];
      const Value* name = a.is_object() ? a.find("name") : a.is_string() ? &a : nullptr;
      if (name != nullptr && name->is_string()) s.axis_names[d] = name->as_string();
      const Value* type = a.is_object() ? a.find("type") : nullptr;
      const Value* unit = a.is_object() ? a.find("unit") : nullptr;
      const bool physical = type == nullptr || !type->is_string() || type->as_string() == "space" ||
                            type->as_string() == "time";
      if (physical && unit != nullptr && unit->is_string()) s.units[d] = unit->as_string();
    }
  }
  apply(dataset, rank, s);
  apply(multiscale, rank, s);
  return s;
}

}  // namespace

std::optional<Space> ngff_space(const fs::path& array_dir, int rank) {
  fs::path dir = fs::absolute(array_dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "a/0/" -> "a/0"
  fs::path group = dir.parent_path();
  for (int up = 0; up < 2 && !group.empty(); ++up, group = group.parent_path()) {
    const auto found = multiscales_of(group);
    if (!found) continue;
    const std::string rel = fs::relative(dir, group).generic_string();
    for (const Value& ms : found->first.as_array()) {
      const Value* datasets = ms.is_object() ? ms.find("datasets") : nullptr;
      if (datasets == nullptr || !datasets->is_array()) continue;
      for (const Value& ds : datasets->as_array()) {
        const Value* path = ds.is_object() ? ds.find("path") : nullptr;
        if (path == nullptr || !path->is_string() ||
            fs::path(path->as_string()).lexically_normal().generic_string() != rel)
          continue;
        try {
          return space_of(ms, ds, rank);
        } catch (const Unusable& u) {
          log_warning(
              fmt::format("read.zarr {}: the NGFF metadata in {} cannot give its "
                          "physical space ({}); it is read in voxel space",
                          dir.string(), found->second.string(), u.why));
          return std::nullopt;
        }
      }
    }
  }
  return std::nullopt;
}

}  // namespace cellflow::nodes
