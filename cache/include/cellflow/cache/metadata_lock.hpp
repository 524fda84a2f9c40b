// MetadataLock: a reader-writer lock on a folder's metadata (a node's .zattrs,
// a cache index), shared by threads, processes and machines on a file system
// with flock(): flock(LOCK_SH / LOCK_EX) on "<folder>/.cellflow-meta-lock",
// which the kernel releases when a process dies (no stale locks). Within a
// process the lock is re-entrant per thread (a thread that holds it may take it
// again, nested), and threads exclude each other like processes do.
// update_json_atomic() is the read-modify-write of a JSON file under the
// exclusive lock, committed by atomic rename: no update is lost, and readers
// (locked or not) never see a half-written file.
// Thread-safe and process-safe.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>

#include "cellflow/cache/value.hpp"

namespace cellflow {

class MetadataLock {
 public:
  enum class Mode { kShared, kExclusive };

  /// The lock file guarding `folder`.
  static std::filesystem::path lock_path(const std::filesystem::path& folder);

  /// Blocks until this thread holds the lock of `folder` in `mode`. Creates the
  /// folder for an exclusive lock. Where the lock file cannot be created (a
  /// read-only cache) the lock only excludes the threads of this process.
  /// REQUIRES: a thread that holds the shared lock does not ask for the
  /// exclusive one (an upgrade could deadlock; it throws InvalidArgument).
  /// REQUIRES: destroyed on the thread that constructed it.
  MetadataLock(const std::filesystem::path& folder, Mode mode);
  ~MetadataLock();
  MetadataLock(const MetadataLock&) = delete;
  MetadataLock& operator=(const MetadataLock&) = delete;

  Mode mode() const { return mode_; }

 private:
  std::filesystem::path key_;
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
