// parallel_for_all: calls fn(i) for every i in [0, n) on the TBB pool, and
// returns only when every call has returned (or rethrows the first exception).
// Unlike a bare tbb::parallel_for it runs in an isolated task group context:
// when the flow graph that called it is cancelled (an exception in another
// node body), it still completes instead of silently skipping iterations —
// which would let a cell be computed from a half-assembled input and committed.
// Thread-safe (fn must be).
#pragma once

#include <cstdint>
#include <functional>

namespace cellflow {

void parallel_for_all(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace cellflow
