// Loads libcellflow_itk.so on first use (itk_module.hpp), and the public
// functions that forward to it.
#include <filesystem>
#include <mutex>

#include "cellflow/graph/library_beside.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "cellflow/nodes/image_export.hpp"
#include "itk_module.hpp"

namespace cellflow::nodes {
namespace detail {
namespace {

const ItkModule* load() {
  using Entry = const ItkModule* (*)();
  const auto entry = reinterpret_cast<Entry>(load_library_beside(
      reinterpret_cast<const void*>(&load), "libcellflow_itk.so", "cellflow_itk_module_v1",
      /*global=*/false,
      "the code that needs ITK: read.image, median, export to image files, the gaussian's "
      "\"itk\" engine"));
  return entry();
}

}  // namespace

const ItkModule& itk_module() {
  // Not a call_once: a failed load throws, and the next call tries again.
  static std::mutex mu;
  static const ItkModule* module = nullptr;
  std::lock_guard lock(mu);
  if (module == nullptr) module = load();
  return *module;
}

}  // namespace detail

void gaussian_filter_region(const float* in, const Box& in_box, float* out, const Box& out_box,
                            const std::vector<double>& sigma, double max_error, int max_width,
                            int itk_threads, const std::vector<double>& spacing) {
  detail::itk_module().gaussian_filter_region(in, in_box, out, out_box, sigma, max_error, max_width,
                                              itk_threads, spacing);
}

void export_image(CachedCellImage& image, const std::filesystem::path& file,
                  const ExportOptions& opts) {
  detail::itk_module().export_image(image, file, opts);
}

}  // namespace cellflow::nodes
