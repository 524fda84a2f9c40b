// TableLog: a table in the cache that any number of threads, processes and
// machines append rows to, outside any graph (SpatialData-style concurrent
// writing). Each append is one batch file, "<cache>/tables/<name>/<batch>",
// committed by an atomic no-replace rename, with the cells' identity-bound
// checksum: a batch is there whole or not at all, and appending a batch id that
// is already there is a no-op — a retried append is never duplicated. read()
// returns every committed batch, in batch order (by default, the time order of
// the appends). Thread-safe and process-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cellflow/cache/table.hpp"
#include "cellflow/store/env.hpp"

namespace cellflow {

class TableLog {
 public:
  /// The table `name` ([A-Za-z0-9_.-], not starting with '.') of the cache at
  /// `cache_root` (created if needed, like CacheDirectory). Throws
  /// InvalidArgument for a bad name or a cache of another format.
  TableLog(const std::filesystem::path& cache_root, std::string name);
  TableLog(std::shared_ptr<Env> env, std::string name);

  /// Appends `rows` as one batch. `batch_id` (same character rules as a name)
  /// makes the append idempotent: returns false, writing nothing, when that
  /// batch is already committed. Without it a unique, time-ordered id is made.
  /// REQUIRES: rows has the table's columns (checked on read: a batch with
  /// other columns fails read()).
  bool append(const Table& rows, const std::string& batch_id = {});
  /// Every committed batch, in batch-id order. Throws CorruptionError naming
  /// a damaged batch file.
  Table read() const;
  /// Committed batches.
  size_t batches() const;

 private:
  std::shared_ptr<Env> env_;
  std::string name_;
  std::string folder_;
};

}  // namespace cellflow
