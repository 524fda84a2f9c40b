// MemoryCache: one byte budget for all cell images of the process. Entries are
// evicted least-recently-used first, but never while someone outside the cache
// still holds the cell's buffer. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "cellflow/cache/cell_buffer.hpp"

namespace cellflow {

struct MemoryCacheStats {
  size_t budget_bytes = 0;
  size_t used_bytes = 0;
  size_t peak_bytes = 0;
  int64_t entries = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;
};

class MemoryCache {
 public:
  /// The process-wide cache (budget: $CELLFLOW_MEMORY or 2 GiB by default).
  static MemoryCache& global();

  explicit MemoryCache(size_t budget_bytes);
  ~MemoryCache();
  MemoryCache(const MemoryCache&) = delete;
  MemoryCache& operator=(const MemoryCache&) = delete;

  void set_budget(size_t bytes);
  size_t budget() const;

  /// A fresh id for a cache owner (one per cell image).
  uint64_t new_owner();
  std::optional<CellBuffer> find(uint64_t owner, int64_t cell);
  /// Inserts (or replaces) and evicts unheld entries while over budget.
  void insert(uint64_t owner, int64_t cell, CellBuffer buffer);
  void erase(uint64_t owner, int64_t cell);
  void erase_owner(uint64_t owner);
  /// Drops every entry nobody holds (for tests and benchmarks).
  void clear();
  MemoryCacheStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Parses a size such as "512M", "2G", "1.5GiB", "4096" (bytes). Throws
/// InvalidArgument naming `what` on bad input.
size_t parse_size(const std::string& text, const std::string& what = "size");

}  // namespace cellflow
