#include "cellflow/cache/node_use_lock.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "cellflow/cache/error.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// One lock over the whole file (byte 0 is enough: every party locks the same byte).
int set_lock(int fd, short type, bool wait) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  fl.l_pid = 0;  // required for OFD locks
  int rc;
  do {
    rc = ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

// True if `fd` is still the file at `path` (its folder was not renamed away).
bool still_at(int fd, const fs::path& path) {
  struct stat a {};
  struct stat b {};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
         a.st_dev == b.st_dev;
}

constexpr const char* kTrashTag = ".trash.";

}  // namespace

NodeUseLock NodeUseLock::acquire(const fs::path& root, const std::string& hash) {
  const fs::path dir = root / hash;
  const fs::path file = dir / kNodeUseFile;
  // A maintenance process may rename the folder away between our open and our
  // lock; then we start over on a fresh folder. Bounded, in case of a pathological peer.
  for (int attempt = 0; attempt < 100000; ++attempt) {
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
      // No folder (never created, or just renamed away): create it and start over.
      std::error_code ec;
      fs::create_directories(dir, ec);
      fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0 && errno == ENOENT) continue;
    }
    // A read-only cache: a read lock needs only read access.
    if (fd < 0) fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) continue;
    if (fd < 0) return {};
    if (set_lock(fd, F_RDLCK, /*wait=*/true) != 0) {
      ::close(fd);
      return {};  // no locks on this file system
    }
    if (still_at(fd, file)) {
      ::futimens(fd, nullptr);  // the node's last use; fails harmlessly when read-only
      return NodeUseLock(fd);
    }
    ::close(fd);
  }
  return {};
}

NodeUseLock::~NodeUseLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the description releases the OFD lock
}

NodeUseLock::NodeUseLock(NodeUseLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

NodeUseLock& NodeUseLock::operator=(NodeUseLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

bool node_in_use(const fs::path& root, const std::string& hash) {
  const fs::path file = root / hash / kNodeUseFile;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  fl.l_pid = 0;
  const bool busy = ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  ::close(fd);
  return busy;
}

bool is_trash_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(kTrashTag) != std::string::npos;
}

bool remove_node_folder(const fs::path& root, const std::string& hash) {
  const fs::path dir = root / hash;
  const fs::path file = dir / kNodeUseFile;
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;  // gone already
    throw IoError(fmt::format("file {}: cannot open it to lock the node: {}", file.string(),
                              std::strerror(errno)));
  }
  if (set_lock(fd, F_WRLCK, /*wait=*/false) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EAGAIN || err == EACCES) return false;  // in use
    throw IoError(
        fmt::format("file {}: cannot lock the node: {}", file.string(), std::strerror(err)));
  }
  if (!still_at(fd, file)) {  // another remover won the race
    ::close(fd);
    return false;
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const fs::path trash =
      root / fmt::format(".{}{}{}.{:x}", hash, kTrashTag, ::getpid(), rng() & 0xffffffu);
  if (::rename(dir.c_str(), trash.c_str()) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == ENOENT) return false;
    throw IoError(fmt::format("folder {}: cannot move it away for removal: {}", dir.string(),
                              std::strerror(err)));
  }
  // Waiters on the lock wake up, see the folder gone and start over on a new one.
  ::close(fd);
  std::error_code ec;
  fs::remove_all(trash, ec);  // a leftover is removed by the next gc / verify --repair
  return true;
}

}  // namespace cellflow
