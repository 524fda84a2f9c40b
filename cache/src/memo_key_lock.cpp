#include "cellflow/cache/memo_key_lock.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <random>

#include "cellflow/cache/error.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace fs = std::filesystem;

MemoKeyLock::MemoKeyLock(Env& env, const std::string& key, bool create) { take(env, key, create); }

MemoKeyLock::MemoKeyLock(const fs::path& memo_root, const std::string& key, bool create) {
  try {
    env_ = posix_env(memo_root.parent_path());
  } catch (const Error& e) {
    error_ = e.what();
    return;
  }
  take(*env_, key, create);
}

void MemoKeyLock::take(Env& env, const std::string& key, bool create) {
  const std::string file = layout::memo_lock(key);
  try {
    if (!create && env.stat(file).kind == EntryKind::kMissing) return;
    lock_ = env.lock(file, 0, LockMode::kExclusive, std::chrono::milliseconds(0));
    state_ = lock_ ? State::kHeld : State::kBusy;
  } catch (const Error& e) {
    error_ = fmt::format("memo entry {}: cannot lock it: {}", key, e.what());
  }
}

MemoKeyLock::~MemoKeyLock() { lock_.reset(); }

MemoRemoval remove_memo_entry(Env& env, const std::string& key) {
  const std::string entry = layout::memo_entry(key);
  const MemoKeyLock lock(env, key, /*create=*/true);
  if (lock.state() == MemoKeyLock::State::kBusy) return MemoRemoval::kInUse;
  if (env.stat(entry).kind != EntryKind::kFolder) return MemoRemoval::kAbsent;
  if (lock.state() != MemoKeyLock::State::kHeld) throw IoError(lock.error());
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string trash = join_path(
      layout::memo_temp(),
      fmt::format("{}{}{}.{:x}", key, layout::kMemoRemovedTag, ::getpid(), rng() & 0xffffffu));
  env.rename(entry, trash);
  try {
    env.remove(trash);
  } catch (const Error&) {
    // A leftover is removed by the next gc / verify --repair.
  }
  return MemoRemoval::kRemoved;
}

MemoRemoval remove_memo_entry(const fs::path& memo_root, const std::string& key) {
  return remove_memo_entry(*posix_env(memo_root.parent_path()), key);
}

bool memo_entry_in_use(Env& env, const std::string& key) {
  return env.locked_elsewhere(layout::memo_lock(key), 0, LockMode::kExclusive);
}

bool memo_entry_in_use(const fs::path& memo_root, const std::string& key) {
  return memo_entry_in_use(*posix_env(memo_root.parent_path()), key);
}

}  // namespace cellflow
