#include "cellflow/cache/cache_tree.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"
#include "cellflow/cache/value.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// The directories this process holds, and by which thread: a thread that
// opens a directory it already holds would wait for itself forever.
class Holders {
 public:
  static Holders& global() {
    static Holders instance;
    return instance;
  }
  void check_not_held_by_me(const fs::path& p) {
    std::lock_guard lock(mu_);
    auto it = held_.find(p.string());
    if (it != held_.end() && it->second == std::this_thread::get_id())
      throw InvalidArgument(fmt::format(
          "cache tree {}: this thread already holds it open (commit or close that handle first)",
          p.string()));
  }
  void add(const fs::path& p) {
    std::lock_guard lock(mu_);
    held_[p.string()] = std::this_thread::get_id();
  }
  void remove(const fs::path& p) {
    std::lock_guard lock(mu_);
    held_.erase(p.string());
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::thread::id> held_;
};

bool has_marker(const fs::path& dir) {
  return ::access((dir / CacheTree::kCommittedMarker).c_str(), F_OK) == 0;
}

// Removes everything in `dir` but its lock file.
void clean(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename() != CacheTree::kLockFile) doomed.push_back(it->path());
  }
  if (ec)
    throw IoError(fmt::format("cache tree {}: cannot list it: {}", dir.string(), ec.message()));
  for (const fs::path& p : doomed) {
    fs::remove_all(p, ec);
    if (ec)
      throw IoError(fmt::format("cache tree {}: cannot remove {}: {}", dir.string(), p.string(),
                                ec.message()));
  }
}

}  // namespace

CacheTree::CacheTree(fs::path path) : CacheTree(std::move(path), false) {}

CacheTree::CacheTree(fs::path path, bool read_only)
    : path_(std::move(path)), read_only_(read_only) {
  path_ = path_.lexically_normal();
  if (!path_.has_filename() && path_.has_parent_path()) path_ = path_.parent_path();
  if (read_only_) return;
  std::error_code ec;
  fs::create_directories(path_, ec);
  if (ec)
    throw IoError(fmt::format("cache tree {}: cannot create it: {}", path_.string(), ec.message()));
  if (has_marker(path_)) return;

  const fs::path abs = fs::absolute(path_);
  Holders::global().check_not_held_by_me(abs);
  const fs::path lock_path = path_ / kLockFile;
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw IoError(fmt::format("cache tree {}: cannot open {}: {}", path_.string(),
                              lock_path.string(), std::strerror(errno)));
  int rc;
  do {
    rc = ::flock(lock_fd_, LOCK_EX);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw IoError(
        fmt::format("cache tree {}: cannot lock it: {}", path_.string(), std::strerror(err)));
  }
  if (has_marker(path_)) {  // committed by the holder we waited for
    release();
    return;
  }
  Holders::global().add(abs);
  try {
    clean(path_);
  } catch (...) {
    release();
    throw;
  }
}

CacheTree::~CacheTree() { release(); }

CacheTree::CacheTree(CacheTree&& other) noexcept
    : path_(std::move(other.path_)),
      lock_fd_(std::exchange(other.lock_fd_, -1)),
      read_only_(other.read_only_) {}

CacheTree& CacheTree::operator=(CacheTree&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
    read_only_ = other.read_only_;
  }
  return *this;
}

void CacheTree::release() {
  if (lock_fd_ < 0) return;
  Holders::global().remove(fs::absolute(path_));
  ::close(lock_fd_);  // releases the flock
  lock_fd_ = -1;
}

CacheTree CacheTree::child(std::string_view name) const {
  if (name.empty() || name.front() == '.' || name.find('/') != std::string_view::npos)
    throw InvalidArgument(fmt::format(
        "cache tree {}: child name \"{}\" must be a plain name (no '/', not starting with '.')",
        path_.string(), name));
  return CacheTree(path_ / std::string(name), read_only_ || is_committed());
}

bool CacheTree::is_committed() const { return has_marker(path_); }

bool CacheTree::commit() {
  if (is_committed()) {
    release();
    return false;
  }
  if (lock_fd_ < 0)
    throw InvalidArgument(fmt::format(
        "cache tree {}: cannot commit it: it lies inside a committed tree (opened read-only)",
        path_.string()));
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  Value marker = Value::object();
  marker.set("committed", std::string(stamp));
  marker.set("pid", static_cast<int64_t>(::getpid()));
  write_file_atomic(path_ / kCommittedMarker, to_json(marker));
  release();
  return true;
}

}  // namespace cellflow
