// Private to cellflow_nodes: the factories of the built-in ops (one .cpp
// each) and small helpers their kernels share.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "cellflow/cache/box.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/graph/op.hpp"

namespace cellflow::nodes {

std::shared_ptr<const Op> make_synthetic_blobs_op();
std::shared_ptr<const Op> make_gaussian_op();
std::shared_ptr<const Op> make_median_op();  // in libcellflow_itk.so (itk_module.hpp)
std::shared_ptr<const Op> make_mean_op();
std::shared_ptr<const Op> make_gradient_magnitude_op();
std::shared_ptr<const Op> make_log_op();
std::shared_ptr<const Op> make_erode_op();
std::shared_ptr<const Op> make_dilate_op();
std::shared_ptr<const Op> make_open_op();
std::shared_ptr<const Op> make_close_op();
std::shared_ptr<const Op> make_min_op();
std::shared_ptr<const Op> make_max_op();
std::shared_ptr<const Op> make_add_op();
std::shared_ptr<const Op> make_subtract_op();
std::shared_ptr<const Op> make_multiply_op();
std::shared_ptr<const Op> make_divide_op();
std::shared_ptr<const Op> make_clip_op();
std::shared_ptr<const Op> make_mask_op();
std::shared_ptr<const Op> make_contrast_local_op();
std::shared_ptr<const Op> make_downsample_op();
std::shared_ptr<const Op> make_threshold_op();
std::shared_ptr<const Op> make_region_density_op();
std::shared_ptr<const Op> make_cast_op();
std::shared_ptr<const Op> make_rescale_op();
std::shared_ptr<const Op> make_read_zarr_op();
std::shared_ptr<const Op> make_read_n5_op();
std::shared_ptr<const Op> make_read_image_op();  // in libcellflow_itk.so
std::shared_ptr<const Op> make_otsu_op();
std::shared_ptr<const Op> make_label_op();
std::shared_ptr<const Op> make_region_count_op();
std::shared_ptr<const Op> make_label_stats_op();

namespace detail {

/// Throws InvalidArgument unless `inputs` has exactly `n` entries (the graph
/// layer checks counts too; kernels must not index past the span).
void require_inputs(std::string_view op, std::span<const ImageInfo> inputs, size_t n);

/// The params a source op takes for its physical space (spacing, origin,
/// unit), all optional, and the Space they give for an image of `rank`.
std::vector<ParamSpec> space_param_specs();
Space space_from_params(const Params& params, int rank);

/// The space of an image whose voxel i stands for the block of `factors`
/// voxels of `in` starting at i * factors: spacing times the factor, the
/// origin at the first block's centre (where a mean puts it).
inline Space block_space(const Space& in, const std::vector<int64_t>& factors) {
  Space out = in.filled(static_cast<int>(factors.size()));
  for (size_t d = 0; d < factors.size(); ++d) {
    const auto f = static_cast<double>(factors[d]);
    out.origin[d] += 0.5 * (f - 1.0) * out.spacing[d];
    out.spacing[d] *= f;
  }
  return out;
}

/// Calls fn(row, offset) for each row of a C-contiguous array of `shape`: `row`
/// is the index of the row's first element (last coordinate 0) relative to the
/// array and `offset` its linear position. Rows run along the last axis.
template <class Fn>
void for_each_row(const Shape& shape, Fn&& fn) {
  const int r = shape.rank();
  if (r == 0 || shape.product() == 0) return;
  Shape rows = shape;
  rows[r - 1] = 1;
  const int64_t row_len = shape[r - 1];
  int64_t offset = 0;
  for_each_index(Box::from_shape(rows), [&](const Dims& row) {
    fn(row, offset);
    offset += row_len;
  });
}

/// The `cell_shape` param of a per-block reduction (region.count,
/// region.density).
ParamSpec block_cell_shape_param();

/// The output cell shape of a per-block reduction: its `cell_shape` param
/// (validated: one entry >= 1 per axis), or by default one input cell along
/// the first axis and, along the others, whole input cells and at least 128
/// input voxels per output cell; clipped to the output.
/// Why not one input cell per output cell: with a 64^3 region over 64^3 cells
/// every cell of the heatmap would be one voxel, a file of its own written,
/// locked and committed for 4 bytes (at 512^3 two such nodes made 1,024 of a
/// run's 2,560 cell files).
Shape block_cell_shape(const Params& params, const Shape& input_cells,
                       const std::vector<int64_t>& region, const Shape& output_shape);

/// The input voxels behind `out_box` of an op whose output voxel i covers
/// input block [i*block, (i+1)*block) per axis (region.density, region.count,
/// downsample), clipped to the input's shape.
inline Box block_input_region(const Box& out_box, const Dims& block, const Shape& input_shape) {
  const int r = out_box.rank();
  Dims begin(r);
  Dims end(r);
  for (int d = 0; d < r; ++d) {
    begin[d] = out_box.begin()[d] * block[d];
    end[d] = std::min(out_box.end()[d] * block[d], input_shape[d]);
  }
  return Box(begin, end);
}

/// Per axis, for each input position of `in_box`: the output position (relative
/// to `out_box`) of the block it falls in.
inline std::vector<std::vector<int64_t>> block_positions(const Box& in_box, const Box& out_box,
                                                         const Dims& block) {
  std::vector<std::vector<int64_t>> to_out(static_cast<size_t>(in_box.rank()));
  for (int d = 0; d < in_box.rank(); ++d) {
    auto& m = to_out[static_cast<size_t>(d)];
    m.resize(static_cast<size_t>(in_box.end()[d] - in_box.begin()[d]));
    for (size_t i = 0; i < m.size(); ++i)
      m[i] = (in_box.begin()[d] + static_cast<int64_t>(i)) / block[d] - out_box.begin()[d];
  }
  return to_out;
}

/// Linear position of `index` (relative to the box) in a C-contiguous box of `shape`.
inline int64_t linear_offset(const Shape& shape, const Dims& index) {
  int64_t off = 0;
  for (int d = 0; d < shape.rank(); ++d) off = off * shape[d] + index[d];
  return off;
}

}  // namespace detail
}  // namespace cellflow::nodes
