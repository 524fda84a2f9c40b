// cellflow-bench's floor: cellflow's CPU time for two workloads on a Zarr
// input, divided by the sum of their unavoidable parts timed bare in the same
// run (decoding every input chunk, the kernels over the same padded cells,
// encoding and writing every persisted output cell). See floor.cpp.
// Single-threaded except for cellflow's own run; not thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace cellflow::bench {

/// The median of `v` (the upper one of an even count). REQUIRES: not empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct FloorOptions {
  int64_t size = 256;  // of the generated input (ignored with `zarr`)
  int64_t chunk = 64;  // of the generated input (ignored with `zarr`)
  double sigma = 2.0;
  int threads = 2;  // cellflow's; the floor runs in one thread
  int reps = 5;
  std::string zarr;     // an existing Zarr v2 f32 blosc array; empty: generate one
  int64_t region = 64;  // B's region.count / region.density blocks
};

/// Runs workloads A (read.zarr -> gaussian) and B (-> otsu -> label ->
/// region.count + region.density), each on a fresh cache, against their
/// floor, and prints A_* and B_* lines (medians over `reps`). Throws
/// cellflow::Error on failure.
void run_floor(const FloorOptions& o);

}  // namespace cellflow::bench
