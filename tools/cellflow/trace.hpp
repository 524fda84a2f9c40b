// TraceRecorder: `cellflow run --trace FILE`. Collects one complete event
// ("ph": "X") per cell step — computed, loaded from the store, stored, waited
// for (CachedCellImage's trace sink, cache/trace.hpp) — plus one per cell the
// run scheduled (the executor's cell events), each on the thread that did it,
// and writes them as Chrome trace JSON, which chrome://tracing and
// https://ui.perfetto.dev open. pid is the MPI rank under an MPI launcher (each
// rank writes its own file, FILE with ".rank<N>" before the extension for
// N > 0), else the process id; tid is the kernel thread id. Timestamps are
// microseconds of the system clock, so that traces of several ranks line up.
// Thread-safe: record() and record_cell() may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "cellflow/cache/trace.hpp"
#include "cellflow/graph/executor.hpp"

namespace cellflow::cli {

class TraceRecorder final : public CellTraceSink {
 public:
  /// Checks that `file` can be written (a UsageError otherwise) before
  /// anything runs.
  explicit TraceRecorder(const std::string& file);
  ~TraceRecorder() override;
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  /// Installs this recorder as the process's cell trace sink.
  void start();
  /// Uninstalls it and writes the file; a write error is a warning (the run
  /// matters more than its trace). Idempotent.
  void finish();

  void record(const CellTraceEvent& event) override;
  /// The executor's event for one scheduled cell of node `node_id`.
  void record_cell(const CellEvent& event, const std::string& node_id, bool computed);

  /// The file this process writes (FILE, or FILE.rank<N>.ext under MPI).
  const std::string& path() const { return path_; }

 private:
  struct Event {
    std::string name;
    const char* category;
    double ts_us;
    double dur_us;
    int64_t tid;
    std::string node;
    std::string cell;
    int attempt;   // executor events: attempt number, else 0
    int computed;  // executor events: 1 computed, 0 found committed; else -1
    std::string error;
  };
  double to_us(std::chrono::steady_clock::time_point t) const;

  std::string path_;
  int64_t pid_;
  bool mpi_rank_ = false;
  std::chrono::steady_clock::time_point steady_start_;
  double unix_start_us_;
  std::mutex mu_;
  std::vector<Event> events_;
  bool installed_ = false;
  bool finished_ = false;
};

}  // namespace cellflow::cli
