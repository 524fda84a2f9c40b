// synthetic.blobs: a deterministic test image of bright ellipsoidal "cells" on
// a dim, noisy background. Every voxel is a pure function of its global
// coordinates and the params, so the image does not depend on the cell shape,
// the thread count or the order in which cells are computed.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

constexpr double kBackground = 0.1;
constexpr int64_t kMaxCount = 10'000'000;

// splitmix64 (Steele, Lea, Flood 2014): a portable generator and mixer whose
// output is fixed by its definition, unlike std:: distributions.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += kGolden); }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

/// A standard normal deviate that depends only on (key, index): Box-Muller on
/// two counter-based hashes.
inline double gaussian_at(uint64_t key, uint64_t index) {
  const uint64_t x = key + (2 * index + 1) * kGolden;
  const double u1 = static_cast<double>((mix64(x) >> 11) + 1) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(mix64(x + kGolden) >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

/// 1 inside half the radius, a smoothstep down to 0 at the radius; r2 is the
/// squared normalized distance from the centre.
inline double blob_profile(double r2) {
  const double t = std::clamp((std::sqrt(r2) - 0.5) * 2.0, 0.0, 1.0);
  return 1.0 - t * t * (3.0 - 2.0 * t);
}

struct Blob {
  double centre[kMaxRank] = {};
  double inv_radius[kMaxRank] = {};
  Box bounds;  // voxels the blob can touch, clipped to the image
};

class BlobsKernel final : public NodeKernel {
 public:
  BlobsKernel(ImageInfo info, std::vector<Blob> blobs, uint64_t seed, double noise)
      : NodeKernel(std::move(info)),
        blobs_(std::move(blobs)),
        noise_key_(mix64(seed ^ 0x6A09E667F3BCC909ULL)),
        noise_(noise) {}

  void compute(const Box& out_box, std::span<const InputRegion> /*inputs*/,
               CellBuffer& out) const override {
    const Shape out_shape = out_box.shape();
    const int r = out_box.rank();
    std::vector<float> profile(static_cast<size_t>(out_box.volume()), 0.0f);

    for (const Blob& blob : blobs_) {
      const Box region = blob.bounds.intersect(out_box);
      if (region.empty()) continue;
      Dims row_end = region.end();
      row_end[r - 1] = region.begin()[r - 1] + 1;
      const int64_t x0 = region.begin()[r - 1];
      const int64_t x1 = region.end()[r - 1];
      const double cx = blob.centre[r - 1];
      const double ix = blob.inv_radius[r - 1];
      for_each_index(Box(region.begin(), row_end), [&](const Dims& g) {
        double partial = 0.0;
        Dims local(r);
        for (int d = 0; d < r - 1; ++d) {
          const double t = (static_cast<double>(g[d]) - blob.centre[d]) * blob.inv_radius[d];
          partial += t * t;
          local[d] = g[d] - out_box.begin()[d];
        }
        if (partial >= 1.0) return;
        local[r - 1] = x0 - out_box.begin()[r - 1];
        float* p = profile.data() + detail::linear_offset(out_shape, local);
        for (int64_t x = x0; x < x1; ++x, ++p) {
          const double t = (static_cast<double>(x) - cx) * ix;
          const double r2 = partial + t * t;
          if (r2 < 1.0) *p = std::max(*p, static_cast<float>(blob_profile(r2)));
        }
      });
    }

    dispatch_dtype(output().dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      write_values<T>(out_box, profile, out.mutable_as<T>());
    });
  }

 private:
  template <class T>
  void write_values(const Box& out_box, const std::vector<float>& profile, T* out) const {
    // Integers: 1.0 maps to half the type's maximum (headroom for noise and
    // for sums downstream).
    const double scale = dtype_is_float(output().dtype) ? 1.0 : dtype_max(output().dtype) / 2.0;
    const Shape& image_shape = output().shape;
    const int r = out_box.rank();
    const int64_t len = out_box.shape()[r - 1];
    detail::for_each_row(out_box.shape(), [&](const Dims& row, int64_t offset) {
      Dims g(r);
      for (int d = 0; d < r; ++d) g[d] = out_box.begin()[d] + row[d];
      const auto lin = static_cast<uint64_t>(detail::linear_offset(image_shape, g));
      const float* p = profile.data() + offset;
      T* o = out + offset;
      for (int64_t x = 0; x < len; ++x) {
        double v = kBackground + (1.0 - kBackground) * static_cast<double>(p[x]);
        if (noise_ > 0.0) v += noise_ * gaussian_at(noise_key_, lin + static_cast<uint64_t>(x));
        o[x] = saturate_cast<T>(v * scale);
      }
    });
  }

  std::vector<Blob> blobs_;
  uint64_t noise_key_;
  double noise_;
};

class SyntheticBlobsOp final : public Op {
 public:
  std::string_view name() const override { return "synthetic.blobs"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Synthetic test image: `count` bright ellipsoidal cells (about 1.0 at their "
           "centres, with a soft edge) on a background of 0.1, plus Gaussian noise; each "
           "voxel depends only on its coordinates and the params. Integer dtypes scale "
           "1.0 to half the type's maximum, rounding and saturating.";
  }
  std::vector<ParamSpec> params() const override {
    std::vector<ParamSpec> specs = {
        {"shape", ParamType::kIntList, Value(), "image shape, rank 1 to 5 (array order)", true},
        {"cell_shape", ParamType::kIntList, Value(), "cell shape, same rank as shape", true},
        {"dtype", ParamType::kDType, Value("f32"), "output element type"},
        {"seed", ParamType::kInt, Value(0), "seed of the blob layout and of the noise"},
        {"count", ParamType::kInt, Value(200), "number of blobs"},
        {"radius", ParamType::kFloatList, Value::list(std::vector<double>{4.0, 10.0}),
         "[min, max] blob radius in voxels, drawn per blob and axis"},
        {"noise", ParamType::kFloat, Value(0.05), "standard deviation of the Gaussian noise"},
    };
    for (ParamSpec& spec : detail::space_param_specs()) specs.push_back(std::move(spec));
    return specs;
  }
  int min_inputs() const override { return 0; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 0);
    const std::vector<int64_t> shape = params.get_ints("shape");
    const std::vector<int64_t> cell_shape = params.get_ints("cell_shape");
    if (shape.empty() || shape.size() > static_cast<size_t>(kMaxRank)) {
      throw InvalidArgument(fmt::format("param \"shape\" must have 1 to {} entries (got {})",
                                        kMaxRank, shape.size()));
    }
    if (cell_shape.size() != shape.size()) {
      throw InvalidArgument(
          fmt::format("param \"cell_shape\" must have {} entries like \"shape\" (got {})",
                      shape.size(), cell_shape.size()));
    }
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] <= 0) {
        throw InvalidArgument(fmt::format(
            "param \"shape\" must be > 0 on every axis (got {} on axis {})", shape[d], d));
      }
      if (cell_shape[d] <= 0) {
        throw InvalidArgument(
            fmt::format("param \"cell_shape\" must be > 0 on every axis (got {} on axis {})",
                        cell_shape[d], d));
      }
    }
    const int64_t count = params.get_int("count");
    if (count < 0 || count > kMaxCount) {
      throw InvalidArgument(
          fmt::format("param \"count\" must be in [0, {}] (got {})", kMaxCount, count));
    }
    const std::vector<double> radius = params.get_floats("radius");
    if (radius.size() != 2) {
      throw InvalidArgument(
          fmt::format("param \"radius\" must be [min, max] (got {} values)", radius.size()));
    }
    if (!(radius[0] > 0.0) || !(radius[0] <= radius[1]) || !std::isfinite(radius[1])) {
      throw InvalidArgument(fmt::format(
          "param \"radius\" must satisfy 0 < min <= max (got [{}, {}])", radius[0], radius[1]));
    }
    const double noise = params.get_float("noise");
    if (!(noise >= 0.0) || !std::isfinite(noise)) {
      throw InvalidArgument(fmt::format("param \"noise\" must be >= 0 (got {})", noise));
    }
    const auto seed = static_cast<uint64_t>(params.get_int("seed"));

    ImageInfo info;
    info.dtype = params.get_dtype("dtype");
    info.shape = Shape::from(shape);
    info.cell_shape = Shape::from(cell_shape);
    info.space = detail::space_from_params(params, static_cast<int>(shape.size()));

    const int r = static_cast<int>(shape.size());
    const Box image = Box::from_shape(info.shape);
    std::vector<Blob> blobs(static_cast<size_t>(count));
    SplitMix64 rng(seed);
    for (Blob& b : blobs) {
      Dims begin(r), end(r);
      for (int d = 0; d < r; ++d) b.centre[d] = rng.uniform() * static_cast<double>(shape[d]);
      for (int d = 0; d < r; ++d) {
        const double rad = radius[0] + (radius[1] - radius[0]) * rng.uniform();
        b.inv_radius[d] = 1.0 / rad;
        begin[d] = static_cast<int64_t>(std::floor(b.centre[d] - rad));
        end[d] = static_cast<int64_t>(std::ceil(b.centre[d] + rad)) + 1;
      }
      b.bounds = Box(begin, end).intersect(image);
    }
    return std::make_unique<BlobsKernel>(std::move(info), std::move(blobs), seed, noise);
  }
};

}  // namespace

std::shared_ptr<const Op> make_synthetic_blobs_op() { return std::make_shared<SyntheticBlobsOp>(); }

}  // namespace cellflow::nodes
