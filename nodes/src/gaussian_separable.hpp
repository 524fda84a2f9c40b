// Private to cellflow_nodes: what the native and the fast Gaussian engines
// share — the plan of ITK's separable passes (which region each pass reads and
// writes, where taps are clamped), the scratch between passes and the
// argument checks. An engine supplies only the pass along one axis.
// Reentrant (scratch is per thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cellflow/cache/box.hpp"

// ifunc resolution runs before the sanitizer runtimes start: no clones there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CELLFLOW_TARGET_CLONES
#else
#define CELLFLOW_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#endif

namespace cellflow::nodes::detail {

/// Spacing, when given, must have one finite value > 0 per axis (`rank`);
/// throws InvalidArgument otherwise.
void check_gaussian_spacing(const std::vector<double>& spacing, size_t rank);

/// A box of a C-contiguous buffer seen as 3-D (an image of rank 1 or 2 gets
/// leading axes of extent 1, so one code path serves every rank).
struct Region3 {
  int64_t b[3] = {0, 0, 0};  // first voxel, image coordinates
  int64_t n[3] = {1, 1, 1};  // extent

  int64_t volume() const { return n[0] * n[1] * n[2]; }
};

/// One separable pass along axis `a` (0..2) from `src` (region s) into `dst`
/// (region d) with the kernel weights `c` (2 * radius + 1, symmetric). d
/// differs from s only along `a`, where it lies inside s; a tap outside s
/// must take the nearest voxel of s (zero-flux Neumann at s's edge).
using GaussianPass = void (*)(const float* src, const Region3& s, float* dst, const Region3& d,
                              int a, const std::vector<double>& c);

/// Walks a pass along axis `a` (see GaussianPass) with a kernel of radius r in
/// runs of voxels contiguous in `dst`: calls sum(taps, out, n) where out
/// points at n consecutive voxels of dst and taps[k] (k < 2r + 1) at the n
/// source voxels that tap k (offset k - r along `a`, clamped to s) reads for
/// them. Positions whose taps all lie inside s form one run per slab;
/// positions nearer s's edge come one at a time (n = the voxels of one
/// position). `taps` is reused between calls.
template <class Sum>
void for_each_run(const float* src, const Region3& s, float* dst, const Region3& d, int a,
                  int64_t r, Sum&& sum) {
  // Voxels of one position along `a` form a contiguous block of `line`
  // values in both buffers, and consecutive positions are consecutive blocks.
  int64_t line = 1;
  for (int j = a + 1; j < 3; ++j) line *= d.n[j];
  int64_t outer = 1;
  for (int j = 0; j < a; ++j) outer *= d.n[j];

  const int64_t s_lo = s.b[a];
  const int64_t s_hi = s.b[a] + s.n[a];
  const int64_t d_lo = d.b[a];
  const int64_t d_hi = d.b[a] + d.n[a];
  const int64_t in_lo = std::clamp(s_lo + r, d_lo, d_hi);
  const int64_t in_hi = std::clamp(s_hi - r, in_lo, d_hi);

  const int ntaps = static_cast<int>(2 * r + 1);
  std::vector<const float*> taps(static_cast<size_t>(ntaps));
  if (line == 1 && (in_lo > d_lo || in_hi < d_hi)) {
    // Along the contiguous axis, positions near s's edge would come one voxel
    // at a time. Instead each row is copied with its edge voxels repeated
    // (the clamped taps read exactly those values) and summed as one run:
    // the same values in the same tap order, so the same result.
    const int64_t lo = d_lo - r;  // the padded row covers [d_lo - r, d_hi + r)
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(d.n[a] + 2 * r));
    for (int k = 0; k < ntaps; ++k) taps[static_cast<size_t>(k)] = row.data() + k;
    for (int64_t o = 0; o < outer; ++o) {
      const float* s_row = src + o * s.n[a];
      for (size_t j = 0; j < row.size(); ++j)
        row[j] = s_row[std::clamp(lo + static_cast<int64_t>(j), s_lo, s_hi - 1) - s_lo];
      sum(taps.data(), dst + o * d.n[a], d.n[a]);
    }
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {
    // Start of this outer slab in each buffer (axes before `a` agree in s and d).
    const float* s_slab = src + o * s.n[a] * line;
    float* d_slab = dst + o * d.n[a] * line;
    const auto at_src = [&](int64_t p) { return s_slab + (p - s_lo) * line; };
    const auto one_position = [&](int64_t p) {
      for (int k = 0; k < ntaps; ++k) {
        taps[static_cast<size_t>(k)] = at_src(std::clamp(p - r + k, s_lo, s_hi - 1));
      }
      sum(taps.data(), d_slab + (p - d_lo) * line, line);
    };
    for (int64_t p = d_lo; p < in_lo; ++p) one_position(p);
    if (in_hi > in_lo) {
      for (int k = 0; k < ntaps; ++k) taps[static_cast<size_t>(k)] = at_src(in_lo - r + k);
      sum(taps.data(), d_slab + (in_lo - d_lo) * line, (in_hi - in_lo) * line);
    }
    for (int64_t p = in_hi; p < d_hi; ++p) one_position(p);
  }
}

/// gaussian_filter_region()'s contract computed by `pass`: checks the
/// arguments, then runs one pass per axis (array axis 0 first, as ITK does)
/// over the regions ITK's pipeline would request, so that clamping happens
/// exactly where ITK's buffered regions end.
/// Throws InvalidArgument on bad arguments.
void separable_gaussian(const float* in, const Box& in_box, float* out, const Box& out_box,
                        const std::vector<double>& sigma, double max_error, int max_width,
                        const std::vector<double>& spacing, GaussianPass pass);

}  // namespace cellflow::nodes::detail
