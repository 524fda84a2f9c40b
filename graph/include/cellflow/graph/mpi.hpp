// Running one graph across MPI ranks (`mpirun -np N cellflow run ...`, or a
// user's own MPI program). All ranks share the cache directory (a shared file
// system on a cluster) and split the cells dynamically: each rank sweeps the
// cells starting at its own offset, skips cells another rank is computing
// (their cross-process cell locks), and waits for those only at the end, so
// no rank idles while cells are left; each cell is computed once in total and
// the bytes equal a single-process run. MPI is not in this header.
// Thread-safety: call from one thread per rank (the one that initialized MPI).
#pragma once

#include <string>
#include <vector>

#include "cellflow/graph/executor.hpp"

namespace cellflow::mpi {

struct World {
  int rank = 0;
  int size = 1;
};

/// True if cellflow was built with MPI.
bool available();
/// True if an MPI launcher (mpirun, srun) started this process.
bool launched();
/// Initializes MPI once (finalized at exit) and returns this rank's place.
/// Throws InvalidArgument if cellflow was built without MPI.
World init();

/// Collective over MPI_COMM_WORLD: every rank must call it with the same graph
/// and targets. Returns on every rank the report summed over ranks (cells
/// computed and loaded, seconds; wall = the slowest rank). If any rank failed,
/// throws on every rank a NodeError naming each failed rank and its cause.
RunReport materialize(const Graph& graph, std::vector<size_t> targets, const RunOptions& options);

/// Collective: returns once every rank has called it.
void barrier();
/// Collective: replaces each element by its maximum over the ranks. Every
/// rank passes a vector of the same size.
void max_over_ranks(std::vector<int>& values);

}  // namespace cellflow::mpi
