// The ITK half of the gaussian op: DiscreteGaussianImageFilter over a wrapped
// float buffer, and the kernel radius ITK uses. The only ITK filter TU.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "cellflow/cache/error.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"

// GCC 12 reports a false -Warray-bounds inside ITK's NeighborhoodOperator for
// 2-D images when inlining (system-header status does not silence it).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#include "itkDiscreteGaussianImageFilter.h"
#include "itkGaussianOperator.h"
#include "itkImage.h"
#include "itkMultiThreaderBase.h"
#include "itkThreadPool.h"
#include "itk_wrap.hpp"
#pragma GCC diagnostic pop

namespace cellflow::nodes {
namespace {

// cellflow parallelizes across cells: ITK runs single-threaded inside a cell.
// DiscreteGaussianImageFilter does not pass its work-unit count to its internal
// filters, so the process-wide default must be 1.
std::once_flag g_itk_init;
void init_itk_threads() {
  std::call_once(g_itk_init, [] { itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(1); });
}

// Wider than any kernel ITK builds before its coefficients underflow.
constexpr unsigned kUnlimitedWidth = 1u << 16;

std::mutex g_threads_mu;

/// Spacing, when given, must have one finite value > 0 per axis.
void check_spacing(const std::vector<double>& spacing, size_t rank) {
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
}  // serializes callers that change the global thread count

template <unsigned D>
void run_filter(const float* in, const Box& in_box, float* out, const Box& out_box,
                const std::vector<double>& sigma, const std::vector<double>& spacing,
                double max_error, int max_width, int work_units) {
  using Image = itk::Image<float, D>;
  using Filter = itk::DiscreteGaussianImageFilter<Image, Image>;

  auto image = detail::wrap_buffer<float, D>(in, in_box);

  auto filter = Filter::New();
  filter->SetInput(image);
  typename Filter::ArrayType variance;
  typename Filter::ArrayType error;
  for (unsigned i = 0; i < D; ++i) {
    variance[i] = gaussian_voxel_variance(sigma[D - 1 - i], spacing[D - 1 - i]);
    error[i] = max_error;
  }
  filter->SetVariance(variance);
  filter->SetMaximumError(error);
  filter->SetMaximumKernelWidth(static_cast<unsigned>(max_width));
  filter->SetUseImageSpacing(false);
  filter->SetNumberOfWorkUnits(static_cast<itk::ThreadIdType>(work_units));
  // Only out_box is requested, so each separable pass computes only what the
  // next pass needs.
  filter->GetOutput()->SetRequestedRegion(detail::to_itk_region<D>(out_box));
  filter->Update();

  const Image* result = filter->GetOutput();
  const auto buffered = result->GetBufferedRegion();
  Dims b(static_cast<int>(D));
  Dims e(static_cast<int>(D));
  for (unsigned i = 0; i < D; ++i) {
    const int a = static_cast<int>(D - 1 - i);
    b[a] = buffered.GetIndex(i);
    e[a] = buffered.GetIndex(i) + static_cast<int64_t>(buffered.GetSize(i));
  }
  const Box buffered_box(b, e);
  if (buffered_box == out_box) {
    std::memcpy(out, result->GetBufferPointer(),
                static_cast<size_t>(out_box.volume()) * sizeof(float));
  } else {
    copy_region(result->GetBufferPointer(), buffered_box, out, out_box, out_box, sizeof(float));
  }
}

}  // namespace

std::vector<int64_t> gaussian_radius(const std::vector<double>& sigma, double max_error,
                                     int max_width, const std::vector<double>& spacing) {
  check_spacing(spacing, sigma.size());
  if (!(max_error > 0.0 && max_error < 1.0)) {
    throw InvalidArgument(fmt::format("max_error must be in (0, 1) (got {})", max_error));
  }
  if (max_width < 1) {
    throw InvalidArgument(fmt::format("max_width must be >= 1 (got {})", max_width));
  }
  std::vector<int64_t> radius;
  radius.reserve(sigma.size());
  for (size_t a = 0; a < sigma.size(); ++a) {
    const double s = sigma[a];
    if (!(s >= 0.0) || !std::isfinite(s)) {
      throw InvalidArgument(fmt::format("sigma must be >= 0 (got {})", s));
    }
    // The same operator DiscreteGaussianImageFilter builds per axis.
    itk::GaussianOperator<float, 1> op;
    op.SetDirection(0);
    op.SetVariance(gaussian_voxel_variance(s, spacing.empty() ? 1.0 : spacing[a]));
    op.SetMaximumError(max_error);
    // Built without a width limit (ITK would warn on truncation); ITK's own
    // kernel stops at max_width, so its radius is min(natural, max_width).
    op.SetMaximumKernelWidth(kUnlimitedWidth);
    op.CreateDirectional();
    // ITK's Bessel functions overflow for variances above ~700: the kernel is
    // then NaN (and its radius 1), which would silently fill the output with NaN.
    for (unsigned i = 0; i < op.Size(); ++i) {
      if (!std::isfinite(op[i])) {
        throw InvalidArgument(fmt::format(
            "sigma {} is too large for ITK's discrete Gaussian (its kernel overflows above "
            "sigma ~26); smooth a downsampled image instead",
            s));
      }
    }
    // (ITK always keeps at least two weights per side once it starts growing.)
    radius.push_back(
        std::min<int64_t>(static_cast<int64_t>(op.GetRadius(0)), std::max<int64_t>(max_width, 2)));
  }
  return radius;
}

std::vector<double> gaussian_coefficients(double sigma, double max_error, int max_width,
                                          double spacing) {
  check_spacing({spacing}, 1);
  if (!(sigma >= 0.0) || !std::isfinite(sigma)) {
    throw InvalidArgument(fmt::format("sigma must be >= 0 (got {})", sigma));
  }
  if (!(max_error > 0.0 && max_error < 1.0)) {
    throw InvalidArgument(fmt::format("max_error must be in (0, 1) (got {})", max_error));
  }
  if (max_width < 1) {
    throw InvalidArgument(fmt::format("max_width must be >= 1 (got {})", max_width));
  }
  // Building the operator costs Bessel sums (microseconds to milliseconds);
  // kernels are bound once per node but the bench and tests call this often.
  static std::mutex mu;
  static std::map<std::tuple<double, double, int, double>, std::vector<double>> cache;
  const auto key = std::make_tuple(sigma, max_error, max_width, spacing);
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  // Exactly the operator DiscreteGaussianImageFilter<float image> builds per
  // axis: GaussianOperator<double> (NumericTraits<float>::RealType), no spacing.
  itk::GaussianOperator<double, 1> op;
  op.SetDirection(0);
  op.SetVariance(gaussian_voxel_variance(sigma, spacing));
  op.SetMaximumError(max_error);
  op.SetMaximumKernelWidth(static_cast<unsigned>(max_width));
  op.CreateDirectional();
  std::vector<double> coefficients(op.Size());
  for (unsigned i = 0; i < op.Size(); ++i) coefficients[i] = op[i];
  std::lock_guard lock(mu);
  if (cache.size() > 1024) cache.clear();  // bounded: params come from graphs
  cache.emplace(key, coefficients);
  return coefficients;
}

void gaussian_filter_region(const float* in, const Box& in_box, float* out, const Box& out_box,
                            const std::vector<double>& sigma, double max_error, int max_width,
                            int itk_threads, const std::vector<double>& spacing) {
  check_spacing(spacing, sigma.size());
  const std::vector<double> axis_spacing =
      spacing.empty() ? std::vector<double>(sigma.size(), 1.0) : spacing;
  const int rank = in_box.rank();
  if (rank < 1 || rank > 3) {
    throw InvalidArgument(fmt::format("gaussian supports images of rank 1 to 3 (got {})", rank));
  }
  if (static_cast<int>(sigma.size()) != rank) {
    throw InvalidArgument(
        fmt::format("sigma must have one value per axis ({}) (got {})", rank, sigma.size()));
  }
  if (out_box.rank() != rank || !in_box.contains(out_box)) {
    throw InvalidArgument(
        fmt::format("output box {} must lie inside the input box {}", out_box.str(), in_box.str()));
  }
  if (itk_threads < 1) {
    throw InvalidArgument(fmt::format("itk_threads must be >= 1 (got {})", itk_threads));
  }
  if (out_box.empty()) return;
  init_itk_threads();

  auto run = [&] {
    switch (rank) {
      case 1:
        run_filter<1>(in, in_box, out, out_box, sigma, axis_spacing, max_error, max_width,
                      itk_threads);
        break;
      case 2:
        run_filter<2>(in, in_box, out, out_box, sigma, axis_spacing, max_error, max_width,
                      itk_threads);
        break;
      default:
        run_filter<3>(in, in_box, out, out_box, sigma, axis_spacing, max_error, max_width,
                      itk_threads);
    }
  };
  try {
    if (itk_threads == 1) {
      run();
    } else {
      std::lock_guard lock(g_threads_mu);
      // The pool was created with the default of 1 thread: grow it once.
      itk::ThreadPool* pool = itk::ThreadPool::GetInstance();
      const auto wanted = static_cast<itk::ThreadIdType>(itk_threads);
      if (pool->GetMaximumNumberOfThreads() < wanted) {
        pool->AddThreads(wanted - pool->GetMaximumNumberOfThreads());
      }
      itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(
          static_cast<itk::ThreadIdType>(itk_threads));
      try {
        run();
      } catch (...) {
        itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(1);
        throw;
      }
      itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(1);
    }
  } catch (const itk::ExceptionObject& e) {
    throw NodeError(fmt::format("ITK DiscreteGaussianImageFilter failed: {}", e.GetDescription()));
  }
}

}  // namespace cellflow::nodes
