// MetadataLock: a reader-writer lock on a folder's metadata (a node's .zattrs,
// a cache index), shared by threads and processes: Env::lock of byte 0 of
// "<folder>/.cellflow-meta-lock" (an OFD lock, which the kernel releases when
// a process dies: no stale locks). Each holder has its own open file
// description, so threads exclude each other like processes do. Within a
// thread the lock is re-entrant (a thread that holds it may take it again,
// nested). update_json_atomic() is the read-modify-write of a JSON file under
// the exclusive lock, committed by atomic rename: no update is lost, and
// readers (locked or not) never see a half-written file.
// Thread-safe and process-safe.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cellflow/cache/value.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class MetadataLock {
 public:
  enum class Mode { kShared, kExclusive };

  /// The lock file guarding `folder`.
  static std::filesystem::path lock_path(const std::filesystem::path& folder);

  /// Blocks until this thread holds the lock of folder `folder` of `env` in
  /// `mode`, at most `timeout` (nullopt: forever); throws LockTimeout naming
  /// the lock file when it runs out. Creates the folder. Where the lock file
  /// cannot be created (a read-only cache) the lock holds nothing (nothing can
  /// be written there either).
  /// REQUIRES: a thread that holds the shared lock does not ask for the
  /// exclusive one (an upgrade could deadlock; it throws InvalidArgument).
  /// REQUIRES: destroyed on the thread that constructed it.
  MetadataLock(std::shared_ptr<Env> env, std::string folder, Mode mode,
               std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// The same for the folder at a path (its own POSIX Env).
  MetadataLock(const std::filesystem::path& folder, Mode mode,
               std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  ~MetadataLock();
  MetadataLock(const MetadataLock&) = delete;
  MetadataLock& operator=(const MetadataLock&) = delete;

  Mode mode() const { return mode_; }

 private:
  void acquire(std::shared_ptr<Env> env, const std::string& folder,
               std::optional<std::chrono::milliseconds> timeout);
  std::string key_;
  Mode mode_;
};

/// Reads and parses the JSON file `path` under the shared lock of its folder;
/// nullopt if it does not exist. Throws GraphError on bad JSON, IoError.
std::optional<Value> read_json_locked(const std::filesystem::path& path);

/// Under the exclusive lock of the file's folder: reads `path` (an empty object
/// if absent), calls fn(value), and commits the result atomically (temp file
/// + rename). If fn throws, nothing is written. Returns the committed value.
Value update_json_atomic(const std::filesystem::path& path, const std::function<void(Value&)>& fn);

}  // namespace cellflow
