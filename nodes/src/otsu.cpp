// otsu: a u8 mask, 1 where the input lies above its whole-image Otsu
// threshold. A global op: prepare() scans every input cell for the min and
// max, then for a histogram of `bins` equal bins over [min, max] (integer
// counts, so the reduction is exact whatever the cell shape or thread count),
// and computes the threshold as skimage.filters.threshold_otsu does.
#include "cellflow/nodes/otsu.hpp"

#include <fmt/format.h>
#include <tbb/enumerable_thread_specific.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/parallel.hpp"
#include "cpu_features.hpp"
#include "global_range.hpp"
#include "ops.hpp"

namespace cellflow::nodes {

std::vector<double> histogram_edges(double lo, double hi, int bins, bool single_precision) {
  // numpy.linspace(lo, hi, bins + 1): i * step + lo in double, then the last
  // edge set to hi, then cast to the data's floating type.
  const double step = (hi - lo) / bins;
  std::vector<double> edges(static_cast<size_t>(bins) + 1);
  for (int i = 0; i <= bins; ++i) {
    const double e = i == bins ? hi : static_cast<double>(i) * step + lo;
    edges[static_cast<size_t>(i)] =
        single_precision ? static_cast<double>(static_cast<float>(e)) : e;
  }
  return edges;
}

namespace {

// numpy's way: an estimate from the uniform spacing, then one correction
// against the actual edges (the estimate is off by at most one). `scale` is
// bins / (hi - lo), computed once per histogram as numpy does.
inline int bin_of(const double* edges, int bins, double lo, double scale, double v) {
  int i = static_cast<int>((v - lo) * scale);
  i = std::clamp(i, 0, bins - 1);
  if (v < edges[i] && i > 0) --i;
  if (v >= edges[i + 1] && i < bins - 1) ++i;
  return i;
}

}  // namespace

int histogram_bin(std::span<const double> edges, double v) {
  const int bins = static_cast<int>(edges.size()) - 1;
  return bin_of(edges.data(), bins, edges.front(), bins / (edges.back() - edges.front()), v);
}

std::vector<double> histogram_centers(std::span<const double> edges, bool single_precision) {
  std::vector<double> centers(edges.size() - 1);
  for (size_t i = 0; i + 1 < edges.size(); ++i) {
    if (single_precision) {
      const float sum = static_cast<float>(edges[i]) + static_cast<float>(edges[i + 1]);
      centers[i] = static_cast<double>(sum / 2.0f);
    } else {
      centers[i] = (edges[i] + edges[i + 1]) / 2.0;
    }
  }
  return centers;
}

double otsu_threshold(std::span<const int64_t> counts, std::span<const double> centers) {
  const size_t n = counts.size();
  if (n < 2 || centers.size() != n) {
    throw InvalidArgument(
        fmt::format("otsu_threshold: needs counts and centers of one size >= 2 (got {} and {})", n,
                    centers.size()));
  }
  // The same operations, in the same order, as skimage.filters.threshold_otsu.
  std::vector<double> weight1(n);
  std::vector<double> weight2(n);
  std::vector<double> mean1(n);
  std::vector<double> mean2(n);
  int64_t w = 0;
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) {
    w += counts[i];
    s += static_cast<double>(counts[i]) * centers[i];
    weight1[i] = static_cast<double>(w);
    mean1[i] = s / std::max(weight1[i], 1e-300);
  }
  w = 0;
  s = 0.0;
  for (size_t i = n; i-- > 0;) {
    w += counts[i];
    s += static_cast<double>(counts[i]) * centers[i];
    weight2[i] = static_cast<double>(w);
    mean2[i] = s / std::max(weight2[i], 1e-300);
  }
  size_t best = 0;
  double best_var = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i + 1 < n; ++i) {
    const double d = mean1[i] - mean2[i + 1];
    const double var = weight1[i] * weight2[i + 1] * (d * d);
    if (var > best_var) {
      best_var = var;
      best = i;
    }
  }
  return centers[best];
}

namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define CELLFLOW_HAVE_AVX512_HISTOGRAM 1

/// Whether `edges` are histogram_edges(first, last, bins, true): the edges the
/// vector loop computes for itself.
bool simd_edges(std::span<const double> edges) {
  const int bins = static_cast<int>(edges.size()) - 1;
  const std::vector<double> made = histogram_edges(edges.front(), edges.back(), bins, true);
  return std::equal(made.begin(), made.end(), edges.begin(), edges.end());
}

// GCC 12's _mm512_cvtps_pd warns of an uninitialized operand in its own header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
// The edges of indexes k as histogram_edges makes them: k * step + lo (hi for
// k == bins), rounded to float.
__attribute__((target("avx512f,avx512vl"), always_inline)) inline __m512d edge_avx512(
    __m256i k, __m512d step, __m512d lo, __m512d hi, __m256i bins) {
  const __m512d e = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(k), step), lo);
  const __mmask8 at_end = _mm256_cmpeq_epi32_mask(k, bins);
  return _mm512_cvtps_pd(_mm512_cvtpd_ps(_mm512_mask_blend_pd(at_end, e, hi)));
}

/// bin_of() for 8 f32 voxels at a time, its IEEE operations in its order (a
/// subtract, then a multiply; the file is built without FMA contraction), with
/// each bin's two edges computed as histogram_edges() computes them instead
/// of gathered from memory: `edges` must be histogram_edges(lo, hi, bins,
/// true) (checked by the caller). The voxels' bins go to `lanes` as in the
/// scalar loop (HistogramBins::add); returns how many leading voxels were
/// done (a multiple of 8).
__attribute__((target("avx512f,avx512vl"))) int64_t histogram_f32_avx512(const float* p, int64_t n,
                                                                         double lo, double hi,
                                                                         int bins, double scale,
                                                                         int64_t* lanes,
                                                                         int64_t lane_mask) {
  const double step = (hi - lo) / bins;
  const __m512d vlo = _mm512_set1_pd(lo);
  const __m512d vhi = _mm512_set1_pd(hi);
  const __m512d vscale = _mm512_set1_pd(scale);
  const __m512d vstep = _mm512_set1_pd(step);
  const __m256i vbins = _mm256_set1_epi32(bins);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i last = _mm256_set1_epi32(bins - 1);
  alignas(32) int32_t idx[8];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(p + j));
    const __mmask8 ordered = _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q);  // not NaN
    const __m512d t = _mm512_mul_pd(_mm512_sub_pd(v, vlo), vscale);
    __m256i i = _mm512_cvttpd_epi32(t);
    i = _mm256_min_epi32(_mm256_max_epi32(i, zero), last);
    // v < edges[i] (and i > 0): one bin down; else v >= edges[i + 1] (and
    // i < bins - 1): one bin up.
    const __mmask8 down =
        _mm512_cmp_pd_mask(v, edge_avx512(i, vstep, vlo, vhi, vbins), _CMP_LT_OQ) &
        _mm256_cmpgt_epi32_mask(i, zero);
    const __mmask8 up =
        static_cast<__mmask8>(~down) &
        _mm512_cmp_pd_mask(v, edge_avx512(_mm256_add_epi32(i, one), vstep, vlo, vhi, vbins),
                           _CMP_GE_OQ) &
        _mm256_cmpgt_epi32_mask(last, i);
    i = _mm256_mask_sub_epi32(i, down, i, one);
    i = _mm256_mask_add_epi32(i, up, i, one);
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx), i);
    for (int k = 0; k < 8; ++k) {
      if ((ordered >> k) & 1) ++lanes[((j + k) & lane_mask) * bins + idx[k]];
    }
  }
  return j;
}
#pragma GCC diagnostic pop
#endif

}  // namespace

HistogramBins::HistogramBins(std::span<const double> edges)
    : edges_(edges),
      bins_(static_cast<int>(edges.size()) - 1),
      lo_(edges.front()),
      scale_(bins_ / (edges.back() - lo_)),
      simd_(false) {
#ifdef CELLFLOW_HAVE_AVX512_HISTOGRAM
  simd_ = detail::cpu_has_avx512vl() && simd_edges(edges);
#endif
}

void HistogramBins::add(const CellBuffer& b, std::vector<int64_t>& counts) const {
  const int bins = bins_;
  // Neighbouring voxels fall in the same bin: four interleaved sets of
  // counts keep the increments from waiting on each other. (Testing each
  // voxel against its predecessor's bin first was slower: on smoothed data
  // the bin changes too often for the branch to be predicted.) Up to 4,096
  // bins: a bigger histogram is counted in place, not copied four times.
  constexpr int kMaxLaneBins = 4096;
  const int64_t lane_mask = bins <= kMaxLaneBins ? 3 : 0;
  std::vector<int64_t> lanes;
  int64_t* base = counts.data();
  if (lane_mask != 0) {
    lanes.assign(4 * static_cast<size_t>(bins), 0);
    base = lanes.data();
  }
  dispatch_dtype(b.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = b.as<T>();
    const int64_t n = b.num_elements();
    int64_t first = 0;
#ifdef CELLFLOW_HAVE_AVX512_HISTOGRAM
    if constexpr (std::is_same_v<T, float>) {
      if (simd_)
        first = histogram_f32_avx512(p, n, lo_, edges_.back(), bins, scale_, base, lane_mask);
    }
#endif
    for (int64_t i = first; i < n; ++i) {
      const T v = p[i];
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(v)) continue;
      }
      ++base[(i & lane_mask) * bins +
             bin_of(edges_.data(), bins, lo_, scale_, static_cast<double>(v))];
    }
  });
  if (lane_mask == 0) return;
  for (int l = 0; l < 4; ++l)
    for (int k = 0; k < bins; ++k)
      counts[static_cast<size_t>(k)] += lanes[static_cast<size_t>(l * bins + k)];
}

void add_to_histogram(const CellBuffer& cell, std::span<const double> edges,
                      std::vector<int64_t>& counts) {
  HistogramBins(edges).add(cell, counts);
}

namespace {

class OtsuKernel final : public NodeKernel {
 public:
  OtsuKernel(ImageInfo info, int bins) : NodeKernel(std::move(info)), bins_(bins) {}

  bool needs_prepare() const override { return true; }

  void prepare(std::span<CachedCellImage* const> inputs) override {
    std::lock_guard lock(prepare_mu_);
    if (prepared_.load(std::memory_order_acquire)) return;
    CachedCellImage& image = *inputs[0];
    const CellGrid& grid = image.grid();
    const int64_t cells = grid.num_cells();

    // Pass 1: min and max, exact.
    const detail::ValueRange all = detail::image_value_range(image);
    if (all.empty()) {
      threshold_ = 0.0;  // no voxels (or only NaN): nothing is above anything
    } else if (all.lo == all.hi) {
      threshold_ = all.lo;  // skimage returns the single value: an empty mask
    } else {
      // Pass 2: the histogram; integer counts make the sum order irrelevant.
      const bool single = image.dtype() == DType::kF32;
      const std::vector<double> edges = histogram_edges(all.lo, all.hi, bins_, single);
      const HistogramBins binner(edges);
      tbb::enumerable_thread_specific<std::vector<int64_t>> local(
          [&] { return std::vector<int64_t>(static_cast<size_t>(bins_), 0); });
      parallel_for_all(cells,
                       [&](int64_t c) { binner.add(image.get(grid.cell_at(c)), local.local()); });
      std::vector<int64_t> counts(static_cast<size_t>(bins_), 0);
      for (const auto& l : local) {
        for (size_t i = 0; i < counts.size(); ++i) counts[i] += l[i];
      }
      threshold_ = otsu_threshold(counts, histogram_centers(edges, single));
    }
    prepared_.store(true, std::memory_order_release);
  }

  void compute(const Box& /*out_box*/, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    if (!prepared_.load(std::memory_order_acquire)) {
      throw NodeError("otsu: the threshold is unknown: prepare() did not run");
    }
    const double t = threshold_;
    const CellBuffer& in = inputs[0].data;
    const int64_t n = in.num_elements();
    auto* dst = out.mutable_as<uint8_t>();
    dispatch_dtype(in.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = in.as<T>();
      if constexpr (std::is_same_v<T, float>) {
        // double(x) > t exactly when x > f, f the largest float <= t (NaN:
        // false either way), so the comparison stays in floats, 4 or 8 at once.
        float f = static_cast<float>(t);
        if (static_cast<double>(f) > t)
          f = std::nextafter(f, -std::numeric_limits<float>::infinity());
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] > f ? 1 : 0;
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<double>(src[i]) > t ? 1 : 0;
      }
    });
  }

 private:
  const int bins_;
  double threshold_ = 0.0;  // written once, before prepared_
  std::atomic<bool> prepared_{false};
  std::mutex prepare_mu_;
};

constexpr int64_t kMaxBins = int64_t{1} << 24;

class OtsuOp final : public Op {
 public:
  std::string_view name() const override { return "otsu"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "A u8 mask, 1 where the input is above its whole-image Otsu threshold, computed as "
           "skimage.filters.threshold_otsu does from a histogram of `bins` equal bins over the "
           "image's [min, max] (a global pass over every cell; NaN voxels are ignored and "
           "masked 0; a constant image gives an empty mask).";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"bins", ParamType::kInt, Value(int64_t{256}),
         "number of histogram bins over [min, max] (>= 2)"},
    };
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const int64_t bins = params.get_int("bins");
    if (bins < 2 || bins > kMaxBins) {
      throw InvalidArgument(
          fmt::format("param \"bins\" must be in [2, {}] (got {})", kMaxBins, bins));
    }
    ImageInfo info{DType::kU8, inputs[0].shape, inputs[0].cell_shape};
    return std::make_unique<OtsuKernel>(std::move(info), static_cast<int>(bins));
  }
};

}  // namespace

std::shared_ptr<const Op> make_otsu_op() { return std::make_shared<OtsuOp>(); }

}  // namespace cellflow::nodes
