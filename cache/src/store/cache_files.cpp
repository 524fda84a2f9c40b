#include "cellflow/store/cache_files.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/table_store.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {

std::shared_ptr<Env> open_existing_cache(const std::filesystem::path& root) {
  struct stat st {};
  // The root itself is the user's choice (it may be a link to where the cache lives).
  if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return nullptr;
  return posix_env(root);
}

bool is_cache(Env& env) { return env.stat(layout::kFormatFile).kind != EntryKind::kMissing; }

std::optional<Value> read_node_definition(Env& env, std::string_view hash) {
  const std::string file = layout::zattrs(hash);
  const auto text = env.read(file);
  if (!text) return std::nullopt;
  const Value attrs = parse_json(*text, env.describe(file));
  const Value* def = attrs.find("cellflow");
  if (def == nullptr || !def->is_object())
    throw CorruptionError(
        fmt::format("file {}: has no \"cellflow\" node definition", env.describe(file)));
  return *def;
}

NodeFolderState node_folder_state(Env& env, std::string_view hash) {
  NodeFolderState s;
  s.folder = env.stat(layout::node(hash)).kind;
  if (s.folder != EntryKind::kFolder) return s;
  s.complete_marker = env.stat(layout::complete_marker(hash)).kind == EntryKind::kFile;
  // A packed node of a sharded cache has zarr.json instead of .zarray; a
  // packer writes zarr.json before it removes .zarray.
  s.image = env.stat(layout::zarray(hash)).kind == EntryKind::kFile ||
            env.stat(join_path(layout::array(hash), layout::kZarrJson)).kind == EntryKind::kFile;
  s.table = !s.image && env.stat(layout::table(hash)).kind == EntryKind::kFolder;
  s.artifacts = env.stat(layout::artifacts(hash)).kind == EntryKind::kFolder;
  return s;
}

std::shared_ptr<CellStore> open_node_cells(const std::shared_ptr<Env>& env, std::string_view hash,
                                           bool image) {
  if (image)
    return ZarrArray::open(env, layout::array(hash), std::string(hash), cache_shard_cells(*env));
  return std::make_shared<TableStore>(env, layout::table(hash), std::string(hash));
}

namespace {
uint64_t file_bytes(Env& env, const std::string& path) {
  uint64_t total = 0;
  std::vector<DirEntry> entries;
  try {
    entries = env.list(path);
  } catch (const Error&) {
    return 0;
  }
  for (const DirEntry& e : entries) {
    const std::string p = join_path(path, e.name);
    if (e.kind == EntryKind::kFile) total += env.stat(p).size;
    if (e.kind == EntryKind::kFolder) total += file_bytes(env, p);
  }
  return total;
}
}  // namespace

uint64_t node_file_bytes(Env& env, std::string_view hash) {
  return file_bytes(env, layout::node(hash));
}

std::filesystem::path node_folder_path(const std::filesystem::path& root, std::string_view hash) {
  return root / layout::node(hash);
}

std::filesystem::path node_definition_path(const std::filesystem::path& root,
                                           std::string_view hash) {
  return root / layout::zattrs(hash);
}

std::filesystem::path node_artifacts_path(const std::filesystem::path& root,
                                          std::string_view hash) {
  return root / layout::artifacts(hash);
}

std::optional<Value> read_memo_entry(Env& env, std::string_view key) {
  const std::string file = layout::memo_entry_file(key);
  const auto text = env.read(file);
  if (!text) return std::nullopt;
  return parse_json(*text, env.describe(file));
}

std::filesystem::path memo_entry_path(const std::filesystem::path& root, std::string_view key) {
  return root / layout::memo_entry(key);
}

std::filesystem::path memo_artifacts_path(const std::filesystem::path& root, std::string_view key) {
  return root / layout::memo_entry(key) / layout::kArtifacts;
}

bool has_memo_artifacts(Env& env, std::string_view key) {
  return env.stat(join_path(layout::memo_entry(key), layout::kArtifacts)).kind ==
         EntryKind::kFolder;
}

}  // namespace cellflow
