#include "cellflow/store/migrate.hpp"

#include <fmt/format.h>

#include <cstdlib>

#include "cellflow/cache/cache_directory.hpp"
#include "cellflow/cache/error.hpp"
#include "cellflow/cache/zarr_array.hpp"
#include "cellflow/store/layout.hpp"

namespace cellflow {
namespace {

bool is_index(const std::string& name) {
  if (name.empty() || name.size() > 18) return false;
  for (const char c : name)
    if (c < '0' || c > '9') return false;
  return true;
}

// Rewrites every cell file under `folder` (paths i/j/k...) for `owner`.
void migrate_cells(Env& env, const std::string& folder, const std::string& owner,
                   std::vector<int64_t>& index, MigrationReport& report) {
  for (const DirEntry& e : env.list(folder)) {
    if (!is_index(e.name)) continue;  // .zarray, locks, temporary files
    const std::string path = join_path(folder, e.name);
    index.push_back(std::strtoll(e.name.c_str(), nullptr, 10));
    if (e.kind == EntryKind::kFolder) {
      migrate_cells(env, path, owner, index, report);
    } else if (e.kind == EntryKind::kFile) {
      CellIndex cell(static_cast<int>(index.size()));
      for (size_t d = 0; d < index.size(); ++d) cell[static_cast<int>(d)] = index[d];
      const std::string identity = layout::cell_identity(owner, cell);
      const auto stored = env.read(path);
      if (stored) {
        try {
          env.write_atomic(path,
                           ZarrArray::migrate_format1_chunk(*stored, env.describe(path), identity),
                           Durability::kPowerCut);
          ++report.cells_rewritten;
        } catch (const CorruptionError& why) {
          // Already migrated (a second run after a crash), or damaged.
          bool current = false;
          try {
            (void)ZarrArray::decode_chunk_any(*stored, env.describe(path), identity);
            current = true;
          } catch (const CorruptionError&) {
          }
          if (current) {
            ++report.cells_already_current;
          } else {
            env.remove(path);
            report.cells_removed.emplace_back(why.what());
          }
        }
      }
    }
    index.pop_back();
  }
}

}  // namespace

MigrationReport migrate_cache(Env& env) {
  MigrationReport report;
  const std::optional<int> format = cache_format(env);
  if (!format)
    throw InvalidArgument(
        fmt::format("{}: not a cellflow cache (no {})", env.root().string(), layout::kFormatFile));
  report.from_format = *format;
  report.to_format = layout::kFormat;
  if (is_current_cache_format(*format)) {
    report.to_format = *format;  // a sharded cache (format 3) is current too
    return report;
  }
  if (*format != 1)
    throw InvalidArgument(
        fmt::format("file {}: cache format {} is unknown to this cellflow "
                    "(it reads and migrates formats 1 and {})",
                    env.describe(layout::kFormatFile), *format, layout::kFormat));
  std::vector<int64_t> index;
  for (const DirEntry& e : env.list("")) {
    if (e.kind != EntryKind::kFolder || !layout::is_node_name(e.name)) continue;
    ++report.nodes;
    const size_t removed_before = report.cells_removed.size();
    migrate_cells(env, layout::array(e.name), e.name, index, report);
    migrate_cells(env, layout::table(e.name), e.name, index, report);
    // A node that lost a cell is no longer complete.
    if (report.cells_removed.size() != removed_before) env.remove(layout::complete_marker(e.name));
  }
  for (const DirEntry& e : env.list(layout::kMemo)) {
    if (e.kind != EntryKind::kFolder || !layout::is_node_name(e.name)) continue;
    ++report.memo_entries;
    migrate_cells(env, join_path(layout::memo_entry(e.name), layout::kMemoImage),
                  std::string(layout::kMemoResultOwner), index, report);
  }
  env.write_atomic(layout::kFormatFile, fmt::format("{{\"format\": {}}}\n", layout::kFormat),
                   Durability::kPowerCut);
  return report;
}

ShardingReport shard_cache(const std::shared_ptr<Env>& env, int64_t shard_cells) {
  ShardingReport report;
  report.shard_cells = shard_cells;
  if (shard_cells < 2)
    throw InvalidArgument(fmt::format("shards of {} cells: a shard holds at least 2", shard_cells));
  const std::optional<int> format = cache_format(*env);
  if (!format || !is_current_cache_format(*format))
    throw InvalidArgument(fmt::format(
        "cache {}: format {} (run `cellflow cache migrate` without --shard-cells first)",
        env->root().string(), format ? std::to_string(*format) : "none"));
  report.from_format = *format;
  report.to_format = layout::kShardedFormat;
  if (*format == layout::kShardedFormat) {
    const int64_t current = cache_shard_cells(*env);
    if (current != shard_cells)
      throw InvalidArgument(fmt::format(
          "cache {}: already sharded with {} cells per shard; its shards cannot be read as "
          "shards of {}",
          env->root().string(), current, shard_cells));
  } else {
    env->write_atomic(layout::kFormatFile,
                      fmt::format("{{\"format\": {}, \"{}\": {}}}\n", layout::kShardedFormat,
                                  layout::kShardCellsKey, shard_cells),
                      Durability::kPowerCut);
  }
  CacheDirectory cache(env);
  for (const DirEntry& e : env->list("")) {
    if (e.kind != EntryKind::kFolder || !layout::is_node_name(e.name)) continue;
    if (env->stat(layout::array(e.name)).kind != EntryKind::kFolder) continue;  // a table node
    if (!cache.is_complete(e.name)) {
      ++report.nodes_incomplete;
      continue;
    }
    if (cache.pack_node(e.name)) ++report.nodes_packed;
  }
  return report;
}

}  // namespace cellflow
