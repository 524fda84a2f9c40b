// MemoKeyLock: the lock of one Memo key, byte 0 of "memo/<key>.lock"
// (layout::memo_lock) through Env::lock. Memo holds it exclusively while it
// computes and stores an entry and shared while it loads one; maintenance
// (`cellflow cache gc`, `verify --repair`) takes it exclusively without
// waiting and removes an entry only while it holds it. The kernel releases a
// dead process's lock. The lock file is never removed, so it stays the same
// file for as long as the cache exists.
// Thread-safe: each object is independent.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cellflow/store/env.hpp"

namespace cellflow {

/// The key's lock taken exclusively without waiting, held until destroyed.
class MemoKeyLock {
 public:
  enum class State { kHeld, kBusy, kUnavailable };
  /// Without `create`, a missing lock file is left missing (kUnavailable, no
  /// error): Memo creates it before it locks, so nobody holds it. Other
  /// failures leave kUnavailable with error() saying why.
  MemoKeyLock(Env& env, const std::string& key, bool create);
  /// The same for the Memo folder `memo_root` (<cache>/memo).
  MemoKeyLock(const std::filesystem::path& memo_root, const std::string& key, bool create);
  ~MemoKeyLock();
  MemoKeyLock(const MemoKeyLock&) = delete;
  MemoKeyLock& operator=(const MemoKeyLock&) = delete;

  State state() const { return state_; }
  const std::string& error() const { return error_; }

 private:
  void take(Env& env, const std::string& key, bool create);
  std::shared_ptr<Env> env_;  // outlives lock_ (null when the Env is the caller's)
  std::unique_ptr<EnvLock> lock_;
  State state_ = State::kUnavailable;
  std::string error_;
};

enum class MemoRemoval { kRemoved, kInUse, kAbsent };

/// Removes entry `key` unless a Memo call holds its lock: under the lock,
/// renames the folder into memo/.tmp (atomic: a reader sees the whole entry or
/// none), then deletes it there. Throws IoError if it cannot be locked or moved.
MemoRemoval remove_memo_entry(Env& env, const std::string& key);
MemoRemoval remove_memo_entry(const std::filesystem::path& memo_root, const std::string& key);

/// True if a Memo call holds entry `key`'s lock now (a snapshot).
bool memo_entry_in_use(Env& env, const std::string& key);
bool memo_entry_in_use(const std::filesystem::path& memo_root, const std::string& key);

}  // namespace cellflow
