// Cross-process cell locks: one lock file per array, one byte per cell, locked
// with Linux open-file-description (OFD) record locks. The kernel releases a
// dead process's locks, so a crash never leaves a stale lock. Within a process
// the single-flight of CachedCellImage already serializes a cell; these locks
// make processes (and machines on a file system with POSIX locks) compute each
// cell once. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>

namespace cellflow {

class CellLockFile {
 public:
  explicit CellLockFile(std::filesystem::path path) : path_(std::move(path)) {}
  ~CellLockFile();
  CellLockFile(const CellLockFile&) = delete;
  CellLockFile& operator=(const CellLockFile&) = delete;

  /// An exclusive lock on one cell, released when destroyed.
  class Guard {
   public:
    Guard(int fd, int64_t cell) : fd_(fd), cell_(cell) {}
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    int fd_;
    int64_t cell_;
  };

  /// Blocks until this process holds the lock of `cell` (a linear index).
  /// Returns nullptr when locking is unavailable (read-only cache, a file
  /// system without locks): callers then proceed unlocked.
  std::unique_ptr<Guard> lock(int64_t cell);
  /// True if another process (another open file description) holds `cell`.
  bool held_elsewhere(int64_t cell);
  /// Like lock(), but returns nullptr at once when another process holds it;
  /// `busy` tells the two nullptr cases apart.
  std::unique_ptr<Guard> try_lock(int64_t cell, bool& busy);

 private:
  int fd();
  std::filesystem::path path_;
  std::mutex mu_;
  int fd_ = -1;
  bool unavailable_ = false;
};

}  // namespace cellflow
