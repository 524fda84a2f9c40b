#include "cellflow/store/wait_lock.hpp"

#include <fmt/format.h>

#include "cellflow/cache/error.hpp"

namespace cellflow {

const char* lock_mode_name(LockMode mode) {
  return mode == LockMode::kShared ? "shared" : "exclusive";
}

std::unique_ptr<EnvLock> wait_lock(Env& env, std::string_view path, int64_t offset, LockMode mode,
                                   std::optional<std::chrono::milliseconds> timeout,
                                   std::string_view what) {
  std::unique_ptr<EnvLock> lock = env.lock(path, offset, mode, timeout);
  if (lock) return lock;
  throw LockTimeout(fmt::format(
      "file {}: waited {} ms for the {} lock of {} and gave up: another process or thread holds "
      "it (wait longer, or find and stop the holder)",
      env.describe(path), timeout ? timeout->count() : 0, lock_mode_name(mode), what));
}

}  // namespace cellflow
