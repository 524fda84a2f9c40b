// Env: the storage environment under the cache directory (in the spirit of
// leveldb's Env and TensorStore's kvstore). Every path is relative to the
// cache's root, '/'-separated, without "." or ".." components. Env is the only
// code that touches the file system of a cache.
//
// The POSIX implementation (posix_env()) resolves every path beneath the root's
// descriptor without following any symbolic link, and opens nothing but regular
// files and folders: a symlink, FIFO, socket or device where the layout expects
// a file or folder is reported as damage (CorruptionError), never read,
// written through or waited on. The in-memory implementation (MemoryEnv,
// memory_env.hpp) lets tests inject a failure or a crash at every write step.
//
// Thread-safe and process-safe: every write commits a whole file by rename.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellflow {

/// What is found at a path, never following a symbolic link.
enum class EntryKind { kMissing, kFile, kFolder, kSymlink, kOther /* FIFO, socket, device */ };

/// "file", "folder", "symbolic link", "FIFO, socket or device", "nothing".
const char* entry_kind_name(EntryKind kind);

struct EntryInfo {
  EntryKind kind = EntryKind::kMissing;
  uint64_t size = 0;       // bytes of a file
  uint64_t allocated = 0;  // bytes allocated on disk
  std::filesystem::file_time_type mtime{};
};

struct DirEntry {
  std::string name;
  EntryKind kind = EntryKind::kMissing;
};

/// When a write is durable. kProcess: a committed file survives the death of
/// the process (the kernel holds it); kPowerCut: it is fsync'ed, and so is the
/// folder entry of its rename, before the write returns.
enum class Durability { kProcess, kPowerCut };

enum class LockMode { kShared, kExclusive };

/// A held lock; released when destroyed (and by the kernel when the process dies).
class EnvLock {
 public:
  virtual ~EnvLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  /// The root folder (for messages; Env itself never resolves it again).
  virtual const std::filesystem::path& root() const = 0;
  /// `path` as a user reads it in messages ("<root>/<path>").
  std::string describe(std::string_view path) const;

  /// What is at `path` (nothing, a file, a folder, a link, something else).
  /// Never follows a link, in the last component or before it; an entry that
  /// sits under a link or a file reads as kMissing.
  virtual EntryInfo stat(std::string_view path) = 0;
  /// The whole file, or nullopt when nothing is there. Throws CorruptionError
  /// naming the path if something other than a regular file is there (or on
  /// the way to it), IoError on other failures.
  virtual std::optional<std::string> read(std::string_view path) = 0;
  /// The last `bytes` bytes of the file (all of it when it is shorter), or
  /// nullopt when nothing is there; errors as read(). The base reads the
  /// whole file; the POSIX Env reads only the tail.
  virtual std::optional<std::string> read_tail(std::string_view path, size_t bytes);
  /// Writes `data` to a temporary name beside `path` and renames it into
  /// place, creating missing folders. Throws CorruptionError when a link or
  /// something other than a folder is in the way, IoError on failure (and
  /// then nothing has changed at `path`).
  virtual void write_atomic(std::string_view path, std::string_view data,
                            Durability durability) = 0;
  /// Like write_atomic, but commits only if nothing is at `path` yet (link()
  /// of the temporary file). Returns false when something was there.
  virtual bool write_new(std::string_view path, std::string_view data, Durability durability) = 0;
  /// Creates `path` and its missing parents as folders.
  virtual void make_folders(std::string_view path) = 0;
  /// Renames `from` to `to` (both beneath the root), replacing a file at `to`.
  virtual void rename(std::string_view from, std::string_view to) = 0;
  /// The entries of folder `path` (not "." / ".."), unsorted; empty when the
  /// folder is missing. Throws CorruptionError when `path` is not a folder.
  virtual std::vector<DirEntry> list(std::string_view path) = 0;
  /// Removes the entry at `path` whatever its kind (a link itself, never its
  /// target; a folder with everything inside it). Returns false if absent.
  virtual bool remove(std::string_view path) = 0;
  /// Sets the mtime of the file at `path` to now (no-op when absent).
  virtual void touch(std::string_view path) = 0;
  /// Flushes the folder's entries (renames into it) to stable storage.
  virtual void sync_folder(std::string_view path) = 0;

  /// Locks byte `offset` of the lock file `path` (created if needed) in `mode`.
  /// Waits at most `timeout` (nullopt: forever; zero: try once). Returns
  /// nullptr when it timed out. Each lock is its own open file description,
  /// so threads of one process exclude each other as processes do; the kernel
  /// releases a dead process's locks. On a read-only cache returns a lock
  /// that holds nothing (nothing can be written there either).
  virtual std::unique_ptr<EnvLock> lock(std::string_view path, int64_t offset, LockMode mode,
                                        std::optional<std::chrono::milliseconds> timeout) = 0;
  /// True if a lock other than this process's `mine` conflicts with `mode` on
  /// byte `offset` of `path` now (a snapshot). False when the file is absent.
  virtual bool locked_elsewhere(std::string_view path, int64_t offset, LockMode mode) = 0;
};

/// The POSIX environment of the folder `root` (created if missing). Throws
/// IoError if it cannot be created or opened.
std::shared_ptr<Env> posix_env(const std::filesystem::path& root);

/// Joins relative path components with '/'.
std::string join_path(std::string_view a, std::string_view b);

}  // namespace cellflow
