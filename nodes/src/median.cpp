// median: ITK's MedianImageFilter computed cell by cell. The window is a box of
// (2r+1)^D voxels; ITK extends the image at its edge by repeating the edge
// voxels (zero-flux Neumann). Each cell wraps its input region — the cell
// grown by the radius and clipped to the image — without a copy, so ITK's
// boundary condition applies at the image edge only and the result equals the
// filter on the whole image. The only ITK TU of this op; ranks 1 to 3, all
// run as 3-D images (one instantiation per dtype).
#include <fmt/format.h>

#include <cstring>

#include "cellflow/cache/dtype_dispatch.hpp"
#include "itkImage.h"
#include "itkMedianImageFilter.h"
#include "itk_wrap.hpp"
#include "neighborhood.hpp"
#include "ops.hpp"

namespace cellflow::nodes {
namespace {

template <class T, unsigned D>
void itk_median(const T* in, const Box& in_box, T* out, const Box& out_box,
                const std::vector<int64_t>& radius) {
  using Image = itk::Image<T, D>;
  using Filter = itk::MedianImageFilter<Image, Image>;

  auto image = detail::wrap_buffer<T, D>(in, in_box);

  auto filter = Filter::New();
  filter->SetInput(image);
  typename Filter::InputSizeType r;
  for (unsigned i = 0; i < D; ++i) r[i] = static_cast<itk::SizeValueType>(radius[D - 1 - i]);
  filter->SetRadius(r);
  // cellflow parallelizes across cells: one work unit runs in the calling thread.
  filter->SetNumberOfWorkUnits(1);
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
  copy_region(result->GetBufferPointer(), Box(b, e), out, out_box, out_box, sizeof(T));
}

/// `box` of rank 1 to 3 as a rank-3 box, with leading axes [0, 1).
Box as_3d(const Box& box) {
  Dims begin(3);
  Dims end(3, 1);
  const int shift = 3 - box.rank();
  for (int d = 0; d < box.rank(); ++d) {
    begin[shift + d] = box.begin()[d];
    end[shift + d] = box.end()[d];
  }
  return Box(begin, end);
}

class MedianKernel final : public NodeKernel {
 public:
  MedianKernel(ImageInfo info, std::vector<int64_t> radius)
      : NodeKernel(std::move(info)), radius_(std::move(radius)) {
    radius_3d_.assign(3 - radius_.size(), 0);
    radius_3d_.insert(radius_3d_.end(), radius_.begin(), radius_.end());
  }

  Box input_region(size_t /*input*/, const Box& out_box,
                   const ImageInfo& input_info) const override {
    return detail::grow_clipped(out_box, radius_, input_info.shape);
  }

  void compute(const Box& out_box, std::span<const InputRegion> inputs,
               CellBuffer& out) const override {
    const InputRegion& in = inputs[0];
    if (out_box.empty()) return;
    try {
      dispatch_dtype(in.data.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* src = in.data.as<T>();
        T* dst = out.mutable_as<T>();
        // Ranks 1 and 2 run as 3-D images with leading axes of one voxel and
        // radius 0 (the same windows), so ITK is instantiated once per dtype.
        itk_median<T, 3>(src, as_3d(in.box), dst, as_3d(out_box), radius_3d_);
      });
    } catch (const itk::ExceptionObject& e) {
      throw NodeError(fmt::format("ITK MedianImageFilter failed: {}", e.GetDescription()));
    }
  }

 private:
  std::vector<int64_t> radius_;
  std::vector<int64_t> radius_3d_;  // radius_ with leading zeros up to rank 3
};

class MedianOp final : public Op {
 public:
  std::string_view name() const override { return "median"; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Median over a box window of 2*radius+1 voxels per axis (ITK MedianImageFilter; the "
           "image is extended by repeating its edge voxels) of an image of rank 1 to 3; same "
           "dtype as the input.";
  }
  std::vector<ParamSpec> params() const override {
    return {{"radius", ParamType::kIntOrList, Value(1),
             "window half-width in voxels: one number, or one per axis (each >= 0)"}};
  }
  int min_inputs() const override { return 1; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 1);
    const ImageInfo& in = inputs[0];
    const int rank = in.shape.rank();
    if (rank < 1 || rank > 3) {
      throw InvalidArgument(
          fmt::format("op \"median\" supports images of rank 1 to 3 (got rank {})", rank));
    }
    auto radius = detail::get_radius(params, "radius", rank);
    ImageInfo info{in.dtype, in.shape, in.cell_shape};
    return std::make_unique<MedianKernel>(std::move(info), std::move(radius));
  }
};

}  // namespace

std::shared_ptr<const Op> make_median_op() { return std::make_shared<MedianOp>(); }

}  // namespace cellflow::nodes
