// libcellflow_mpi.so: the MPI half of mpi.hpp, the only code that calls MPI.
// libcellflow_graph loads it on first use (mpi.cpp), so that a process that
// does not run under MPI never maps Open MPI's libraries.
#include "mpi_module.hpp"

#include <fmt/format.h>

#include <cstdlib>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/log.hpp"
#include "cellflow/graph/mpi.hpp"

// The C API only: Open MPI's C++ bindings would need libmpi_cxx at link time.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

namespace cellflow::mpi {
namespace {

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

World module_init() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Only the calling thread talks to MPI; TBB threads never do.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    std::atexit(finalize_at_exit);
  }
  World w;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  return w;
}

RunReport module_materialize(const Graph& graph, std::vector<size_t> targets,
                             const RunOptions& options) {
  const World world = module_init();
  RunReport local;
  int failed = 0;
  std::string error;
  const std::vector<size_t> touched = graph.ancestors(targets.empty() ? graph.outputs() : targets);
  try {
    RunOptions o = options;
    // Each rank plans and produces its share of the target cells (and the
    // input cells those read); cross-process cell locks settle the shared ones.
    o.share_work = true;
    o.partition_rank = world.rank;
    o.partition_size = world.size;
    local = cellflow::materialize(graph, std::move(targets), o);
  } catch (const std::exception& e) {
    failed = 1;
    error = e.what();
  }

  // Everyone learns whether anyone failed, and why; no rank is left waiting.
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed) {
    const std::string mine = failed ? error : std::string();
    int len = static_cast<int>(mine.size());
    std::vector<int> lens(static_cast<size_t>(world.size));
    MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
    std::vector<int> offsets(lens.size(), 0);
    int total = 0;
    for (size_t r = 0; r < lens.size(); ++r) {
      offsets[r] = total;
      total += lens[r];
    }
    std::string all(static_cast<size_t>(total), '\0');
    MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR,
                   MPI_COMM_WORLD);
    std::string message;
    for (size_t r = 0; r < lens.size(); ++r) {
      if (lens[r] == 0) continue;
      if (!message.empty()) message += "; ";
      message +=
          fmt::format("rank {} of {}: {}", r, world.size,
                      all.substr(static_cast<size_t>(offsets[r]), static_cast<size_t>(lens[r])));
    }
    throw NodeError(message.empty() ? "a rank failed" : message);
  }

  // Every rank has finished (the exchange above): rank 0 alone checks which
  // persisted nodes are now complete and marks them (one pass over the cells
  // in total, not one per rank).
  std::vector<int> complete_now(graph.nodes().size(), 0);
  // A marker rank 0 cannot write must not leave the other ranks waiting in
  // the exchange below: it is reported, and the node is checked again next run.
  if (world.rank == 0) {
    for (size_t i : touched) {
      try {
        complete_now[i] = confirm_complete(graph, i) ? 1 : 0;
      } catch (const Error& e) {
        log_warning(fmt::format("node \"{}\": cannot mark it complete: {}", graph.nodes()[i].def.id,
                                e.what()));
      }
    }
  }

  // Sum the per-node counters over ranks.
  const size_t n = graph.nodes().size();
  std::vector<int64_t> counts(3 * n, 0);
  std::vector<double> seconds(n, 0);
  std::vector<int> complete(n, 0);
  for (const NodeReport& r : local.nodes) {
    counts[3 * r.node] = r.cells_computed;
    counts[3 * r.node + 1] = r.cells_loaded;
    counts[3 * r.node + 2] = r.cells_corrupt;
    seconds[r.node] = r.seconds;
    complete[r.node] = r.complete || complete_now[r.node] != 0 ? 1 : 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, counts.data(), static_cast<int>(counts.size()), MPI_INT64_T, MPI_SUM,
                MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, seconds.data(), static_cast<int>(n), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, complete.data(), static_cast<int>(n), MPI_INT, MPI_MAX,
                MPI_COMM_WORLD);
  RunReport out = local;
  MPI_Allreduce(&local.wall_seconds, &out.wall_seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  for (NodeReport& r : out.nodes) {
    r.cells_computed = counts[3 * r.node];
    r.cells_loaded = counts[3 * r.node + 1];
    r.cells_corrupt = counts[3 * r.node + 2];
    r.seconds = seconds[r.node];
    r.complete = complete[r.node] != 0;
  }
  return out;
}

void module_barrier() {
  module_init();
  MPI_Barrier(MPI_COMM_WORLD);
}

void module_max_over_ranks(std::vector<int>& values) {
  module_init();
  MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT, MPI_MAX,
                MPI_COMM_WORLD);
}

}  // namespace

}  // namespace cellflow::mpi

extern "C" const cellflow::mpi::detail::MpiModule* cellflow_mpi_module_v1() {
  using namespace cellflow::mpi;
  static const detail::MpiModule module{&module_init, &module_materialize, &module_barrier,
                                        &module_max_over_ranks};
  return &module;
}
