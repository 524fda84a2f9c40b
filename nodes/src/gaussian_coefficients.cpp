// The discrete Gaussian kernel of ITK's DiscreteGaussianImageFilter, computed
// here so that the gaussian op needs no ITK (the ITK libraries load only when
// an op uses them: itk_module.hpp).
//
// The kernel is Lindeberg's discrete analogue of the Gaussian for variance t:
// weight k = exp(-t) I_k(t), I_k the modified Bessel function of the first
// kind, grown from the centre until the weights sum to at least
// 1 - max_error, then normalized. ITK evaluates I_0 and I_1 with the
// polynomial approximations of Abramowitz & Stegun (9.8.1-9.8.4) and I_k,
// k >= 2, by Miller's downward recurrence scaled by I_0; the functions below
// do the same arithmetic in the same order, so the weights are bit-identical
// to ITK's (tests compare them with itk::GaussianOperator over a grid of
// variances, errors and widths).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "cellflow/cache/error.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "gaussian_separable.hpp"

namespace cellflow::nodes {
namespace {

// Wider than any kernel ITK builds before its weights underflow.
constexpr int kUnlimitedWidth = 1 << 16;

/// c[0] + x * (c[1] + x * (... + x * c[n-1])), innermost first.
template <size_t N>
double horner(const std::array<double, N>& c, double x) {
  double acc = c[N - 1];
  for (size_t i = N - 1; i-- > 0;) acc = c[i] + x * acc;
  return acc;
}

// Abramowitz & Stegun 9.8.1 / 9.8.2: I_0 below 3.75, and sqrt(x) exp(-x) I_0
// above.
constexpr std::array<double, 7> kI0Small = {1.0,       3.5156229,   3.0899424, 1.2067492,
                                            0.2659732, 0.360768e-1, 0.45813e-2};
constexpr std::array<double, 9> kI0Large = {0.39894228,   0.1328592e-1,  0.225319e-2,
                                            -0.157565e-2, 0.916281e-2,   -0.2057706e-1,
                                            0.2635537e-1, -0.1647633e-1, 0.392377e-2};
// 9.8.3 / 9.8.4: I_1(x) / x below 3.75; above, in two parts as ITK sums them.
constexpr std::array<double, 7> kI1Small = {0.5,          0.87890594,  0.51498869, 0.15084934,
                                            0.2658733e-1, 0.301532e-2, 0.32411e-3};
constexpr std::array<double, 4> kI1LargeTail = {0.2282967e-1, -0.2895312e-1, 0.1787654e-1,
                                                -0.420059e-2};
constexpr std::array<double, 5> kI1LargeHead = {0.39894228, -0.3988024e-1, -0.362018e-2,
                                                0.163801e-2, -0.1031555e-1};

double bessel_i0(double x) {
  const double a = std::fabs(x);
  if (a < 3.75) {
    double q = x / 3.75;
    q *= q;
    return horner(kI0Small, q);
  }
  const double q = 3.75 / a;
  return (std::exp(a) / std::sqrt(a)) * horner(kI0Large, q);
}

double bessel_i1(double x) {
  const double a = std::fabs(x);
  double value = 0.0;
  if (a < 3.75) {
    double q = x / 3.75;
    q *= q;
    value = a * horner(kI1Small, q);
  } else {
    const double q = 3.75 / a;
    const double tail = horner(kI1LargeTail, q);
    double head = kI1LargeHead[4] + q * tail;
    for (size_t i = 4; i-- > 0;) head = kI1LargeHead[i] + q * head;
    value = head * (std::exp(a) / std::sqrt(a));
  }
  return x < 0.0 ? -value : value;
}

// I_n(x), n >= 2: the recurrence I_{k-1} = I_{k+1} + (2k / x) I_k run down
// from an order well above n (started at 0 and 1, rescaled when it grows
// large), the value at order n kept, and the whole scaled so that order 0
// matches bessel_i0.
double bessel_in(int n, double x) {
  if (x == 0.0) return 0.0;
  constexpr double kAccuracy = 40.0;
  const double two_over_x = 2.0 / std::fabs(x);
  double above = 0.0;  // order k + 1
  double at = 1.0;     // order k
  double kept = 0.0;
  for (int k = 2 * (n + static_cast<int>(std::sqrt(kAccuracy * n))); k > 0; --k) {
    const double below = above + k * two_over_x * at;
    above = at;
    at = below;
    if (std::fabs(at) > 1.0e10) {
      kept *= 1.0e-10;
      at *= 1.0e-10;
      above *= 1.0e-10;
    }
    if (k == n) kept = above;
  }
  kept *= bessel_i0(x) / at;
  return (x < 0.0 && (n & 1) != 0) ? -kept : kept;
}

/// One side of the kernel (centre first), normalized, for variance `t`; at
/// most max_width + 1 weights (ITK stops once it has more than max_width).
std::vector<double> half_kernel(double t, double max_error, int max_width) {
  const double et = std::exp(-t);
  const double cap = 1.0 - max_error;
  std::vector<double> w;
  w.push_back(et * bessel_i0(t));
  double sum = w[0];
  w.push_back(et * bessel_i1(t));
  sum += w[1] * 2.0;
  for (int k = 2; sum < cap; ++k) {
    w.push_back(et * bessel_in(k, t));
    sum += w.back() * 2.0;
    if (w.back() <= 0.0) break;
    if (w.size() > static_cast<size_t>(max_width)) break;
  }
  for (double& v : w) v /= sum;
  return w;
}

void check_kernel_params(double sigma, double max_error, int max_width) {
  if (!(sigma >= 0.0) || !std::isfinite(sigma)) {
    throw InvalidArgument(fmt::format("sigma must be >= 0 (got {})", sigma));
  }
  if (!(max_error > 0.0 && max_error < 1.0)) {
    throw InvalidArgument(fmt::format("max_error must be in (0, 1) (got {})", max_error));
  }
  if (max_width < 1) {
    throw InvalidArgument(fmt::format("max_width must be >= 1 (got {})", max_width));
  }
}

}  // namespace

namespace detail {

void check_gaussian_spacing(const std::vector<double>& spacing, size_t rank) {
  if (spacing.empty()) return;
  if (spacing.size() != rank) {
    throw InvalidArgument(
        fmt::format("spacing must have one value per axis ({}) (got {})", rank, spacing.size()));
  }
  for (double v : spacing) {
    if (!(v > 0.0) || !std::isfinite(v)) {
      throw InvalidArgument(fmt::format("spacing must be finite and > 0 (got {})", v));
    }
  }
}

}  // namespace detail

std::vector<int64_t> gaussian_radius(const std::vector<double>& sigma, double max_error,
                                     int max_width, const std::vector<double>& spacing) {
  detail::check_gaussian_spacing(spacing, sigma.size());
  std::vector<int64_t> radius;
  radius.reserve(sigma.size());
  for (size_t a = 0; a < sigma.size(); ++a) {
    const double s = sigma[a];
    check_kernel_params(s, max_error, max_width);
    // The natural length, without a width limit; ITK's kernel stops at
    // max_width (and always keeps at least two weights per side once it
    // starts growing), so its radius is min(natural, max(max_width, 2)).
    const std::vector<double> w = half_kernel(
        gaussian_voxel_variance(s, spacing.empty() ? 1.0 : spacing[a]), max_error, kUnlimitedWidth);
    // The Bessel values overflow for variances above ~700: the kernel is
    // then NaN, which would silently fill the output with NaN.
    if (!std::all_of(w.begin(), w.end(), [](double v) { return std::isfinite(v); })) {
      throw InvalidArgument(fmt::format(
          "sigma {} is too large for ITK's discrete Gaussian (its kernel overflows above "
          "sigma ~26); smooth a downsampled image instead",
          s));
    }
    radius.push_back(
        std::min<int64_t>(static_cast<int64_t>(w.size()) - 1, std::max<int64_t>(max_width, 2)));
  }
  return radius;
}

std::vector<double> gaussian_coefficients(double sigma, double max_error, int max_width,
                                          double spacing) {
  detail::check_gaussian_spacing({spacing}, 1);
  check_kernel_params(sigma, max_error, max_width);
  // Kernels are bound once per node, but the bench and the tests ask often.
  static std::mutex mu;
  static std::map<std::tuple<double, double, int, double>, std::vector<double>> cache;
  const auto key = std::make_tuple(sigma, max_error, max_width, spacing);
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const std::vector<double> half =
      half_kernel(gaussian_voxel_variance(sigma, spacing), max_error, max_width);
  const size_t r = half.size() - 1;
  std::vector<double> coefficients(2 * r + 1);
  for (size_t i = 0; i <= r; ++i) coefficients[r + i] = coefficients[r - i] = half[i];
  std::lock_guard lock(mu);
  if (cache.size() > 1024) cache.clear();  // bounded: params come from graphs
  cache.emplace(key, coefficients);
  return coefficients;
}

}  // namespace cellflow::nodes
