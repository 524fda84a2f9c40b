// The discrete Gaussian used by the `gaussian` op, callable without the graph:
// ITK's DiscreteGaussianImageFilter (zero-flux Neumann boundaries at the edge
// of the input box) on float buffers of rank 1 to 3, a native separable
// implementation of the same filter (same coefficients, same boundary, same
// arithmetic) and a fast one (the same in float arithmetic). Benchmarks use
// them as the no-framework references.
// Thread-safe (the ITK one for itk_threads == 1, see below).
#pragma once

#include <cstdint>
#include <vector>

#include "cellflow/cache/box.hpp"

namespace cellflow::nodes {

/// Half-width, in voxels, of the kernel ITK builds on each axis for the
/// standard deviations `sigma` (one per axis, array order; 0 = no smoothing on
/// that axis, which still has a radius of 1), the maximum truncation error and
/// the maximum kernel width.
/// REQUIRES: every sigma >= 0, 0 < max_error < 1, max_width >= 1.
/// With `spacing` (one per axis, > 0), sigma is in its physical units: the
/// voxel variance is sigma^2 / spacing^2, computed as ITK's filter does with
/// UseImageSpacing on (gaussian_voxel_variance), so results match it bit for bit.
std::vector<int64_t> gaussian_radius(const std::vector<double>& sigma, double max_error,
                                     int max_width, const std::vector<double>& spacing = {});

/// The variance in voxels^2 DiscreteGaussianImageFilter uses on an axis of
/// spacing `spacing` for a standard deviation `sigma` in physical units (its
/// arithmetic exactly: sigma^2 / (spacing * spacing); spacing 1 gives sigma^2).
inline double gaussian_voxel_variance(double sigma, double spacing) {
  const double q = spacing * spacing;
  return (sigma * sigma) / q;
}

/// Smooths `in` (a C-contiguous float buffer covering `in_box`) and writes the
/// region `out_box` of the result into `out` (C-contiguous, out_box.shape()).
/// The voxels outside `in_box` are treated as ITK does at an image's edge
/// (zero-flux Neumann), so `in_box` = out_box grown by gaussian_radius() and
/// clipped to the image gives exactly ITK's whole-image result on out_box.
/// `in` is wrapped without a copy. The first call sets ITK's process-wide
/// default thread count to 1 (the filter's internal passes take their thread
/// count from it, and cellflow parallelizes across cells); a call with
/// itk_threads > 1 raises it to itk_threads for its duration.
/// REQUIRES: sigma.size() == in_box.rank() in 1..3; out_box inside in_box;
/// with itk_threads > 1, no concurrent call.
/// Throws InvalidArgument on bad arguments and NodeError if ITK fails.
void gaussian_filter_region(const float* in, const Box& in_box, float* out, const Box& out_box,
                            const std::vector<double>& sigma, double max_error, int max_width,
                            int itk_threads = 1, const std::vector<double>& spacing = {});

/// The kernel weights ITK's GaussianOperator<double> builds for one axis of
/// DiscreteGaussianImageFilter (2 * radius + 1 values, symmetric, summing to
/// 1), cached per (sigma, max_error, max_width, spacing); sigma in the units of
/// `spacing` (1: voxels).
/// REQUIRES: sigma >= 0, 0 < max_error < 1, max_width >= 1, spacing > 0.
std::vector<double> gaussian_coefficients(double sigma, double max_error, int max_width,
                                          double spacing = 1.0);

/// The same contract and result as gaussian_filter_region(), computed without
/// ITK: one separable pass per axis (axis 0 first, as ITK does), each voxel
/// summed in double over gaussian_coefficients() in ITK's order and rounded
/// to float between passes, inner loops contiguous along the last axis so
/// that they vectorize. Single-threaded; thread-safe.
/// REQUIRES: sigma.size() == in_box.rank() in 1..3; out_box inside in_box.
/// Throws InvalidArgument on bad arguments.
void gaussian_filter_region_native(const float* in, const Box& in_box, float* out,
                                   const Box& out_box, const std::vector<double>& sigma,
                                   double max_error, int max_width,
                                   const std::vector<double>& spacing = {});

/// The same contract as gaussian_filter_region_native() (same kernel taps,
/// boundary and input box), computed in float: weights rounded to float,
/// folded around the centre and summed in float, 2-3x faster. The
/// result differs from ITK's by float rounding, within
/// 1e-5 * max(1, max |ITK's result|) (tests check it); it is the same on
/// every x86-64 CPU. Single-threaded; thread-safe.
/// REQUIRES: sigma.size() == in_box.rank() in 1..3; out_box inside in_box.
/// Throws InvalidArgument on bad arguments.
void gaussian_filter_region_fast(const float* in, const Box& in_box, float* out, const Box& out_box,
                                 const std::vector<double>& sigma, double max_error, int max_width,
                                 const std::vector<double>& spacing = {});

}  // namespace cellflow::nodes
