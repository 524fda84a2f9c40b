#include "cellflow/cache/metadata_lock.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/files.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

constexpr const char* kLockFile = ".cellflow-meta-lock";

// The process-wide state of one folder's lock. flock() locks belong to an open
// file description, so the threads of a process, which share one descriptor
// here, would not exclude each other through it: `rw` does that, and the file
// lock is held while any thread of the process holds `rw`.
struct FolderLock {
  std::shared_mutex rw;
  std::mutex mu;  // guards the fields below
  int fd = -1;    // open while users > 0 (and the file could be opened)
  int users = 0;  // threads holding rw: readers, or one writer
};

std::shared_ptr<FolderLock> folder_lock(const std::string& key) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<FolderLock>> locks;
  std::lock_guard lock(mu);
  auto& l = locks[key];
  if (!l) l = std::make_shared<FolderLock>();
  return l;
}

// What this thread holds, for re-entrancy.
struct Held {
  MetadataLock::Mode mode;
  int depth = 0;
  std::shared_ptr<FolderLock> lock;
};
thread_local std::unordered_map<std::string, Held> t_held;

int open_lock_file(const fs::path& folder, bool create_folder) {
  const fs::path file = folder / kLockFile;
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT && create_folder) {
    std::error_code ec;
    fs::create_directories(folder, ec);
    fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  }
  // A read-only cache (or a reader of a folder that does not exist yet) has
  // nothing to commit: the lock then only excludes this process's threads.
  return fd;
}

void flock_or_throw(int fd, int op, const fs::path& folder) {
  if (fd < 0) return;
  int rc;
  do {
    rc = ::flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && op != LOCK_UN)
    throw IoError(fmt::format("file {}: cannot lock: {}", (folder / kLockFile).string(),
                              std::strerror(errno)));
}

}  // namespace

fs::path MetadataLock::lock_path(const fs::path& folder) { return folder / kLockFile; }

MetadataLock::MetadataLock(const fs::path& folder, Mode mode) : mode_(mode) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(fs::absolute(folder), ec);
  if (ec) canonical = fs::absolute(folder).lexically_normal();
  key_ = canonical;
  const std::string key = key_.string();
  if (auto it = t_held.find(key); it != t_held.end() && it->second.depth > 0) {
    if (it->second.mode == Mode::kShared && mode == Mode::kExclusive)
      throw InvalidArgument(fmt::format(
          "folder {}: this thread holds the shared metadata lock and asks for the exclusive one "
          "(release it first)",
          key));
    mode_ = it->second.mode;
    ++it->second.depth;
    return;
  }
  std::shared_ptr<FolderLock> l = folder_lock(key);
  if (mode == Mode::kExclusive) {
    l->rw.lock();
    try {
      std::lock_guard lock(l->mu);
      l->fd = open_lock_file(key_, true);
      flock_or_throw(l->fd, LOCK_EX, key_);
      l->users = 1;
    } catch (...) {
      if (l->fd >= 0) ::close(l->fd);
      l->fd = -1;
      l->rw.unlock();
      throw;
    }
  } else {
    l->rw.lock_shared();
    try {
      std::lock_guard lock(l->mu);
      if (l->users == 0) {
        l->fd = open_lock_file(key_, false);
        flock_or_throw(l->fd, LOCK_SH, key_);
      }
      ++l->users;
    } catch (...) {
      if (l->users == 0 && l->fd >= 0) {
        ::close(l->fd);
        l->fd = -1;
      }
      l->rw.unlock_shared();
      throw;
    }
  }
  t_held[key] = Held{mode, 1, std::move(l)};
}

MetadataLock::~MetadataLock() {
  const std::string key = key_.string();
  auto it = t_held.find(key);
  if (it == t_held.end()) return;  // REQUIRES violated: nothing this thread can release
  if (--it->second.depth > 0) return;
  std::shared_ptr<FolderLock> l = std::move(it->second.lock);
  const Mode held = it->second.mode;
  t_held.erase(it);
  {
    std::lock_guard lock(l->mu);
    if (--l->users == 0 && l->fd >= 0) {
      flock_or_throw(l->fd, LOCK_UN, key_);
      ::close(l->fd);  // closing releases the flock too; unlocking first is explicit
      l->fd = -1;
    }
  }
  if (held == Mode::kExclusive)
    l->rw.unlock();
  else
    l->rw.unlock_shared();
}

std::optional<Value> read_json_locked(const fs::path& path) {
  const MetadataLock lock(path.parent_path(), MetadataLock::Mode::kShared);
  auto text = read_file(path);
  if (!text) return std::nullopt;
  return parse_json(*text, path.string());
}

Value update_json_atomic(const fs::path& path, const std::function<void(Value&)>& fn) {
  const MetadataLock lock(path.parent_path(), MetadataLock::Mode::kExclusive);
  Value v = Value::object();
  if (auto text = read_file(path)) v = parse_json(*text, path.string());
  fn(v);
  write_file_atomic(path, to_json(v));
  return v;
}

}  // namespace cellflow
