// Work counters of the `label` op, process-wide, for tests and benchmarks: how
// often it ran connected components on a cell, and how each output cell was
// produced. Thread-safe (atomic counters, read without a lock).
#pragma once

#include <cstdint>

namespace cellflow::nodes {

/// Counts since the process started; compare two readings. The global pass
/// labels every input cell once and keeps each cell's provisional labels, up
/// to a quarter of MemoryCache::global()'s budget at that time (held besides
/// the cache's cells, released as the cells are computed); a cell's compute()
/// maps the kept labels (`reused`) or, when they were not kept, labels the
/// cell again (`relabelled`).
struct LabelWork {
  int64_t labelled = 0;    // connected-component runs over one cell, global pass and compute()
  int64_t kept = 0;        // cells whose provisional labels the global pass kept
  int64_t reused = 0;      // output cells mapped from kept labels, no second labelling
  int64_t relabelled = 0;  // output cells labelled again: not kept, or already used once
};

LabelWork label_work();

}  // namespace cellflow::nodes
