#include "cellflow/nodes/builtin.hpp"

#include <fmt/format.h>

#include "ops.hpp"

namespace cellflow::nodes {

void register_builtin_ops(Registry& registry) {
  registry.add(make_synthetic_blobs_op());
  registry.add(make_gaussian_op());
  registry.add(make_median_op());
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
  registry.add(make_read_image_op());
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

}  // namespace detail
}  // namespace cellflow::nodes
