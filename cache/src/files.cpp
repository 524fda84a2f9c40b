#include "cellflow/cache/files.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

std::string temp_suffix() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format(".tmp.{}.{}.{:x}", ::getpid(), counter.fetch_add(1), rng() & 0xffffff);
}

IoError io_error(const fs::path& path, const std::string& action, int err) {
  return IoError(fmt::format("file {}: cannot {}: {}", path.string(), action, std::strerror(err)));
}

}  // namespace

void write_file_atomic(const fs::path& path, std::string_view data) {
  std::string tmp_name = ".";
  tmp_name += path.filename().string();
  tmp_name += temp_suffix();
  const fs::path tmp = path.parent_path() / tmp_name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      throw IoError(
          fmt::format("file {}: cannot create its folder: {}", path.string(), ec.message()));
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }
  if (fd < 0) throw io_error(path, "create", errno);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw io_error(path, "write", err);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw io_error(path, "write", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw io_error(path, "commit (rename)", err);
  }
}

int read_to_end(int fd, std::string& out, size_t expected) {
  out.resize(expected);
  size_t got = 0;
  while (true) {
    ssize_t n = 0;
    if (got < out.size()) {
      n = ::read(fd, out.data() + got, out.size() - got);
    } else {
      // At the expected end: confirm it without growing the string.
      char more[1 << 12];
      n = ::read(fd, more, sizeof more);
      if (n > 0) out.append(more, static_cast<size_t>(n));
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return 0;
}

std::optional<std::string> read_file(const fs::path& path) {
  std::string out;
  if (!read_file_reusing(path, out)) return std::nullopt;
  return out;
}

bool read_file_reusing(const fs::path& path, std::string& out) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw io_error(path, "open", errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw io_error(path, "stat", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(
        fmt::format("{}: not a regular file (a FIFO, device, socket or folder): "
                    "inputs must be regular files",
                    path.string()));
  }
  // O_NONBLOCK stays: it has no effect on a regular file (open(2)), which is
  // all that is read here, and clearing it cost two calls per file.
  if (const int err = read_to_end(fd, out, static_cast<size_t>(std::max<off_t>(st.st_size, 0)))) {
    ::close(fd);
    throw io_error(path, "read", err);
  }
  ::close(fd);
  return true;
}

}  // namespace cellflow
