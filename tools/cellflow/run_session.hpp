// RunSession: one computation of the `cellflow` program (run, export) with
// the CLI's policies around materialize(): retries and per-cell timeouts,
// cells computed in worker processes (--isolate), the machine-readable event
// log (--progress-json) and the counts behind the terminal display. (The
// nodes a run touches are leased by the graph itself, so that `cellflow cache
// gc` leaves them alone.) The object is used from one thread; the hooks it
// installs are thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cellflow/graph/executor.hpp"
#include "cellflow/graph/graph.hpp"
#include "progress.hpp"
#include "worker.hpp"

namespace cellflow::cli {

/// How `cellflow run` computes, beyond the graph and the cache.
struct RunPolicy {
  int max_retries = 0;                       // retries of a failing cell (an op's own policy wins)
  double timeout_seconds = 0;                // per cell attempt, 0 = none (an op's own policy wins)
  bool isolate = false;                      // each cell in a worker process
  bool mpi = false;                          // collective run over MPI ranks (mpirun)
  std::optional<std::string> progress_json;  // event log file ("-" = stdout)
  std::vector<std::string> plugins;          // --plugin paths, passed on to workers
  std::optional<std::string> trace;          // --trace FILE: Chrome/Perfetto trace (trace.hpp)
};

class EventLog;
class TraceRecorder;

class RunSession {
 public:
  /// Opens the cache (a cache that cannot be opened is a UsageError: exit 2),
  /// marks the nodes `targets` depend on in use, and opens the event log.
  /// `graph_path` and `memory` are what worker processes are started with.
  RunSession(const Graph& graph, std::vector<size_t> targets, RunPolicy policy,
             const std::string& graph_path, const std::optional<std::string>& memory);
  ~RunSession();
  RunSession(const RunSession&) = delete;
  RunSession& operator=(const RunSession&) = delete;

  /// Counts of cell events, for a TerminalProgress.
  const CellTally& tally() const { return tally_; }

  /// materialize() with `options` (threads, on_progress) plus the session's
  /// policy and hooks; logs run_start, cell, progress and run_end events. The
  /// report counts cells computed by workers as computed. Rethrows failures.
  RunReport run(RunOptions options);

 private:
  void mark_complete_nodes(RunReport& report) const;

  const Graph& graph_;
  std::vector<size_t> targets_;
  RunPolicy policy_;
  CellTally tally_;
  std::unique_ptr<IsolatedCellRunner> runner_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<TraceRecorder> trace_;
};

}  // namespace cellflow::cli
