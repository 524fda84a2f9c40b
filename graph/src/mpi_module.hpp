// What libcellflow_mpi.so provides (mpi_module.cpp), through its entry point
// cellflow_mpi_module_v1(); mpi.cpp loads it on first use.
#pragma once

#include <vector>

#include "cellflow/graph/mpi.hpp"

namespace cellflow::mpi::detail {

struct MpiModule {
  World (*init)();
  RunReport (*materialize)(const Graph& graph, std::vector<size_t> targets,
                           const RunOptions& options);
  void (*barrier)();
  void (*max_over_ranks)(std::vector<int>& values);
};

}  // namespace cellflow::mpi::detail

extern "C" const cellflow::mpi::detail::MpiModule* cellflow_mpi_module_v1();
