#include "file_identity.hpp"

#include <fmt/format.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "cellflow/cache/error.hpp"

namespace fs = std::filesystem;

namespace cellflow::nodes::detail {

ParamSpec hash_mode_param() {
  return {"hash", ParamType::kString, Value("stat"),
          "what identifies the data in the node hash: \"stat\" (absolute path, size and "
          "modification time) or \"content\" (XXH3-128 of the bytes, read in full at graph "
          "build)"};
}

HashMode parse_hash_mode(const Params& params) {
  const std::string& mode = params.get_string("hash");
  if (mode == "stat") return HashMode::kStat;
  if (mode == "content") return HashMode::kContent;
  throw InvalidArgument(
      fmt::format("param \"hash\" must be \"stat\" or \"content\" (got \"{}\")", mode));
}

std::string stat_identity(const fs::path& file) {
  std::error_code ec;
  const fs::file_status st = fs::status(file, ec);
  if (ec || !fs::exists(st)) {
    throw InvalidArgument(fmt::format("param \"path\": file {} does not exist", file.string()));
  }
  if (!fs::is_regular_file(st)) {
    throw InvalidArgument(fmt::format("param \"path\": {} is not a file", file.string()));
  }
  const auto size = fs::file_size(file, ec);
  const auto mtime = fs::last_write_time(file, ec);
  if (ec) {
    throw IoError(
        fmt::format("file {}: cannot read its size and time: {}", file.string(), ec.message()));
  }
  return fmt::format("{} size {} mtime {}", file.string(), size,
                     static_cast<int64_t>(mtime.time_since_epoch().count()));
}

struct ContentHasher::State {
  XXH3_state_t* xxh = XXH3_createState();
  ~State() { XXH3_freeState(xxh); }
};

ContentHasher::ContentHasher() : state_(std::make_unique<State>()) {
  if (state_->xxh == nullptr) throw std::bad_alloc();
  XXH3_128bits_reset(state_->xxh);
}

ContentHasher::~ContentHasher() = default;

void ContentHasher::add(std::string_view bytes) {
  XXH3_128bits_update(state_->xxh, bytes.data(), bytes.size());
}

void ContentHasher::add_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw IoError(fmt::format("file {}: cannot open it: {}", file.string(), std::strerror(errno)));
  }
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const std::streamsize n = in.gcount();
    if (n > 0) XXH3_128bits_update(state_->xxh, block.data(), static_cast<size_t>(n));
  }
  if (in.bad()) throw IoError(fmt::format("file {}: read error", file.string()));
}

std::string ContentHasher::hex() const {
  const XXH128_hash_t h = XXH3_128bits_digest(state_->xxh);
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

}  // namespace cellflow::nodes::detail
