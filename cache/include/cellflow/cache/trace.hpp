// Cell tracing: an optional process-wide sink that CachedCellImage tells when
// it loads a cell from its store, computes one, stores one, or waits for one
// that another thread or process is producing. `cellflow run --trace` turns
// these into a Chrome/Perfetto trace. Without a sink the cost is one atomic
// load per event. Thread-safe: events arrive concurrently from any thread,
// always on the thread that did the work.
#pragma once

#include <chrono>
#include <string>

#include "cellflow/cache/cell_grid.hpp"

namespace cellflow {

struct CellTraceEvent {
  enum class Kind {
    kLoad,     // read back from the store (decoded)
    kCompute,  // the image's compute function
    kStore,    // encoded and committed to the store
    kWait,     // waited for another thread's or process's production
    kGlobal,   // a node's global pass over its whole input (cell = nullptr)
  };
  Kind kind = Kind::kCompute;
  const std::string* image = nullptr;  // the image's name, e.g. `node "smooth"`
  const CellIndex* cell = nullptr;
  std::chrono::steady_clock::time_point begin;
  std::chrono::steady_clock::time_point end;
};

/// Receives cell events. Implementations must be thread-safe and fast (they
/// run inside cell production).
class CellTraceSink {
 public:
  virtual ~CellTraceSink() = default;
  virtual void record(const CellTraceEvent& event) = 0;
};

/// Installs `sink` (nullptr: none) for the whole process; returns the previous
/// one. REQUIRES: a sink outlives every event it may receive: replace or
/// remove it only while no cell is being produced.
CellTraceSink* set_cell_trace_sink(CellTraceSink* sink);

/// The installed sink, or nullptr.
CellTraceSink* cell_trace_sink();

/// "load", "compute", "store", "wait" or "global".
const char* cell_trace_kind_name(CellTraceEvent::Kind kind);

}  // namespace cellflow
