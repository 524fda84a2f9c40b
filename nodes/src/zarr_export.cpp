// export_zarr / export_ome_zarr: a cell image written chunk by chunk (one
// chunk per cell, in parallel), and for OME-Zarr a pyramid whose levels are
// lazily computed cell images of their own, each reading 2x2x2 blocks of the
// level above: memory stays bounded by the memory cache whatever the size.
#include "cellflow/nodes/zarr_export.hpp"

#include <blosc.h>
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
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
#include "cellflow/cache/log.hpp"
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

// NGFF axis types from the end: up to 3 space axes, then channel, then time
// (the order NGFF requires); the default names of the first two are c and t.
constexpr const char* kAxisTypes[] = {"time", "channel", "space", "space", "space"};
constexpr const char* kAxisNames[] = {"t", "c", "z", "y", "x"};

bool is_one_of(std::string_view s, std::initializer_list<std::string_view> list) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

/// Whether `unit` is an NGFF unit name for an axis of `type`.
bool ngff_unit(std::string_view type, std::string_view unit) {
  if (type == "space") {
    return is_one_of(
        unit, {"angstrom",   "attometer",  "centimeter", "decimeter",  "exameter",   "femtometer",
               "foot",       "gigameter",  "hectometer", "inch",       "kilometer",  "megameter",
               "meter",      "micrometer", "mile",       "millimeter", "nanometer",  "parsec",
               "petameter",  "picometer",  "terameter",  "yard",       "yoctometer", "yottameter",
               "zeptometer", "zettameter"});
  }
  if (type == "time") {
    return is_one_of(
        unit,
        {"attosecond",  "centisecond", "day",         "decisecond",  "exasecond",  "femtosecond",
         "gigasecond",  "hectosecond", "hour",        "kilosecond",  "megasecond", "microsecond",
         "millisecond", "minute",      "nanosecond",  "petasecond",  "picosecond", "second",
         "terasecond",  "yoctosecond", "yottasecond", "zeptosecond", "zettasecond"});
  }
  return false;
}

/// The NGFF axis names of an image: the space's names, where it has its own
/// (not the "d0", "d1" defaults of leading axes), else t, c, z, y, x from the end.
std::vector<std::string> ngff_axis_names(const Space& space, int rank) {
  const Space s = space.filled(rank);
  std::vector<std::string> names;
  for (int i = 0; i < rank; ++i) {
    const std::string& own = s.axis_names[static_cast<size_t>(i)];
    const bool default_name = own.size() > 1 && own[0] == 'd' &&
                              own.find_first_not_of("0123456789", 1) == std::string::npos;
    names.push_back(default_name || own.empty() ? kAxisNames[kMaxRank - rank + i] : own);
  }
  return names;
}

/// The NGFF type of axis `i`: the last three are the space axes the pyramid
/// halves; a leading axis is time or channel by its name ("t"/"time",
/// "c"/"ch"/"channel"), else by its position (time first, then channel).
const char* axis_type(const std::string& name, int rank, int i) {
  if (i >= rank - kSpatialAxes) return "space";
  if (name == "t" || name == "time") return "time";
  if (name == "c" || name == "ch" || name == "channel") return "channel";
  return kAxisTypes[kMaxRank - rank + i];
}

Value::Array number_list(const std::vector<double>& v) {
  Value::Array out;
  for (double x : v) out.emplace_back(x);
  return out;
}

/// True for the names an export writes: metadata files, chunk keys ("0.1.2")
/// and folders of them ("0/1/2" chunk keys, "0" levels) holding only such names.
bool written_by_export(const fs::directory_entry& e, int depth) {
  const std::string name = e.path().filename().string();
  if (depth == 0 && name == "labels" && e.is_directory() && !e.is_symlink()) {
    // labels/: its metadata and label groups (any folder name) of levels.
    std::error_code ec;
    for (const auto& group : fs::directory_iterator(e.path(), ec)) {
      if (group.is_directory() && !group.is_symlink()) {
        for (const auto& inner : fs::directory_iterator(group.path(), ec))
          if (inner.path().filename() == "labels" || !written_by_export(inner, 0)) return false;
      } else if (!written_by_export(group, 1)) {
        return false;
      }
    }
    return !ec;
  }
  if (name == ".zarray" || name == ".zattrs" || name == ".zgroup" || name == "zarr.json")
    return e.is_regular_file();
  const bool key = (name == "c" && e.is_directory()) ||
                   (!name.empty() && name.find_first_not_of("0123456789.") == std::string::npos);
  if (!key) return false;
  if (e.is_regular_file()) return true;
  if (!e.is_directory() || e.is_symlink() || depth > 6)
    return false;  // level, then "c" and rank-deep chunk keys
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
  if (!fs::exists(folder / ".zarray") && !fs::exists(folder / ".zgroup") &&
      !fs::exists(folder / "zarr.json")) {
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

/// The zarr.json of a v3 array (little-endian bytes, then blosc-lz4 with byte shuffle).
std::string zarr_v3_json(DType dtype, const CellGrid& grid, const std::vector<std::string>& names) {
  const std::string t(dtype_name(dtype));  // "u16" -> "uint16", "i8" -> "int8", "f32" -> "float32"
  const std::string data_type = (t[0] == 'u'   ? "uint"
                                 : t[0] == 'i' ? "int"
                                               : "float") +
                                t.substr(1);
  Value::Array dimension_names;
  for (const std::string& n : names) dimension_names.emplace_back(n);
  const Value meta(Value::Object{
      {"zarr_format", 3},
      {"node_type", "array"},
      {"shape", Value::list(grid.shape().to_vector())},
      {"data_type", data_type},
      {"chunk_grid",
       Value::Object{{"name", "regular"},
                     {"configuration",
                      Value::Object{{"chunk_shape", Value::list(grid.cell_shape().to_vector())}}}}},
      {"chunk_key_encoding",
       Value::Object{{"name", "default"}, {"configuration", Value::Object{{"separator", "/"}}}}},
      {"fill_value", 0},
      {"codecs",
       Value::Array{
           Value(Value::Object{{"name", "bytes"},
                               {"configuration", Value::Object{{"endian", "little"}}}}),
           Value(Value::Object{{"name", "blosc"},
                               {"configuration",
                                Value::Object{{"cname", "lz4"},
                                              {"clevel", 5},
                                              {"shuffle", "shuffle"},
                                              {"typesize", static_cast<int64_t>(dtype_size(dtype))},
                                              {"blocksize", 0}}}}),
       }},
      {"attributes", Value::object()},
      {"dimension_names", Value(std::move(dimension_names))},
  });
  return to_json(meta);
}

/// A v3 chunk: the little-endian bytes (native on the machines we build
/// for), blosc-lz4 compressed with byte shuffle, as zarr_v3_json declares.
std::string encode_v3_chunk(const CellBuffer& chunk, size_t type_size) {
  static_assert(std::endian::native == std::endian::little, "v3 exports write native bytes");
  const size_t bytes = chunk.num_bytes();
  std::string out(bytes + BLOSC_MAX_OVERHEAD, '\0');
  const int n = blosc_compress_ctx(5, BLOSC_SHUFFLE, type_size, bytes, chunk.data(), out.data(),
                                   out.size(), "lz4", 0, 1);
  if (n <= 0) throw IoError(fmt::format("blosc could not compress a {}-byte chunk", bytes));
  out.resize(static_cast<size_t>(n));
  return out;
}

/// Writes every cell of `image` as one chunk of the Zarr array `dir` (v2 or
/// v3 as opts.zarr_format says; `names`: the v3 dimension_names).
void write_array(CachedCellImage& image, const fs::path& dir, const ZarrExportOptions& opts,
                 const std::vector<std::string>& names) {
  const CellGrid& grid = image.grid();
  const DType dtype = image.dtype();
  const size_t size = dtype_size(dtype);
  const bool v3 = opts.zarr_format == 3;
  write_file_atomic(v3 ? dir / "zarr.json" : dir / ".zarray",
                    v3 ? zarr_v3_json(dtype, grid, names) : zarray_json(dtype, grid));
  parallel_cells(grid.num_cells(), opts.threads, [&](int64_t linear) {
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
    fs::path file = v3 ? dir / "c" : dir;
    for (int64_t i : cell) file /= std::to_string(i);
    // An export leaves the cache: its chunks are bound to no cell identity.
    write_file_atomic(file, v3 ? encode_v3_chunk(padded, size)
                               : ZarrArray::encode_chunk(padded.data(), padded.num_bytes(), size,
                                                         {}, blosc_shuffle_for(dtype)));
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

void check_zarr_format(const ZarrExportOptions& opts) {
  if (opts.zarr_format != 2 && opts.zarr_format != 3)
    throw InvalidArgument(
        fmt::format("the Zarr format of an export must be 2 or 3 (got {})", opts.zarr_format));
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
  check_zarr_format(opts);
  const std::vector<std::string> names = ngff_axis_names(opts.space, image.grid().rank());
  export_aside(folder, [&](const fs::path& dir) { write_array(image, dir, opts, names); });
}

namespace {

/// The "image-label" metadata of a label image: background transparent; the
/// image it labels two folders up when it lies in one's labels/.
Value image_label_metadata(bool beside_image, bool v3) {
  Value label(Value::Object{
      {"colors",
       Value(Value::Array{Value(Value::Object{
           {"label-value", 0}, {"rgba", Value::list(std::vector<int64_t>{0, 0, 0, 0})}})})}});
  if (!v3) label.set("version", "0.4");
  if (beside_image) label.set("source", Value(Value::Object{{"image", "../../"}}));
  return label;
}

/// Writes the metadata of an NGFF group: `ome` holds the 0.5 attributes
/// (version added), for 0.4 the same keys at the top of .zattrs.
void write_group_metadata(const fs::path& dir, bool v3, Value::Object attributes) {
  if (v3) {
    attributes.insert(attributes.begin(), {"version", Value("0.5")});
    write_file_atomic(
        dir / "zarr.json",
        to_json(Value(Value::Object{
            {"zarr_format", 3},
            {"node_type", "group"},
            {"attributes", Value(Value::Object{{"ome", Value(std::move(attributes))}})},
        })));
  } else {
    write_file_atomic(dir / ".zgroup", to_json(Value(Value::Object{{"zarr_format", 2}})));
    write_file_atomic(dir / ".zattrs", to_json(Value(std::move(attributes))));
  }
}

/// Writes one NGFF multiscale group (levels, then its metadata) into `dir`.
void write_ngff_group(CachedCellImage& image, const fs::path& dir, const ZarrExportOptions& opts,
                      const std::string& name, bool beside_image) {
  const int rank = image.grid().rank();
  const Downsample method = opts.downsample != Downsample::kAuto ? opts.downsample
                            : opts.labels                        ? Downsample::kMode
                                                                 : auto_downsample(image.dtype());
  Dims factor(rank, 1);
  for (int d = std::max(0, rank - kSpatialAxes); d < rank; ++d) factor[d] = 2;
  const bool v3 = opts.zarr_format == 3;
  const std::vector<std::string> names = ngff_axis_names(opts.space, rank);
  Value multiscale = ngff_multiscale(opts.space, rank, opts.levels, factor, method_name(method),
                                     name, v3 ? "0.5" : "0.4");
  std::vector<std::unique_ptr<CachedCellImage>> levels;
  CachedCellImage* current = &image;
  for (int level = 0; level < opts.levels; ++level) {
    if (level > 0) {
      levels.push_back(make_level(*current, level, factor, method));
      current = levels.back().get();
    }
    write_array(*current, dir / std::to_string(level), opts, names);
  }
  Value::Object attributes{{"multiscales", Value(Value::Array{std::move(multiscale)})}};
  if (opts.labels) attributes.emplace_back("image-label", image_label_metadata(beside_image, v3));
  write_group_metadata(dir, v3, std::move(attributes));
}

/// Refuses a label that cannot be written beside `image`.
void check_label(const LabelExport& label, const CachedCellImage& image, const Space& space) {
  const std::string& n = label.name;
  if (n.empty() || n.front() == '.' || n.find('/') != std::string::npos ||
      n.find('\\') != std::string::npos || n == "labels" ||
      std::any_of(n.begin(), n.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
    throw InvalidArgument(fmt::format(
        "label \"{}\": not a usable folder name (no '/', control characters or leading '.')", n));
  }
  if (label.image == nullptr) throw InvalidArgument(fmt::format("label \"{}\": no image", n));
  if (dtype_is_float(label.image->dtype())) {
    throw InvalidArgument(fmt::format("label \"{}\": label images hold integers (got {})", n,
                                      dtype_name(label.image->dtype())));
  }
  if (!(label.image->grid().shape() == image.grid().shape())) {
    throw InvalidArgument(fmt::format("label \"{}\": shape {} is not the image's {}", n,
                                      label.image->grid().shape().str(),
                                      image.grid().shape().str()));
  }
  const int rank = image.grid().rank();
  if (!label.space.filled(rank).same_grid(space.filled(rank))) {
    throw InvalidArgument(
        fmt::format("label \"{}\": it lies on another grid ({}) than the image ({})", n,
                    label.space.filled(rank).describe(), space.filled(rank).describe()));
  }
}

}  // namespace

void export_ome_zarr(CachedCellImage& image, const fs::path& folder, const ZarrExportOptions& opts,
                     const std::vector<LabelExport>& labels) {
  require_exportable(image, folder);
  if (opts.levels < 1 || opts.levels > kMaxLevels) {
    throw InvalidArgument(
        fmt::format("export levels must be in [1, {}] (got {})", kMaxLevels, opts.levels));
  }
  check_zarr_format(opts);
  for (size_t i = 0; i < labels.size(); ++i) {
    check_label(labels[i], image, opts.space);
    for (size_t j = 0; j < i; ++j)
      if (labels[j].name == labels[i].name)
        throw InvalidArgument(fmt::format("label \"{}\" is given twice", labels[i].name));
  }
  std::string name = folder.filename().string();
  if (name.empty()) name = folder.parent_path().filename().string();

  export_aside(folder, [&](const fs::path& dir) {
    write_ngff_group(image, dir, opts, name, /*beside_image=*/false);
    if (labels.empty()) return;
    const bool v3 = opts.zarr_format == 3;
    Value::Array names;
    for (const LabelExport& label : labels) {
      ZarrExportOptions label_opts = opts;
      label_opts.labels = true;
      label_opts.downsample = Downsample::kMode;
      label_opts.space = label.space;
      write_ngff_group(*label.image, dir / "labels" / label.name, label_opts, label.name,
                       /*beside_image=*/true);
      names.emplace_back(label.name);
    }
    write_group_metadata(dir / "labels", v3, Value::Object{{"labels", Value(std::move(names))}});
  });
}

Value ngff_multiscale(const Space& space, int rank, int levels, const Dims& factor,
                      std::string_view method, const std::string& name, std::string_view version) {
  const Space s = space.filled(rank);
  const std::vector<std::string> names = ngff_axis_names(space, rank);
  Value::Array axes;
  for (int i = 0; i < rank; ++i) {
    const char* type = axis_type(names[static_cast<size_t>(i)], rank, i);
    Value axis(Value::Object{{"name", names[static_cast<size_t>(i)]}, {"type", type}});
    const std::string& unit = s.units[static_cast<size_t>(i)];
    if (ngff_unit(type, unit)) {
      axis.set("unit", unit);
    } else if (!unit.empty()) {
      log_warning(
          fmt::format("NGFF export {}: unit \"{}\" of axis \"{}\" is not an NGFF {} "
                      "unit name; the axis is written without a unit",
                      name, unit, names[static_cast<size_t>(i)], type));
    }
    axes.push_back(std::move(axis));
  }
  Value::Array datasets;
  for (int level = 0; level < levels; ++level) {
    std::vector<double> scale(static_cast<size_t>(rank));
    std::vector<double> translation(static_cast<size_t>(rank));
    bool translated = false;
    for (int d = 0; d < rank; ++d) {
      const auto k = static_cast<size_t>(d);
      const double block = factor[d] == 2 ? std::ldexp(1.0, level) : 1.0;
      scale[k] = s.spacing[k] * block;
      translation[k] = s.origin[k] + s.spacing[k] * (block - 1.0) / 2.0;
      translated = translated || translation[k] != 0.0;
    }
    Value::Array transforms{
        Value(Value::Object{{"type", "scale"}, {"scale", Value(number_list(scale))}})};
    if (translated) {
      transforms.emplace_back(
          Value::Object{{"type", "translation"}, {"translation", Value(number_list(translation))}});
    }
    datasets.emplace_back(
        Value::Object{{"path", std::to_string(level)},
                      {"coordinateTransformations", Value(std::move(transforms))}});
  }
  Value multiscale(Value::Object{
      {"name", name},
      {"axes", Value(std::move(axes))},
      {"datasets", Value(std::move(datasets))},
      {"type", std::string(method)},
      {"metadata",
       Value(Value::Object{{"description", fmt::format("cellflow export: each level is the "
                                                       "{} of 2-voxel blocks of the level above "
                                                       "along the spatial axes",
                                                       method)}})},
  });
  if (version == "0.4") multiscale.set("version", "0.4");
  return multiscale;
}

}  // namespace cellflow::nodes
