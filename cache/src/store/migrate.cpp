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

}  // namespace cellflow
