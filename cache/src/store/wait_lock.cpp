#include "cellflow/store/wait_lock.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "cellflow/cache/error.hpp"

namespace cellflow {

namespace {

using Clock = std::chrono::steady_clock;

// The latest time this thread's waits may end (ScopedWaitLimit).
thread_local Clock::time_point wait_deadline = Clock::time_point::max();

// `timeout`, shortened to this thread's deadline.
std::optional<std::chrono::milliseconds> bounded(std::optional<std::chrono::milliseconds> timeout) {
  if (wait_deadline == Clock::time_point::max()) return timeout;
  const auto left =
      std::max(std::chrono::milliseconds(0),
               std::chrono::ceil<std::chrono::milliseconds>(wait_deadline - Clock::now()));
  return timeout ? std::min(*timeout, left) : left;
}

}  // namespace

ScopedWaitLimit::ScopedWaitLimit(std::optional<std::chrono::milliseconds> limit)
    : previous_(wait_deadline) {
  if (limit) wait_deadline = std::min(wait_deadline, Clock::now() + *limit);
}

ScopedWaitLimit::~ScopedWaitLimit() { wait_deadline = previous_; }

std::optional<std::chrono::milliseconds> ScopedWaitLimit::from_seconds(double seconds) {
  if (!(seconds > 0)) return std::nullopt;
  return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>(seconds));
}

const char* lock_mode_name(LockMode mode) {
  return mode == LockMode::kShared ? "shared" : "exclusive";
}

std::unique_ptr<EnvLock> wait_lock(Env& env, std::string_view path, int64_t offset, LockMode mode,
                                   std::optional<std::chrono::milliseconds> timeout,
                                   std::string_view what) {
  timeout = bounded(timeout);
  std::unique_ptr<EnvLock> lock = env.lock(path, offset, mode, timeout);
  if (lock) return lock;
  throw LockTimeout(fmt::format(
      "file {}: waited {} ms for the {} lock of {} and gave up: another process or thread holds "
      "it (wait longer, or find and stop the holder)",
      env.describe(path), timeout ? timeout->count() : 0, lock_mode_name(mode), what));
}

}  // namespace cellflow
