#include "cellflow/cache/node_use_lock.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <random>

#include "cellflow/cache/error.hpp"
#include "cellflow/store/layout.hpp"
#include "cellflow/store/wait_lock.hpp"

namespace cellflow {
namespace fs = std::filesystem;
using std::chrono::milliseconds;
namespace {

// A maintenance process renames a node folder away while it holds the
// lease's byte exclusively, so a user waiting for that byte may be granted it
// on the file that now lies in the trash. Env::lock opens the path afresh on
// every call, so whether a lock is on the file at the path now is found out
// through a second lock: an exclusive lock of a byte nobody else uses (`mark`,
// random) taken before the lease, then asked for through the path after it.
// If the path still leads to the marked file, it led there all along (a moved
// folder never comes back), so the lease, taken in between, is on it too; and
// from then on nobody can move the folder without the lease's byte.
int64_t random_mark() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // Far above byte 0 (the lease), below the largest offset a lock may have.
  return int64_t{1} << 32 | static_cast<int64_t>(rng() >> 3);
}

bool still_marked(Env& env, const std::string& file, int64_t mark) {
  return env.locked_elsewhere(file, mark, LockMode::kShared);
}

// A lock that holds nothing (a read-only cache, a file system without
// locks) never shows its mark: after this many such tries in a row, acquire()
// gives up and returns a lease that holds nothing.
constexpr int kUnmarkedTries = 8;
// A folder moved away under a user costs one attempt; bounded in case of a
// pathological peer that removes the node without pause.
constexpr int kAttempts = 100000;

}  // namespace

NodeUseLock::NodeUseLock(std::shared_ptr<Env> env, std::unique_ptr<EnvLock> lease)
    : env_(std::move(env)), lease_(std::move(lease)) {}

NodeUseLock NodeUseLock::acquire(std::shared_ptr<Env> env, const std::string& hash,
                                 std::optional<milliseconds> timeout) {
  const std::string file = layout::use_file(hash);
  const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(milliseconds(0));
  const auto remaining = [&]() -> std::optional<milliseconds> {
    if (!timeout) return std::nullopt;
    // Rounded up: a wait never ends before the caller's deadline.
    return std::max(milliseconds(0),
                    std::chrono::ceil<milliseconds>(deadline - std::chrono::steady_clock::now()));
  };
  const std::string what = fmt::format("the in-use lease of node {}", hash);
  int unmarked = 0;
  for (int attempt = 0; attempt < kAttempts && unmarked < kUnmarkedTries; ++attempt) {
    const int64_t mark = random_mark();
    std::unique_ptr<EnvLock> mine = env->lock(file, mark, LockMode::kExclusive, milliseconds(0));
    if (!mine) continue;  // another holder drew the same byte
    if (!still_marked(*env, file, mark)) {
      // No working locks, or the folder moved away this instant: only a file
      // still in place that shows no mark counts against locks working (a
      // remover in a tight loop must not make a lease give up).
      if (env->stat(file).kind == EntryKind::kFile) ++unmarked;
      continue;
    }
    unmarked = 0;
    std::unique_ptr<EnvLock> lease = wait_lock(*env, file, 0, LockMode::kShared, remaining(), what);
    if (!still_marked(*env, file, mark)) continue;  // moved away meanwhile: start over
    mine.reset();
    env->touch(file);  // the node's last use (a read-only cache keeps its old time)
    return NodeUseLock(std::move(env), std::move(lease));
  }
  return NodeUseLock(std::move(env), nullptr);  // no working locks here
}

NodeUseLock NodeUseLock::acquire(const fs::path& root, const std::string& hash,
                                 std::optional<milliseconds> timeout) {
  return acquire(posix_env(root), hash, timeout);
}

NodeUseLock::~NodeUseLock() { lease_.reset(); }

NodeUseLock::NodeUseLock(NodeUseLock&& other) noexcept
    : env_(std::move(other.env_)), lease_(std::move(other.lease_)) {}

NodeUseLock& NodeUseLock::operator=(NodeUseLock&& other) noexcept {
  if (this != &other) {
    lease_.reset();  // before the Env it came from
    env_ = std::move(other.env_);
    lease_ = std::move(other.lease_);
  }
  return *this;
}

bool node_in_use(Env& env, const std::string& hash) {
  return env.locked_elsewhere(layout::use_file(hash), 0, LockMode::kExclusive);
}

bool node_in_use(const fs::path& root, const std::string& hash) {
  return node_in_use(*posix_env(root), hash);
}

bool is_trash_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(layout::kTrashTag) != std::string::npos;
}

bool remove_node_folder(Env& env, const std::string& hash) {
  if (env.stat(layout::node(hash)).kind != EntryKind::kFolder) return false;
  const std::string file = layout::use_file(hash);
  const int64_t mark = random_mark();
  std::unique_ptr<EnvLock> mine = env.lock(file, mark, LockMode::kExclusive, milliseconds(0));
  if (!mine) return false;
  std::unique_ptr<EnvLock> lease = env.lock(file, 0, LockMode::kExclusive, milliseconds(0));
  if (!lease) return false;  // in use
  // Another remover moved it meanwhile (or there are no locks here: read-only).
  if (!still_marked(env, file, mark)) return false;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string trash =
      layout::node_trash(hash, fmt::format("{}.{:x}", ::getpid(), rng() & 0xffffffu));
  env.rename(layout::node(hash), trash);
  // Waiters on the lease wake up, find their file moved and start over on a new folder.
  lease.reset();
  mine.reset();
  try {
    env.remove(trash);
  } catch (const Error&) {
    // A leftover is removed by the next gc / verify --repair.
  }
  return true;
}

bool remove_node_folder(const fs::path& root, const std::string& hash) {
  return remove_node_folder(*posix_env(root), hash);
}

}  // namespace cellflow
