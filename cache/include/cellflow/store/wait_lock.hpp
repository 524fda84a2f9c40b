// wait_lock: Env::lock for callers that must not wait forever without saying
// so. It waits at most `timeout` (nullopt: forever) and then throws
// LockTimeout naming the lock file and what the lock guards, instead of
// returning nullptr. Thread-safe and process-safe as Env::lock is.
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

/// "shared" or "exclusive".
const char* lock_mode_name(LockMode mode);

}  // namespace cellflow
