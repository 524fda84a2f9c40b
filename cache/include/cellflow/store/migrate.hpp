// Migration of a cache directory written by an older cellflow to the current
// cache format (layout::kFormat). Format 1 -> 2 rewrites every cell's checksum
// trailer so it binds the cell to its node and position: each format-1 cell is
// first checked against its old checksum; a sound cell is kept (nothing is
// recomputed), a damaged one is removed (the next run recomputes it) and
// reported. Safe to run again after a crash: cells are rewritten one by one by
// atomic rename, and the format file is written last.
// Thread-compatible: run it while no other process uses the cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cellflow/store/env.hpp"

namespace cellflow {

struct MigrationReport {
  int from_format = 0;
  int to_format = 0;
  int64_t nodes = 0;
  int64_t memo_entries = 0;
  int64_t cells_rewritten = 0;
  int64_t cells_already_current = 0;
  /// Cells that failed their format-1 checksum: removed, recomputed on demand.
  std::vector<std::string> cells_removed;  // "path: why"
};

/// Migrates the cache in `env` to the current format. Returns from == to when
/// it is current already. Throws InvalidArgument when the cache's format is
/// unknown (newer than this cellflow, or not a cellflow cache).
MigrationReport migrate_cache(Env& env);

}  // namespace cellflow
