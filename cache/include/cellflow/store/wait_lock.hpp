// wait_lock: Env::lock for callers that must not wait forever without saying
// so. It waits at most `timeout` (nullopt: forever) and then throws
// LockTimeout naming the lock file and what the lock guards, instead of
// returning nullptr. A ScopedWaitLimit bounds every wait_lock of its thread
// (a run's --timeout: no lock held by another process makes it wait longer).
// Thread-safe and process-safe as Env::lock is.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "cellflow/store/env.hpp"

namespace cellflow {

/// Locks byte `offset` of lock file `path` in `mode`, waiting at most
/// `timeout`. `what` says what the lock guards ("the in-use lease of node
/// 3f2a…"), for the message. Throws LockTimeout when the time ran out,
/// IoError / CorruptionError as Env::lock does. Never returns nullptr.
std::unique_ptr<EnvLock> wait_lock(Env& env, std::string_view path, int64_t offset, LockMode mode,
                                   std::optional<std::chrono::milliseconds> timeout,
                                   std::string_view what);

/// While it lives, every wait_lock of this thread waits at most until `limit`
/// from now (or the deadline of an enclosing limit, whichever is first);
/// nullopt adds no bound. Restores the previous bound when destroyed.
/// REQUIRES: destroyed on the thread that constructed it.
class ScopedWaitLimit {
 public:
  explicit ScopedWaitLimit(std::optional<std::chrono::milliseconds> limit);
  /// The same from a run's timeout in seconds (<= 0: no bound).
  static std::optional<std::chrono::milliseconds> from_seconds(double seconds);
  ~ScopedWaitLimit();
  ScopedWaitLimit(const ScopedWaitLimit&) = delete;
  ScopedWaitLimit& operator=(const ScopedWaitLimit&) = delete;

 private:
  std::chrono::steady_clock::time_point previous_;
};

/// "shared" or "exclusive".
const char* lock_mode_name(LockMode mode);

}  // namespace cellflow
