// NodeUseLock: the in-use lease of one node folder of a cache directory, so
// that cache maintenance (`cellflow cache gc`, `verify --repair`) never removes
// it while a process reads or writes it. The lease is a shared Env::lock of
// byte 0 of "<hash>/.cellflow-use" (layout::use_file); maintenance takes the
// same byte exclusively, without waiting, before it renames a node folder
// away. The kernel releases a dead process's locks, so a crash leaves no stale
// lease. Taking the lease also touches the file's mtime: the node's "last
// used" time. The library takes leases itself (Graph, CachedCellImage reads,
// materialize, replay); user code rarely needs this header.
// Thread-safe: each object is independent; move-only.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cellflow/store/env.hpp"

namespace cellflow {

class NodeUseLock {
 public:
  NodeUseLock() = default;
  /// Marks node `hash` of the cache of `env` in use: creates the node's folder
  /// and use file if needed and takes the shared lock, waiting at most
  /// `timeout` (nullopt: forever) while a maintenance process holds it
  /// (briefly); throws LockTimeout naming the use file when the time runs out.
  /// If the folder is renamed away meanwhile, it starts over on the new
  /// folder. On a read-only cache, or one whose file system has no locks,
  /// returns an object that holds nothing (held() is false): nothing can be
  /// removed there by this process's peers either. Throws CorruptionError when
  /// something other than a folder and a file is in the way.
  static NodeUseLock acquire(std::shared_ptr<Env> env, const std::string& hash,
                             std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// The same for the cache at `root`.
  static NodeUseLock acquire(const std::filesystem::path& root, const std::string& hash,
                             std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  ~NodeUseLock();
  NodeUseLock(NodeUseLock&& other) noexcept;
  NodeUseLock& operator=(NodeUseLock&& other) noexcept;
  NodeUseLock(const NodeUseLock&) = delete;
  NodeUseLock& operator=(const NodeUseLock&) = delete;

  bool held() const { return lease_ != nullptr; }

 private:
  NodeUseLock(std::shared_ptr<Env> env, std::unique_ptr<EnvLock> lease);
  std::shared_ptr<Env> env_;  // outlives lease_
  std::unique_ptr<EnvLock> lease_;
};

/// Removes the node folder `hash` unless a process holds its lease: takes the
/// lease's byte exclusively without waiting, renames the folder to a hidden
/// trash name in the root (layout::node_trash; atomic: runs see the whole node
/// or none), then deletes the trash. Returns false (and changes nothing) when
/// the node is in use, absent, not a folder, or the cache cannot be locked
/// (read-only). Throws IoError if the folder cannot be renamed.
bool remove_node_folder(Env& env, const std::string& hash);
bool remove_node_folder(const std::filesystem::path& root, const std::string& hash);

/// True if a process holds node `hash`'s lease now (a snapshot: it may change
/// at once). False if the node or its use file is absent.
bool node_in_use(Env& env, const std::string& hash);
bool node_in_use(const std::filesystem::path& root, const std::string& hash);

/// True if `name` is a trash folder left by remove_node_folder() (deleted
/// later by cache maintenance if a crash interrupted the deletion).
bool is_trash_name(const std::string& name);

}  // namespace cellflow
