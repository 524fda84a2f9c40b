// The gaussian op's "itk" engine (in libcellflow_itk.so): ITK's
// DiscreteGaussianImageFilter over a wrapped float buffer, the reference the
// native and fast engines are tested against.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "cellflow/cache/error.hpp"
#include "cellflow/nodes/gaussian_kernel.hpp"
#include "gaussian_separable.hpp"
#include "itk_module.hpp"

// GCC 12 reports a false -Warray-bounds inside ITK's NeighborhoodOperator for
// 2-D images when inlining (system-header status does not silence it).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#include "itkDiscreteGaussianImageFilter.h"
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

std::mutex g_threads_mu;  // serializes callers that change the global thread count

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

namespace detail {

void itk_gaussian_filter_region(const float* in, const Box& in_box, float* out, const Box& out_box,
                                const std::vector<double>& sigma, double max_error, int max_width,
                                int itk_threads, const std::vector<double>& spacing) {
  check_gaussian_spacing(spacing, sigma.size());
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

}  // namespace detail
}  // namespace cellflow::nodes
