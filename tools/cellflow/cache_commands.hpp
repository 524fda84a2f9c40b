// `cellflow cache ls | verify | gc`: maintenance of a cache directory, safe
// while other processes run on it (see cellflow/cache/cache_scan.hpp). Each
// returns the exit code or throws, like the other commands. Not thread-safe:
// called once from main().
#pragma once

#include <optional>
#include <string>

namespace cellflow::cli {

struct CacheArgs {
  std::optional<std::string> cache;
  bool json = false;                      // ls
  bool repair = false;                    // verify
  std::optional<double> older_than_days;  // gc
  std::optional<std::string> max_size;    // gc
  std::optional<std::string> keep_graph;  // gc
  bool dry_run = false;                   // gc
  std::optional<int64_t> shard_cells;     // migrate
};

/// One line per node: hash, op, id, dtype, shape, size, complete|partial
/// (cells present/total), last used; or JSON with --json.
int cache_ls_command(const CacheArgs& args);
/// Reads every file; names every damaged one. Exit 0 only when the cache is
/// clean (or, with --repair, was repaired), else 1.
int cache_verify_command(const CacheArgs& args);
/// Migrates a cache of an older format to the current one (store/migrate.hpp).
int cache_migrate_command(const CacheArgs& args);
/// Removes whole nodes by age, size budget or a graph to keep; never a node
/// a running process uses.
int cache_gc_command(const CacheArgs& args);

}  // namespace cellflow::cli
