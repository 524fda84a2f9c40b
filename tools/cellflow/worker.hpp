// Cells computed in worker processes (`cellflow run --isolate`): the hidden
// `cellflow worker` command computes and commits one cell of one node, and
// IsolatedCellRunner (a RunOptions::cell_runner) starts one such process per
// cell attempt, waits for it under the attempt's timeout, and turns a crash,
// a hang or a failure into an error naming the node, the cell and the cause,
// which the executor retries or reports. A crashing or hung op costs only its
// worker. Thread-safe: the runner is called concurrently.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/cache/dims.hpp"
#include "cellflow/graph/graph.hpp"

namespace cellflow::cli {

/// What a worker process needs to rebuild the graph the parent runs.
struct WorkerContext {
  std::string graph_path;  // absolute
  std::filesystem::path cache_root;
  std::optional<std::string> memory;
  std::vector<std::string> plugins;  // absolute paths, loaded by the worker too
};

/// `cellflow worker GRAPH --node ID --cell i,j,k --cache DIR`.
struct WorkerArgs {
  std::string graph_path;
  std::string node_id;
  std::string cell;
  std::optional<std::string> cache;
  std::optional<std::string> memory;
};

/// Computes (or finds committed) one cell and exits 0 once it is committed,
/// printing "cellflow-worker: computed" or "cellflow-worker: present" on
/// stdout. Exits by itself if the parent run dies.
int worker_command(const WorkerArgs& args);

class IsolatedCellRunner {
 public:
  IsolatedCellRunner(const Graph& graph, WorkerContext context);

  /// RunOptions::cell_runner: runs one attempt of `cell` of node `node` in a
  /// worker process; `timeout_seconds` > 0 kills it (SIGKILL) when exceeded.
  /// Throws NodeError ("worker killed by signal 11 (Segmentation fault)",
  /// "worker failed (exit code 1): <its error>") or Cancelled ("timed out
  /// after 2 s"), with context frames node "<id>" and cell (i,j,k).
  void operator()(size_t node, const CellIndex& cell, double timeout_seconds) const;

  /// Cells computed (not merely found committed) by workers, per node.
  int64_t computed(size_t node) const;
  /// True if the last call on this thread had its worker compute the cell;
  /// reading clears it. (The executor's CellEvent cannot tell for a runner.)
  static bool take_last_computed();

 private:
  const Graph& graph_;
  WorkerContext context_;
  std::string exe_;
  std::unique_ptr<std::atomic<int64_t>[]> computed_;
};

}  // namespace cellflow::cli
