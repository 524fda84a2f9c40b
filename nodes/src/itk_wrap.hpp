// Private to cellflow_nodes: wrapping cellflow buffers as ITK images without a
// copy. Include only from the ITK translation units (after ITK's headers).
#pragma once

#include "cellflow/cache/box.hpp"
#include "itkImage.h"

namespace cellflow::nodes::detail {

/// `box` as an ITK region: ITK's axis 0 is the fastest-varying one, cellflow's
/// the last, so the axes are reversed.
template <unsigned D>
itk::ImageRegion<D> to_itk_region(const Box& box) {
  itk::ImageRegion<D> region;
  for (unsigned i = 0; i < D; ++i) {
    const int a = static_cast<int>(D - 1 - i);
    region.SetIndex(i, box.begin()[a]);
    region.SetSize(i, static_cast<itk::SizeValueType>(box.end()[a] - box.begin()[a]));
  }
  return region;
}

/// An ITK image over `data` (C-contiguous, covering `box`) whose largest region
/// is `box`. ITK never writes to a filter's input: the buffer stays ours (no
/// copy, no free). REQUIRES: `data` outlives the image.
template <class T, unsigned D>
typename itk::Image<T, D>::Pointer wrap_buffer(const T* data, const Box& box) {
  using Image = itk::Image<T, D>;
  auto image = Image::New();
  image->SetRegions(to_itk_region<D>(box));
  auto container = Image::PixelContainer::New();
  container->SetImportPointer(
      const_cast<T*>(data),
      static_cast<typename Image::PixelContainer::ElementIdentifier>(box.volume()),
      /*LetContainerManageMemory=*/false);
  image->SetPixelContainer(container);
  return image;
}

}  // namespace cellflow::nodes::detail
