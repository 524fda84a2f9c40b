#include "cellflow/cache/artifacts.hpp"

#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

thread_local const ArtifactWriter* tls_current = nullptr;

void check_name(std::string_view name) {
  const bool bad = name.empty() || name.front() == '.' ||
                   name.find_first_of(std::string_view("/\\\0", 3)) != std::string_view::npos;
  if (bad)
    throw InvalidArgument(fmt::format(
        "artifact name \"{}\" must be a plain file name (no folders, not starting with '.')",
        name));
}

std::string with_extension(std::string_view name, std::string_view ext) {
  std::string n(name);
  if (fs::path(n).extension().empty()) n += ext;
  return n;
}

void put_u32(std::string& out, uint32_t v) {
  out += static_cast<char>((v >> 24) & 0xff);
  out += static_cast<char>((v >> 16) & 0xff);
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}

void put_chunk(std::string& out, const char type[4], std::string_view data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out.size();
  out.append(type, 4);
  out.append(data);
  const auto* p = reinterpret_cast<const Bytef*>(out.data() + start);
  put_u32(out, static_cast<uint32_t>(crc32(0L, p, static_cast<uInt>(out.size() - start))));
}

}  // namespace

std::string encode_png(const CellBuffer& image) {
  if (!image || image.shape().rank() != 2)
    throw InvalidArgument(
        fmt::format("PNG: the image must be 2-D (got rank {})", image ? image.shape().rank() : 0));
  if (image.dtype() != DType::kU8 && image.dtype() != DType::kU16)
    throw InvalidArgument(
        fmt::format("PNG: the image must be u8 or u16 (got {}); rescale or cast it first",
                    dtype_name(image.dtype())));
  const int64_t height = image.shape()[0];
  const int64_t width = image.shape()[1];
  if (height < 1 || width < 1 || height > 0x7fffffff || width > 0x7fffffff)
    throw InvalidArgument(
        fmt::format("PNG: cannot encode an image of shape {}", image.shape().str()));
  const bool wide = image.dtype() == DType::kU16;
  const size_t row_bytes = static_cast<size_t>(width) * (wide ? 2 : 1);

  // Scanlines: a filter byte (0 = none) then the samples, big-endian for 16 bits.
  std::string raw;
  raw.resize((row_bytes + 1) * static_cast<size_t>(height));
  char* dst = raw.data();
  for (int64_t y = 0; y < height; ++y) {
    *dst++ = 0;
    if (wide) {
      const uint16_t* src = image.as<uint16_t>() + y * width;
      for (int64_t x = 0; x < width; ++x) {
        *dst++ = static_cast<char>(src[x] >> 8);
        *dst++ = static_cast<char>(src[x] & 0xff);
      }
    } else {
      std::memcpy(dst, image.as<uint8_t>() + y * width, row_bytes);
      dst += row_bytes;
    }
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::string packed(packed_size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_size,
                reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                Z_DEFAULT_COMPRESSION) != Z_OK)
    throw IoError("PNG: zlib compression failed");
  packed.resize(packed_size);

  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr += static_cast<char>(wide ? 16 : 8);  // bit depth
  ihdr += static_cast<char>(0);              // grayscale
  ihdr += std::string(3, '\0');              // deflate, adaptive filtering, no interlace

  std::string out("\x89PNG\r\n\x1a\n", 8);
  put_chunk(out, "IHDR", ihdr);
  put_chunk(out, "IDAT", packed);
  put_chunk(out, "IEND", {});
  return out;
}

ArtifactWriter::ArtifactWriter(std::shared_ptr<Env> env, std::string folder)
    : env_(std::move(env)), folder_(std::move(folder)) {
  dir_ = folder_.empty() ? env_->root() : env_->root() / folder_;
}

ArtifactWriter::ArtifactWriter(const fs::path& dir) {
  fs::path d = dir.lexically_normal();
  if (!d.has_filename() && d.has_parent_path()) d = d.parent_path();
  env_ = posix_env(d.parent_path().empty() ? fs::path(".") : d.parent_path());
  folder_ = d.filename().string();
  dir_ = dir;
}

std::string ArtifactWriter::file(std::string_view name) const { return join_path(folder_, name); }

void ArtifactWriter::write_text(std::string_view name, std::string_view text) const {
  check_name(name);
  env_->write_atomic(file(name), text, Durability::kProcess);
}

void ArtifactWriter::write_table(std::string_view name, const Table& table) const {
  check_name(name);
  env_->write_atomic(file(with_extension(name, ".csv")), table.to_csv(), Durability::kProcess);
}

void ArtifactWriter::write_png(std::string_view name, const CellBuffer& image) const {
  check_name(name);
  const std::string bytes =
      with_context(fmt::format("artifact \"{}\"", name), [&] { return encode_png(image); });
  env_->write_atomic(file(with_extension(name, ".png")), bytes, Durability::kProcess);
}

void ArtifactWriter::write_image(std::string_view name, const CellBuffer& image) const {
  check_name(name);
  const int rank = image.shape().rank();
  if (rank < 2 || rank > kMaxRank)
    throw InvalidArgument(fmt::format(
        "artifact \"{}\": an OME-Zarr image has 2 to {} axes (got {})", name, kMaxRank, rank));
  std::string group(name);
  if (!group.ends_with(".ome.zarr")) group += ".ome.zarr";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string temp =
      file(fmt::format(".{}.tmp.{}.{:x}", group, ::getpid(), rng() & 0xffffffu));
  with_context(fmt::format("artifact \"{}\"", group), [&] {
    Shape chunks = image.shape();
    for (int d = 0; d < rank; ++d) chunks[d] = std::min<int64_t>(chunks[d], 64);
    const CellGrid grid(image.shape(), chunks);
    try {
      env_->write_atomic(join_path(temp, layout::kZgroup), layout::kZgroupText,
                         Durability::kProcess);
      env_->write_atomic(join_path(temp, layout::kZattrs),
                         node_zattrs_json(group, rank, "{\"artifact\": true}"),
                         Durability::kProcess);
      // Bound to no cell identity: an artifact is read by other tools, not served as cells.
      auto array =
          ZarrArray::create(env_, join_path(temp, layout::kArray), "", image.dtype(), grid);
      const Box whole = Box::from_shape(image.shape());
      const size_t esize = dtype_size(image.dtype());
      for (int64_t c = 0; c < grid.num_cells(); ++c) {
        const CellIndex cell = grid.cell_at(c);
        const Box box = grid.cell_box(cell);
        CellBuffer part = CellBuffer::allocate(image.dtype(), box.shape());
        copy_region(image.data(), whole, part.mutable_data(), box, box, esize);
        array->write(cell, part);
      }
      env_->remove(file(group));
      env_->rename(temp, file(group));
    } catch (...) {
      try {
        env_->remove(temp);
      } catch (const Error&) {
      }
      throw;
    }
  });
}

void ArtifactWriter::append_log(std::string_view name, std::string_view line) const {
  check_name(name);
  const std::string path = file(name);
  // Held for one read and one write; a dead holder's lock is released by the kernel.
  const auto lock = wait_lock(*env_, file(layout::kLogLock), 0, LockMode::kExclusive, std::nullopt,
                              fmt::format("the logs of {}", dir_.string()));
  std::string data = env_->read(path).value_or(std::string());
  data += line;
  data += '\n';
  env_->write_atomic(path, data, Durability::kProcess);
}

std::vector<ArtifactInfo> ArtifactWriter::list() const {
  std::vector<ArtifactInfo> out;
  std::vector<DirEntry> entries;
  try {
    entries = env_->list(folder_);
  } catch (const CorruptionError&) {
    return out;  // not a folder: damage that verify reports
  }
  for (const DirEntry& e : entries) {
    if (e.name.empty() || e.name.front() == '.') continue;  // temporary files, the log lock
    uint64_t bytes = 0;
    if (e.kind == EntryKind::kFile) bytes = env_->stat(file(e.name)).size;
    out.push_back(ArtifactInfo{e.name, bytes});
  }
  std::sort(out.begin(), out.end(),
            [](const ArtifactInfo& a, const ArtifactInfo& b) { return a.name < b.name; });
  return out;
}

const ArtifactWriter* current_artifacts() { return tls_current; }

void detail::log_to_current_artifacts(std::string_view level, std::string_view message) noexcept {
  const ArtifactWriter* writer = tls_current;
  if (writer == nullptr) return;
  try {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    writer->append_log(ArtifactWriter::kWarningsLog,
                       fmt::format("{} {}: {}", stamp, level, message));
  } catch (...) {
    // Logging must not fail the computation that logs.
  }
}

ScopedArtifacts::ScopedArtifacts(const ArtifactWriter* writer) : previous_(tls_current) {
  tls_current = writer;
}

ScopedArtifacts::~ScopedArtifacts() { tls_current = previous_; }

}  // namespace cellflow
