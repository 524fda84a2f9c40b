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
// an Env::lock of "<dir>/.cellflow-tree.lock" (layout::kTreeLock), until
// commit() or destruction; the kernel releases it if the process dies.
// commit() writes the marker "<dir>/.cellflow-committed" by atomic rename.
// Every file goes through an Env (store/env.hpp): no link is followed. So when processes race on
// one tree, the first to open a directory fills and commits it, and the others find it committed.
// Thread-safe: one handle per thread (handles are movable, not copyable).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cellflow/cache/artifacts.hpp"
#include "cellflow/store/env.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {

class CacheTree {
 public:
  static constexpr std::string_view kCommittedMarker = layout::kTreeCommitted;
  static constexpr std::string_view kLockFile = layout::kTreeLock;

  /// Opens the tree rooted at `path` (created if needed), as described above,
  /// waiting at most `timeout` (nullopt: forever) for another holder; then
  /// throws LockTimeout naming the lock file. Children wait as long. Throws
  /// IoError if it cannot be created. Re-entrant: a thread that already holds
  /// it open gets another handle on the same hold (not cleaned again); the
  /// directory is released when the last of them is committed or destroyed.
  explicit CacheTree(std::filesystem::path path,
                     std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// The same for folder `folder` of `env` ("" is the Env's root).
  CacheTree(std::shared_ptr<Env> env, std::string folder,
            std::optional<std::chrono::milliseconds> timeout = std::nullopt);
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
  ArtifactWriter writer() const { return ArtifactWriter(env_, folder_); }

 private:
  CacheTree(std::shared_ptr<Env> env, std::string folder, bool read_only,
            std::optional<std::chrono::milliseconds> timeout);
  std::string in_tree(std::string_view name) const;
  void release();

  std::shared_ptr<Env> env_;
  std::string folder_;
  std::filesystem::path path_;
  std::shared_ptr<EnvLock> lock_;  // held while open and uncommitted (shared by re-entry)
  bool read_only_ = false;
  std::optional<std::chrono::milliseconds> timeout_;
};

}  // namespace cellflow
