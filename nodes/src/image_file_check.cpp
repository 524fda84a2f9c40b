#include "image_file_check.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::detail {
namespace {

std::string lower_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

std::string trim(std::string s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), space));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), space).base(), s.end());
  return s;
}

uint64_t size_of(const fs::path& file) {
  std::error_code ec;
  const uint64_t size = fs::file_size(file, ec);
  if (ec) {
    throw IoError(fmt::format("file {}: cannot read its size: {}", file.string(), ec.message()));
  }
  return size;
}

[[noreturn]] void truncated(const fs::path& file, uint64_t need, uint64_t have,
                            const std::string& why) {
  throw IoError(fmt::format(
      "file {}: truncated: {} needs {} bytes, the file has {} (an incomplete copy or download?)",
      file.string(), why, need, have));
}

// --- MetaImage -----------------------------------------------------------

void check_metaimage(const fs::path& file, const Shape& shape, DType dtype) {
  std::ifstream in(file, std::ios::binary);
  std::string line;
  uint64_t pos = 0;
  std::optional<std::string> data_file;
  bool compressed = false;
  std::optional<uint64_t> compressed_size;
  int64_t header_size = 0;
  uint64_t channels = 1;
  // The header ends with ElementDataFile; binary data may follow at once.
  while (!data_file && pos < (1 << 20) && std::getline(in, line)) {
    pos += line.size() + 1;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    try {
      if (key == "CompressedData") compressed = value == "True" || value == "true";
      if (key == "CompressedDataSize") compressed_size = std::stoull(value);
      if (key == "HeaderSize") header_size = std::stoll(value);
      if (key == "ElementNumberOfChannels") channels = std::stoull(value);
    } catch (const std::exception&) {
      throw IoError(fmt::format("file {}: {} = \"{}\" is not a number", file.string(), key, value));
    }
    if (key == "ElementDataFile") data_file = value;
  }
  if (!data_file) return;  // ITK has read the header; nothing to check against
  // Lists and numbered patterns of slices: ITK reports the missing ones.
  if (data_file->starts_with("LIST") || data_file->find('%') != std::string::npos ||
      data_file->find(' ') != std::string::npos)
    return;
  const bool local = *data_file == "LOCAL";
  const fs::path data =
      local ? file
            : (fs::path(*data_file).is_absolute() ? fs::path(*data_file)
                                                  : file.parent_path() / *data_file);
  const uint64_t have = size_of(data);
  uint64_t need = 0;
  if (compressed) {
    if (!compressed_size) return;  // zlib reports a short stream
    need = *compressed_size;
  } else {
    need = static_cast<uint64_t>(shape.product()) * dtype_size(dtype) * channels;
  }
  uint64_t offset = local ? pos : 0;
  if (!local && header_size > 0) offset = static_cast<uint64_t>(header_size);
  if (offset + need > have) {
    truncated(data, offset + need, have,
              fmt::format("the {}image of {} ({})", compressed ? "compressed " : "", shape.str(),
                          dtype_name(dtype)));
  }
}

// --- TIFF ----------------------------------------------------------------

/// Reads little- or big-endian integers at absolute offsets of an in-memory
/// copy of the parts of the file we need.
class TiffReader {
 public:
  TiffReader(const fs::path& file, uint64_t size)
      : file_(file), size_(size), in_(file, std::ios::binary) {}

  bool big_endian = false;

  uint64_t read(uint64_t offset, int bytes, const char* what) {
    if (offset + static_cast<uint64_t>(bytes) > size_) {
      truncated(file_, offset + static_cast<uint64_t>(bytes), size_, what);
    }
    unsigned char b[8] = {};
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(reinterpret_cast<char*>(b), bytes);
    if (!in_) throw IoError(fmt::format("file {}: read failed at byte {}", file_.string(), offset));
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      const int k = big_endian ? i : bytes - 1 - i;
      v = (v << 8) | b[k];
    }
    return v;
  }

 private:
  fs::path file_;
  uint64_t size_;
  std::ifstream in_;
};

int tiff_type_size(uint64_t type) {
  switch (type) {
    case 3:  // SHORT
      return 2;
    case 4:   // LONG
    case 13:  // IFD
      return 4;
    case 16:  // LONG8
    case 18:  // IFD8
      return 8;
    default:
      return 0;
  }
}

void check_tiff(const fs::path& file) {
  const uint64_t size = size_of(file);
  TiffReader r(file, size);
  if (size < 8) truncated(file, 8, size, "the TIFF header");
  const uint64_t order = r.read(0, 2, "the TIFF header");
  if (order == 0x4d4d) {
    r.big_endian = true;
  } else if (order != 0x4949) {
    return;  // not a TIFF after all: ITK decided
  }
  const uint64_t version = r.read(2, 2, "the TIFF header");
  const bool big = version == 43;
  if (!big && version != 42) return;
  const int word = big ? 8 : 4;
  uint64_t ifd = big ? r.read(8, 8, "the BigTIFF header") : r.read(4, 4, "the TIFF header");
  std::set<uint64_t> seen;
  int page = 0;
  while (ifd != 0) {
    if (!seen.insert(ifd).second) {
      throw IoError(fmt::format("file {}: damaged: its pages form a loop", file.string()));
    }
    const std::string where = fmt::format("page {}", page);
    const uint64_t entries = r.read(ifd, big ? 8 : 2, where.c_str());
    const uint64_t entry_size = big ? 20 : 12;
    const uint64_t first = ifd + (big ? 8 : 2);
    // Offsets and byte counts of strips or tiles.
    std::vector<uint64_t> offsets;
    std::vector<uint64_t> counts;
    for (uint64_t e = 0; e < entries; ++e) {
      const uint64_t at = first + e * entry_size;
      const uint64_t tag = r.read(at, 2, where.c_str());
      if (tag != 273 && tag != 279 && tag != 324 && tag != 325) continue;
      const uint64_t type = r.read(at + 2, 2, where.c_str());
      const uint64_t count = r.read(at + 4, word, where.c_str());
      const int tsize = tiff_type_size(type);
      if (tsize == 0 || count > (uint64_t{1} << 32)) continue;
      const uint64_t value_at = at + 4 + static_cast<uint64_t>(word);
      const uint64_t values = count * static_cast<uint64_t>(tsize) <= static_cast<uint64_t>(word)
                                  ? value_at
                                  : r.read(value_at, word, where.c_str());
      std::vector<uint64_t>& out = (tag == 273 || tag == 324) ? offsets : counts;
      out.resize(count);
      for (uint64_t i = 0; i < count; ++i)
        out[i] = r.read(values + i * static_cast<uint64_t>(tsize), tsize, where.c_str());
    }
    for (size_t i = 0; i < std::min(offsets.size(), counts.size()); ++i) {
      if (offsets[i] + counts[i] > size) {
        truncated(file, offsets[i] + counts[i], size,
                  fmt::format("page {} (strip or tile {})", page, i));
      }
    }
    ifd = r.read(first + entries * entry_size, word, where.c_str());
    ++page;
  }
}

}  // namespace

void check_image_file_whole(const fs::path& file, const Shape& shape, DType dtype) {
  const std::string ext = lower_extension(file);
  if (ext == ".mha" || ext == ".mhd") check_metaimage(file, shape, dtype);
  if (ext == ".tif" || ext == ".tiff") check_tiff(file);
}

}  // namespace cellflow::nodes::detail
