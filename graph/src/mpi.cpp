// mpi.hpp: whether MPI is there, and the calls that need it, which forward
// to libcellflow_mpi.so (mpi_module.cpp), loaded on first use: a process
// that does not run under MPI never maps Open MPI's libraries (a few ms per
// process).
#include "cellflow/graph/mpi.hpp"

#include <cstdlib>
#include <mutex>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/library_beside.hpp"
#include "mpi_module.hpp"

namespace cellflow::mpi {
namespace {

const detail::MpiModule& module() {
  if (!available())
    throw InvalidArgument(
        "this cellflow was built without MPI (install libopenmpi-dev and rebuild)");
  static std::mutex mu;
  static const detail::MpiModule* loaded = nullptr;
  std::lock_guard lock(mu);
  if (loaded == nullptr) {
    using Entry = const detail::MpiModule* (*)();
    // RTLD_GLOBAL: Open MPI's components resolve its symbols against it.
    const auto entry = reinterpret_cast<Entry>(load_library_beside(
        reinterpret_cast<const void*>(&module), "libcellflow_mpi.so", "cellflow_mpi_module_v1",
        /*global=*/true, "cellflow's MPI support"));
    loaded = entry();
  }
  return *loaded;
}

}  // namespace

bool available() {
#ifdef CELLFLOW_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool launched() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var) != nullptr) return true;  // NOLINT(concurrency-mt-unsafe): read only
  return false;
}

World init() { return module().init(); }

RunReport materialize(const Graph& graph, std::vector<size_t> targets, const RunOptions& options) {
  return module().materialize(graph, std::move(targets), options);
}

void barrier() { module().barrier(); }

void max_over_ranks(std::vector<int>& values) { module().max_over_ranks(values); }

}  // namespace cellflow::mpi
