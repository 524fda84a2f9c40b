// The native engine of the gaussian op: ITK's DiscreteGaussianImageFilter
// recomputed without ITK. Same kernel (gaussian_coefficients() asks ITK's
// GaussianOperator once per sigma), same order of passes (array axis 0
// first), same arithmetic per voxel (double products summed in tap order from
// a zero double, rounded to float after each pass) and same zero-flux Neumann
// boundary (taps clamped to the source region of each pass, which is where
// ITK's buffered regions end). So the result is ITK's, bit for bit, on
// compilers that neither contract a*b+c into an FMA nor reorder the sums
// (nodes/CMakeLists.txt compiles this file with -ffp-contract=off).
//
// Speed comes from the loop structure, not from changing the arithmetic: each
// pass walks the output in long contiguous runs (several rows, or whole
// planes, at once for axes 0 and 1) and sums the taps of 16 neighbouring
// voxels at a time in registers, a loop the compiler vectorizes. On 256^3
// at sigma 2 one core does about 60 Mvoxel/s, about 8x ITK's filter.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"

namespace cellflow::nodes {
namespace {

// Accumulators kept in registers (four AVX2 registers of doubles; more spill,
// fewer leave the adders idle: measured on this machine's Xeon).
constexpr int64_t kLanes = 16;
// Per-thread scratch kept between calls up to this many floats (16 MiB);
// larger calls (whole volumes) allocate and free their own.
constexpr size_t kKeepFloats = size_t{4} << 20;

// A box of a C-contiguous buffer seen as 3-D (an image of rank 1 or 2 gets
// leading axes of extent 1, so one code path serves every rank).
struct Region3 {
  int64_t b[3] = {0, 0, 0};  // first voxel, image coordinates
  int64_t n[3] = {1, 1, 1};  // extent

  int64_t offset(int64_t z, int64_t y, int64_t x) const {
    return ((z - b[0]) * n[1] + (y - b[1])) * n[2] + (x - b[2]);
  }
  int64_t volume() const { return n[0] * n[1] * n[2]; }
};

Region3 to_region3(const Box& box) {
  Region3 r;
  const int lead = 3 - box.rank();
  for (int i = 0; i < box.rank(); ++i) {
    r.b[lead + i] = box.begin()[i];
    r.n[lead + i] = box.end()[i] - box.begin()[i];
  }
  return r;
}

// dst[j] = float(sum over k of c[k] * double(taps[k][j])), j < n, summed in
// tap order exactly like ITK's NeighborhoodInnerProduct. Vectorized across j,
// kLanes accumulators at a time held in registers while the taps stream by;
// an AVX2 clone (no FMA: the same IEEE operations) is picked at load time
// where the CPU has it.
// ifunc resolution runs before the sanitizer runtimes start: no clones there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CELLFLOW_TARGET_CLONES
#else
#define CELLFLOW_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#endif
CELLFLOW_TARGET_CLONES void weighted_sum(const float* const* taps, const double* c, int ntaps,
                                         float* dst, int64_t n) {
  int64_t j0 = 0;
  for (; j0 + kLanes <= n; j0 += kLanes) {
    double acc[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) acc[j] = 0.0;
    for (int k = 0; k < ntaps; ++k) {
      const float* t = taps[k] + j0;
      const double w = c[k];
      for (int64_t j = 0; j < kLanes; ++j) acc[j] += w * static_cast<double>(t[j]);
    }
    for (int64_t j = 0; j < kLanes; ++j) dst[j0 + j] = static_cast<float>(acc[j]);
  }
  for (; j0 < n; ++j0) {
    double acc = 0.0;
    for (int k = 0; k < ntaps; ++k) acc += c[k] * static_cast<double>(taps[k][j0]);
    dst[j0] = static_cast<float>(acc);
  }
}

// One separable pass along axis `a` (0..2) from `src` (region s) into `dst`
// (region d). d differs from s only along `a`, where it lies inside s; a tap
// outside s takes the nearest voxel of s (zero-flux Neumann at s's edge).
void pass(const float* src, const Region3& s, float* dst, const Region3& d, int a,
          const std::vector<double>& c) {
  const int ntaps = static_cast<int>(c.size());
  const int64_t r = (static_cast<int64_t>(c.size()) - 1) / 2;
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
  // Positions whose taps all lie inside s: one run, treated as a single
  // contiguous vector of (count * line) voxels.
  const int64_t in_lo = std::clamp(s_lo + r, d_lo, d_hi);
  const int64_t in_hi = std::clamp(s_hi - r, in_lo, d_hi);

  std::vector<const float*> taps(static_cast<size_t>(ntaps));
  for (int64_t o = 0; o < outer; ++o) {
    // Start of this outer slab in each buffer (axes before `a` agree in s and d).
    const float* s_slab = src + o * s.n[a] * line;
    float* d_slab = dst + o * d.n[a] * line;
    const auto at_src = [&](int64_t p) { return s_slab + (p - s_lo) * line; };
    const auto one_position = [&](int64_t p) {
      for (int k = 0; k < ntaps; ++k) {
        taps[static_cast<size_t>(k)] = at_src(std::clamp(p - r + k, s_lo, s_hi - 1));
      }
      weighted_sum(taps.data(), c.data(), ntaps, d_slab + (p - d_lo) * line, line);
    };
    for (int64_t p = d_lo; p < in_lo; ++p) one_position(p);
    if (in_hi > in_lo) {
      for (int k = 0; k < ntaps; ++k) taps[static_cast<size_t>(k)] = at_src(in_lo - r + k);
      weighted_sum(taps.data(), c.data(), ntaps, d_slab + (in_lo - d_lo) * line,
                   (in_hi - in_lo) * line);
    }
    for (int64_t p = in_hi; p < d_hi; ++p) one_position(p);
  }
}

// Scratch for the crop and the intermediate passes: slot i of a thread is
// reused across calls, up to kKeepFloats; larger buffers live for one call.
class Scratch {
 public:
  explicit Scratch(int slot) : slot_(slot) {}
  float* get(size_t floats) {
    if (floats > kKeepFloats) {
      own_.resize(floats);
      return own_.data();
    }
    std::vector<float>& kept = kept_[slot_];
    if (kept.size() < floats) kept.resize(floats);
    return kept.data();
  }

 private:
  static thread_local std::vector<float> kept_[3];
  int slot_;
  std::vector<float> own_;
};
thread_local std::vector<float> Scratch::kept_[3];

}  // namespace

void gaussian_filter_region_native(const float* in, const Box& in_box, float* out,
                                   const Box& out_box, const std::vector<double>& sigma,
                                   double max_error, int max_width,
                                   const std::vector<double>& spacing) {
  const int rank = in_box.rank();
  if (rank < 1 || rank > 3) {
    throw InvalidArgument(fmt::format("gaussian supports images of rank 1 to 3 (got {})", rank));
  }
  if (static_cast<int>(sigma.size()) != rank) {
    throw InvalidArgument(
        fmt::format("sigma must have one value per axis ({}) (got {})", rank, sigma.size()));
  }
  if (!spacing.empty() && static_cast<int>(spacing.size()) != rank) {
    throw InvalidArgument(
        fmt::format("spacing must have one value per axis ({}) (got {})", rank, spacing.size()));
  }
  if (out_box.rank() != rank || !in_box.contains(out_box)) {
    throw InvalidArgument(
        fmt::format("output box {} must lie inside the input box {}", out_box.str(), in_box.str()));
  }
  if (out_box.empty()) return;

  const int lead = 3 - rank;
  std::vector<double> coefficients[3];
  int64_t radius[3] = {0, 0, 0};
  for (int i = 0; i < rank; ++i) {
    coefficients[lead + i] =
        gaussian_coefficients(sigma[static_cast<size_t>(i)], max_error, max_width,
                              spacing.empty() ? 1.0 : spacing.at(static_cast<size_t>(i)));
    radius[lead + i] = (static_cast<int64_t>(coefficients[lead + i].size()) - 1) / 2;
  }
  const Region3 whole_in = to_region3(in_box);
  const Region3 o = to_region3(out_box);

  // The region each pass produces (ITK's requested regions): after the pass
  // along axis a, axes <= a cover out_box, later axes out_box grown by their
  // radius (clipped to in_box) since later passes still read them.
  const auto after_pass = [&](int a) {
    Region3 r = o;
    for (int j = a + 1; j < 3; ++j) {
      const int64_t lo = std::max(o.b[j] - radius[j], whole_in.b[j]);
      const int64_t hi = std::min(o.b[j] + o.n[j] + radius[j], whole_in.b[j] + whole_in.n[j]);
      r.b[j] = lo;
      r.n[j] = hi - lo;
    }
    return r;
  };

  // The first pass reads `in` directly when its later axes already have the
  // extent of the first pass's output (the op's halo is exactly that);
  // otherwise the part it reads is cropped out once.
  Scratch crop_scratch(0);
  const float* src = in;
  Region3 s = whole_in;
  {
    const int a = lead;
    const Region3 first = after_pass(a);
    bool matches = true;
    for (int j = a + 1; j < 3; ++j)
      matches = matches && s.b[j] == first.b[j] && s.n[j] == first.n[j];
    if (!matches) {
      Region3 c = first;
      c.b[a] = std::max(o.b[a] - radius[a], whole_in.b[a]);
      c.n[a] = std::min(o.b[a] + o.n[a] + radius[a], whole_in.b[a] + whole_in.n[a]) - c.b[a];
      Dims cb(rank), ce(rank);
      for (int i = 0; i < rank; ++i) {
        cb[i] = c.b[lead + i];
        ce[i] = c.b[lead + i] + c.n[lead + i];
      }
      const Box crop(cb, ce);
      float* buf = crop_scratch.get(static_cast<size_t>(c.volume()));
      copy_region(in, in_box, buf, crop, crop, sizeof(float));
      src = buf;
      s = c;
      // Cropping along `a` moved the buffer's edge inside in_box only where
      // the taps do not reach beyond it, so clamping at the crop's edge is
      // the same as clamping at in_box's.
    }
  }

  Scratch ping(1);
  Scratch pong(2);
  Scratch* next = &ping;
  for (int a = lead; a < 3; ++a) {
    const Region3 d = a == 2 ? o : after_pass(a);
    float* dst = a == 2 ? out : next->get(static_cast<size_t>(d.volume()));
    pass(src, s, dst, d, a, coefficients[a]);
    src = dst;
    s = d;
    next = next == &ping ? &pong : &ping;
  }
}

}  // namespace cellflow::nodes
