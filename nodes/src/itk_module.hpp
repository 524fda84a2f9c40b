// The ops and functions that need ITK live in a library of their own,
// libcellflow_itk.so, loaded the first time one of them is used: most runs
// (Zarr in, Zarr out) then never map ITK's libraries, which cost a process
// about 10 ms to load. The library sits next to libcellflow_nodes.so (build
// tree and install alike).
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/graph/op.hpp"
#include "cellflow/nodes/image_export.hpp"

namespace cellflow::nodes::detail {

/// What libcellflow_itk.so provides, through its entry point
/// cellflow_itk_module_v1().
struct ItkModule {
  std::shared_ptr<const Op> (*median_op)();
  std::shared_ptr<const Op> (*read_image_op)();
  /// gaussian_filter_region() (gaussian_kernel.hpp), by ITK's filter.
  void (*gaussian_filter_region)(const float* in, const Box& in_box, float* out, const Box& out_box,
                                 const std::vector<double>& sigma, double max_error, int max_width,
                                 int itk_threads, const std::vector<double>& spacing);
  /// export_image() (image_export.hpp).
  void (*export_image)(CachedCellImage& image, const std::filesystem::path& file,
                       const ExportOptions& opts);
};

/// The module, loaded on first use (thread-safe). Throws Error naming the
/// library and the loader's message when it cannot be loaded.
const ItkModule& itk_module();

// Defined in libcellflow_itk.so (as are make_median_op and
// make_read_image_op, ops.hpp).
void itk_gaussian_filter_region(const float* in, const Box& in_box, float* out, const Box& out_box,
                                const std::vector<double>& sigma, double max_error, int max_width,
                                int itk_threads, const std::vector<double>& spacing);
void itk_export_image(CachedCellImage& image, const std::filesystem::path& file,
                      const ExportOptions& opts);

}  // namespace cellflow::nodes::detail

extern "C" const cellflow::nodes::detail::ItkModule* cellflow_itk_module_v1();
