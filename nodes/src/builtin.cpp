#include "cellflow/nodes/builtin.hpp"

#include <fmt/format.h>

#include <cmath>

#include "cellflow/graph/suggest.hpp"
#include "itk_module.hpp"
#include "ops.hpp"

namespace cellflow::nodes {

void register_builtin_ops(Registry& registry) {
  registry.add(make_synthetic_blobs_op());
  registry.add(make_gaussian_op());
  // Ops whose code needs ITK: made (and ITK loaded) when a graph first names one.
  registry.add_deferred("median", [] { return detail::itk_module().median_op(); });
  registry.add(make_mean_op());
  registry.add(make_gradient_magnitude_op());
  registry.add(make_log_op());
  registry.add(make_erode_op());
  registry.add(make_dilate_op());
  registry.add(make_open_op());
  registry.add(make_close_op());
  registry.add(make_min_op());
  registry.add(make_max_op());
  registry.add(make_add_op());
  registry.add(make_subtract_op());
  registry.add(make_multiply_op());
  registry.add(make_divide_op());
  registry.add(make_clip_op());
  registry.add(make_mask_op());
  registry.add(make_contrast_local_op());
  registry.add(make_downsample_op());
  registry.add(make_threshold_op());
  registry.add(make_region_density_op());
  registry.add(make_cast_op());
  registry.add(make_rescale_op());
  registry.add(make_read_zarr_op());
  registry.add(make_read_n5_op());
  registry.add_deferred("read.image", [] { return detail::itk_module().read_image_op(); });
  registry.add(make_otsu_op());
  registry.add(make_label_op());
  registry.add(make_region_count_op());
  registry.add(make_label_stats_op());
}

Registry& builtin_registry() {
  // A function-local static is initialized once, thread-safely; the registry
  // lives until exit so that ops stay valid in static destructors of users.
  static Registry* registry = [] {
    auto* r = new Registry();
    register_builtin_ops(*r);
    return r;
  }();
  return *registry;
}

namespace detail {

void require_inputs(std::string_view op, std::span<const ImageInfo> inputs, size_t n) {
  if (inputs.size() != n) {
    throw InvalidArgument(fmt::format("op \"{}\" takes {} input{} (got {})", op, n,
                                      n == 1 ? "" : "s", inputs.size()));
  }
}

std::vector<ParamSpec> space_param_specs() {
  // No default values: a graph that does not set them keeps its hash.
  return {
      {"spacing", ParamType::kFloatOrList, Value(),
       "physical size of a voxel: one number, or one per axis (default 1)"},
      {"origin", ParamType::kFloatOrList, Value(),
       "physical position of the first voxel's centre: one number, or one per axis (default 0)"},
      {"unit", ParamType::kString, Value(),
       "unit of spacing and origin, an OME-NGFF space unit such as \"micrometer\" (default: "
       "none)"},
  };
}

ParamSpec block_cell_shape_param() {
  return {"cell_shape", ParamType::kIntList, Value(),
          "output cell shape, one entry per axis; default: one input cell along the first axis "
          "and whole input cells covering at least 128 input voxels along the others, divided "
          "by the region and clipped to the output"};
}

Shape block_cell_shape(const Params& params, const Shape& input_cells,
                       const std::vector<int64_t>& region, const Shape& output_shape) {
  const int r = input_cells.rank();
  if (params.has("cell_shape") && !params.get("cell_shape").is_null()) {
    const std::vector<int64_t> cs = params.get_ints("cell_shape");
    if (static_cast<int>(cs.size()) != r) {
      throw InvalidArgument(fmt::format(
          "param \"cell_shape\" must have one entry per axis ({}) (got {})", r, cs.size()));
    }
    for (int64_t v : cs) {
      if (v < 1)
        throw InvalidArgument(fmt::format("param \"cell_shape\" must be >= 1 (got {})", v));
    }
    return Shape::from(cs);
  }
  constexpr int64_t kMinSpan = 128;
  Shape cells(r);
  for (int d = 0; d < r; ++d) {
    const int64_t in = input_cells[d];
    // Along the first axis one input cell: a run makes the cells in raster
    // order, so an output cell spanning slabs would hold a slab of its input
    // in memory until the next one is done.
    const int64_t span = d == 0 && r > 1 ? in : in * ((kMinSpan + in - 1) / in);
    cells[d] = std::clamp<int64_t>(span / region[static_cast<size_t>(d)], 1,
                                   std::max<int64_t>(1, output_shape[d]));
  }
  return cells;
}

Space space_from_params(const Params& params, int rank) {
  Space space = Space::voxels(rank);
  if (params.has("spacing")) {
    space.spacing = params.get_floats_per_axis("spacing", rank);
    for (double v : space.spacing)
      if (!(v > 0.0) || !std::isfinite(v))
        throw InvalidArgument(
            fmt::format("param \"spacing\" must be finite and > 0 on every axis (got {})", v));
  }
  if (params.has("origin")) {
    space.origin = params.get_floats_per_axis("origin", rank);
    for (double v : space.origin)
      if (!std::isfinite(v))
        throw InvalidArgument(fmt::format("param \"origin\" must be finite (got {})", v));
  }
  if (params.has("unit")) {
    const std::string& unit = params.get_string("unit");
    if (!is_space_unit(unit)) {
      throw InvalidArgument(
          fmt::format("param \"unit\": \"{}\" is not an OME-NGFF space unit (e.g. \"micrometer\", "
                      "\"nanometer\", \"millimeter\"){}",
                      unit, did_you_mean(unit, space_units())));
    }
    space.units.assign(static_cast<size_t>(rank), unit);
  }
  return space;
}

}  // namespace detail
}  // namespace cellflow::nodes
