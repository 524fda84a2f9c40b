// materialize(): computes the cells of target nodes (and whatever they need)
// on the scheduler (scheduler.hpp), cell by cell: a cell runs as soon as the input cells it
// reads are ready, so downstream work overlaps upstream work. Cells already
// committed to the cache are not recomputed. Thread-safe: several
// materialize() calls may run at once (shared cells are computed once).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cellflow/graph/graph.hpp"

namespace cellflow {

struct NodeProgress {
  size_t node = 0;
  int64_t cells_total = 0;      // cells of the node
  int64_t cells_scheduled = 0;  // cells this run had to produce
  int64_t cells_done = 0;       // of those, finished
};

/// What happened to one cell, for progress logs and traces.
struct CellEvent {
  enum class Kind { kDone, kRetry, kFailed };
  Kind kind = Kind::kDone;
  size_t node = 0;
  CellIndex cell;
  int attempt = 1;        // 1 for the first try
  bool computed = false;  // kDone: computed now (false: found committed)
  double seconds = 0;
  std::string error;  // kRetry / kFailed: the cause
};

struct RunOptions {
  /// Worker threads; 0 = all cores.
  int threads = 0;
  /// Retries of a failing cell before the run fails (an op's own policy wins).
  int max_retries = 0;
  /// Time limit per cell attempt in seconds, 0 = none (an op's own policy
  /// wins). Cooperative: a kernel sees it through check_cancelled(); a cell
  /// runner (below) may enforce it by killing a worker process. An attempt
  /// that returns after the limit failed (and is retried like any failure).
  double timeout_seconds = 0;
  /// Replaces the in-process computation of one cell, e.g. to compute it in a
  /// worker process (`cellflow run --isolate`). It must leave the cell
  /// committed to the cache or throw. Called concurrently, with the attempt's
  /// time limit (0 = none), which started just before the call.
  std::function<void(size_t node, const CellIndex& cell, double timeout_seconds)> cell_runner;
  /// A cell another process is computing right now (cache shared by several
  /// processes or MPI ranks) is skipped at first and only waited for at the
  /// end (or when a cell of this run reads it), so that this process takes
  /// other cells meanwhile.
  bool share_work = true;
  /// Splits the target cells between `partition_size` processes (MPI ranks):
  /// this one plans, checks and produces only its contiguous range of each
  /// target's cells (linear indexes [rank*N/size, (rank+1)*N/size): a slab),
  /// and the input cells those read (halo cells shared at a slab's faces go
  /// to whichever process locks them first). So no
  /// process stats every cell: per-cell file-system operations stay constant
  /// as processes are added. With partition_size > 1 the report's `complete`
  /// is not computed (the caller checks once, after all processes finished).
  int partition_rank = 0;
  int partition_size = 1;
  /// Cells of nodes that are not persisted (and not targets) also leave
  /// memory once this run stops reading them, so that their buffers serve
  /// the cells made after them. For a caller that reads nothing of those
  /// nodes afterwards (the CLI, which exits): a later read in the same
  /// process recomputes them. Off by default: a memory-only intermediate
  /// stays for later readers until the memory budget evicts it.
  bool release_unpersisted = false;
  /// Set by someone else (e.g. a Ctrl-C handler) to stop the run: cells in
  /// flight are cancelled through their tokens, the rest are not started, and
  /// materialize() throws Cancelled.
  const std::atomic<bool>* stop = nullptr;
  /// Called after each cell attempt; must be thread-safe.
  std::function<void(const CellEvent&)> on_cell;
  /// Called from a background thread about every `progress_interval_ms` and
  /// once at the end; must be thread-safe.
  std::function<void(const std::vector<NodeProgress>&)> on_progress;
  int progress_interval_ms = 200;
};

struct NodeReport {
  size_t node = 0;
  int64_t cells_total = 0;
  int64_t cells_computed = 0;  // computed by this run
  int64_t cells_loaded = 0;    // read back from the store by this run
  int64_t cells_corrupt = 0;   // damaged stored cells found and recomputed
  double seconds = 0;          // sum of time spent computing this node's cells
  bool complete = false;       // every cell committed (or in memory) at the end
  bool persisted = false;      // its cells are stored in the cache (GraphNode::persist)
};

struct RunReport {
  double wall_seconds = 0;
  std::vector<NodeReport> nodes;  // one per graph node, in graph order
};

/// True if persisted node `node` of `graph` is complete: its completion
/// marker is there, or every cell is committed (a killed run may have
/// committed the last ones) — then the marker is written (a failed write
/// throws: a run never reports success over a write it could not make).
/// False without a cache, for a node that is not persisted, or while a cell
/// is missing.
bool confirm_complete(const Graph& graph, size_t node);

/// Computes `targets` (node indexes; empty = the graph's outputs). Throws the
/// first failure with context frames "node <id>" and "cell (i,j,k)".
RunReport materialize(const Graph& graph, std::vector<size_t> targets = {},
                      const RunOptions& options = {});

}  // namespace cellflow
