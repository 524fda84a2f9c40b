// `cellflow blockwise TASK.json`: a blockwise task (docs/blockwise.md) run by
// run_blockwise(), its blocks computed in threads or in worker processes
// (`cellflow blockwise-worker`, one per block attempt: a crash or a hang
// costs only that attempt). Not thread-safe: called once from main().
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace cellflow::cli {

struct BlockwiseArgs {
  std::string task_path;
  std::optional<std::string> cache;        // for graph-node inputs
  std::optional<int> threads;              // in-process, this many blocks at once
  std::optional<int> workers;              // worker processes, this many at once
  std::optional<double> timeout_seconds;   // overrides the task's "timeout"
  std::optional<int> max_retries;          // overrides the task's "max_retries"
  std::optional<std::string> report_json;  // FILE, or - for stdout
  bool mpi = false;  // share the blocks with the other MPI ranks (automatic under mpirun)
  bool progress = false;
  bool quiet = false;
  std::vector<std::string> plugins;  // passed on to worker processes
};

/// Runs the task; exit 0 when every block is done or skipped, 1 when a block
/// failed or was orphaned. A task that is not valid is a UsageError naming
/// the file and field.
int blockwise_command(const BlockwiseArgs& args);

/// The hidden `cellflow blockwise-worker TASK.json --block JSON` (the block's
/// id, index and ROIs, as the parent enumerated them): processes that block
/// and exits 0 once its output is written.
int blockwise_worker_command(const std::string& task_path, const std::string& block,
                             const std::optional<std::string>& cache);

}  // namespace cellflow::cli
