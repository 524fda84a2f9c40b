#include "cellflow/cache/cache_tree.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;
namespace {

// The directories this process holds, by which thread, and the lock they
// share: a thread that opens a directory it already holds gets another handle
// on the same hold (re-entrant) instead of waiting for itself forever.
class Holders {
 public:
  static Holders& global() {
    static Holders instance;
    return instance;
  }
  /// The hold of this thread on `p`, shared one more time; null if none.
  std::shared_ptr<EnvLock> reenter(const fs::path& p) {
    std::lock_guard lock(mu_);
    auto it = held_.find(p.string());
    if (it == held_.end() || it->second.thread != std::this_thread::get_id()) return nullptr;
    auto hold = it->second.lock.lock();
    if (hold) ++it->second.handles;
    return hold;
  }
  void add(const fs::path& p, const std::shared_ptr<EnvLock>& hold) {
    std::lock_guard lock(mu_);
    held_[p.string()] = Hold{std::this_thread::get_id(), hold, 1};
  }
  void remove(const fs::path& p) {
    std::lock_guard lock(mu_);
    auto it = held_.find(p.string());
    if (it != held_.end() && --it->second.handles <= 0) held_.erase(it);
  }

 private:
  struct Hold {
    std::thread::id thread;
    std::weak_ptr<EnvLock> lock;
    int handles = 0;
  };
  std::mutex mu_;
  std::map<std::string, Hold> held_;
};

}  // namespace

CacheTree::CacheTree(fs::path path, std::optional<std::chrono::milliseconds> timeout)
    : CacheTree(
          [&] {
            path = path.lexically_normal();
            if (!path.has_filename() && path.has_parent_path()) path = path.parent_path();
            try {
              return posix_env(path);
            } catch (const IoError& e) {
              throw IoError(
                  fmt::format("cache tree {}: cannot create it: {}", path.string(), e.message()));
            }
          }(),
          "", false, timeout) {}

CacheTree::CacheTree(std::shared_ptr<Env> env, std::string folder,
                     std::optional<std::chrono::milliseconds> timeout)
    : CacheTree(std::move(env), std::move(folder), false, timeout) {}

CacheTree::CacheTree(std::shared_ptr<Env> env, std::string folder, bool read_only,
                     std::optional<std::chrono::milliseconds> timeout)
    : env_(std::move(env)), folder_(std::move(folder)), read_only_(read_only), timeout_(timeout) {
  path_ = folder_.empty() ? env_->root() : env_->root() / folder_;
  if (read_only_) return;
  if (!folder_.empty()) env_->make_folders(folder_);
  if (is_committed()) return;

  const fs::path abs = fs::absolute(path_).lexically_normal();
  // Re-entrant: this thread holds it open already — share that hold (the
  // directory is being filled: it is not cleaned again).
  if ((lock_ = Holders::global().reenter(abs))) return;
  lock_ = wait_lock(*env_, in_tree(kLockFile), 0, LockMode::kExclusive, timeout_,
                    fmt::format("cache tree {}", path_.string()));
  if (is_committed()) {  // committed by the holder we waited for
    lock_.reset();
    return;
  }
  Holders::global().add(abs, lock_);
  try {
    // Start clean: remove everything a crashed or abandoned run left, but the lock file.
    for (const DirEntry& e : env_->list(folder_))
      if (e.name != kLockFile) env_->remove(in_tree(e.name));
  } catch (const Error& e) {
    release();
    throw IoError(fmt::format("cache tree {}: cannot clean it: {}", path_.string(), e.what()));
  }
}

std::string CacheTree::in_tree(std::string_view name) const { return join_path(folder_, name); }

CacheTree::~CacheTree() { release(); }

CacheTree::CacheTree(CacheTree&& other) noexcept
    : env_(std::move(other.env_)),
      folder_(std::move(other.folder_)),
      path_(std::move(other.path_)),
      lock_(std::move(other.lock_)),
      read_only_(other.read_only_),
      timeout_(other.timeout_) {}

CacheTree& CacheTree::operator=(CacheTree&& other) noexcept {
  if (this != &other) {
    release();
    env_ = std::move(other.env_);
    folder_ = std::move(other.folder_);
    path_ = std::move(other.path_);
    lock_ = std::move(other.lock_);
    read_only_ = other.read_only_;
    timeout_ = other.timeout_;
  }
  return *this;
}

void CacheTree::release() {
  if (!lock_) return;
  Holders::global().remove(fs::absolute(path_).lexically_normal());
  lock_.reset();
}

CacheTree CacheTree::child(std::string_view name) const {
  if (name.empty() || name.front() == '.' || name.find('/') != std::string_view::npos)
    throw InvalidArgument(fmt::format(
        "cache tree {}: child name \"{}\" must be a plain name (no '/', not starting with '.')",
        path_.string(), name));
  return CacheTree(env_, in_tree(name), read_only_ || is_committed(), timeout_);
}

bool CacheTree::is_committed() const {
  return env_->stat(in_tree(kCommittedMarker)).kind == EntryKind::kFile;
}

bool CacheTree::commit() {
  if (is_committed()) {
    release();
    return false;
  }
  if (!lock_)
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
  env_->write_atomic(in_tree(kCommittedMarker), to_json(marker), Durability::kProcess);
  release();
  return true;
}

}  // namespace cellflow
