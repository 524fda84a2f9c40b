// Reads of a cache's files for code outside the store (provenance, the CLI):
// they ask here instead of spelling layout names. Everything goes through
// the cache's Env, so no link is followed and nothing but a regular file or a
// folder is opened. Thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cellflow/cache/cell_store.hpp"
#include "cellflow/cache/value.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

/// The Env of the existing folder `root`, or nullptr when there is no folder
/// there. Unlike posix_env(), never creates anything.
std::shared_ptr<Env> open_existing_cache(const std::filesystem::path& root);

/// True if `env` holds a cache (something is at cellflow-cache.json).
bool is_cache(Env& env);

/// The node's definition (.zattrs's "cellflow" object), nullopt when there is
/// no .zattrs. Throws CorruptionError naming the file when it is not a file,
/// does not parse, or has no definition.
std::optional<Value> read_node_definition(Env& env, std::string_view hash);

/// What a node folder holds, by the layout's names (nothing is followed).
struct NodeFolderState {
  EntryKind folder = EntryKind::kMissing;  // the node folder itself
  bool complete_marker = false;            // the completion marker is a file
  bool image = false;                      // 0/.zarray is a file
  bool table = false;                      // table/ is a folder
  bool artifacts = false;                  // artifacts/ is a folder
};
NodeFolderState node_folder_state(Env& env, std::string_view hash);

/// The cells of node `hash` (its Zarr array "0" when `image`, else its table),
/// read through `env`. Throws IoError / CorruptionError when they cannot be opened.
std::shared_ptr<CellStore> open_node_cells(const std::shared_ptr<Env>& env, std::string_view hash,
                                           bool image);

/// The bytes of the regular files in node `hash`'s folder (links and other
/// entries are not followed, nor counted).
uint64_t node_file_bytes(Env& env, std::string_view hash);

/// Paths as a user reads them: node `hash`'s folder, its .zattrs, its artifacts folder.
std::filesystem::path node_folder_path(const std::filesystem::path& root, std::string_view hash);
std::filesystem::path node_definition_path(const std::filesystem::path& root,
                                           std::string_view hash);
std::filesystem::path node_artifacts_path(const std::filesystem::path& root, std::string_view hash);

/// Memo entry `key`'s entry.json, parsed; nullopt when the entry has none.
/// Throws CorruptionError naming the file when it is not a file or does not parse.
std::optional<Value> read_memo_entry(Env& env, std::string_view key);
/// Memo entry `key`'s folder and artifacts folder as a user reads them.
std::filesystem::path memo_entry_path(const std::filesystem::path& root, std::string_view key);
std::filesystem::path memo_artifacts_path(const std::filesystem::path& root, std::string_view key);
/// True if memo entry `key` has an artifacts folder (a folder, not a link).
bool has_memo_artifacts(Env& env, std::string_view key);

}  // namespace cellflow
