// CacheTree: a directory tree in which code outside a graph keeps the
// intermediate results of each step (the cvpl_tools pattern), with
// init/commit semantics:
//   CacheTree root(path);
//   if (!root.is_committed()) {
//     CacheTree step = root.child("step1");
//     if (!step.is_committed()) { ...write into step.path()...; step.commit(); }
//     root.commit();
//   }
// Opening a committed directory leaves it alone. Opening an uncommitted one
// waits until no other handle (thread or process) holds it, then starts it
// clean (removes what a crashed or abandoned run left) and holds it, through
// an flock of "<dir>/.cellflow-tree.lock", until commit() or destruction; the
// kernel releases it if the process dies. commit() writes the marker
// "<dir>/.cellflow-committed" by atomic rename. So when processes race on one
// tree, the first to open a directory fills and commits it, and the others
// find it committed. Thread-safe: one handle per thread (handles are movable,
// not copyable).
#pragma once

#include <filesystem>
#include <string_view>

#include "cellflow/cache/artifacts.hpp"

namespace cellflow {

class CacheTree {
 public:
  static constexpr const char* kCommittedMarker = ".cellflow-committed";
  static constexpr const char* kLockFile = ".cellflow-tree.lock";

  /// Opens the tree rooted at `path` (created if needed), as described above.
  /// Throws IoError if it cannot be created, InvalidArgument if this thread
  /// already holds it (opening it again would wait forever).
  explicit CacheTree(std::filesystem::path path);
  ~CacheTree();
  CacheTree(CacheTree&& other) noexcept;
  CacheTree& operator=(CacheTree&& other) noexcept;
  CacheTree(const CacheTree&) = delete;
  CacheTree& operator=(const CacheTree&) = delete;

  /// The sub-directory `name` (a plain name, not starting with '.'), opened
  /// the same way. A child of a committed directory is opened read-only: it is
  /// neither cleaned nor locked.
  /// REQUIRES: open sub-directories through child() of their open parent, not
  /// as roots of their own, so that a parent being cleaned holds no children.
  CacheTree child(std::string_view name) const;

  const std::filesystem::path& path() const { return path_; }
  bool is_committed() const;
  /// Marks the directory committed (atomically) and releases it. Returns true
  /// if this call committed it, false if it was committed already. Throws
  /// InvalidArgument for an uncommitted read-only child of a committed tree.
  bool commit();

  /// Writes files into this directory atomically (text, CSV tables, PNG).
  ArtifactWriter writer() const { return ArtifactWriter(path_); }

 private:
  CacheTree(std::filesystem::path path, bool read_only);
  void release();

  std::filesystem::path path_;
  int lock_fd_ = -1;  // held while open and uncommitted
  bool read_only_ = false;
};

}  // namespace cellflow
