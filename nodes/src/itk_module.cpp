// The entry point of libcellflow_itk.so (itk_module.hpp).
#include "itk_module.hpp"

#include "ops.hpp"

extern "C" const cellflow::nodes::detail::ItkModule* cellflow_itk_module_v1() {
  using namespace cellflow::nodes;
  static const detail::ItkModule module{
      &make_median_op,
      &make_read_image_op,
      &detail::itk_gaussian_filter_region,
      &detail::itk_export_image,
  };
  return &module;
}
