// read.image: a scalar image file that ITK reads (TIFF, NRRD, MetaImage,
// NIfTI, PNG, ...) as a source node. The only TU that reads images with ITK.
//
// Three ways to get a cell, chosen once at bind:
//  - streaming through ITK's ImageIO (MetaImage and NIfTI without compression):
//    each cell reads its own region, straight into the cell's buffer;
//  - streaming raw NRRD ourselves (ITK 5.2's NRRD reader cannot stream): the
//    header gives the data's offset, and each cell preads its rows;
//  - anything else (TIFF, PNG, compressed files): the whole image is read once
//    into a shared buffer, cells are copied out of it, and the buffer is
//    dropped once every cell has been served (a later miss reads it again).
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/cell_grid.hpp"
#include "cellflow/cache/error.hpp"
#include "file_identity.hpp"
#include "image_file_check.hpp"
#include "itkImageFileReader.h"  // registers the IO factories (ITK_IO_FACTORY_REGISTER_MANAGER)
#include "itkImageIOBase.h"
#include "itkImageIOFactory.h"
#include "ops.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes {
namespace {

constexpr const char* kFormats = "TIFF, NRRD, MetaImage (.mha/.mhd), NIfTI, PNG, ...";

std::string trim(std::string s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), space));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), space).base(), s.end());
  return s;
}

std::string itk_message(const itk::ExceptionObject& e) { return trim(e.GetDescription()); }

std::optional<DType> dtype_of_component(itk::IOComponentEnum c) {
  using C = itk::IOComponentEnum;
  switch (c) {
    case C::UCHAR:
      return DType::kU8;
    case C::CHAR:
      return DType::kI8;
    case C::USHORT:
      return DType::kU16;
    case C::SHORT:
      return DType::kI16;
    case C::UINT:
      return DType::kU32;
    case C::INT:
      return DType::kI32;
    case C::ULONG:
      return sizeof(unsigned long) == 8 ? DType::kU64 : DType::kU32;
    case C::LONG:
      return sizeof(long) == 8 ? DType::kI64 : DType::kI32;
    case C::ULONGLONG:
      return DType::kU64;
    case C::LONGLONG:
      return DType::kI64;
    case C::FLOAT:
      return DType::kF32;
    case C::DOUBLE:
      return DType::kF64;
    default:
      return std::nullopt;
  }
}

/// The region of a cellflow box in ITK's axis order (reversed).
itk::ImageIORegion to_io_region(const Box& box) {
  const int n = box.rank();
  itk::ImageIORegion region(static_cast<unsigned>(n));
  for (int i = 0; i < n; ++i) {
    region.SetIndex(static_cast<unsigned>(i), box.begin()[n - 1 - i]);
    region.SetSize(static_cast<unsigned>(i),
                   static_cast<itk::SizeValueType>(box.shape()[n - 1 - i]));
  }
  return region;
}

Box from_io_region(const itk::ImageIORegion& region) {
  const int n = static_cast<int>(region.GetImageDimension());
  Dims begin(n);
  Dims end(n);
  for (int i = 0; i < n; ++i) {
    begin[n - 1 - i] = region.GetIndex(static_cast<unsigned>(i));
    end[n - 1 - i] =
        begin[n - 1 - i] + static_cast<int64_t>(region.GetSize(static_cast<unsigned>(i)));
  }
  return Box(begin, end);
}

/// The header lines of a text header (NRRD, MetaImage .mhd): up to the first
/// blank line or `max_bytes`. `end` receives the offset just past the blank line.
std::vector<std::string> header_lines(const fs::path& file, size_t max_bytes, size_t* end) {
  std::ifstream in(file, std::ios::binary);
  std::vector<std::string> lines;
  std::string line;
  size_t pos = 0;
  while (pos < max_bytes && std::getline(in, line)) {
    pos += line.size() + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) break;
    lines.push_back(line);
  }
  if (end != nullptr) *end = pos;
  return lines;
}

bool has_extension(const fs::path& file, std::initializer_list<const char*> exts) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::any_of(exts.begin(), exts.end(), [&](const char* e) { return ext == e; });
}

/// Where the samples of a raw-encoded NRRD lie.
struct RawLayout {
  fs::path data_file;
  uint64_t offset = 0;
  bool big_endian = false;
};

/// Reads a NRRD header; returns the layout when the data is raw, in one file,
/// of exactly `shape` elements of `dtype` (nullopt otherwise: ITK reads it whole).
/// Throws IoError naming the data file when it is shorter than the header says.
std::optional<RawLayout> nrrd_raw_layout(const fs::path& file, const Shape& shape, DType dtype) {
  if (!has_extension(file, {".nrrd", ".nhdr"})) return std::nullopt;
  size_t header_end = 0;
  const std::vector<std::string> lines = header_lines(file, 1 << 20, &header_end);
  if (lines.empty() || !lines[0].starts_with("NRRD")) return std::nullopt;
  std::string encoding;
  std::string endian;
  std::string data_file;
  std::string sizes;
  int64_t byte_skip = 0;
  int64_t line_skip = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty() || l[0] == '#') continue;
    const size_t colon = l.find(": ");
    if (colon == std::string::npos || l.find(":=") < colon) continue;  // key/value pairs
    const std::string field = l.substr(0, colon);
    const std::string value = trim(l.substr(colon + 2));
    if (field == "encoding") encoding = value;
    if (field == "endian") endian = value;
    if (field == "data file" || field == "datafile") data_file = value;
    if (field == "sizes") sizes = value;
    try {
      if (field == "byte skip" || field == "byteskip") byte_skip = std::stoll(value);
      if (field == "line skip" || field == "lineskip") line_skip = std::stoll(value);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (encoding != "raw" || line_skip != 0 || byte_skip < -1) return std::nullopt;
  // The sizes must be the image's, fastest axis first.
  std::vector<int64_t> n;
  for (size_t p = 0; p < sizes.size();) {
    const size_t q = std::min(sizes.find(' ', p), sizes.size());
    if (q > p) n.push_back(std::stoll(sizes.substr(p, q - p)));
    p = q + 1;
  }
  int64_t product = 1;
  for (int64_t v : n) product *= v;
  if (product != shape.product()) return std::nullopt;

  RawLayout layout;
  layout.big_endian = endian == "big" && dtype_size(dtype) > 1;
  if (endian != "big" && endian != "little" && dtype_size(dtype) > 1) return std::nullopt;
  if (data_file.empty()) {
    layout.data_file = file;
    layout.offset = header_end;
  } else {
    // A single detached file (not "LIST" or a numbered pattern).
    if (data_file.find(' ') != std::string::npos || data_file == "LIST") return std::nullopt;
    layout.data_file =
        fs::path(data_file).is_absolute() ? fs::path(data_file) : file.parent_path() / data_file;
    layout.offset = 0;
  }
  std::error_code ec;
  const uint64_t file_size = fs::file_size(layout.data_file, ec);
  if (ec) return std::nullopt;
  const uint64_t data_bytes = static_cast<uint64_t>(product) * dtype_size(dtype);
  if (byte_skip == -1) {
    layout.offset = file_size < data_bytes ? 0 : file_size - data_bytes;
  } else {
    layout.offset += static_cast<uint64_t>(byte_skip);
  }
  if (layout.offset + data_bytes > file_size) {
    throw IoError(fmt::format(
        "file {}: truncated: the raw data of {} ({}) needs {} bytes, the file has {} (an "
        "incomplete copy or download?)",
        layout.data_file.string(), shape.str(), dtype_name(dtype), layout.offset + data_bytes,
        file_size));
  }
  return layout;
}

/// Files besides `file` that hold its data (detached NRRD / MetaImage data),
/// so that their changes reach the hash.
std::vector<fs::path> detached_data_files(const fs::path& file) {
  std::vector<fs::path> out;
  const auto add = [&](const std::string& name) {
    if (name.empty() || name == "LOCAL" || name.starts_with("LIST") ||
        name.find('%') != std::string::npos || name.find(' ') != std::string::npos) {
      return;
    }
    out.push_back(fs::path(name).is_absolute() ? fs::path(name) : file.parent_path() / name);
  };
  if (has_extension(file, {".nhdr", ".nrrd"})) {
    for (const std::string& l : header_lines(file, 1 << 20, nullptr)) {
      if (l.starts_with("data file: ")) add(trim(l.substr(11)));
      if (l.starts_with("datafile: ")) add(trim(l.substr(10)));
    }
  } else if (has_extension(file, {".mhd"})) {
    for (const std::string& l : header_lines(file, 1 << 20, nullptr)) {
      const size_t eq = l.find('=');
      if (eq != std::string::npos && trim(l.substr(0, eq)) == "ElementDataFile")
        add(trim(l.substr(eq + 1)));
    }
  }
  return out;
}

/// Reads `bytes` at `offset` of `fd` into `dst`; throws IoError naming `file`.
void pread_all(int fd, std::byte* dst, size_t bytes, uint64_t offset, const fs::path& file) {
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, dst, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw IoError(fmt::format("file {}: read failed at byte {}: {}", file.string(), offset,
                                n == 0 ? "unexpected end of file" : std::strerror(errno)));
    }
    dst += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

enum class Mode { kItkStream, kRawStream, kWhole };

class ReadImageKernel final : public NodeKernel {
 public:
  ReadImageKernel(ImageInfo info, fs::path file, itk::ImageIOBase::Pointer prototype, Mode mode,
                  RawLayout raw, std::string identity, std::vector<fs::path> files)
      : NodeKernel(std::move(info)),
        file_(std::move(file)),
        prototype_(std::move(prototype)),
        mode_(mode),
        raw_(std::move(raw)),
        identity_(std::move(identity)) {
    for (fs::path& f : files) {
      std::string stat = detail::stat_identity(f);
      watched_.emplace_back(std::move(f), std::move(stat));
    }
  }

  std::string identity() const override { return identity_; }

  void compute(const Box& out_box, std::span<const InputRegion> /*inputs*/,
               CellBuffer& out) const override {
    with_context("file " + file_.string(), [&] {
      if (mode_ != Mode::kWhole) check_unchanged();
      switch (mode_) {
        case Mode::kItkStream:
          read_itk(out_box, out);
          return;
        case Mode::kRawStream:
          read_raw(out_box, out);
          return;
        case Mode::kWhole:
          copy_from_whole(out_box, out);
          return;
      }
    });
  }

 private:
  /// The node serves its cells from the file (they are not copied into the
  /// cache): a file that changed since the graph was built is an error, not a
  /// mix of old and new cells. (A file read whole is checked when it is read;
  /// its cells then come from that one read.)
  void check_unchanged() const {
    for (const auto& [f, recorded] : watched_) {
      std::string now;
      try {
        now = detail::stat_identity(f);
      } catch (const std::exception&) {
        now = "gone";
      }
      if (now != recorded)
        throw IoError(fmt::format(
            "{} changed since the graph was built (size or mtime); build the graph again to "
            "read the new data",
            f.string()));
    }
  }

  /// An ImageIO with its header read, from the pool (ImageIO objects are not
  /// thread-safe; each is used by one cell at a time and then returned).
  itk::ImageIOBase::Pointer acquire_io() const {
    {
      std::lock_guard lock(pool_mu_);
      if (!pool_.empty()) {
        itk::ImageIOBase::Pointer io = pool_.back();
        pool_.pop_back();
        return io;
      }
    }
    itk::ImageIOBase::Pointer io;
    {
      std::lock_guard lock(pool_mu_);  // object factories are process-wide
      io = dynamic_cast<itk::ImageIOBase*>(prototype_->CreateAnother().GetPointer());
    }
    if (!io) throw NodeError("ITK cannot create another reader for the file");
    io->SetFileName(file_.string());
    io->SetUseStreamedReading(true);
    try {
      io->ReadImageInformation();
    } catch (const itk::ExceptionObject& e) {
      throw IoError(fmt::format("cannot read the header: {}", itk_message(e)));
    }
    return io;
  }

  void release_io(itk::ImageIOBase::Pointer io) const {
    std::lock_guard lock(pool_mu_);
    pool_.push_back(std::move(io));
  }

  void read_itk(const Box& out_box, CellBuffer& out) const {
    itk::ImageIOBase::Pointer io = acquire_io();
    const itk::ImageIORegion requested = to_io_region(out_box);
    const itk::ImageIORegion streamable =
        io->GenerateStreamableReadRegionFromRequestedRegion(requested);
    if (streamable.GetImageDimension() != requested.GetImageDimension()) {
      throw NodeError(fmt::format("ITK offers a {}-D region for a {}-D request",
                                  streamable.GetImageDimension(), requested.GetImageDimension()));
    }
    io->SetIORegion(streamable);
    try {
      if (streamable == requested) {
        io->Read(out.mutable_data());
      } else {
        const Box read_box = from_io_region(streamable);
        CellBuffer tmp = CellBuffer::allocate(output().dtype, read_box.shape());
        io->Read(tmp.mutable_data());
        copy_region(tmp.data(), read_box, out.mutable_data(), out_box, out_box,
                    dtype_size(output().dtype));
      }
    } catch (const itk::ExceptionObject& e) {
      throw IoError(fmt::format("cannot read region {}: {}", out_box.str(), itk_message(e)));
    }
    release_io(std::move(io));
  }

  void read_raw(const Box& out_box, CellBuffer& out) const {
    const int fd = ::open(raw_.data_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      throw IoError(fmt::format("file {}: cannot open it: {}", raw_.data_file.string(),
                                std::strerror(errno)));
    }
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    const size_t size = dtype_size(output().dtype);
    const Shape& image = output().shape;
    const int r = out_box.rank();
    const auto row_len = static_cast<size_t>(out_box.shape()[r - 1]);
    // Consecutive rows that follow each other in the file are read at once.
    uint64_t run_offset = 0;
    size_t run_bytes = 0;
    std::byte* run_dst = out.mutable_data();
    std::byte* dst = out.mutable_data();
    detail::for_each_row(out_box.shape(), [&](const Dims& row, int64_t /*offset*/) {
      Dims g(r);
      for (int d = 0; d < r; ++d) g[d] = out_box.begin()[d] + row[d];
      const uint64_t offset =
          raw_.offset + static_cast<uint64_t>(detail::linear_offset(image, g)) * size;
      if (run_bytes > 0 && offset == run_offset + run_bytes) {
        run_bytes += row_len * size;
      } else {
        if (run_bytes > 0) pread_all(fd, run_dst, run_bytes, run_offset, raw_.data_file);
        run_offset = offset;
        run_bytes = row_len * size;
        run_dst = dst;
      }
      dst += row_len * size;
    });
    if (run_bytes > 0) pread_all(fd, run_dst, run_bytes, run_offset, raw_.data_file);
    if (raw_.big_endian != (std::endian::native == std::endian::big) && size > 1) {
      std::byte* p = out.mutable_data();
      for (int64_t i = 0; i < out.num_elements(); ++i, p += size) std::reverse(p, p + size);
    }
  }

  void copy_from_whole(const Box& out_box, CellBuffer& out) const {
    const CellGrid grid(output().shape, output().cell_shape);
    std::shared_ptr<const CellBuffer> whole;
    {
      // Single-flight by a plain mutex: the read does no TBB work, so waiting
      // here cannot deadlock the pool.
      std::lock_guard lock(whole_mu_);
      if (!whole_) {
        check_unchanged();
        whole_ = std::make_shared<const CellBuffer>(read_whole());
        served_.assign(static_cast<size_t>(grid.num_cells()), false);
        served_count_ = 0;
      }
      whole = whole_;
    }
    copy_region(whole->data(), grid.bounds(), out.mutable_data(), out_box, out_box,
                dtype_size(output().dtype));
    std::lock_guard lock(whole_mu_);
    if (whole_ != whole) return;
    const Box cells = grid.cells_touching(out_box);
    for_each_index(cells, [&](const CellIndex& c) {
      std::vector<bool>::reference slot = served_[static_cast<size_t>(grid.linear(c))];
      if (!slot) {
        slot = true;
        ++served_count_;
      }
    });
    if (served_count_ == grid.num_cells()) whole_.reset();  // every cell has its copy
  }

  CellBuffer read_whole() const {
    itk::ImageIOBase::Pointer io = acquire_io();
    const Box all = Box::from_shape(output().shape);
    CellBuffer buffer = CellBuffer::allocate(output().dtype, output().shape);
    io->SetIORegion(to_io_region(all));
    try {
      io->Read(buffer.mutable_data());
    } catch (const itk::ExceptionObject& e) {
      throw IoError(fmt::format("cannot read the image: {}", itk_message(e)));
    }
    release_io(std::move(io));
    return buffer;
  }

  fs::path file_;
  itk::ImageIOBase::Pointer prototype_;
  Mode mode_;
  RawLayout raw_;
  std::string identity_;
  std::vector<std::pair<fs::path, std::string>> watched_;  // file, its stat when bound

  mutable std::mutex pool_mu_;
  mutable std::vector<itk::ImageIOBase::Pointer> pool_;

  mutable std::mutex whole_mu_;
  mutable std::shared_ptr<const CellBuffer> whole_;
  mutable std::vector<bool> served_;
  mutable int64_t served_count_ = 0;
};

/// The physical space of the file `io` has read the header of: ITK's spacing
/// and origin in array order. Rotated axes are refused unless param
/// "direction" is "ignore" (a rotation dropped silently would misplace every
/// voxel in physical space). Units: none (ITK's formats do not record them).
Space file_space(itk::ImageIOBase& io, const fs::path& file, const Params& params) {
  const int rank = static_cast<int>(io.GetNumberOfDimensions());
  bool ignore_direction = false;
  if (params.has("direction")) {
    const std::string& d = params.get_string("direction");
    if (d != "refuse" && d != "ignore") {
      throw InvalidArgument(
          fmt::format("param \"direction\" must be \"refuse\" or \"ignore\" (got \"{}\")", d));
    }
    ignore_direction = d == "ignore";
  }
  Space space = Space::voxels(rank);
  for (int i = 0; i < rank; ++i) {
    const auto axis = static_cast<unsigned>(i);
    const int d = rank - 1 - i;  // ITK's axis i is cellflow's axis rank-1-i
    space.spacing[static_cast<size_t>(d)] = io.GetSpacing(axis);
    space.origin[static_cast<size_t>(d)] = io.GetOrigin(axis);
    if (!(io.GetSpacing(axis) > 0.0) || !std::isfinite(io.GetSpacing(axis))) {
      throw InvalidArgument(
          fmt::format("param \"path\": file {}: spacing {} on ITK axis {} (must be finite and > 0)",
                      file.string(), io.GetSpacing(axis), i));
    }
    if (!std::isfinite(io.GetOrigin(axis))) {
      throw InvalidArgument(fmt::format("param \"path\": file {}: origin {} on ITK axis {}",
                                        file.string(), io.GetOrigin(axis), i));
    }
    if (ignore_direction) continue;
    const std::vector<double> cosines = io.GetDirection(axis);
    for (size_t j = 0; j < cosines.size(); ++j) {
      const double expected = j == axis ? 1.0 : 0.0;
      if (std::abs(cosines[j] - expected) > 1e-6) {
        throw InvalidArgument(fmt::format(
            "param \"path\": file {}: its axes are rotated (direction of ITK axis {} is ({})); "
            "cellflow's grids are axis-aligned: resample the image first, or set param "
            "\"direction\" to \"ignore\" to read it on its own axes",
            file.string(), i, fmt::join(cosines, ", ")));
      }
    }
  }
  return space;
}

/// Default cells: about a million voxels, in cubes for 3-D and above.
Shape default_cell_shape(const Shape& shape) {
  const int r = shape.rank();
  const int64_t side = r == 1 ? (int64_t{1} << 20) : r == 2 ? 1024 : 64;
  Shape cells(r);
  for (int d = 0; d < r; ++d) cells[d] = std::min(shape[d], side);
  return cells;
}

class ReadImageOp final : public Op {
 public:
  std::string_view name() const override { return "read.image"; }
  // Its cells are served from the file, never copied into the cache.
  bool persist_by_default() const override { return false; }
  int version() const override { return 1; }
  std::string_view doc() const override {
    return "Reads a scalar image file with ITK (TIFF, NRRD, MetaImage .mha/.mhd, NIfTI, PNG, "
           "...): dtype = the file's pixel type, shape in array order (z, y, x: ITK's axes "
           "reversed); streams cells from uncompressed MetaImage, NIfTI and raw NRRD, reads "
           "other files once into a shared buffer.";
  }
  std::vector<ParamSpec> params() const override {
    return {
        {"path", ParamType::kString, Value(),
         "the image file (a relative path is taken from the graph file's folder, else from the "
         "current directory)",
         true},
        {"cell_shape", ParamType::kIntList, Value(),
         "cell shape, one entry per axis (default: 64 per axis for 3-D and above, 1024 for 2-D, "
         "clipped to the image)"},
        detail::hash_mode_param(),
        {"direction", ParamType::kString, Value(),
         "\"refuse\" (default when absent): a file whose axes are rotated (direction cosines "
         "not the identity) is an error, since cellflow's grids are axis-aligned; \"ignore\": "
         "read it on its own axes, keeping spacing and origin"},
    };
  }
  int min_inputs() const override { return 0; }

  std::unique_ptr<NodeKernel> bind(const Params& params,
                                   std::span<const ImageInfo> inputs) const override {
    detail::require_inputs(name(), inputs, 0);
    const fs::path file = params.get_path("path");
    const detail::HashMode mode = detail::parse_hash_mode(params);
    std::string identity = "image " + detail::stat_identity(file);  // checks that it exists
    {
      std::ifstream probe(file, std::ios::binary);
      if (!probe) {
        throw InvalidArgument(fmt::format("param \"path\": file {}: cannot open it: {}",
                                          file.string(), std::strerror(errno)));
      }
    }

    itk::ImageIOBase::Pointer io =
        itk::ImageIOFactory::CreateImageIO(file.c_str(), itk::IOFileModeEnum::ReadMode);
    if (!io) {
      throw InvalidArgument(
          fmt::format("param \"path\": file {}: no ITK reader recognizes this file (supported: {})",
                      file.string(), kFormats));
    }
    io->SetFileName(file.string());
    io->SetUseStreamedReading(true);
    try {
      io->ReadImageInformation();
    } catch (const itk::ExceptionObject& e) {
      throw InvalidArgument(fmt::format("param \"path\": file {}: cannot read its header: {}",
                                        file.string(), itk_message(e)));
    }
    if (io->GetNumberOfComponents() != 1) {
      throw InvalidArgument(fmt::format(
          "param \"path\": file {}: pixels of type {} with {} components are not supported (only "
          "scalar images: split the channels or convert to grey first)",
          file.string(), itk::ImageIOBase::GetPixelTypeAsString(io->GetPixelType()),
          io->GetNumberOfComponents()));
    }
    const std::optional<DType> dtype = dtype_of_component(io->GetComponentType());
    if (!dtype) {
      throw InvalidArgument(
          fmt::format("param \"path\": file {}: pixel type {} is not supported", file.string(),
                      itk::ImageIOBase::GetComponentTypeAsString(io->GetComponentType())));
    }
    const int rank = static_cast<int>(io->GetNumberOfDimensions());
    if (rank < 1 || rank > kMaxRank) {
      throw InvalidArgument(
          fmt::format("param \"path\": file {}: {} dimensions (1 to {} are supported)",
                      file.string(), rank, kMaxRank));
    }
    ImageInfo info;
    info.dtype = *dtype;
    info.shape = Shape(rank);
    for (int d = 0; d < rank; ++d) {
      info.shape[d] = static_cast<int64_t>(io->GetDimensions(static_cast<unsigned>(rank - 1 - d)));
      if (info.shape[d] < 1) {
        throw InvalidArgument(fmt::format("param \"path\": file {}: empty image", file.string()));
      }
    }
    info.space = file_space(*io, file, params);
    info.cell_shape = default_cell_shape(info.shape);
    if (params.has("cell_shape") && !params.get("cell_shape").is_null()) {
      const std::vector<int64_t> cs = params.get_ints("cell_shape");
      if (cs.size() != static_cast<size_t>(rank)) {
        throw InvalidArgument(fmt::format(
            "param \"cell_shape\" must have {} entries like the image's shape {} (got {})", rank,
            info.shape.str(), cs.size()));
      }
      for (size_t d = 0; d < cs.size(); ++d) {
        if (cs[d] <= 0) {
          throw InvalidArgument(fmt::format(
              "param \"cell_shape\" must be > 0 on every axis (got {} on axis {})", cs[d], d));
        }
        info.cell_shape[static_cast<int>(d)] = std::min(cs[d], info.shape[static_cast<int>(d)]);
      }
    }

    // A file shorter than its header says is refused before any cell is read.
    detail::check_image_file_whole(file, info.shape, info.dtype);
    const std::optional<RawLayout> nrrd_layout = nrrd_raw_layout(file, info.shape, info.dtype);

    // How cells are read: by ITK streaming if it can give one cell without the
    // whole image, else raw NRRD by hand, else the whole image once.
    Mode read_mode = Mode::kWhole;
    RawLayout raw;
    const CellGrid grid(info.shape, info.cell_shape);
    const Box first_cell = grid.cell_box(CellIndex(rank, 0));
    if (grid.num_cells() == 1) {
      read_mode = Mode::kWhole;
    } else if (io->CanStreamRead() &&
               !(from_io_region(io->GenerateStreamableReadRegionFromRequestedRegion(
                     to_io_region(first_cell))) == grid.bounds())) {
      read_mode = Mode::kItkStream;
    } else if (nrrd_layout) {
      read_mode = Mode::kRawStream;
      raw = *nrrd_layout;
    }

    const std::vector<fs::path> data_files = detached_data_files(file);
    if (mode == detail::HashMode::kContent) {
      detail::ContentHasher hasher;
      with_context("param \"path\"", [&] {
        hasher.add_file(file);
        for (const fs::path& f : data_files) hasher.add_file(f);
      });
      identity = "image content " + hasher.hex();
    } else {
      for (const fs::path& f : data_files) identity += "\ndata " + detail::stat_identity(f);
    }
    std::vector<fs::path> files = data_files;
    files.insert(files.begin(), file);
    return std::make_unique<ReadImageKernel>(std::move(info), file, io, read_mode, std::move(raw),
                                             std::move(identity), std::move(files));
  }
};

}  // namespace

std::shared_ptr<const Op> make_read_image_op() { return std::make_shared<ReadImageOp>(); }

}  // namespace cellflow::nodes
