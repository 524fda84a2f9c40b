// NodeUseLock: marks one node folder of a cache directory as in use by this
// process, so that cache maintenance (`cellflow cache gc`, `verify --repair`)
// never removes it while a run reads or writes it. The mark is a shared Linux
// OFD lock on "<root>/<hash>/.cellflow-use"; maintenance takes the same lock
// exclusively, without waiting, before it renames a node folder away. The
// kernel releases a dead process's locks, so a crash leaves no stale mark.
// Taking the lock also touches the file's mtime: the node's "last used" time.
// Thread-safe: each object is independent; move-only.
#pragma once

#include <filesystem>
#include <string>

namespace cellflow {

/// The file whose lock marks a node in use (inside the node's folder).
inline constexpr const char* kNodeUseFile = ".cellflow-use";

class NodeUseLock {
 public:
  NodeUseLock() = default;
  /// Marks node `hash` of the cache at `root` in use: creates the node's folder
  /// and use file if needed and takes the shared lock, waiting while a
  /// maintenance process holds it (briefly). If the folder is renamed away
  /// meanwhile, it starts over on the new folder. On a read-only cache, or one
  /// whose file system has no locks, returns an object that holds nothing
  /// (held() is false): nothing can be removed there by this process's peers
  /// either. Never throws.
  static NodeUseLock acquire(const std::filesystem::path& root, const std::string& hash);

  ~NodeUseLock();
  NodeUseLock(NodeUseLock&& other) noexcept;
  NodeUseLock& operator=(NodeUseLock&& other) noexcept;
  NodeUseLock(const NodeUseLock&) = delete;
  NodeUseLock& operator=(const NodeUseLock&) = delete;

  bool held() const { return fd_ >= 0; }

 private:
  explicit NodeUseLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

/// Removes the node folder `<root>/<hash>` unless a process holds its use
/// lock: takes the lock exclusively without waiting, renames the folder to a
/// hidden trash name in `root` (atomic: runs see the whole node or none), then
/// deletes the trash. Returns false (and changes nothing) when the node is in
/// use or absent. Throws IoError if the folder cannot be renamed.
bool remove_node_folder(const std::filesystem::path& root, const std::string& hash);

/// True if a process holds node `hash`'s use lock now (a snapshot: it may
/// change at once). False if the node or its use file is absent.
bool node_in_use(const std::filesystem::path& root, const std::string& hash);

/// True if `name` is a trash folder left by remove_node_folder() (deleted
/// later by cache maintenance if a crash interrupted the deletion).
bool is_trash_name(const std::string& name);

}  // namespace cellflow
