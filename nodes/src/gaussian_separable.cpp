// The pass plan of the Gaussian engines (gaussian_separable.hpp): the regions
// ITK's DiscreteGaussianImageFilter requests pass by pass, and per-thread
// scratch for the intermediate results.
#include "gaussian_separable.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"

namespace cellflow::nodes::detail {
namespace {

// Per-thread scratch kept between calls up to this many floats (16 MiB);
// larger calls (whole volumes) allocate and free their own.
constexpr size_t kKeepFloats = size_t{4} << 20;

Region3 to_region3(const Box& box) {
  Region3 r;
  const int lead = 3 - box.rank();
  for (int i = 0; i < box.rank(); ++i) {
    r.b[lead + i] = box.begin()[i];
    r.n[lead + i] = box.end()[i] - box.begin()[i];
  }
  return r;
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

void separable_gaussian(const float* in, const Box& in_box, float* out, const Box& out_box,
                        const std::vector<double>& sigma, double max_error, int max_width,
                        const std::vector<double>& spacing, GaussianPass pass) {
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

}  // namespace cellflow::nodes::detail
