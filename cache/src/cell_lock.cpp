#include "cellflow/cache/cell_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace cellflow {
namespace {

int set_lock(int fd, int64_t cell, short type, bool wait) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(cell);
  fl.l_len = 1;
  fl.l_pid = 0;  // required for OFD locks
  int rc;
  do {
    rc = ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

}  // namespace

CellLockFile::~CellLockFile() {
  if (fd_ >= 0) ::close(fd_);
}

int CellLockFile::fd() {
  std::lock_guard lock(mu_);
  if (fd_ < 0 && !unavailable_) {
    std::error_code ec;
    std::filesystem::create_directories(path_.parent_path(), ec);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    // A read-only cache cannot be locked, and nothing will be written to it.
    if (fd_ < 0 && (errno == EROFS || errno == EACCES || errno == EPERM)) unavailable_ = true;
  }
  return fd_;
}

std::unique_ptr<CellLockFile::Guard> CellLockFile::lock(int64_t cell) {
  const int f = fd();
  if (f < 0 || set_lock(f, cell, F_WRLCK, true) != 0) return nullptr;
  return std::make_unique<Guard>(f, cell);
}

std::unique_ptr<CellLockFile::Guard> CellLockFile::try_lock(int64_t cell, bool& busy) {
  busy = false;
  const int f = fd();
  if (f < 0) return nullptr;
  if (set_lock(f, cell, F_WRLCK, false) != 0) {
    busy = errno == EAGAIN || errno == EACCES;
    return nullptr;
  }
  return std::make_unique<Guard>(f, cell);
}

bool CellLockFile::held_elsewhere(int64_t cell) {
  const int f = fd();
  if (f < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(cell);
  fl.l_len = 1;
  fl.l_pid = 0;
  if (::fcntl(f, F_OFD_GETLK, &fl) != 0) return false;
  return fl.l_type != F_UNLCK;
}

CellLockFile::Guard::~Guard() { set_lock(fd_, cell_, F_UNLCK, false); }

}  // namespace cellflow
