// export_image: one image file from a cell image, through ITK's writers. The
// only TU that includes itkImageFileWriter.h, so the IO factories (NRRD, TIFF,
// MetaImage, PNG, NIfTI) are registered here.
#include "cellflow/nodes/image_export.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "convert.hpp"
#include "image_file_check.hpp"
#include "itkImage.h"
#include "itkImageFileWriter.h"
#include "itk_module.hpp"

namespace cellflow::nodes {
namespace {

constexpr const char* kSupported = ".tif, .tiff, .nrrd, .mha, .mhd, .png";

enum class Format { kTiff, kNrrd, kMeta, kPng };

/// Writes a C-contiguous array (cellflow axis order) without copying it.
/// With `space` filled to D axes, the image carries its spacing and origin
/// (ITK's axis order); empty: ITK's defaults (spacing 1, origin 0).
template <class T, unsigned D>
void write_itk(const T* data, const Shape& shape, const Space& space,
               const std::filesystem::path& file) {
  using Image = itk::Image<T, D>;
  typename Image::RegionType region;
  for (unsigned i = 0; i < D; ++i) {
    // ITK's axis 0 is the fastest-varying one, cellflow's last.
    region.SetSize(i, static_cast<itk::SizeValueType>(shape[static_cast<int>(D - 1 - i)]));
  }
  auto image = Image::New();
  image->SetRegions(region);
  if (space.spacing.size() == D) {
    typename Image::SpacingType spacing;
    typename Image::PointType origin;
    for (unsigned i = 0; i < D; ++i) {
      spacing[i] = space.spacing[D - 1 - i];
      origin[i] = space.origin[D - 1 - i];
    }
    image->SetSpacing(spacing);
    image->SetOrigin(origin);
  }
  auto container = Image::PixelContainer::New();
  container->SetImportPointer(
      const_cast<T*>(data),
      static_cast<typename Image::PixelContainer::ElementIdentifier>(shape.product()),
      /*LetContainerManageMemory=*/false);
  image->SetPixelContainer(container);

  auto writer = itk::ImageFileWriter<Image>::New();
  writer->SetFileName(file.string());
  writer->SetInput(image);
  try {
    writer->Update();
  } catch (const itk::ExceptionObject& e) {
    std::string why = e.GetDescription();
    while (!why.empty() && std::isspace(static_cast<unsigned char>(why.back()))) why.pop_back();
    IoError err(fmt::format("cannot write the image: {}", why));
    err.add_context(fmt::format("file {}", file.string()));
    throw err;
  }
}

template <class T>
void write_any_rank(const T* data, const Shape& shape, const Space& space,
                    const std::filesystem::path& file) {
  if (shape.rank() == 2) {
    write_itk<T, 2>(data, shape, space, file);
  } else {
    write_itk<T, 3>(data, shape, space, file);
  }
}

/// A 2-D u8 image scaled linearly from the min..max of `buffer` (NaN -> 0);
/// a 3-D buffer is first reduced to its maximum along axis 0.
std::vector<uint8_t> to_u8_view(const CellBuffer& buffer, Shape& shape_2d) {
  const Shape& shape = buffer.shape();
  const int64_t planes = shape.rank() == 3 ? shape[0] : 1;
  shape_2d = Shape{shape[shape.rank() - 2], shape[shape.rank() - 1]};
  const auto plane = static_cast<size_t>(shape_2d.product());
  std::vector<double> view(plane, std::numeric_limits<double>::quiet_NaN());
  dispatch_dtype(buffer.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = buffer.as<T>();
    for (int64_t z = 0; z < planes; ++z) {
      const T* src = p + static_cast<size_t>(z) * plane;
      for (size_t i = 0; i < plane; ++i) {
        const auto v = static_cast<double>(src[i]);
        // fmax ignores a NaN operand.
        view[i] = std::fmax(view[i], v);
      }
    }
  });
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  for (double v : view) {
    if (std::isnan(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
  std::vector<uint8_t> out(plane);
  for (size_t i = 0; i < plane; ++i) {
    out[i] = std::isnan(view[i]) ? 0 : saturate_cast<uint8_t>((view[i] - lo) * scale);
  }
  return out;
}

template <class T>
std::vector<T> enlarge(const T* data, const Shape& shape, int k, Shape& out_shape) {
  const int64_t h = shape[0];
  const int64_t w = shape[1];
  out_shape = Shape{h * k, w * k};
  std::vector<T> out(static_cast<size_t>(out_shape.product()));
  T* o = out.data();
  for (int64_t y = 0; y < h * k; ++y) {
    const T* row = data + (y / k) * w;
    for (int64_t x = 0; x < w * k; ++x) *o++ = row[x / k];
  }
  return out;
}

template <class T>
void write_png(const T* data, const Shape& shape, int upscale, const std::filesystem::path& file) {
  if (upscale == 1) {
    write_itk<T, 2>(data, shape, Space{}, file);
    return;
  }
  Shape big;
  const std::vector<T> enlarged = enlarge(data, shape, upscale, big);
  write_itk<T, 2>(enlarged.data(), big, Space{}, file);
}

template <class T>
void write_as_f32(const CellBuffer& buffer, const Space& space, const std::filesystem::path& file) {
  const T* src = buffer.as<T>();
  std::vector<float> f(static_cast<size_t>(buffer.num_elements()));
  for (size_t i = 0; i < f.size(); ++i) f[i] = detail::convert_value<float>(src[i]);
  write_any_rank(f.data(), buffer.shape(), space, file);
}

Format format_of(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".tif" || ext == ".tiff") return Format::kTiff;
  if (ext == ".nrrd") return Format::kNrrd;
  if (ext == ".mha" || ext == ".mhd") return Format::kMeta;
  if (ext == ".png") return Format::kPng;
  throw InvalidArgument(
      fmt::format("cannot export \"{}\": unknown extension \"{}\" (supported: {})", file.string(),
                  ext, kSupported));
}

void write_and_verify(const CellBuffer& buffer, Format format, const ExportOptions& opts,
                      const std::filesystem::path& file);
void write_formatted(const CellBuffer& buffer, Format format, const ExportOptions& opts,
                     const std::filesystem::path& file);

}  // namespace

// export_image() (image_export.hpp) forwards here, in libcellflow_itk.so.
void detail::itk_export_image(CachedCellImage& image, const std::filesystem::path& file,
                              const ExportOptions& opts) {
  const Format format = format_of(file);
  const Shape& shape = image.grid().shape();
  if (shape.rank() != 2 && shape.rank() != 3) {
    throw InvalidArgument(
        fmt::format("cannot export \"{}\": only images of rank 2 or 3 can be written (got rank {})",
                    file.string(), shape.rank()));
  }
  if (shape.product() == 0) {
    throw InvalidArgument(fmt::format("cannot export \"{}\": the image is empty (shape {})",
                                      file.string(), shape.str()));
  }
  if (opts.upscale < 1 || opts.upscale > 1024) {
    throw InvalidArgument(
        fmt::format("export upscale must be in [1, 1024] (got {})", opts.upscale));
  }

  const CellBuffer buffer = image.read(Box::from_shape(shape));

  namespace fs = std::filesystem;
  std::error_code ec;
  if (format == Format::kMeta && file.extension() == ".mhd") {
    // ITK names the data file after the header: never overwrite one that is
    // not ours (no header of that name beside it).
    for (const char* ext : {".raw", ".zraw"}) {
      const fs::path data = fs::path(file).replace_extension(ext);
      if (fs::exists(data, ec) && !fs::exists(file, ec)) {
        throw IoError(fmt::format(
            "cannot export \"{}\": {} exists and is not the data of an earlier export: move it "
            "or export to another name",
            file.string(), data.string()));
      }
    }
    write_and_verify(buffer, format, opts, file);
    return;
  }
  // Written aside (same folder, same extension), checked whole, then renamed
  // into place: the previous export stays intact until then.
  const fs::path aside = file.parent_path() / fmt::format(".{}.tmp.{}{}", file.stem().string(),
                                                          ::getpid(), file.extension().string());
  try {
    write_and_verify(buffer, format, opts, aside);
    if (::rename(aside.c_str(), file.c_str()) != 0) {
      throw IoError(fmt::format("file {}: cannot rename {} into place: {}", file.string(),
                                aside.string(), std::strerror(errno)));
    }
  } catch (...) {
    fs::remove(aside, ec);
    throw;
  }
}

namespace {

void write_and_verify(const CellBuffer& buffer, Format format, const ExportOptions& opts,
                      const std::filesystem::path& file) {
  const Shape& shape = buffer.shape();
  const DType dtype = buffer.dtype();
  write_formatted(buffer, format, opts, file);
  // ITK does not always report a short write (a full disk): the file must
  // hold what its header promises.
  if (format == Format::kMeta || format == Format::kTiff) {
    const DType written = format == Format::kTiff && dtype_size(dtype) > 2 ? DType::kF32 : dtype;
    try {
      detail::check_image_file_whole(file, shape, written);
    } catch (const IoError& e) {
      throw IoError(fmt::format("cannot write the image (disk full?): {}", e.message()));
    }
  }
}

void write_formatted(const CellBuffer& buffer, Format format, const ExportOptions& opts,
                     const std::filesystem::path& file) {
  const Shape& shape = buffer.shape();
  const DType dtype = buffer.dtype();
  const Space space = opts.space.filled(shape.rank());
  switch (format) {
    case Format::kNrrd:
    case Format::kMeta:
      dispatch_dtype(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        write_any_rank(buffer.as<T>(), shape, space, file);
      });
      return;
    case Format::kTiff:
      // ITK's TIFF writer takes 8- and 16-bit integers and f32.
      dispatch_dtype(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if constexpr (sizeof(T) <= 2 || std::is_same_v<T, float>) {
          write_any_rank(buffer.as<T>(), shape, space, file);
        } else {
          write_as_f32<T>(buffer, space, file);
        }
      });
      return;
    case Format::kPng:
      if (shape.rank() == 2 && !opts.png_rescale && dtype == DType::kU8) {
        write_png(buffer.as<uint8_t>(), shape, opts.upscale, file);
      } else if (shape.rank() == 2 && !opts.png_rescale && dtype == DType::kU16) {
        write_png(buffer.as<uint16_t>(), shape, opts.upscale, file);
      } else {
        Shape shape_2d;
        const std::vector<uint8_t> view = to_u8_view(buffer, shape_2d);
        write_png(view.data(), shape_2d, opts.upscale, file);
      }
      return;
  }
}

}  // namespace

}  // namespace cellflow::nodes
