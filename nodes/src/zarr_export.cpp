// export_zarr / export_ome_zarr: a cell image written chunk by chunk (one
// chunk per cell, in parallel), and for OME-Zarr a pyramid whose levels are
// lazily computed cell images of their own, each reading 2x2x2 blocks of the
// level above: memory stays bounded by the memory cache whatever the size.
#include "cellflow/nodes/zarr_export.hpp"

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cellflow/cache/cached_cell_image.hpp"
#include "cellflow/cache/dtype_dispatch.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/cache/zarr_array.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

constexpr int kMaxLevels = 32;
/// Pyramid levels halve the last min(rank, kSpatialAxes) axes only.
constexpr int kSpatialAxes = 3;

std::string lowercase_name(const fs::path& path) {
  std::string s = path.generic_string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// NGFF axes, as the cache directory writes them: t, c, z, y, x from the end.
Value axes_for_rank(int rank) {
  static const char* const kNames[] = {"t", "c", "z", "y", "x"};
  static const char* const kTypes[] = {"time", "channel", "space", "space", "space"};
  Value::Array axes;
  for (int i = kMaxRank - rank; i < kMaxRank; ++i) {
    axes.emplace_back(Value::Object{{"name", kNames[i]}, {"type", kTypes[i]}});
  }
  return Value(std::move(axes));
}

/// True for the names an export writes: metadata files, chunk keys ("0.1.2")
/// and folders of them ("0/1/2" chunk keys, "0" levels) holding only such names.
bool written_by_export(const fs::directory_entry& e, int depth) {
  const std::string name = e.path().filename().string();
  if (name == ".zarray" || name == ".zattrs" || name == ".zgroup") return e.is_regular_file();
  const bool key = !name.empty() && name.find_first_not_of("0123456789.") == std::string::npos;
  if (!key) return false;
  if (e.is_regular_file()) return true;
  if (!e.is_directory() || e.is_symlink() || depth > 6)
    return false;  // level, then rank-deep chunk keys
  std::error_code ec;
  for (const auto& inner : fs::directory_iterator(e.path(), ec))
    if (!written_by_export(inner, depth + 1)) return false;
  return !ec;
}

/// Checks that `folder` may receive an export: absent, empty, or a Zarr array
/// or group holding only what an export writes (anything else is not ours to
/// replace).
void check_target(const fs::path& folder) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(folder, ec);
  if (!fs::exists(st)) return;
  if (!fs::is_directory(st)) {
    throw InvalidArgument(fmt::format(
        "cannot export to {}: it exists and is not a folder; remove it first", folder.string()));
  }
  if (fs::is_empty(folder, ec)) return;
  if (!fs::exists(folder / ".zarray") && !fs::exists(folder / ".zgroup")) {
    throw InvalidArgument(fmt::format(
        "cannot export to {}: the folder exists and is not a Zarr array or group; remove it "
        "first",
        folder.string()));
  }
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (!written_by_export(e, 0)) {
      throw InvalidArgument(fmt::format(
          "cannot export to {}: it holds {}, which an export does not write; remove it or "
          "export elsewhere (an export replaces the whole folder)",
          folder.string(), e.path().filename().string()));
    }
  }
}

/// Writes an export into a fresh folder beside `folder` (`write(dir)`), then
/// swaps it into place: until then the previous export is intact, and a
/// failed or killed export leaves only a hidden temporary folder.
template <class Write>
void export_aside(const fs::path& folder, Write&& write) {
  check_target(folder);
  const fs::path target = folder.has_filename() ? folder : folder.parent_path();
  const std::string stem = target.filename().string();
  const fs::path aside =
      target.parent_path() / fmt::format(".{}.tmp.{}", stem, static_cast<long>(::getpid()));
  const fs::path old =
      target.parent_path() / fmt::format(".{}.old.{}", stem, static_cast<long>(::getpid()));
  std::error_code ec;
  fs::remove_all(aside, ec);
  fs::create_directories(aside, ec);
  if (ec) {
    throw IoError(fmt::format("cannot export to {}: cannot create {}: {}", target.string(),
                              aside.string(), ec.message()));
  }
  try {
    with_context("file " + target.string(), [&] { write(aside); });
    const bool had_previous = fs::exists(fs::symlink_status(target, ec));
    if (had_previous && ::rename(target.c_str(), old.c_str()) != 0)
      throw IoError(fmt::format("cannot export to {}: cannot move the previous export aside: {}",
                                target.string(), std::strerror(errno)));
    if (::rename(aside.c_str(), target.c_str()) != 0) {
      const int err = errno;
      if (had_previous) ::rename(old.c_str(), target.c_str());
      throw IoError(fmt::format("cannot export to {}: cannot rename {} into place: {}",
                                target.string(), aside.string(), std::strerror(err)));
    }
    if (had_previous) fs::remove_all(old, ec);
  } catch (...) {
    fs::remove_all(aside, ec);
    throw;
  }
}

/// Runs fn(i) for i in [0, n) on `threads` workers (0 = all cores).
template <class Fn>
void parallel_cells(int64_t n, int threads, Fn&& fn) {
  tbb::task_arena arena(threads > 0 ? threads : tbb::task_arena::automatic);
  arena.execute([&] { tbb::parallel_for(int64_t{0}, n, [&](int64_t i) { fn(i); }); });
}

/// Writes every cell of `image` as one chunk of the Zarr array `dir`.
void write_array(CachedCellImage& image, const fs::path& dir, int threads) {
  const CellGrid& grid = image.grid();
  const DType dtype = image.dtype();
  const size_t size = dtype_size(dtype);
  write_file_atomic(dir / ".zarray", zarray_json(dtype, grid));
  parallel_cells(grid.num_cells(), threads, [&](int64_t linear) {
    const CellIndex cell = grid.cell_at(linear);
    const Box box = grid.cell_box(cell);
    const CellBuffer data = image.get(cell);
    // Zarr stores edge chunks at full size; the padding holds fill_value (0).
    CellBuffer padded = data;
    if (!(box.shape() == grid.cell_shape())) {
      Dims end = box.begin();
      for (int d = 0; d < end.rank(); ++d) end[d] += grid.cell_shape()[d];
      padded = CellBuffer::zeros(dtype, grid.cell_shape());
      copy_region(data.data(), box, padded.mutable_data(), Box(box.begin(), end), box, size);
    }
    fs::path file = dir;
    for (int64_t i : cell) file /= std::to_string(i);
    // An export leaves the cache: its chunks are bound to no cell identity.
    write_file_atomic(file, ZarrArray::encode_chunk(padded.data(), padded.num_bytes(), size, {}));
  });
}

/// Reduces each block of `in` (covering `in_box` of the level above) to one
/// voxel of `out` (covering `out_box`): block = out index * factor, clipped to `in_box`.
template <class T>
void downsample_block(const T* in, const Box& in_box, T* out, const Box& out_box,
                      const Dims& factor, Downsample method) {
  const Shape in_shape = in_box.shape();
  const int r = out_box.rank();
  std::vector<T> values;
  T* o = out;
  for_each_index(out_box, [&](const Dims& g) {
    Dims begin(r);
    Dims end(r);
    for (int d = 0; d < r; ++d) {
      begin[d] = g[d] * factor[d] - in_box.begin()[d];
      end[d] = std::min(begin[d] + factor[d], in_shape[d]);
    }
    values.clear();
    for_each_index(Box(begin, end), [&](const Dims& l) {
      int64_t off = 0;
      for (int d = 0; d < r; ++d) off = off * in_shape[d] + l[d];
      values.push_back(in[off]);
    });
    switch (method) {
      case Downsample::kMax:
        *o = *std::max_element(values.begin(), values.end());
        break;
      case Downsample::kMode: {
        std::sort(values.begin(), values.end());
        T best = values[0];
        size_t best_run = 0;
        for (size_t i = 0; i < values.size();) {
          size_t j = i;
          while (j < values.size() && values[j] == values[i]) ++j;
          if (j - i > best_run) {
            best_run = j - i;
            best = values[i];
          }
          i = j == i ? i + 1 : j;  // NaN != NaN: step over it
        }
        *o = best;
        break;
      }
      case Downsample::kAuto:
      case Downsample::kMean: {
        double sum = 0;
        for (T v : values) sum += static_cast<double>(v);
        *o = saturate_cast<T>(sum / static_cast<double>(values.size()));
        break;
      }
    }
    ++o;
  });
}

/// One pyramid level below `above`: a lazily computed cell image.
std::unique_ptr<CachedCellImage> make_level(CachedCellImage& above, int level, const Dims& factor,
                                            Downsample method) {
  const CellGrid& g = above.grid();
  Shape shape = g.shape();
  Shape cells = g.cell_shape();
  for (int d = 0; d < shape.rank(); ++d) {
    shape[d] = (shape[d] + factor[d] - 1) / factor[d];
    cells[d] = std::min(cells[d], shape[d]);
  }
  const DType dtype = above.dtype();
  auto compute = [&above, factor, method, dtype](const CellIndex& /*cell*/, const Box& box) {
    Dims begin(box.rank());
    Dims end(box.rank());
    for (int d = 0; d < box.rank(); ++d) {
      begin[d] = box.begin()[d] * factor[d];
      end[d] = std::min(box.end()[d] * factor[d], above.grid().shape()[d]);
    }
    const Box in_box(begin, end);
    const CellBuffer in = above.read(in_box);
    CellBuffer out = CellBuffer::allocate(dtype, box.shape());
    dispatch_dtype(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      downsample_block<T>(in.as<T>(), in_box, out.mutable_as<T>(), box, factor, method);
    });
    return out;
  };
  return std::make_unique<CachedCellImage>(fmt::format("export level {}", level),
                                           CellGrid(shape, cells), dtype, std::move(compute));
}

std::string_view method_name(Downsample m) {
  switch (m) {
    case Downsample::kMean:
      return "mean";
    case Downsample::kMode:
      return "mode";
    case Downsample::kMax:
      return "max";
    case Downsample::kAuto:
      break;
  }
  return "auto";
}

void require_exportable(const CachedCellImage& image, const fs::path& folder) {
  if (image.grid().shape().product() == 0) {
    throw InvalidArgument(fmt::format("cannot export {}: the image is empty (shape {})",
                                      folder.string(), image.grid().shape().str()));
  }
}

}  // namespace

Downsample parse_downsample(std::string_view name) {
  if (name == "auto") return Downsample::kAuto;
  if (name == "mean") return Downsample::kMean;
  if (name == "mode") return Downsample::kMode;
  if (name == "max") return Downsample::kMax;
  throw InvalidArgument(fmt::format(
      "downsampling method must be \"auto\", \"mean\", \"mode\" or \"max\" (got \"{}\")", name));
}

Downsample auto_downsample(DType dtype) {
  if (dtype_is_float(dtype) || dtype_size(dtype) <= 2) return Downsample::kMean;
  return Downsample::kMode;
}

bool is_zarr_path(const fs::path& path) { return lowercase_name(path).ends_with(".zarr"); }

bool is_ome_zarr_path(const fs::path& path) { return lowercase_name(path).ends_with(".ome.zarr"); }

void export_zarr(CachedCellImage& image, const fs::path& folder, const ZarrExportOptions& opts) {
  require_exportable(image, folder);
  export_aside(folder, [&](const fs::path& dir) { write_array(image, dir, opts.threads); });
}

void export_ome_zarr(CachedCellImage& image, const fs::path& folder,
                     const ZarrExportOptions& opts) {
  require_exportable(image, folder);
  if (opts.levels < 1 || opts.levels > kMaxLevels) {
    throw InvalidArgument(
        fmt::format("export levels must be in [1, {}] (got {})", kMaxLevels, opts.levels));
  }
  const int rank = image.grid().rank();
  const Downsample method =
      opts.downsample == Downsample::kAuto ? auto_downsample(image.dtype()) : opts.downsample;
  Dims factor(rank, 1);
  for (int d = std::max(0, rank - kSpatialAxes); d < rank; ++d) factor[d] = 2;

  export_aside(folder, [&](const fs::path& dir) {
    write_file_atomic(dir / ".zgroup", to_json(Value(Value::Object{{"zarr_format", 2}})));
    Value::Array datasets;
    std::vector<std::unique_ptr<CachedCellImage>> levels;
    CachedCellImage* current = &image;
    for (int level = 0; level < opts.levels; ++level) {
      if (level > 0) {
        levels.push_back(make_level(*current, level, factor, method));
        current = levels.back().get();
      }
      write_array(*current, dir / std::to_string(level), opts.threads);
      Value::Array scale;
      for (int d = 0; d < rank; ++d)
        scale.emplace_back(std::ldexp(1.0, factor[d] == 2 ? level : 0));
      datasets.emplace_back(Value::Object{
          {"path", std::to_string(level)},
          {"coordinateTransformations",
           Value(Value::Array{
               Value(Value::Object{{"type", "scale"}, {"scale", Value(std::move(scale))}})})},
      });
    }
    std::string name = folder.filename().string();
    if (name.empty()) name = folder.parent_path().filename().string();
    Value multiscale(Value::Object{
        {"version", "0.4"},
        {"name", name},
        {"axes", axes_for_rank(rank)},
        {"datasets", Value(std::move(datasets))},
        {"type", std::string(method_name(method))},
        {"metadata",
         Value(Value::Object{{"description", fmt::format("cellflow export: each level is the "
                                                         "{} of 2-voxel blocks of the level above "
                                                         "along the spatial axes",
                                                         method_name(method))}})},
    });
    write_file_atomic(
        dir / ".zattrs",
        to_json(Value(Value::Object{{"multiscales", Value(Value::Array{std::move(multiscale)})}})));
  });
}

}  // namespace cellflow::nodes
