// Private to cellflow_nodes: what gaussian, gradient_magnitude and log share —
// the smoothing params (sigma, units, max_error, max_kernel_width) and
// the smoothing of a cell's box grown by one voxel, the support of a central
// difference. Header-only; reentrant.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <string_view>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "neighborhood.hpp"

namespace cellflow::nodes::detail {

/// The gaussian op's params, validated, and the kernel radius they give.
struct GaussianSettings {
  std::vector<double> sigma;    // array axis order, in voxels or in the units of `spacing`
  std::vector<double> spacing;  // empty: sigma in voxels; else the input's spacing
  std::vector<int64_t> radius;
  double max_error = 1e-4;
  int max_width = 128;
};

inline std::vector<ParamSpec> gaussian_param_specs() {
  return {
      {"sigma", ParamType::kFloatOrList, Value(),
       "standard deviation of the Gaussian in voxels (or, with units \"physical\", in the "
       "image's physical units): one number, or one per axis (0: no smoothing on that axis)",
       true},
      // No default value: graphs that do not name units keep their hashes.
      {"units", ParamType::kString, Value(),
       "\"voxels\" (default when absent) or \"physical\": sigma in the units of the input's "
       "spacing, as ITK's filters with UseImageSpacing on (derivatives per physical unit too)"},
      {"max_error", ParamType::kFloat, Value(1e-4),
       "largest weight of the Gaussian the truncated kernel may miss, in (0, 1)"},
      {"max_kernel_width", ParamType::kInt, Value(128),
       "largest kernel half-width ITK may build; a sigma that needs more is an error"},
  };
}

/// Validates the smoothing params of op `op` for the image `in` (rank 1 to 3).
inline GaussianSettings gaussian_settings(std::string_view op, const Params& params,
                                          const ImageInfo& in) {
  const int rank = in.shape.rank();
  if (rank < 1 || rank > 3) {
    throw InvalidArgument(
        fmt::format("op \"{}\" supports images of rank 1 to 3 (got rank {})", op, rank));
  }
  GaussianSettings s;
  s.sigma = params.get_floats_per_axis("sigma", rank);
  for (double v : s.sigma) {
    if (!(v >= 0.0) || !std::isfinite(v)) {
      throw InvalidArgument(fmt::format("param \"sigma\" must be >= 0 (got {})", v));
    }
  }
  if (params.has("units")) {
    const std::string& units = params.get_string("units");
    if (units == "physical") {
      s.spacing = in.space.filled(rank).spacing;
    } else if (units != "voxels") {
      throw InvalidArgument(
          fmt::format("param \"units\" must be \"voxels\" or \"physical\" (got \"{}\")", units));
    }
  }
  s.max_error = params.get_float("max_error");
  if (!(s.max_error > 0.0 && s.max_error < 1.0)) {
    throw InvalidArgument(
        fmt::format("param \"max_error\" must be in (0, 1) (got {})", s.max_error));
  }
  const int64_t max_width = params.get_int("max_kernel_width");
  if (max_width < 1 || max_width > 100000) {
    throw InvalidArgument(
        fmt::format("param \"max_kernel_width\" must be in [1, 100000] (got {})", max_width));
  }
  s.max_width = static_cast<int>(max_width);
  try {
    s.radius = gaussian_radius(s.sigma, s.max_error, s.max_width, s.spacing);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("param \"sigma\": {}", e.message()));
  }
  for (size_t d = 0; d < s.radius.size(); ++d) {
    if (s.radius[d] >= s.max_width) {
      throw InvalidArgument(fmt::format(
          "param \"sigma\" ({}) needs a kernel wider than max_kernel_width {} at max_error {}; "
          "raise max_kernel_width or max_error, or filter a downsampled image",
          s.sigma[d], s.max_width, s.max_error));
    }
  }
  return s;
}

/// What of the input's space the result depends on (NodeKernel::identity()):
/// its spacing when sigma is physical (the node hash covers the input's data,
/// not the metadata its grid may come from), else nothing.
inline std::string gaussian_identity(const GaussianSettings& s) {
  if (s.spacing.empty()) return {};
  std::string text = "spacing";
  for (double v : s.spacing) text += fmt::format(" {:.17g}", v);
  return text;
}

/// The factor that turns a difference of neighbours along `axis` into one
/// per unit of sigma's units: 1 in voxels, 1 / spacing when physical.
inline double per_unit(const GaussianSettings& s, int axis) {
  return s.spacing.empty() ? 1.0 : 1.0 / s.spacing[static_cast<size_t>(axis)];
}

/// The input region a derivative of the smoothed image needs for `out_box`:
/// the box grown by the Gaussian radius + 1, clipped to the image.
inline Box derivative_input_region(const GaussianSettings& s, const Box& out_box,
                                   const Shape& shape) {
  std::vector<int64_t> r = s.radius;
  for (auto& v : r) v += 1;
  return grow_clipped(out_box, r, shape);
}

/// The smoothed image over `box` (out_box grown by one voxel, clipped to the
/// image), as the gaussian op computes it on the whole image.
inline std::vector<float> smooth_box(const GaussianSettings& s, const InputRegion& in,
                                     const Box& box) {
  std::vector<float> out(static_cast<size_t>(box.volume()));
  if (in.data.dtype() == DType::kF32) {
    gaussian_filter_region(in.data.as<float>(), in.box, out.data(), box, s.sigma, s.max_error,
                           s.max_width, 1, s.spacing);
    return out;
  }
  std::vector<float> converted(static_cast<size_t>(in.data.num_elements()));
  dispatch_dtype(in.data.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = in.data.as<T>();
    for (size_t i = 0; i < converted.size(); ++i) converted[i] = static_cast<float>(src[i]);
  });
  gaussian_filter_region(converted.data(), in.box, out.data(), box, s.sigma, s.max_error,
                         s.max_width, 1, s.spacing);
  return out;
}

/// For each voxel of out_box (C order): calls fn(d, center, minus, plus) for
/// each axis d, with the smoothed values at the voxel and at its two
/// neighbours on axis d, then end_voxel(). At the image edge the missing
/// neighbour is the voxel itself (zero-flux Neumann, as in ITK's derivative
/// filters). REQUIRES: g covers `box`, which holds out_box grown by one voxel
/// clipped to the image.
template <class Fn, class Done>
void for_each_stencil(const std::vector<float>& g, const Box& box, const Box& out_box, Fn&& fn,
                      Done&& end_voxel) {
  const int rank = box.rank();
  const Shape shape = box.shape();
  std::vector<int64_t> stride(static_cast<size_t>(rank), 1);
  for (int d = rank - 2; d >= 0; --d) {
    stride[static_cast<size_t>(d)] = stride[static_cast<size_t>(d + 1)] * shape[d + 1];
  }
  for_each_index(out_box, [&](const Dims& p) {
    int64_t lin = 0;
    for (int d = 0; d < rank; ++d) lin += (p[d] - box.begin()[d]) * stride[static_cast<size_t>(d)];
    const double c = g[static_cast<size_t>(lin)];
    for (int d = 0; d < rank; ++d) {
      const int64_t st = stride[static_cast<size_t>(d)];
      const double minus = p[d] > box.begin()[d] ? g[static_cast<size_t>(lin - st)] : c;
      const double plus = p[d] + 1 < box.end()[d] ? g[static_cast<size_t>(lin + st)] : c;
      fn(d, c, minus, plus);
    }
    end_voxel();
  });
}

}  // namespace cellflow::nodes::detail
