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
#include <memory>
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

struct ShardingReport {
  int from_format = 0;
  int to_format = 0;
  int64_t shard_cells = 0;
  int64_t nodes_packed = 0;      // complete image nodes now in shards
  int64_t nodes_incomplete = 0;  // packed when a run completes them
};

/// Makes the (current-format) cache in `env` a sharded one (format 3) with
/// shards of at most `shard_cells` cells, then packs every complete image
/// node (CacheDirectory::pack_node). The format file is written first, so a
/// crash leaves a valid sharded cache whose complete nodes are packed by the
/// next run that opens them, or by running this again (idempotent). Throws
/// InvalidArgument for format 1 (migrate it first), for a sharded cache of
/// another shard size (its shards would be misread), or shard_cells < 2.
/// Run it while no other process uses the cache: one that opened it as
/// format 2 reads single cell files only, and would recompute packed cells.
ShardingReport shard_cache(const std::shared_ptr<Env>& env, int64_t shard_cells);

}  // namespace cellflow
